package worker

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herd-llm/herd/collective"
	"github.com/herd-llm/herd/collective/collectivetest"
	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/kernels/cpu"
	"github.com/herd-llm/herd/model"
)

// tensorTestConfig is a small network whose heads (4) and feed-forward size (256) split
// over 2 and 4 ranks, with a vocabulary (101) that does not: the shards are uneven.
func tensorTestConfig(remat model.Remat) model.Config {
	c := model.Default()
	c.Vocab, c.Remat = 101, remat
	return c
}

// tensorRun is what one configuration trains: per-step losses, the whole network's final
// parameters and the first step's gradients (before any update).
type tensorRun struct {
	losses      []float64
	params      []float32
	firstGrads  []float32
	kept        int64 // activation bytes the first forward kept (rank 0)
	sentPerStep int64 // bytes rank 0 sent per step over the tensor-parallel ring
	// stepTime and waited are rank 0's mean step time and time waiting for the tensor
	// group's collectives, over the steps after the first.
	stepTime, waited time.Duration
}

// tensorBatches returns steps x micro micro-batches of b sequences of t tokens.
func tensorBatches(c model.Config, steps, micro, b, t int) (tok, tgt [][]int32) {
	rng := rand.New(rand.NewPCG(7, 11))
	for range steps * micro {
		x, y := make([]int32, b*t), make([]int32, b*t)
		for i := range x {
			x[i], y[i] = int32(rng.IntN(c.Vocab)), int32(rng.IntN(c.Vocab))
			if i%13 == 5 {
				y[i] = -1 // ignored targets count in no rank's loss
			}
		}
		tok, tgt = append(tok, x), append(tgt, y)
	}
	return tok, tgt
}

// trainOne trains c on one process, in the backend's precision.
func trainOne(t testing.TB, c model.Config, be kernels.Backend, steps, micro, b, seq int) tensorRun {
	t.Helper()
	m, err := model.New(c, be)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	m.Init(3)
	opt, err := model.NewOptimizer(m, model.DefaultOptim())
	if err != nil {
		t.Fatal(err)
	}
	defer opt.Close()
	tok, tgt := tensorBatches(c, steps, micro, b, seq)
	var run tensorRun
	for s := range steps {
		m.ZeroGrad()
		var loss float64
		for k := range micro {
			l, err := m.Forward(tok[s*micro+k], tgt[s*micro+k], b, seq)
			if err != nil {
				t.Fatal(err)
			}
			if s == 0 && k == 0 {
				run.kept = m.LastKept().Total
			}
			if err := m.Backward(); err != nil {
				t.Fatal(err)
			}
			loss += l / float64(micro)
		}
		if s == 0 {
			run.firstGrads = make([]float32, m.Layout.Size)
			be.Read32(run.firstGrads, m.Grads())
		}
		opt.Step(1e-2, 1/float64(micro))
		run.losses = append(run.losses, loss)
	}
	run.params = make([]float32, m.Layout.Size)
	be.Read32(run.params, m.Params())
	return run
}

// trainTensor trains c on tp tensor-parallel ranks in this process, over comms (nil: the
// in-memory group), and returns rank 0's view.
func trainTensor(t testing.TB, c model.Config, tp int, seq bool, comms []collective.Communicator, steps, micro, b, seqLen int) tensorRun {
	return trainTensorOverlap(t, c, tp, seq, true, comms, steps, micro, b, seqLen)
}

