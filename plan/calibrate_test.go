package plan

import (
	"strings"
	"testing"
)

// measured makes the metrics a run of c would write if each step took step seconds: a first
// step three times as long (start-up), a validation pause of one step at step 10, slight
// jitter around the median.
func measured(c Config, step float64, steps int) []StepSample {
	c = c.withSizes()
	tokensPerGPU := float64(c.BatchTokens) / float64(c.GPUs)
	jitter := []float64{1, 0.99, 1.01, 1, 1.02, 0.98}
	var out []StepSample
	elapsed := 0.0
	for i := 1; i <= steps; i++ {
		d := step * jitter[i%len(jitter)]
		switch i {
		case 1:
			d += 2 * step
		case 10:
			d += step
		}
		elapsed += d
		tps := float64(i) * tokensPerGPU / elapsed
		out = append(out, StepSample{Step: i, ElapsedS: elapsed, TokensPerSPerGPU: tps, MFU: tps * c.sizes.flopsPerToken / c.GPU.PeakFLOPS})
	}
	return out
}

func TestPlanCalibrateReproducesTheRun(t *testing.T) {
	for _, tc := range []struct {
		preset      string
		gpus, micro int
	}{{"125m", 1, 16}, {"1b", 8, 4}} {
		c := config(t, tc.preset, tc.gpus, 0, 1)
		c.BatchTokens, c.MicroBatch = int64(16*tc.gpus*2048), tc.micro
		truth := c
		truth.GPU.GEMMFraction = 0.45
		step := mustEstimate(t, truth).Time.Step
		samples := measured(c, step, 40)
		cal, err := Calibrate(Measurement{Config: c, Steps: samples})
		if err != nil {
			t.Fatal(err)
		}
		if !near(cal.GEMMFraction, 0.45, 1e-6) || cal.PriorFraction != 0.8 || cal.Steps != 39 {
			t.Errorf("%s: fraction %g (prior %g) from %d steps, want 0.45 from 39", tc.preset, cal.GEMMFraction, cal.PriorFraction, cal.Steps)
		}
		want := samples[len(samples)-1].TokensPerSPerGPU
		if got := mustEstimate(t, cal.Apply(c)).TokensPerSPerGPU; !near(got, want, 1e-6) {
			t.Errorf("%s: calibrated model predicts %g tokens/s/GPU, the run measured %g", tc.preset, got, want)
		}
		if !near(cal.StepOverhead, 3.0/40, 0.01) { // the jitter averages out over 40 steps, nearly
			t.Errorf("%s: step overhead %g, want about 3 steps in 40 (start-up and validation)", tc.preset, cal.StepOverhead)
		}
	}
}

func TestPlanCalibrateUsesTheLastStart(t *testing.T) {
	c := config(t, "125m", 1, 0, 1)
	c.BatchTokens, c.MicroBatch = 16*2048, 16
	first := measured(c, 10, 20) // an earlier segment at another speed
	second := measured(c, 1, 20)
	for i := range second {
		second[i].Step += 5 // resumed from the checkpoint of step 5
	}
	cal, err := Calibrate(Measurement{Config: c, Steps: append(first, second...)})
	if err != nil {
		t.Fatal(err)
	}
	if cal.Steps != 19 || !near(cal.MedianStepS, 1, 1e-9) {
		t.Errorf("used %d steps with median %g s, want the last 19 at 1 s", cal.Steps, cal.MedianStepS)
	}
}

func TestPlanCalibrateErrors(t *testing.T) {
	c := config(t, "125m", 1, 0, 1)
	c.BatchTokens, c.MicroBatch = 16*2048, 16
	good := measured(c, 1, 10)
	noMFU := measured(c, 1, 10)
	for i := range noMFU {
		noMFU[i].MFU = 0
	}
	h100 := c
	h100.GPU = Builtin().GPUs["h100"]
	for _, tc := range []struct {
		name string
		m    Measurement
		want string
	}{
		{"too few", Measurement{c, good[:2]}, "--calibrate has 2 training step lines since the run last started; need at least 3"},
		{"no MFU", Measurement{c, noMFU}, "--calibrate the run reports no MFU"},
		{"another GPU", Measurement{h100, good}, "--calibrate the run measured MFU against a peak of 312 TFLOP/s, but --gpu h100 peaks at 989 TFLOP/s"},
		{"faster than peak", Measurement{c, measured(c, 1e-4, 10)}, "is shorter than the model predicts at 100% of peak"},
	} {
		_, err := Calibrate(tc.m)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}
