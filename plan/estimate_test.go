package plan

import (
	"testing"

	"github.com/herd-llm/herd/model"
)

// With no communication and no memory-bound work, a GPU runs the PaLM FLOPs at its
// achievable fraction: tokens/s = peak * fraction / FLOPs per token, and MFU = fraction.
func TestPlanEstimateComputeBound(t *testing.T) {
	c := config(t, "125m", 1, 0, 1)
	c.BatchTokens = 16 * 2048
	c.Assume.ElementwiseTraffic, c.Assume.OptimizerBytes = 0, 0
	r := mustEstimate(t, c)
	flops := model.FLOPsPerToken(c.Model, 2048)
	if want := 312e12 * 0.8 / flops; !near(r.TokensPerSPerGPU, want, 1e-12) {
		t.Errorf("tokens/s %g, want %g", r.TokensPerSPerGPU, want)
	}
	if !near(r.MFU, 0.8, 1e-12) {
		t.Errorf("MFU %g, want 0.8", r.MFU)
	}
	if r.Time.Comm.Exposed != 0 || r.Time.Overhead != 0 {
		t.Errorf("one GPU: comm %g s, overhead %g s", r.Time.Comm.Exposed, r.Time.Overhead)
	}
	if !near(r.GPUHours, 1e12/r.TokensPerSPerGPU/3600, 1e-12) || !near(r.Days, r.GPUHours/24, 1e-12) {
		t.Errorf("GPU-hours %g, days %g", r.GPUHours, r.Days)
	}
	if r.Params != model.NumParams(c.Model) || r.FLOPsPerToken != flops {
		t.Errorf("params %d, FLOPs per token %g", r.Params, r.FLOPsPerToken)
	}
}

// Full remat repeats each block's forward in backward: 2 FLOPs per block parameter and the
// attention forward, 4*L*T*d, per token.
func TestPlanEstimateFullRematRecomputes(t *testing.T) {
	c := config(t, "7b", 1, 0, 1)
	c.BatchTokens = 2048
	hybrid := mustEstimate(t, c)
	c.Model.Remat = model.RematFull
	full := mustEstimate(t, c)
	m := c.Model
	blocks := float64(model.NumParams(m) - 2*m.Vocab*m.Dim - m.Dim)
	extra := (2*blocks + 4*float64(m.Layers*2048*m.Dim)) * 2048 / (312e12 * 0.8)
	if !near(full.Time.Backward-hybrid.Time.Backward, extra, 1e-9) || full.Time.Forward != hybrid.Time.Forward {
		t.Errorf("backward %g -> %g s, want + %g s", hybrid.Time.Backward, full.Time.Backward, extra)
	}
}

// Left to Estimate, the micro-batch is the largest divisor of a rank's sequences that fits.
func TestPlanEstimateChoosesMicroBatch(t *testing.T) {
	c := config(t, "13b", 256, 3, 1)
	r := mustEstimate(t, c)
	per := c.SequencesPerRank()
	if !r.Fits() || per%r.MicroBatch != 0 || r.MicroBatches*r.MicroBatch != per {
		t.Fatalf("micro-batch %d x %d of %d sequences, fits %v", r.MicroBatch, r.MicroBatches, per, r.Fits())
	}
	c = c.withSizes()
	for mb := r.MicroBatch + 1; mb <= per; mb++ {
		if per%mb == 0 && memoryOf(c, mb).Fits() {
			t.Errorf("micro-batch %d also fits", mb)
		}
	}
	if r.MicroBatch == per {
		t.Errorf("the test needs a config where not every sequence fits at once")
	}
}

// More GPUs for the same batch: per-GPU compute falls, communication does not.
func TestPlanEstimateScaling(t *testing.T) {
	prev := 0.0
	for _, gpus := range []int{256, 512, 1024, 2048} {
		r := mustEstimate(t, config(t, "7b", gpus, 3, 1))
		if prev > 0 && r.TokensPerSPerGPU >= prev {
			t.Errorf("%d GPUs: %g tokens/s/GPU, not below %g at half as many", gpus, r.TokensPerSPerGPU, prev)
		}
		prev = r.TokensPerSPerGPU
	}
}