// trainTensorOverlap is trainTensor with backward's gathers overlapping computation or not.
func trainTensorOverlap(t testing.TB, c model.Config, tp int, seq, overlap bool, comms []collective.Communicator, steps, micro, b, seqLen int) tensorRun {
	t.Helper()
	if comms == nil {
		comms = collective.NewInMemGroup(tp)
	}
	tok, tgt := tensorBatches(c, steps, micro, b, seqLen)
	runs := make([]tensorRun, tp)
	errs := make([]error, tp)
	var wg sync.WaitGroup
	for r := range tp {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[r] = func() error {
				be := cpu.New[float32](cpu.Options{})
				tg := newTensorGroup(r, tp, comms[r], be)
				m, err := model.NewTensorParallel(c, be, tg, seq)
				if err != nil {
					return err
				}
				defer m.Close()
				m.SetTensorOverlap(overlap)
				m.Init(3)
				full, err := model.NewOptimizer(m, model.DefaultOptim())
				if err != nil {
					return err
				}
				defer full.Close()
				opt := fullOptim{full, tg}
				ctx := context.Background()
				ring, _ := comms[r].(*collective.Ring)
				run := &runs[r]
				for s := range steps {
					var sent int64
					if ring != nil {
						sent = ring.SentBytes()
					}
					start, waited := time.Now(), tg.waited
					m.ZeroGrad()
					var loss float64
					for k := range micro {
						l, err := m.Forward(tok[s*micro+k], tgt[s*micro+k], b, seqLen)
						if err != nil {
							return err
						}
						if s == 0 && k == 0 {
							run.kept = m.LastKept().Total
						}
						if err := m.Backward(); err != nil {
							return err
						}
						loss += l / float64(micro)
					}
					if s == 0 {
						if run.firstGrads, err = wholeOf(ctx, comms[r], c, cpu.Data[float32](m.Grads())); err != nil {
							return err
						}
					}
					if _, err := opt.Step(ctx, 1e-2, 1/float64(micro)); err != nil {
						return err
					}
					if ring != nil && s == steps-1 {
						run.sentPerStep = ring.SentBytes() - sent
					}
					if s > 0 {
						run.stepTime += time.Since(start) / time.Duration(steps-1)
						run.waited += (tg.waited - waited) / time.Duration(steps-1)
					}
					run.losses = append(run.losses, loss)
				}
				run.params, err = wholeOf(ctx, comms[r], c, cpu.Data[float32](m.Params()))
				return err
			}()
		}()
	}
	wg.Wait()
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	for r := 1; r < tp; r++ {
		for s := range runs[r].losses {
			if runs[r].losses[s] != runs[0].losses[s] {
				t.Fatalf("rank %d's loss at step %d is %v, rank 0's %v: the ranks must agree bit for bit", r, s+1, runs[r].losses[s], runs[0].losses[s])
			}
		}
	}
	return runs[0]
}

// relDiff returns |a - b| / |b| over whole vectors.
func relDiff(a, b []float32) float64 {
	var d, n float64
	for i := range b {
		d += (float64(a[i]) - float64(b[i])) * (float64(a[i]) - float64(b[i]))
		n += float64(b[i]) * float64(b[i])
	}
	return math.Sqrt(d / n)
}

// worstTensor returns the largest relative difference of one tensor between a and b, and its
// name.
func worstTensor(l model.Layout, a, b []float32) (float64, string) {
	worst, name := 0.0, ""
	for _, s := range l.Specs {
		if d := relDiff(a[s.Offset:s.Offset+s.Size], b[s.Offset:s.Offset+s.Size]); d > worst {
			worst, name = d, s.Name
		}
	}
	return worst, name
}

// TestTensorParallelMatchesOneProcess trains the same network from the same weights on one
// process and on 2 and 4 tensor-parallel ranks, with sequence parallelism off and on and
// under each remat policy, and requires the same per-step losses and final parameters
// within summation-order tolerance (what float32 rounding alone does to one process), and
// first-step gradients as close to the float64
// single-process gradients as the float32 single process's are.
func TestTensorParallelMatchesOneProcess(t *testing.T) {
	const steps, micro, b, seq = 3, 2, 2, 16
	for _, tc := range []struct {
		tp    int
		seq   bool
		remat model.Remat
	}{
		{2, false, model.RematHybrid}, {2, true, model.RematHybrid}, {4, false, model.RematHybrid}, {4, true, model.RematHybrid},
		{2, true, model.RematNone}, {4, true, model.RematFull}, {2, false, model.RematFull},
	} {
		t.Run(fmt.Sprintf("tp%d/seq=%v/%s", tc.tp, tc.seq, tc.remat), func(t *testing.T) {
			c := tensorTestConfig(tc.remat)
			one := trainOne(t, c, cpu.New[float32](cpu.Options{}), steps, micro, b, seq)
			exact := trainOne(t, c, cpu.New[float64](cpu.Options{}), steps, micro, b, seq)
			got := trainTensor(t, c, tc.tp, tc.seq, nil, steps, micro, b, seq)
			for s := range steps {
				if d := math.Abs(got.losses[s]-one.losses[s]) / one.losses[s]; d > 2e-6 {
					t.Errorf("step %d: loss %.9f, one process %.9f (relative %.1e)", s+1, got.losses[s], one.losses[s], d)
				}
			}
			// Summation-order tolerance: how far float32 rounding alone takes one process from
			// the float64 one (AdamW's first steps amplify the rounding of gradients near zero).
			l := model.NewLayout(c)
			tol, _ := worstTensor(l, one.params, exact.params)
			if d, name := worstTensor(l, got.params, one.params); d > max(2*tol, 1e-6) {
				t.Errorf("final parameters: %s differs from one process's by %.2e relative; float32 rounding alone moves one process %.2e from float64", name, d, tol)
			}
			gTP, nTP := worstTensor(l, got.firstGrads, exact.firstGrads)
			gOne, _ := worstTensor(l, one.firstGrads, exact.firstGrads)
			if gTP > max(4*gOne, 1e-6) {
				t.Errorf("first-step gradients vs float64: %s is off by %.2e relative; one float32 process is off by at most %.2e", nTP, gTP, gOne)
			}
			t.Logf("losses %v vs %v; worst gradient vs float64 %.2e (one process %.2e)", got.losses, one.losses, gTP, gOne)
		})
	}
}

