//go:build cuda

package nccl

import (
	"context"
	"fmt"
	"sync"

	"github.com/herd-llm/herd/collective"
	"github.com/herd-llm/herd/kernels/cuda"
)

// mover moves float32 values between device memory and the staging buffer on a stream.
// Offsets and counts are in elements. The real one is pinnedMover.
type mover interface {
	// d2h enqueues a copy of n values from src into the staging buffer at hostOff.
	d2h(hostOff int, src cuda.DevicePtr, n int, s cuda.Stream) error
	// h2d enqueues a copy of n values from the staging buffer at hostOff into dst.
	h2d(dst cuda.DevicePtr, hostOff int, n int, s cuda.Stream) error
	// sync waits until everything enqueued on s has run.
	sync(s cuda.Stream) error
	// release frees the staging buffer.
	release() error
}

// Staged runs the collectives of a host collective.Communicator on device buffers: it copies
// the device data into one pinned host buffer on the caller's stream, waits for the stream,
// runs the host collective on the pinned memory, and copies the result back on the stream.
// Each call returns once the result is in device memory, so it is synchronous where Comm is
// not; the result is right for work enqueued on any stream afterwards.
//
// The pinned buffer holds maxElems values (at least Size()); longer calls run in chunks, one
// host collective per chunk, so maxElems must be the same on every rank. Calls are serialized
// on the one buffer; as with any communicator, every rank issues the same calls in the same
// order.
type Staged struct {
	host     collective.Communicator
	m        mover
	capElems int
	stage    []float32 // the pinned buffer, capElems long

	mu     sync.Mutex
	closed bool
}

// newStaged builds a Staged on host whose staging buffer stage (capElems >= host.Size()
// values) is reached through m.
func newStaged(host collective.Communicator, m mover, stage []float32) *Staged {
	return &Staged{host: host, m: m, capElems: len(stage), stage: stage}
}

// Rank returns this member's index in [0, Size()).
func (st *Staged) Rank() int { return st.host.Rank() }

// Size returns the number of ranks.
func (st *Staged) Size() int { return st.host.Size() }

// MaxElems returns the number of float32 values one host collective carries at most.
func (st *Staged) MaxElems() int { return st.capElems }

// begin takes the staging buffer for one call.
func (st *Staged) begin(what string, n int) (func(), error) {
	if err := checkLen(what, n); err != nil {
		return nil, err
	}
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return nil, fmt.Errorf("nccl: staged %s: %w", what, collective.ErrClosed)
	}
	return st.mu.Unlock, nil
}

// finish ends a call: after a failure, it still waits for the copies already enqueued, so
// that none of them touches the staging buffer once the next call owns it.
func (st *Staged) finish(err error, s cuda.Stream) error {
	if err == nil {
		return st.m.sync(s)
	}
	_ = st.m.sync(s)
	return err
}

// AllReduce all-reduces n values at buf over the host communicator, in chunks of at most
// MaxElems values.
func (st *Staged) AllReduce(ctx context.Context, buf cuda.DevicePtr, n int, op collective.Op, s cuda.Stream) error {
	if err := checkOp("all-reduce", op); err != nil {
		return err
	}
	unlock, err := st.begin("all-reduce", n)
	if err != nil {
		return err
	}
	defer unlock()
	return st.finish(st.allReduce(ctx, buf, n, op, s), s)
}

func (st *Staged) allReduce(ctx context.Context, buf cuda.DevicePtr, n int, op collective.Op, s cuda.Stream) error {
	for off := 0; off < n; off += st.capElems {
		k := min(st.capElems, n-off)
		if err := st.m.d2h(0, offset(buf, off), k, s); err != nil {
			return err
		}
		// The sync also covers the previous chunk's copy back, which read the staging buffer.
		if err := st.m.sync(s); err != nil {
			return err
		}
		if err := st.host.AllReduce(ctx, st.stage[:k], op); err != nil {
			return err
		}
		if err := st.m.h2d(offset(buf, off), 0, k, s); err != nil {
			return err
		}
	}
	return nil
}

// ReduceScatter reduce-scatters n values at buf (any n), leaving this rank's part
// collective.Partition(n, Size(), Rank()) in place. Each round stages a slice of every rank's
// part (see partitionRounds) and copies back only this rank's slice, so the rest of buf keeps
// its input values.
func (st *Staged) ReduceScatter(ctx context.Context, buf cuda.DevicePtr, n int, op collective.Op, s cuda.Stream) error {
	if err := checkOp("reduce-scatter", op); err != nil {
		return err
	}
	unlock, err := st.begin("reduce-scatter", n)
	if err != nil {
		return err
	}
	defer unlock()
	return st.finish(st.reduceScatter(ctx, buf, n, op, s), s)
}

func (st *Staged) reduceScatter(ctx context.Context, buf cuda.DevicePtr, n int, op collective.Op, s cuda.Stream) error {
	rank := st.Rank()
	for _, rd := range partitionRounds(n, st.Size(), st.capElems) {
		for _, sp := range coalesce(rd.parts) {
			if err := st.m.d2h(sp.host, offset(buf, sp.dev), sp.n, s); err != nil {
				return err
			}
		}
		if err := st.m.sync(s); err != nil {
			return err
		}
		if err := st.host.ReduceScatter(ctx, st.stage[:rd.m], op); err != nil {
			return err
		}
		if mine := rd.parts[rank]; mine.n > 0 {
			if err := st.m.h2d(offset(buf, mine.dev), mine.host, mine.n, s); err != nil {
				return err
			}
		}
	}
	return nil
}

// AllGather all-gathers n values at buf (any n): each rank's part
// collective.Partition(n, Size(), Rank()) goes to every rank.
func (st *Staged) AllGather(ctx context.Context, buf cuda.DevicePtr, n int, s cuda.Stream) error {
	unlock, err := st.begin("all-gather", n)
	if err != nil {
		return err
	}
	defer unlock()
	return st.finish(st.allGather(ctx, buf, n, s), s)
}

func (st *Staged) allGather(ctx context.Context, buf cuda.DevicePtr, n int, s cuda.Stream) error {
	rank := st.Rank()
	for _, rd := range partitionRounds(n, st.Size(), st.capElems) {
		if mine := rd.parts[rank]; mine.n > 0 {
			if err := st.m.d2h(mine.host, offset(buf, mine.dev), mine.n, s); err != nil {
				return err
			}
		}
		if err := st.m.sync(s); err != nil {
			return err
		}
		if err := st.host.AllGather(ctx, st.stage[:rd.m]); err != nil {
			return err
		}
		// This rank's own slice goes back too (unchanged): that keeps a one-round gather to a
		// single copy.
		for _, sp := range coalesce(rd.parts) {
			if err := st.m.h2d(offset(buf, sp.dev), sp.host, sp.n, s); err != nil {
				return err
			}
		}
	}
	return nil
}

// Close frees the pinned buffer; later calls fail with an error wrapping
// collective.ErrClosed. The host communicator stays open. Close is idempotent.
func (st *Staged) Close() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return nil
	}
	st.closed = true
	st.stage = nil
	return st.m.release()
}
