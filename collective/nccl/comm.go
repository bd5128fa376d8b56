//go:build cuda

package nccl

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/herd-llm/herd/collective"
	"github.com/herd-llm/herd/kernels/cuda"
)

// Comm is one rank of an NCCL communicator on one GPU. Collectives are enqueued on the caller's
// stream and return at once, as NCCL's do; errors that NCCL detects later (a peer died, a
// network failure) surface from AsyncError and fail the next call. Every NCCL call that needs
// the device runs on the device's thread (cuda.Device.Do), so a Comm is safe for concurrent
// use; calls must still be issued in the same order on every rank.
type Comm struct {
	a          *api
	dev        *cuda.Device
	rank, size int

	// mu is held shared while a call uses comm and exclusively to destroy it. stop is set
	// (before mu is taken exclusively) by Close and Abort, so that no new call starts.
	mu   sync.RWMutex
	comm unsafe.Pointer
	stop atomic.Pointer[error]
}

// idFloats is the length of the float32 message that carries the ncclUniqueId over the boot
// communicator: a validity flag, then the 128 bytes two at a time, each pair as the float32
// integer 0..65535. Integers survive any host communicator exactly, whatever it does to NaN
// payloads or the bit patterns of other special values (the TCP ring copies bits, but the boot
// communicator is any collective.Communicator).
const idFloats = 1 + uniqueIDBytes/2

// abortGrace is how long Abort waits for calls in flight to leave NCCL before it aborts the
// communicator under them (which is what ncclCommAbort is for, but the calls then fail).
const abortGrace = 100 * time.Millisecond

// Init creates rank boot.Rank() of an NCCL communicator of boot.Size() ranks on dev. Every rank
// of boot calls it at the same point of its sequence of boot calls. Rank 0 creates the
// ncclUniqueId and broadcasts it over boot; all ranks then agree (an all-reduce over boot)
// that they are ready, so that a rank that cannot load NCCL fails every rank's Init instead of
// leaving the others waiting; then each calls ncclCommInitRank on dev's thread, which returns
// once all ranks have joined. boot stays open and belongs to the caller.
//
// ctx bounds the whole of Init. The boot collectives end with it. ncclCommInitRank itself
// cannot be interrupted: if ctx ends while it runs, Init returns an error at once, but the call
// keeps dev's thread busy until NCCL gives up (a late communicator is aborted), so the caller
// should treat dev as lost and restart the process.
func Init(ctx context.Context, boot collective.Communicator, dev *cuda.Device) (*Comm, error) {
	size, rank := boot.Size(), boot.Rank()
	a, prepErr := load()

	msg := make([]float32, idFloats)
	if rank == 0 && prepErr == nil {
		var id [uniqueIDBytes]byte
		prepErr = dev.Do(func() error {
			var err error
			id, err = a.uniqueID()
			return err
		})
		if prepErr == nil {
			encodeID(msg, id)
		}
	}
	if err := boot.Broadcast(ctx, msg, 0); err != nil {
		return nil, fmt.Errorf("nccl: init rank %d of %d: broadcast of the unique id: %w", rank, size, err)
	}
	id, idErr := decodeID(msg)
	if prepErr == nil && idErr != nil {
		prepErr = idErr
	}
	failed := []float32{0}
	if prepErr != nil {
		failed[0] = 1
	}
	if err := boot.AllReduce(ctx, failed, collective.Sum); err != nil {
		return nil, fmt.Errorf("nccl: init rank %d of %d: agreeing to start: %w", rank, size, err)
	}
	if prepErr != nil {
		return nil, fmt.Errorf("nccl: init rank %d of %d: %w", rank, size, prepErr)
	}
	if failed[0] != 0 {
		return nil, fmt.Errorf("nccl: init rank %d of %d: %v of the ranks could not prepare NCCL (see their errors)",
			rank, size, failed[0])
	}

	type result struct {
		comm unsafe.Pointer
		err  error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		r.err = dev.Do(func() error {
			var err error
			r.comm, err = a.commInitRankFn(size, id, rank)
			return err
		})
		done <- r
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, fmt.Errorf("nccl: init rank %d of %d: %w", rank, size, r.err)
		}
		return &Comm{a: a, dev: dev, rank: rank, size: size, comm: r.comm}, nil
	case <-ctx.Done():
		go func() {
			if r := <-done; r.err == nil {
				_ = a.abort(r.comm)
			}
		}()
		return nil, fmt.Errorf("nccl: init rank %d of %d: ncclCommInitRank still running on the device thread (which stays busy until it returns): %w",
			rank, size, context.Cause(ctx))
	}
}

