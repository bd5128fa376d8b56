package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/model"
	"github.com/herd-llm/herd/worker"
)

func runHerd(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return out.String(), errb.String(), code
}

func TestPlanCapacity(t *testing.T) {
	out, stderr, code := runHerd(t, "plan", "--preset", "65b", "--gpus", "2048", "--gpu", "a100-80g", "--zero", "3", "--tp", "8",
		"--remat", "hybrid", "--batch-tokens", "4M", "--tokens", "1.4T", "--fabric", "ib-4x200")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		"plan: 65b (65.29B parameters) on 2048 x a100-80g, 8 per node, ib-4x200 between nodes",
		"layout: data parallel 256 x tensor parallel 8, ZeRO-3, remat hybrid",
		"batch: 4,194,304 tokens = 2048 sequences of 2048 per step; 8 per data-parallel rank",
		"memory per GPU (predicted)", "parameters", "gradients", "optimizer state", "activations", "comm buffers", "reserve", "of 80.0 GiB HBM: fits",
		"step time (predicted)", "compute", "communication", "overhead",
		"tokens/s/GPU", "MFU", "1.4T tokens", "GPU-hours", "days on 2048 GPUs",
		"note: herd's runtime runs tensor parallelism on the cpu backend only so far (herd train --tp): on GPUs --tp is modelled only",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestPlanCapacityJSON(t *testing.T) {
	out, stderr, code := runHerd(t, "plan", "--preset", "65b", "--gpus", "64", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var rep struct {
		Plan struct {
			Memory  struct{ Total, HBM int64 }
			TokensS float64 `json:"tokens_per_s_per_gpu"`
		} `json:"plan"`
		Fits        bool `json:"fits"`
		Suggestions []struct {
			Change string `json:"change"`
		} `json:"suggestions"`
		Notes []string `json:"notes"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if rep.Fits || rep.Plan.Memory.Total <= rep.Plan.Memory.HBM || len(rep.Suggestions) == 0 {
		t.Errorf("65b on 64 GPUs without ZeRO: fits %v, %d of %d bytes, suggestions %v", rep.Fits, rep.Plan.Memory.Total, rep.Plan.Memory.HBM, rep.Suggestions)
	}
	text, _, _ := runHerd(t, "plan", "--preset", "65b", "--gpus", "64")
	if !strings.Contains(text, "DOES NOT FIT") || !strings.Contains(text, "does not fit; each of these would:") || !strings.Contains(text, rep.Suggestions[0].Change) {
		t.Errorf("text output does not say what would fit:\n%s", text)
	}
}

func TestPlanCapacityErrors(t *testing.T) {
	dir := t.TempDir()
	badHW := filepath.Join(dir, "hw.yaml")
	os.WriteFile(badHW, []byte("gpus:\n  a100-80g:\n    gemm_fraction: 2\n"), 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--zero", "4"}, "--zero = 4: unknown ZeRO stage (allowed: 0 plain data parallelism"},
		{[]string{"--gpu", "v100"}, `--gpu "v100" is not in the hardware table (known: a100-40g, a100-80g, h100, h200)`},
		{[]string{"--fabric", "eth"}, `--fabric "eth" is not in the hardware table (known: ib-4x200, ib-8x200, ib-8x400)`},
		{[]string{"--tokens", "1.4Q"}, `--tokens "1.4Q": want a positive number with an optional K, M, G or T suffix`},
		{[]string{"--batch-tokens", "4X"}, `--batch-tokens "4X": want a positive number`},
		{[]string{"--gpus", "3000"}, "--batch-tokens = 4194304 is 2048 sequences of 2048, which do not split evenly across 3000 data-parallel ranks"},
		{[]string{"--tp", "3"}, "--tp = 3 does not divide --gpus = 2048"},
		{[]string{"--micro-batch", "3"}, "--micro-batch = 3 must divide the 1 sequences"},
		{[]string{"--batch", "4"}, "--batch applies to the per-replica table; with --gpus the micro-batch is --micro-batch"},
		{[]string{"--hardware", badHW}, "line 3: gpus.a100-80g.gemm_fraction = 2, must be in (0, 1]"},
		{[]string{"--calibrate", filepath.Join(dir, "nothing", "metrics.jsonl")}, "--calibrate: the run's config"},
	} {
		args := append([]string{"plan", "--preset", "65b", "--gpus", "2048"}, tc.args...)
		_, stderr, code := runHerd(t, args...)
		if code == 0 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q, want %q", tc.args, code, stderr, tc.want)
		}
	}
	// An empty ZeRO range: more data-parallel ranks than the tiny model has parameters.
	_, stderr, _ := runHerd(t, "plan", "--preset", "tiny", "--gpus", "200000", "--zero", "1", "--seq", "1", "--batch-tokens", "200000")
	if !strings.Contains(stderr, "--gpus = 200000: ZeRO-1 splits the 196928 parameters") || !strings.Contains(stderr, "empty range") {
		t.Errorf("empty range: %q", stderr)
	}
	for _, flag := range []string{"--zero", "--gpu", "--tokens", "--calibrate", "--hardware"} {
		_, stderr, code := runHerd(t, "plan", flag, "1")
		if code == 0 || !strings.Contains(stderr, flag+" needs --gpus") {
			t.Errorf("%s without --gpus: exit %d, %q", flag, code, stderr)
		}
	}
}

// The per-replica table with --tp reports one tensor-parallel rank's share from the model's
// own tables (which worker's TestTensorParallelMemoryAndTraffic holds against measured bytes).
func TestPlanTensorParallel(t *testing.T) {
	for _, sp := range []bool{true, false} {
		out, stderr, code := runHerd(t, "plan", "--preset", "125m", "--seq", "2048", "--batch", "2", "--tp", "4", fmt.Sprintf("--sequence-parallel=%v", sp), "--json")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		var r planReport
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatal(err)
		}
		c, _ := model.Preset("125m")
		if r.TP == nil || r.TP.Size != 4 || r.TP.SequenceParallel != sp ||
			r.TP.ActivationBytes != model.TensorActivationBytes(c, c.Remat, kernels.Float32, 4096, 4, sp) ||
			r.TP.CommBytesPerMicro != model.TensorCommBytes(c, c.Remat, kernels.Float32, 4096, 4, sp) {
			t.Errorf("sequence parallel %v: %+v", sp, r.TP)
		}
		if sp && (r.ActivationBytes/r.TP.ActivationBytes < 3 || r.ActivationBytes/r.TP.ActivationBytes > 4) {
			t.Errorf("tp 4 with sequence parallelism keeps %d of one process's %d activation bytes; want about a quarter", r.TP.ActivationBytes, r.ActivationBytes)
		}
	}
}

func TestPlanLLaMATable(t *testing.T) {
	out, stderr, code := runHerd(t, "plan", "--llama-table")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"82,432", "135,168", "530,432", "1,022,362", "3,370", "2,055", "733", "380",
		"one set of assumptions for all four models", "the same 2048 GPUs for every model", "a prediction, not a measurement"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if _, stderr, code := runHerd(t, "plan", "--llama-table", "--gpus", "8"); code == 0 || !strings.Contains(stderr, "--gpus does not apply to --llama-table") {
		t.Errorf("--llama-table --gpus: exit %d, %q", code, stderr)
	}
}

// writeRun writes run.json and a metrics.jsonl of steps of stepS seconds for the 125m preset
// on one GPU, with a validation line between steps, as a GPU run writes them.
func writeRun(t *testing.T, stepS, peak float64) string {
	t.Helper()
	dir := t.TempDir()
	m, _ := model.Preset("125m")
	rc := worker.RunConfig{Model: m, Seq: 2048, Batch: 16, MicroBatch: 16, World: 1}
	raw, _ := json.Marshal(rc)
	os.WriteFile(filepath.Join(dir, worker.RunConfigName), raw, 0o644)
	var lines bytes.Buffer
	enc := json.NewEncoder(&lines)
	elapsed, tokens := 0.0, int64(16*2048)
	for step := 1; step <= 30; step++ {
		elapsed += stepS * (1 + float64(step%3-1)*0.01)
		if step == 1 {
			elapsed += 2
		}
		sm := worker.StepMetrics{Step: step, Tokens: int64(step) * tokens, ElapsedS: elapsed}
		sm.TokensPerS = float64(sm.Tokens) / elapsed
		sm.TokensPerSPerDevice = sm.TokensPerS
		if peak > 0 {
			sm.MFU = sm.TokensPerSPerDevice * model.FLOPsPerToken(m, 2048) / peak
		}
		enc.Encode(sm)
		if step == 15 {
			enc.Encode(worker.EvalMetrics{Step: step, Val: worker.EvalResult{Loss: 3}})
		}
	}
	os.WriteFile(filepath.Join(dir, worker.MetricsName), lines.Bytes(), 0o644)
	return dir
}

func TestPlanCalibrate(t *testing.T) {
	dir := writeRun(t, 0.25, 312e12)
	args := []string{"plan", "--preset", "125m", "--gpus", "1", "--batch-tokens", "32K", "--micro-batch", "16", "--calibrate", filepath.Join(dir, "metrics.jsonl")}
	out, stderr, code := runHerd(t, append(args, "--json")...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var rep struct {
		Plan struct {
			TokensS float64 `json:"tokens_per_s_per_gpu"`
		} `json:"plan"`
		Calibration struct {
			Prior    float64 `json:"prior_gemm_fraction"`
			Fraction float64 `json:"gemm_fraction"`
			TokensS  float64 `json:"tokens_per_s_per_gpu"`
		} `json:"calibration"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if math.Abs(rep.Plan.TokensS/rep.Calibration.TokensS-1) > 1e-6 {
		t.Errorf("the calibrated plan of the run's own config predicts %g tokens/s/GPU, the run measured %g", rep.Plan.TokensS, rep.Calibration.TokensS)
	}
	if rep.Calibration.Prior != 0.8 || !(rep.Calibration.Fraction > 0.1 && rep.Calibration.Fraction < 0.8) {
		t.Errorf("fraction %g -> %g", rep.Calibration.Prior, rep.Calibration.Fraction)
	}
	text, _, _ := runHerd(t, args...)
	for _, want := range []string{"calibrated on " + filepath.Join(dir, "metrics.jsonl") + ": d=768, 12 layers on 1 GPU, 16 x 2048 tokens per step", "measured: 103,478 tokens/s/GPU and 29.3% MFU since it (re)started, 29 step times", "GEMM fraction", "0.800 -> ", "step overhead", "comm wait"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	cpu := writeRun(t, 0.25, 0)
	if _, stderr, code := runHerd(t, "plan", "--preset", "125m", "--gpus", "1", "--calibrate", cpu); code == 0 || !strings.Contains(stderr, "--calibrate the run reports no MFU") {
		t.Errorf("a run without MFU: exit %d, %q", code, stderr)
	}
}
