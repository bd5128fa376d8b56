package plan

import (
	"math"
	"testing"
)

// The planner reproduces the LLaMA paper's training cost for all four models within 20%, under
// one set of assumptions: the paper's facts, the built-in hardware table, the planner's
// default assumptions, the same 2048 GPUs for every model and the fastest layout that fits.
// A change to the memory, time or communication model that moves any row by more than the
// margin left fails here.
func TestPlanLLaMATable(t *testing.T) {
	s := DefaultLLaMASetup()
	if s.Assume != DefaultAssumptions() {
		t.Fatalf("the LLaMA setup has its own assumptions: %+v", s.Assume)
	}
	rows, err := LLaMATable(Builtin(), s)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 4 {
		t.Fatalf("%d rows", len(rows))
	}
	paper := map[string]struct{ gpuHours, tokensPerS float64 }{
		"7b": {82432, 3370}, "13b": {135168, 2055}, "33b": {530432, 733}, "65b": {1022362, 380},
	}
	for _, r := range rows {
		p := paper[r.Paper.Preset]
		if r.Paper.GPUHours != p.gpuHours || math.Abs(r.Paper.TokensPerSPerGPU()-p.tokensPerS) > 1 {
			t.Errorf("%s: paper row %+v", r.Paper.Preset, r.Paper)
		}
		pred := r.Result
		t.Logf("%s: %.2fB parameters on %d GPUs: %.0f GPU-hours (paper %.0f, ratio %.2f), %.0f tokens/s/GPU (paper %.0f), MFU %.1f%%, ZeRO-%d tp %d micro-batch %d",
			r.Paper.Preset, float64(pred.Params)/1e9, pred.Config.GPUs, pred.GPUHours, p.gpuHours, r.GPUHoursRatio(), pred.TokensPerSPerGPU, p.tokensPerS,
			100*pred.MFU, pred.Config.ZeRO, pred.Config.TP, pred.MicroBatch)
		if math.Abs(r.GPUHoursRatio()-1) > 0.2 || math.Abs(pred.TokensPerSPerGPU/p.tokensPerS-1) > 0.2 {
			t.Errorf("%s: predicted %.0f GPU-hours, %.0f tokens/s/GPU; paper %.0f, %.0f: more than 20%% off",
				r.Paper.Preset, pred.GPUHours, pred.TokensPerSPerGPU, p.gpuHours, p.tokensPerS)
		}
		if !pred.Fits() || pred.Config.GPUs != 2048 || pred.Config.Seq != 2048 || pred.Config.BatchTokens != 4<<20 {
			t.Errorf("%s: the prediction is not for the paper's run: %+v", r.Paper.Preset, pred.Config)
		}
	}
}
