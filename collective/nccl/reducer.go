//go:build cuda

package nccl

import (
	"context"
	"errors"
	"fmt"

	"github.com/herd-llm/herd/collective"
	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/kernels/cuda"
)

// GradReducer sums ranges of a CUDA backend's float32 gradient buffer across the ranks of a
// Device communicator (NCCL, or the staged ring), on a communication stream of its own, so
// that reducing one range overlaps the backward pass computing the next. It implements
// worker.GradReducer.
//
// Ordering, with the backend's compute stream C and the communication stream S:
//
//	Reduce: record ready on C, S waits for ready, all-reduce enqueued on S
//	Wait:   record done on S, C waits for done
//
// so a range is summed only after backward's last write to it, and the optimizer (enqueued on C
// after Wait) reads only summed gradients. Neither call blocks the host, except that a staged
// communicator copies through host memory and returns when its sum is in device memory.
type GradReducer struct {
	ctx         context.Context
	be          *cuda.Backend
	comm        Device
	stream      cuda.Stream
	ready, done cuda.Event
}

// NewGradReducer returns a reducer for buffers of be over comm. ctx bounds every collective.
func NewGradReducer(ctx context.Context, be *cuda.Backend, comm Device) (*GradReducer, error) {
	d := be.Device()
	r := &GradReducer{ctx: ctx, be: be, comm: comm}
	var err error
	if r.stream, err = d.NewStream(); err != nil {
		return nil, fmt.Errorf("nccl: communication stream: %w", err)
	}
	if r.ready, err = d.NewEvent(); err == nil {
		r.done, err = d.NewEvent()
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("nccl: events: %w", err), r.Close())
	}
	return r, nil
}

// Reduce implements worker.GradReducer.
func (r *GradReducer) Reduce(grads kernels.Buffer, off, n int) error {
	ptr, dt := r.be.Pointer(grads)
	if dt != kernels.Float32 {
		return fmt.Errorf("%w: nccl: gradients are %v, want float32", collective.ErrInvalidArgument, dt)
	}
	if off < 0 || n < 0 || off+n > grads.Len() {
		return fmt.Errorf("%w: nccl: range [%d, %d) of a buffer of %d", collective.ErrInvalidArgument, off, off+n, grads.Len())
	}
	d := r.be.Device()
	if err := d.Record(r.ready, r.be.Stream()); err != nil {
		return err
	}
	if err := d.StreamWait(r.stream, r.ready); err != nil {
		return err
	}
	return r.comm.AllReduce(r.ctx, offset(ptr, off), n, collective.Sum, r.stream)
}

// Wait implements worker.GradReducer.
func (r *GradReducer) Wait() error {
	d := r.be.Device()
	if err := d.Record(r.done, r.stream); err != nil {
		return err
	}
	return d.StreamWait(r.be.Stream(), r.done)
}

// Close destroys the stream and events once their work is done. The communicator stays open.
func (r *GradReducer) Close() error {
	d := r.be.Device()
	var errs []error
	if r.stream != (cuda.Stream{}) {
		errs = append(errs, d.SyncStream(r.stream), d.DestroyStream(r.stream))
	}
	for _, e := range []cuda.Event{r.ready, r.done} {
		if e != (cuda.Event{}) {
			errs = append(errs, d.DestroyEvent(e))
		}
	}
	return errors.Join(errs...)
}
