package worker

import (
	"context"
	"fmt"
	"io"
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
	"github.com/herd-llm/herd/plan"
)

// shardRun is a data-parallel group of in-process ranks, each on its own CPU backend, joined
// by a TCP ring on 127.0.0.1, training on random tokens: one sequence per micro-batch.
type shardRun struct {
	model             model.Config
	stage, world      int
	micro, seq, steps int  // micro-batches per rank and step, tokens per sequence, steps
	noPrefetch        bool // stage 3: gather each unit only when needed
}

// shardFigures is what one rank measured: its buffers after the run, the backend's bytes
// after the run and at most during it, and per step after the first (the first allocates
// what the others reuse) the bytes it sent on the ring, its wait for gathered parameters and
// the step's time.
type shardFigures struct {
	mem        zeroMemory
	live, peak int64
	sent       int64
	gatherWait time.Duration
	step       time.Duration
}

// run trains r.steps (at least 2) steps with the Trainer's own passes and optimizer and
// returns each rank's figures.
func (r shardRun) run(tb testing.TB) []shardFigures {
	tb.Helper()
	var rings []*collective.Ring
	if r.world > 1 {
		rings = collectivetest.StartRing(tb, r.world, nil)
	}
	out := make([]shardFigures, r.world)
	errs := make([]error, r.world)
	var wg sync.WaitGroup
	for rank := range r.world {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var ring *collective.Ring
			if rings != nil {
				ring = rings[rank]
			}
			out[rank], errs[rank] = r.rank(ring, rank)
		}()
	}
	wg.Wait()
	for rank, err := range errs {
		if err != nil {
			tb.Fatalf("rank %d: %v", rank, err)
		}
	}
	return out
}

func (r shardRun) rank(ring *collective.Ring, rank int) (shardFigures, error) {
	var fig shardFigures
	cfg := TrainConfig{Model: r.model, Optim: model.DefaultOptim(), Seq: r.seq, Batch: r.world * r.micro, MicroBatch: 1,
		Steps: r.steps, Zero: r.stage, Seed: 7}
	if ring != nil {
		cfg.Comm = ring
	}
	be := cpu.New[float32](cpu.Options{})
	t := &Trainer{cfg: cfg, be: be, out: io.Discard, log: io.Discard, bar: newProgress(io.Discard, 0, r.steps)}
	if err := t.buildState(); err != nil {
		return fig, err
	}
	defer t.model.Close()
	if t.zero != nil {
		defer t.zero.Close()
		t.zero.noPrefetch = r.noPrefetch
	}
	if err := t.setComm(cfg.Comm, nil); err != nil {
		return fig, err
	}
	t.initFresh()
	rng := rand.New(rand.NewPCG(uint64(rank), 3))
	ctx := context.Background()
	be.ResetPeak()
	for s := range r.steps {
		for i := range t.inputs {
			t.inputs[i], t.targets[i] = int32(rng.IntN(r.model.Vocab)), int32(rng.IntN(r.model.Vocab))
		}
		var sent int64
		if ring != nil {
			sent = ring.SentBytes()
		}
		var wait time.Duration
		if t.zero != nil {
			wait = t.zero.gatherWait
		}
		start := time.Now()
		if _, err := t.passes(ctx, r.micro); err != nil {
			return fig, fmt.Errorf("step %d: %w", s+1, err)
		}
		if _, err := t.opt.Step(ctx, 1e-3, 1/float64(r.micro*r.world)); err != nil {
			return fig, fmt.Errorf("step %d: %w", s+1, err)
		}
		if s == 0 {
			continue // the first step allocates what the others reuse
		}
		fig.step += time.Since(start)
		if ring != nil {
			fig.sent += ring.SentBytes() - sent
		}
		if t.zero != nil {
			fig.gatherWait += t.zero.gatherWait - wait
		}
	}
	if n := r.steps - 1; n > 0 {
		fig.step /= time.Duration(n)
		fig.sent /= int64(n)
		fig.gatherWait /= time.Duration(n)
	}
	fig.live, fig.peak = be.LiveBytes(), be.PeakBytes()
	if t.zero != nil {
		fig.mem = t.zero.held()
	} else {
		size := func(b kernels.Buffer) int64 { return 4 * int64(b.Len()) }
		fig.mem = zeroMemory{Params: size(t.model.Params()), Grads: size(t.model.Grads()), Optimizer: size(t.sb.m) + size(t.sb.v)}
	}
	return fig, nil
}

