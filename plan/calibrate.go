package plan

import (
	"fmt"
	"math"
	"slices"
)

// Measurement is a measured run: the config it ran with, on the GPU being planned, and the
// metrics lines of its training steps in order.
type Measurement struct {
	Config Config
	Steps  []StepSample
}

// StepSample is what one metrics.jsonl line of a training step says (worker.StepMetrics).
type StepSample struct {
	Step int
	// ElapsedS is the time since the run (or its resumption) began; TokensPerSPerGPU the
	// tokens per second per device over that time.
	ElapsedS         float64
	TokensPerSPerGPU float64
	// CommWaitS is how long the step waited for its gradient sums after backward.
	CommWaitS float64
	// MFU is against the device's peak, 0 when the backend did not know it.
	MFU float64
}

// Calibration is what Calibrate fitted, and the evidence it fitted it on.
type Calibration struct {
	PriorFraction float64 `json:"prior_gemm_fraction"`
	GEMMFraction  float64 `json:"gemm_fraction"`
	StepOverhead  float64 `json:"step_overhead"`
	// Steps is the number of step durations used (the last segment of the run, without its
	// first step, which includes start-up).
	Steps int `json:"steps"`
	// MedianStepS and MeanStepS are measured; MeanStepS includes validation and save stalls,
	// as the run's tokens/s does.
	MedianStepS float64 `json:"median_step_s"`
	MeanStepS   float64 `json:"mean_step_s"`
	// MeasuredCommWaitS (median) and ModelCommS, the model's exposed communication for the
	// run at the fitted fraction, side by side: a large gap means the fraction absorbed an
	// error of the communication model.
	MeasuredCommWaitS float64 `json:"measured_comm_wait_s"`
	ModelCommS        float64 `json:"model_exposed_comm_s"`
	// TokensPerSPerGPU is the run's measured figure, which the calibrated model reproduces.
	TokensPerSPerGPU float64 `json:"tokens_per_s_per_gpu"`
	MFU              float64 `json:"mfu"`
}

// Apply returns c with the calibrated GEMM fraction and step overhead.
func (cal Calibration) Apply(c Config) Config {
	c.GPU.GEMMFraction = cal.GEMMFraction
	c.Assume.StepOverhead = cal.StepOverhead
	return c
}

// Calibrate fits the GPU's achievable fraction of peak so that the model predicts the run's
// median step, and Assumptions.StepOverhead so that it predicts the run's mean step (and so
// its tokens/s/GPU). The run must have reported MFU against the planned GPU's peak, which
// shows it ran on that kind of GPU. Errors name the --calibrate flag.
func Calibrate(m Measurement) (Calibration, error) {
	c, err := prepare(m.Config)
	if err != nil {
		return Calibration{}, fmt.Errorf("--calibrate: the run's config: %w", err)
	}
	seg := lastSegment(m.Steps)
	if len(seg) < 3 {
		return Calibration{}, flagErr("--calibrate", "has %d training step lines since the run last started; need at least 3", len(seg))
	}
	last := seg[len(seg)-1]
	if err := checkPeak(c, last); err != nil {
		return Calibration{}, err
	}
	cal := Calibration{PriorFraction: c.GPU.GEMMFraction, Steps: len(seg) - 1, TokensPerSPerGPU: last.TokensPerSPerGPU, MFU: last.MFU}
	cal.MedianStepS, cal.MeasuredCommWaitS = medianStep(seg)
	cal.MeanStepS = float64(c.BatchTokens) / float64(c.GPUs) / last.TokensPerSPerGPU
	c.Assume.StepOverhead = 0
	if cal.GEMMFraction, err = fitFraction(c, cal.MedianStepS); err != nil {
		return Calibration{}, err
	}
	cal.StepOverhead = max(0, cal.MeanStepS/cal.MedianStepS-1)
	c.GPU.GEMMFraction = cal.GEMMFraction
	cal.ModelCommS = resolve(c).Time.Comm.Exposed
	return cal, nil
}

// lastSegment returns the samples after the run's last (re)start, where elapsed time goes back.
func lastSegment(s []StepSample) []StepSample {
	start := 0
	for i := 1; i < len(s); i++ {
		if s[i].ElapsedS < s[i-1].ElapsedS || s[i].Step <= s[i-1].Step {
			start = i
		}
	}
	return s[start:]
}

// checkPeak recovers the peak the run measured MFU against and compares it with the GPU's.
func checkPeak(c Config, last StepSample) error {
	if !(last.MFU > 0) || !(last.TokensPerSPerGPU > 0) {
		return flagErr("--calibrate", "the run reports no MFU, so it did not run on a GPU whose peak herd knows; calibrate from a GPU run")
	}
	peak := last.TokensPerSPerGPU * c.sizes.flopsPerToken / last.MFU
	if math.Abs(peak/c.GPU.PeakFLOPS-1) > 0.02 {
		return flagErr("--calibrate", "the run measured MFU against a peak of %.0f TFLOP/s, but --gpu %s peaks at %.0f TFLOP/s: it ran on another GPU",
			peak/1e12, c.GPU.Name, c.GPU.PeakFLOPS/1e12)
	}
	return nil
}

// medianStep returns the median step duration and comm wait, leaving out the first sample,
// whose elapsed time includes start-up.
func medianStep(seg []StepSample) (step, comm float64) {
	var d, w []float64
	for i := 1; i < len(seg); i++ {
		n := float64(seg[i].Step - seg[i-1].Step)
		d = append(d, (seg[i].ElapsedS-seg[i-1].ElapsedS)/n)
		w = append(w, seg[i].CommWaitS)
	}
	return median(d), median(w)
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// fitFraction finds by bisection the fraction of peak at which c's predicted step (without
// stall) equals step. The predicted step falls as the fraction grows.
func fitFraction(c Config, step float64) (float64, error) {
	at := func(f float64) float64 {
		c.GPU.GEMMFraction = f
		return resolve(c).Time.Step
	}
	if fastest := at(1); fastest > step {
		return 0, flagErr("--calibrate", "the run's median step, %.4g s, is shorter than the model predicts at 100%% of peak (%.4g s): its communication or overhead model does not fit this run", step, fastest)
	}
	lo, hi := 1e-6, 1.0
	for range 100 {
		mid := (lo + hi) / 2
		if at(mid) > step {
			lo = mid
		} else {
			hi = mid
		}
	}
	return (lo + hi) / 2, nil
}
