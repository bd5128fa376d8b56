//go:build cuda

package nccl

import (
	"context"
	"fmt"

	"github.com/herd-llm/herd/collective"
	"github.com/herd-llm/herd/kernels/cuda"
)

// Device runs collectives on float32 device buffers of one GPU, enqueued on a stream.
//
// As with collective.Communicator, the k-th call on every rank forms one operation, so every
// rank issues the same calls, in the same order, with the same n and op. buf holds n float32
// values in device memory; the work is ordered on s after what s already holds, and later work
// on s sees the result. Whether a call returns before the work has run depends on the
// implementation (Comm: at once; Staged: once the result is in device memory); either way,
// synchronize s before reading buf on the host or from another stream.
type Device interface {
	// Rank returns this member's index in [0, Size()).
	Rank() int
	// Size returns the number of ranks in the group.
	Size() int
	// AllReduce combines buf elementwise across ranks with op (collective.Sum or Avg); every
	// rank ends with the same result.
	AllReduce(ctx context.Context, buf cuda.DevicePtr, n int, op collective.Op, s cuda.Stream) error
	// ReduceScatter combines buf elementwise across ranks with op and leaves the result for
	// this rank's part, elements collective.Partition(n, Size(), Rank()), in place; the rest of
	// buf is scratch and unspecified afterwards. Comm requires n to be a multiple of Size().
	ReduceScatter(ctx context.Context, buf cuda.DevicePtr, n int, op collective.Op, s cuda.Stream) error
	// AllGather sends this rank's part of buf, elements collective.Partition(n, Size(),
	// Rank()), to every rank; afterwards each part of buf holds the values of the rank that
	// owns it. Comm requires n to be a multiple of Size().
	AllGather(ctx context.Context, buf cuda.DevicePtr, n int, s cuda.Stream) error
	// Close releases the implementation's resources. It does not close the host communicator
	// a Device was built on.
	Close() error
}

var (
	_ Device = (*Comm)(nil)
	_ Device = (*Staged)(nil)
)

// PaddedLen returns n rounded up to a multiple of size: the length to give a buffer whose
// ReduceScatter or AllGather must run on every Device implementation, NCCL's included.
func PaddedLen(n, size int) int {
	if size <= 0 {
		return n
	}
	return (n + size - 1) / size * size
}

func checkOp(what string, op collective.Op) error {
	if op != collective.Sum && op != collective.Avg {
		return fmt.Errorf("%w: nccl: %s with op %v, want sum or avg", collective.ErrInvalidArgument, what, op)
	}
	return nil
}

func checkLen(what string, n int) error {
	if n < 0 {
		return fmt.Errorf("%w: nccl: %s of %d elements", collective.ErrInvalidArgument, what, n)
	}
	return nil
}

// offset returns the address of element i of the float32 buffer at buf.
func offset(buf cuda.DevicePtr, i int) cuda.DevicePtr { return buf + cuda.DevicePtr(4*i) }
