package collective

import (
	"context"
	"fmt"
)

// Op says how AllReduce and ReduceScatter combine the ranks' values.
type Op uint8

const (
	// Sum adds the values of all ranks.
	Sum Op = iota + 1
	// Avg adds the values of all ranks and divides the sum by the world size.
	Avg
)

func (o Op) String() string {
	switch o {
	case Sum:
		return "sum"
	case Avg:
		return "avg"
	}
	return fmt.Sprintf("Op(%d)", uint8(o))
}

func (o Op) valid() bool { return o == Sum || o == Avg }

// Communicator runs collective operations among the Size() ranks of one group.
// See the package documentation for how calls are matched across ranks and what a failure
// does. Methods are safe for concurrent use, but calls must be issued in the same order on
// every rank, so a rank normally issues them from one goroutine.
type Communicator interface {
	// Rank returns this member's index in [0, Size()).
	Rank() int
	// Size returns the number of ranks in the group.
	Size() int

	// AllReduce combines buf elementwise across ranks with op; on return every rank's buf
	// holds the same result, bit for bit.
	AllReduce(ctx context.Context, buf []float32, op Op) error
	// ReduceScatter combines buf elementwise across ranks with op and leaves the result for
	// this rank's part, buf[Partition(len(buf), Size(), Rank())], in place. The rest of buf
	// is scratch and unspecified on return.
	ReduceScatter(ctx context.Context, buf []float32, op Op) error
	// AllGather sends this rank's part of buf, buf[Partition(len(buf), Size(), Rank())], to
	// every rank; on return each part of buf holds the values of the rank that owns it.
	AllGather(ctx context.Context, buf []float32) error
	// Broadcast copies root's buf into every other rank's buf.
	Broadcast(ctx context.Context, buf []float32, root int) error
	// Barrier returns once every rank has entered it.
	Barrier(ctx context.Context) error

	// AllReduceAsync starts AllReduce and returns at once. ctx bounds the operation itself.
	AllReduceAsync(ctx context.Context, buf []float32, op Op) Handle
	// ReduceScatterAsync starts ReduceScatter and returns at once.
	ReduceScatterAsync(ctx context.Context, buf []float32, op Op) Handle
	// AllGatherAsync starts AllGather and returns at once.
	AllGatherAsync(ctx context.Context, buf []float32) Handle

	// Close fails pending and later calls (ErrClosed here, ErrPeerClosed on the peers) and
	// releases the communicator's resources. It is idempotent.
	Close() error
}

// Handle is an operation that was started asynchronously.
type Handle interface {
	// Wait blocks until the operation has finished and returns its error. If ctx ends first,
	// Wait aborts the communicator (the peers fail too) and still returns only after the
	// operation has let go of its buffer.
	Wait(ctx context.Context) error
	// Done is closed when the operation has finished and its buffer may be reused.
	Done() <-chan struct{}
}

// Aborter is implemented by communicators that can be failed from outside, as a worker
// does when the coordinator announces a new round. Abort fails every pending and later call
// on every rank with an error that wraps ErrAborted and err.
type Aborter interface {
	Abort(err error)
}

// Partition returns the half-open range [lo, hi) of an n-element buffer that rank owns in
// ReduceScatter and AllGather among size ranks. The first n%size ranks own one element more.
func Partition(n, size, rank int) (lo, hi int) {
	q, r := n/size, n%size
	lo = rank*q + min(rank, r)
	hi = lo + q
	if rank < r {
		hi++
	}
	return lo, hi
}

// checkArgs validates the arguments of one call; the same invalid call on every rank fails
// on every rank, without touching the group.
func checkArgs(c coll, op Op, root, size int) error {
	if (c == collAllReduce || c == collReduceScatter) && !op.valid() {
		return fmt.Errorf("%w: %s with op %v, want sum or avg", ErrInvalidArgument, c, op)
	}
	if c == collBroadcast && (root < 0 || root >= size) {
		return fmt.Errorf("%w: broadcast root %d out of range [0, %d)", ErrInvalidArgument, root, size)
	}
	return nil
}

// coll names a collective operation; it travels in every data frame so that ranks which
// issue different calls fail with ErrMismatch instead of corrupting each other's buffers.
type coll uint8

const (
	collAllReduce coll = iota + 1
	collReduceScatter
	collAllGather
	collBroadcast
	collBarrier
	collLast = collBarrier
)

func (c coll) String() string {
	switch c {
	case collAllReduce:
		return "all-reduce"
	case collReduceScatter:
		return "reduce-scatter"
	case collAllGather:
		return "all-gather"
	case collBroadcast:
		return "broadcast"
	case collBarrier:
		return "barrier"
	}
	return fmt.Sprintf("coll(%d)", uint8(c))
}
