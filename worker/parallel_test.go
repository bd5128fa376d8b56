package worker

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/herd-llm/herd/collective"
	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/kernels/cpu"
	"github.com/herd-llm/herd/model"
)

// deviceLike is the float32 CPU backend under another type, so dataParallel treats its memory
// as a device's and stages gradients through host copies, as it does for a GPU.
type deviceLike struct{ *cpu.Backend[float32] }

// TestDataParallelStaging sums the gradients of two ranks, each on its own batch, reduced in
// place on host buffers, staged through host copies, and through a GradReducer (the path a
// GPU's device collectives take), and requires bit-identical
// summed gradients on every rank: a range not read before its reduction, or not written back
// after it, leaves a rank with its own gradients instead of the sum.
func TestDataParallelStaging(t *testing.T) {
	c := model.Default()
	const world, b, seq = 2, 2, 17
	grads := func(newBackend func() kernels.Backend, reducer bool) [][]float32 {
		comms := collective.NewInMemGroup(world)
		out := make([][]float32, world)
		var wg sync.WaitGroup
		for r := 0; r < world; r++ {
			wg.Add(1)
			go func(r int) {
				defer wg.Done()
				m, err := model.New(c, newBackend())
				if err != nil {
					t.Error(err)
					return
				}
				defer m.Close()
				m.Init(1)
				rng := rand.New(rand.NewPCG(uint64(r), 9))
				tok, tgt := make([]int32, b*seq), make([]int32, b*seq)
				for i := range tok {
					tok[i], tgt[i] = int32(rng.IntN(c.Vocab)), int32(rng.IntN(c.Vocab))
				}
				var red GradReducer
				if reducer {
					red = &syncReducer{be: m.Backend(), comm: comms[r]}
				}
				dp := newDataParallel(context.Background(), comms[r], red, m)
				if reducer && !dp.reducing {
					t.Errorf("rank %d: the reducer is not used", r)
				}
				if !reducer && (!dp.active() || dp.staged == hostBackend(m)) {
					t.Errorf("rank %d: active %v, staged %v on host backend %v", r, dp.active(), dp.staged, hostBackend(m))
				}
				m.ZeroGrad()
				if _, err := m.Forward(tok, tgt, b, seq); err != nil {
					t.Error(err)
					return
				}
				dp.startBuckets()
				if err := m.Backward(); err != nil {
					t.Error(err)
					return
				}
				if _, err := dp.finish(0); err != nil {
					t.Error(err)
					return
				}
				out[r] = make([]float32, m.Layout.Size)
				m.Backend().Read32(out[r], m.Grads())
			}(r)
		}
		wg.Wait()
		return out
	}
	direct := grads(func() kernels.Backend { return cpu.New[float32](cpu.Options{}) }, false)
	staged := grads(func() kernels.Backend { return deviceLike{cpu.New[float32](cpu.Options{})} }, false)
	reduced := grads(func() kernels.Backend { return deviceLike{cpu.New[float32](cpu.Options{})} }, true)
	if t.Failed() {
		return
	}
	for r := 0; r < world; r++ {
		for i := range direct[0] {
			if staged[r][i] != direct[0][i] || direct[r][i] != direct[0][i] || reduced[r][i] != direct[0][i] {
				t.Fatalf("gradient %d: direct rank 0 %v, direct rank %d %v, staged rank %d %v, through a GradReducer %v",
					i, direct[0][i], r, direct[r][i], r, staged[r][i], reduced[r][i])
			}
		}
	}
	var nonzero int
	for _, g := range staged[0] {
		if g != 0 {
			nonzero++
		}
	}
	if nonzero < len(staged[0])/2 {
		t.Fatalf("only %d of %d summed gradients are nonzero", nonzero, len(staged[0]))
	}
}

// A device failure inside a backend op reaches Train's caller as an error naming the op, with
// the memory hint when the device ran out of memory; any other panic is not swallowed.
func TestRecoverDevice(t *testing.T) {
	run := func(v any) (err error) {
		defer recoverDevice(&err)
		panic(v)
	}
	oom := &kernels.DeviceError{Op: "cuda: Alloc(1000 bfloat16)", Err: errors.New("CUDA_ERROR_OUT_OF_MEMORY: out of memory")}
	err := run(oom)
	if !errors.Is(err, kernels.ErrDevice) || !strings.Contains(err.Error(), "cuda: Alloc(1000 bfloat16)") || !strings.Contains(err.Error(), "--micro-batch") {
		t.Fatalf("out of memory: %v", err)
	}
	launch := &kernels.DeviceError{Op: "cuda: launch rmsnorm_fwd_bf16", Err: errors.New("unspecified launch failure")}
	if err := run(launch); !errors.Is(err, kernels.ErrDevice) || strings.Contains(err.Error(), "--micro-batch") {
		t.Fatalf("launch failure: %v", err)
	}
	defer func() {
		if r := recover(); r != "a bug" {
			t.Fatalf("recovered %v, want the original panic to go on", r)
		}
	}()
	_ = run("a bug")
}

// syncReducer is a GradReducer that sums each range over a host communicator as soon as it is
// ready, through a host copy: the contract of a device reducer, computed on the host.
type syncReducer struct {
	be      kernels.Backend
	comm    collective.Communicator
	pending int
}

func (s *syncReducer) Reduce(grads kernels.Buffer, off, n int) error {
	host := make([]float32, n)
	view := s.be.Slice(grads, off, n)
	s.be.Read32(host, view)
	if err := s.comm.AllReduce(context.Background(), host, collective.Sum); err != nil {
		return err
	}
	s.be.Write32(view, host)
	s.pending++
	return nil
}

func (s *syncReducer) Wait() error {
	if s.pending == 0 {
		return errors.New("Wait without any Reduce")
	}
	s.pending = 0
	return nil
}