func encodeID(msg []float32, id [uniqueIDBytes]byte) {
	msg[0] = 1
	for i := 0; i < uniqueIDBytes; i += 2 {
		msg[1+i/2] = float32(uint16(id[i]) | uint16(id[i+1])<<8)
	}
}

func decodeID(msg []float32) (id [uniqueIDBytes]byte, err error) {
	if msg[0] != 1 {
		return id, errors.New("rank 0 could not create the NCCL unique id (see its error)")
	}
	for i := 0; i < uniqueIDBytes; i += 2 {
		f := msg[1+i/2]
		if !(f >= 0 && f <= math.MaxUint16 && f == float32(math.Trunc(float64(f)))) {
			return id, fmt.Errorf("unique id received over the boot communicator is corrupt: element %d is %v", 1+i/2, f)
		}
		v := uint16(f)
		id[i], id[i+1] = byte(v), byte(v>>8)
	}
	return id, nil
}

// Rank returns this member's index in [0, Size()).
func (c *Comm) Rank() int { return c.rank }

// Size returns the number of ranks.
func (c *Comm) Size() int { return c.size }

// Version returns the NCCL version code of the library in use, e.g. 22809 for 2.28.9.
func (c *Comm) Version() int { return c.a.version }

// enqueue runs fn, one NCCL collective, on the device thread after checking that the
// communicator is open and has no asynchronous error.
func (c *Comm) enqueue(ctx context.Context, fn func(comm unsafe.Pointer) error) error {
	if err := context.Cause(ctx); err != nil {
		return err
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if p := c.stop.Load(); p != nil {
		return *p
	}
	return c.dev.Do(func() error {
		if err := c.a.asyncError(c.comm); err != nil {
			return err
		}
		return fn(c.comm)
	})
}

func ncclOp(op collective.Op) int {
	if op == collective.Avg {
		return ncclAvg
	}
	return ncclSum
}

// AllReduce enqueues an in-place ncclAllReduce of n float32 values at buf on s.
func (c *Comm) AllReduce(ctx context.Context, buf cuda.DevicePtr, n int, op collective.Op, s cuda.Stream) error {
	return c.allReduce(ctx, "all-reduce", buf, n, ncclFloat32, op, s)
}

// AllReduceBF16 enqueues an in-place ncclAllReduce of n bfloat16 values at buf on s. NCCL
// reduces in float32 within each step but stores bfloat16 between the steps of its ring or
// tree, so the result may differ in the last bit from a float32 reduction rounded once.
func (c *Comm) AllReduceBF16(ctx context.Context, buf cuda.DevicePtr, n int, op collective.Op, s cuda.Stream) error {
	return c.allReduce(ctx, "bf16 all-reduce", buf, n, ncclBfloat16, op, s)
}

func (c *Comm) allReduce(ctx context.Context, what string, buf cuda.DevicePtr, n, dtype int, op collective.Op, s cuda.Stream) error {
	if err := checkOp(what, op); err != nil {
		return err
	}
	if err := checkLen(what, n); err != nil || n == 0 {
		return err
	}
	return c.enqueue(ctx, func(comm unsafe.Pointer) error {
		return c.a.allReduceFn(buf, buf, n, dtype, ncclOp(op), comm, s)
	})
}

// checkEven rejects lengths NCCL cannot split into Size() equal parts.
func (c *Comm) checkEven(what string, n int) error {
	if err := checkLen(what, n); err != nil {
		return err
	}
	if n%c.size != 0 {
		return fmt.Errorf("%w: nccl: %s of n=%d elements over size=%d ranks: NCCL needs n to be a multiple of size; pad the buffer to %d (PaddedLen)",
			collective.ErrInvalidArgument, what, n, c.size, PaddedLen(n, c.size))
	}
	return nil
}

// ReduceScatter enqueues an in-place ncclReduceScatter: with n a multiple of Size(), this
// rank's part collective.Partition(n, Size(), Rank()) is elements [Rank()*n/Size(), ...) of
// buf, which is NCCL's in-place layout (recvbuff = sendbuff + rank*recvcount). Other lengths
// fail with an error wrapping collective.ErrInvalidArgument.
func (c *Comm) ReduceScatter(ctx context.Context, buf cuda.DevicePtr, n int, op collective.Op, s cuda.Stream) error {
	if err := checkOp("reduce-scatter", op); err != nil {
		return err
	}
	if err := c.checkEven("reduce-scatter", n); err != nil || n == 0 {
		return err
	}
	part := n / c.size
	return c.enqueue(ctx, func(comm unsafe.Pointer) error {
		return c.a.reduceScatterFn(buf, offset(buf, c.rank*part), part, ncclFloat32, ncclOp(op), comm, s)
	})
}

// AllGather enqueues an in-place ncclAllGather (sendbuff = recvbuff + rank*sendcount); n must
// be a multiple of Size(), as for ReduceScatter.
func (c *Comm) AllGather(ctx context.Context, buf cuda.DevicePtr, n int, s cuda.Stream) error {
	if err := c.checkEven("all-gather", n); err != nil || n == 0 {
		return err
	}
	part := n / c.size
	return c.enqueue(ctx, func(comm unsafe.Pointer) error {
		return c.a.allGatherFn(offset(buf, c.rank*part), buf, part, ncclFloat32, comm, s)
	})
}

// AsyncError returns the error NCCL has recorded for the communicator while operations ran
// (ncclCommGetAsyncError), or nil. It does not use the device thread, so a watchdog may poll it
// while that thread waits for a stream that NCCL kernels hold up; on an error, call Abort.
func (c *Comm) AsyncError() error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if p := c.stop.Load(); p != nil {
		return *p
	}
	return c.a.asyncError(c.comm)
}