// TestShardLayoutRoundTrip checks that the tp ranks' shares tile the whole network: Put of
// every rank's Take of a vector gives the vector back, and the shares' sizes add up.
func TestShardLayoutRoundTrip(t *testing.T) {
	c := tensorTestConfig(model.RematHybrid)
	whole := model.NewLayout(c)
	src := make([]float32, whole.Size)
	for i := range src {
		src[i] = float32(i)
	}
	for _, tp := range []int{1, 2, 4} {
		back := make([]float32, whole.Size)
		shared := 0
		for r := range tp {
			l, err := model.NewShardLayout(c, r, tp)
			if err != nil {
				t.Fatal(err)
			}
			local := make([]float32, l.Size)
			l.Take(local, src)
			l.Put(back, local)
			for i, p := range l.Parts {
				if p.Axis < 0 {
					shared += l.Specs[i].Size
				}
			}
		}
		for i := range src {
			if back[i] != src[i] {
				t.Fatalf("tp %d: element %d is %v after the round trip, want %v", tp, i, back[i], src[i])
			}
		}
		t.Logf("tp %d: whole %d elements, %d in tensors every rank holds", tp, whole.Size, shared/tp)
	}
}

// TestTensorParallelBadInput checks the errors for sizes that cannot split.
func TestTensorParallelBadInput(t *testing.T) {
	c := tensorTestConfig(model.RematHybrid) // 4 heads, ffn 256
	for _, tc := range []struct {
		tp   int
		want string
	}{
		{3, "does not divide heads = 4"},
		{0, "must be >= 1"},
		{8, "does not divide heads = 4"},
	} {
		err := model.CheckTensorParallel(c, tc.tp)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("tp %d: error %v, want one saying %q", tc.tp, err, tc.want)
		}
	}
	c2 := c
	c2.Heads, c2.FFNHidden = 8, 260
	if err := model.CheckTensorParallel(c2, 8); err == nil || !strings.Contains(err.Error(), "does not divide ffn_hidden = 260") {
		t.Errorf("ffn 260 over 8: %v", err)
	}
}

// TestTensorParallelMemoryAndTraffic measures, on rank 0, the activation bytes a forward keeps
// for backward and the bytes a step sends over real TCP rings, and requires them to match
// model.TensorActivationBytes (what herd plan --tp reports) within 5% and
// model.TensorCommBytes (the formula of docs/architecture.md) within 1%.
func TestTensorParallelMemoryAndTraffic(t *testing.T) {
	const steps, micro, b, seq = 2, 2, 2, 32
	for _, remat := range []model.Remat{model.RematHybrid, model.RematNone, model.RematFull} {
		c := tensorTestConfig(remat)
		one := trainOne(t, c, cpu.New[float32](cpu.Options{}), 1, 1, b, seq)
		if want := model.ActivationBytes(c, remat, kernels.Float32, b*seq); one.kept != want {
			t.Errorf("%s, one process: kept %d bytes, planned %d", remat, one.kept, want)
		}
		for _, tp := range []int{2, 4} {
			for _, sp := range []bool{false, true} {
				name := fmt.Sprintf("%s tp %d seq %v", remat, tp, sp)
				got := trainTensor(t, c, tp, sp, collectivetest.NewRingGroup(t, tp), steps, micro, b, seq)
				want := model.TensorActivationBytes(c, remat, kernels.Float32, b*seq, tp, sp)
				if d := math.Abs(float64(got.kept-want)) / float64(want); d > 0.05 {
					t.Errorf("%s: kept %d activation bytes, planned %d (%.1f%% off)", name, got.kept, want, 100*d)
				}
				f := float64(tp-1) / float64(tp)
				wantSent := micro*model.TensorCommBytes(c, remat, kernels.Float32, b*seq, tp, sp) + 2*f*2*4
				if d := math.Abs(float64(got.sentPerStep)-wantSent) / wantSent; d > 0.01 {
					t.Errorf("%s: sent %d bytes per step, the formula says %.0f (%.2f%% off)", name, got.sentPerStep, wantSent, 100*d)
				}
				t.Logf("%s: kept %d bytes (one process %d, %.2fx less), planned %d; sent %d bytes per step, formula %.0f",
					name, got.kept, one.kept, float64(one.kept)/float64(got.kept), want, got.sentPerStep, wantSent)
			}
		}
	}
}