// planned returns what the planner predicts for the run: the CPU backend computes in float32
// on the masters themselves and gathers float32.
func (r shardRun) planned(tb testing.TB) plan.Result {
	tb.Helper()
	hw := plan.Builtin()
	a := plan.DefaultAssumptions()
	a.GatherBytes = 4
	res, err := plan.Estimate(plan.Config{Model: r.model, GPUs: r.world, GPU: hw.GPUs["h100"], Fabric: hw.Fabrics["ib-8x200"],
		ZeRO: r.stage, TP: 1, Seq: r.seq, BatchTokens: int64(r.world * r.micro * r.seq), MicroBatch: 1, Tokens: 1e9,
		Assume: a, Compute: kernels.Float32})
	if err != nil {
		tb.Fatal(err)
	}
	return res
}

// mean returns the mean over ranks of f.
func mean[T int64 | time.Duration](figs []shardFigures, f func(shardFigures) T) float64 {
	var sum float64
	for _, g := range figs {
		sum += float64(f(g))
	}
	return sum / float64(len(figs))
}

// Each stage holds what the planner says, rank by rank: the parameters, gradients and
// optimizer state it shards fall as 1/W and the rest stays whole; and each step puts on the
// ring the bytes the planner counts (ZeRO-3 about 1.5 times plain data parallelism). The
// backend holds nothing beyond these and the passes' activations: a stage that kept a whole
// copy somewhere would show in its LiveBytes.
func TestZeroShardsMatchPlan(t *testing.T) {
	c := model.Default()
	const seq, micro = 16, 2
	base := shardRun{model: c, stage: 0, world: 1, micro: micro, seq: seq, steps: 2}.run(t)[0]
	for _, w := range []int{2, 4} {
		var plainSent float64
		for stage := 0; stage <= 3; stage++ {
			r := shardRun{model: c, stage: stage, world: w, micro: micro, seq: seq, steps: 2}
			figs, want := r.run(t), r.planned(t).Memory
			wantSent := r.planned(t).Time.Comm.Bytes
			name := fmt.Sprintf("zero %d on %d ranks", stage, w)
			for rank, f := range figs {
				for _, k := range []struct {
					kind      string
					got, want int64
				}{{"parameters", f.mem.Params, want.Params}, {"gradients", f.mem.Grads, want.Grads}, {"optimizer state", f.mem.Optimizer, want.Optimizer},
					{"communication buffers", f.mem.Comm, want.CommBuffers}} {
					if math.Abs(float64(k.got-k.want)) > 0.01*float64(k.want) {
						t.Errorf("%s, rank %d: %s %d bytes, planned %d", name, rank, k.kind, k.got, k.want)
					}
				}
				// Beyond the state and the communication buffers the backend holds what the
				// whole-state run holds beyond its state: the activations' workspace.
				other := f.live - f.mem.Params - f.mem.Grads - f.mem.Optimizer - f.mem.Comm
				baseOther := base.live - base.mem.Params - base.mem.Grads - base.mem.Optimizer
				if other != baseOther {
					t.Errorf("%s, rank %d: %d bytes live beyond the state and %d of communication buffers; one process holds %d",
						name, rank, other, f.mem.Comm, baseOther)
				}
			}
			sent := mean(figs, func(f shardFigures) int64 { return f.sent })
			if stage == 0 {
				plainSent = sent
			}
			// The loss and the gradient norm add a few elements to the plan's bulk.
			if math.Abs(sent-wantSent) > 0.001*wantSent+64 {
				t.Errorf("%s: %.0f bytes sent per rank and step, planned %.0f", name, sent, wantSent)
			}
			t.Logf("%s: parameters %d, gradients %d, optimizer %d, communication buffers %d bytes (planned %d); peak %d; sent %.0f bytes (%.2fx plain; planned %.0f)",
				name, figs[0].mem.Params, figs[0].mem.Grads, figs[0].mem.Optimizer, figs[0].mem.Comm, want.CommBuffers, figs[0].peak, sent, sent/plainSent, wantSent)
		}
	}
}