// Abort aborts the communicator (ncclCommAbort): NCCL kernels still running stop, and this and
// later calls fail with an error wrapping collective.ErrAborted and err. It does not use the
// device thread, so it unblocks a thread waiting for a stream that a dead peer holds up. The
// other ranks are not told; they notice through their own timeouts or NCCL's errors.
func (c *Comm) Abort(err error) {
	cause := fmt.Errorf("nccl: rank %d: %w", c.rank, collective.ErrAborted)
	if err != nil {
		cause = fmt.Errorf("nccl: rank %d: %w: %w", c.rank, collective.ErrAborted, err)
	}
	if !c.stop.CompareAndSwap(nil, &cause) {
		return
	}
	// Calls that started before stop was set hold mu shared; wait a moment for them, then
	// abort under them if they are stuck in NCCL.
	locked := false
	for deadline := time.Now().Add(abortGrace); ; time.Sleep(time.Millisecond) {
		if locked = c.mu.TryLock(); locked || time.Now().After(deadline) {
			break
		}
	}
	_ = c.a.abort(c.comm)
	if locked {
		c.mu.Unlock()
	}
}

// Close destroys the communicator (ncclCommDestroy, which waits for its pending operations).
// Later calls fail with an error wrapping collective.ErrClosed. Closing an aborted Comm does
// nothing; Close is idempotent.
func (c *Comm) Close() error {
	cause := fmt.Errorf("nccl: rank %d: %w", c.rank, collective.ErrClosed)
	if !c.stop.CompareAndSwap(nil, &cause) {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dev.Do(func() error { return c.a.destroy(c.comm) })
}
