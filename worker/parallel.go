package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/herd-llm/herd/collective"
	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/kernels/cpu"
	"github.com/herd-llm/herd/model"
)

// dataParallel sums gradients across the ranks of a communicator. Each gradient range that
// backward finishes (head, blocks last to first, embedding) is reduced asynchronously right
// away, so communication overlaps the rest of backward. A nil communicator makes every
// method a no-op.
//
// The ring reduces host memory. On the float32 CPU backend the gradient buffer is host memory
// and is reduced in place; on any other backend (a GPU) each range is staged: read to a host
// copy when backward finishes it, reduced there, and written back in finish.
//
// A GradReducer replaces the host path: it sums the ranges in the backend's own memory (NCCL
// between GPUs) and the communicator then only averages the loss and checks parameters.
type dataParallel struct {
	ctx      context.Context
	comm     collective.Communicator
	m        *model.Model
	grads    []float32 // the gradients in host memory: the buffer itself, or its staging copy
	staged   bool      // grads is a copy that finish writes back
	handles  []collective.Handle
	red      GradReducer // when set, used instead of grads and handles
	redErr   error       // the first error a Reduce returned during this Backward
	reducing bool
	waited   time.Duration // how long the last finish waited for the gradient sums
	// scatter reduce-scatters each range instead of all-reducing it (ZeRO-1): every rank
	// gets the sums of its chunks only.
	scatter bool
	// crc, when set, gives the parameters' checksum that checkParams compares (ZeRO holds
	// them elsewhere); by default the model's parameter buffer's.
	crc func(context.Context) (uint32, error)
	// lentGrads: the model's gradients are lent by ZeRO's Residency, which reduces them.
	lentGrads bool
}

// GradReducer sums ranges of a model's float32 gradient buffer across the data-parallel ranks
// without leaving the backend's memory, for backends whose collectives run on the device
// (collective/nccl on GPUs). Every rank calls it for the same ranges in the same order.
type GradReducer interface {
	// Reduce starts summing grads[off:off+n] once the backend's work enqueued so far (the
	// backward pass up to the range's last contribution) is done; it may return before the sum
	// is complete.
	Reduce(grads kernels.Buffer, off, n int) error
	// Wait returns once every started sum is complete, or at least ordered before any op the
	// backend runs afterwards.
	Wait() error
}

func newDataParallel(ctx context.Context, comm collective.Communicator, red GradReducer, m *model.Model) *dataParallel {
	dp := &dataParallel{ctx: ctx, comm: comm, m: m}
	if comm != nil && comm.Size() > 1 {
		if m.Resident() {
			// ZeRO-2 and -3: the lent gradients are reduced as the model hands them back;
			// only the loss is left to average.
			dp.lentGrads = true
			return dp
		}
		if red != nil {
			dp.red, dp.reducing = red, true
		} else if hostBackend(m) {
			dp.grads = cpu.Data[float32](m.Grads())
		} else {
			dp.grads, dp.staged = make([]float32, m.Layout.Size), true
		}
	}
	return dp
}

// hostBackend reports whether the model's buffers are host float32 slices.
func hostBackend(m *model.Model) bool {
	_, ok := m.Backend().(*cpu.Backend[float32])
	return ok
}

func (dp *dataParallel) active() bool { return dp.grads != nil || dp.reducing || dp.lentGrads }

// startBuckets arms the model's gradient hook for the coming Backward.
func (dp *dataParallel) startBuckets() {
	if !dp.active() || dp.lentGrads {
		return
	}
	if dp.reducing {
		dp.m.OnGradReady(func(off, n int) {
			if err := dp.red.Reduce(dp.m.Grads(), off, n); err != nil && dp.redErr == nil {
				dp.redErr = err
			}
		})
		return
	}
	dp.m.OnGradReady(func(off, n int) {
		if dp.staged {
			be := dp.m.Backend()
			be.Read32(dp.grads[off:off+n], be.Slice(dp.m.Grads(), off, n))
		}
		if dp.scatter {
			dp.handles = append(dp.handles, dp.comm.ReduceScatterAsync(dp.ctx, dp.grads[off:off+n], collective.Sum))
			return
		}
		dp.handles = append(dp.handles, dp.comm.AllReduceAsync(dp.ctx, dp.grads[off:off+n], collective.Sum))
	})
}

// finish waits for every bucket and returns the mean of the ranks' losses.
func (dp *dataParallel) finish(loss float64) (float64, error) {
	if !dp.active() {
		return loss, nil
	}
	dp.m.OnGradReady(nil)
	start := time.Now()
	defer func() { dp.waited = time.Since(start) }()
	first := dp.redErr
	dp.redErr = nil
	if dp.reducing {
		if err := dp.red.Wait(); err != nil && first == nil {
			first = err
		}
	}
	for _, h := range dp.handles {
		if err := h.Wait(dp.ctx); err != nil && first == nil {
			first = err
		}
	}
	dp.handles = dp.handles[:0]
	if first != nil {
		return 0, first
	}
	if dp.staged {
		dp.m.Backend().Write32(dp.m.Grads(), dp.grads)
	}
	l := []float32{float32(loss)}
	if err := dp.comm.AllReduce(dp.ctx, l, collective.Avg); err != nil {
		return 0, err
	}
	return float64(l[0]), nil
}

// checkParams compares a CRC-32C of every rank's parameters and fails, naming the ranks,
// when they differ: data parallelism must keep the replicas bit-identical.
func (dp *dataParallel) checkParams(step int) error {
	if !dp.active() {
		return nil
	}
	var sum uint32
	if dp.crc != nil {
		var err error
		if sum, err = dp.crc(dp.ctx); err != nil {
			return fmt.Errorf("parameter check at step %d: %w", step, err)
		}
	} else {
		sum = paramsCRC(dp)
	}
	w, r := dp.comm.Size(), dp.comm.Rank()
	// Two 16-bit halves per rank travel as exactly representable float32 values.
	buf := make([]float32, 2*w)
	buf[2*r], buf[2*r+1] = float32(sum>>16), float32(sum&0xffff)
	if err := dp.comm.AllGather(dp.ctx, buf); err != nil {
		return fmt.Errorf("parameter check at step %d: %w", step, err)
	}
	for i := 0; i < w; i++ {
		got := uint32(buf[2*i])<<16 | uint32(buf[2*i+1])
		if got != sum {
			return fmt.Errorf("worker: parameters diverged at step %d: rank %d has checksum %08x, rank %d has %08x", step, r, sum, i, got)
		}
	}
	return nil
}