// BenchmarkZeroShards measures, for the 125m preset on 1, 2 and 4 in-process ranks over a
// loopback TCP ring, each stage's bytes per rank by kind next to the planner's prediction,
// the bytes each rank sends per step, and ZeRO-3's wait for its gathers with and without
// prefetch. It runs once whatever b.N; the table is the result.
//
//	go test ./worker -run '^$' -bench ZeroShards -benchtime 1x
func BenchmarkZeroShards(b *testing.B) {
	c, err := model.Preset("125m")
	if err != nil {
		b.Fatal(err)
	}
	const seq, micro = 64, 1
	mib := func(n float64) string { return fmt.Sprintf("%.0f", n/(1<<20)) }
	var tab strings.Builder
	fmt.Fprintf(&tab, "\n| W | ZeRO | params MiB (plan) | grads MiB (plan) | optimizer MiB (plan) | state MiB (plan) | comm buffers MiB (plan) | peak MiB | sent MiB/step (plan) | vs plain |\n")
	fmt.Fprintf(&tab, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	var waits strings.Builder
	for _, w := range []int{1, 2, 4} {
		var plain float64
		for stage := 0; stage <= 3; stage++ {
			if w == 1 && stage > 0 {
				break
			}
			r := shardRun{model: c, stage: stage, world: w, micro: micro, seq: seq, steps: 2}
			figs, p := r.run(b), r.planned(b)
			f, want := figs[0], p.Memory
			sent := mean(figs, func(f shardFigures) int64 { return f.sent })
			if stage == 0 {
				plain = sent
			}
			ratio := "-"
			if plain > 0 {
				ratio = fmt.Sprintf("%.2f", sent/plain)
			}
			state, wantState := f.mem.Params+f.mem.Grads+f.mem.Optimizer, want.Params+want.Grads+want.Optimizer
			fmt.Fprintf(&tab, "| %d | %d | %s (%s) | %s (%s) | %s (%s) | %s (%s, %+.1f%%) | %s (%s) | %s | %s (%s) | %s |\n", w, stage,
				mib(float64(f.mem.Params)), mib(float64(want.Params)), mib(float64(f.mem.Grads)), mib(float64(want.Grads)),
				mib(float64(f.mem.Optimizer)), mib(float64(want.Optimizer)), mib(float64(state)), mib(float64(wantState)),
				100*(float64(state)/float64(wantState)-1), mib(float64(f.mem.Comm)), mib(float64(want.CommBuffers)),
				mib(float64(f.peak)), mib(sent), mib(p.Time.Comm.Bytes), ratio)
			if stage == 3 {
				for _, off := range []bool{false, true} {
					r.noPrefetch, r.steps = off, 4
					figs := r.run(b)
					fmt.Fprintf(&waits, "W=%d ZeRO-3 prefetch %-5v: gather wait %d ms of a %d ms step (mean over ranks)\n", w, !off,
						time.Duration(mean(figs, func(f shardFigures) time.Duration { return f.gatherWait })).Milliseconds(),
						time.Duration(mean(figs, func(f shardFigures) time.Duration { return f.step })).Milliseconds())
				}
			}
		}
	}
	fmt.Println(tab.String() + "\n" + waits.String())
}
