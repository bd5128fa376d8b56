package plan

// Result is the prediction for one Config.
type Result struct {
	Config Config `json:"config"`
	// MicroBatch is the sequences per forward and backward pass (chosen when the config left
	// it 0); MicroBatches is how many of them a rank runs per step.
	MicroBatch   int `json:"micro_batch"`
	MicroBatches int `json:"micro_batches"`
	// Params is the model's parameter count; FLOPsPerToken the PaLM count,
	// 6*(N - N_embedding) + 12*L*T*d.
	Params        int      `json:"params"`
	FLOPsPerToken float64  `json:"flops_per_token"`
	Memory        Memory   `json:"memory"`
	Time          StepTime `json:"time"`
	// TokensPerSPerGPU and MFU (against the GPU's dense bf16 peak) of the predicted step.
	TokensPerSPerGPU float64 `json:"tokens_per_s_per_gpu"`
	MFU              float64 `json:"mfu"`
	// GPUHours and Days to train on Config.Tokens.
	GPUHours float64 `json:"gpu_hours"`
	Days     float64 `json:"days"`
}

// Fits reports whether the plan fits in the GPU's memory.
func (r Result) Fits() bool { return r.Memory.Fits() }

// Estimate validates c and predicts its memory, step time and cost. With c.MicroBatch = 0 it
// uses the largest micro-batch that divides a rank's sequences and fits (the fastest in this
// model: fewer, larger passes repeat no collectives and leave longer compute to hide them
// behind), or 1 when none fits.
func Estimate(c Config) (Result, error) {
	c, err := prepare(c)
	if err != nil {
		return Result{}, err
	}
	return resolve(c), nil
}

// resolve estimates a prepared config, choosing the micro-batch when c leaves it 0.
func resolve(c Config) Result {
	mb := c.MicroBatch
	if mb == 0 {
		mb = largestFitting(c)
	}
	return estimate(c, mb)
}

// largestFitting returns the largest divisor of a rank's sequences whose memory fits, or 1.
func largestFitting(c Config) int {
	per := c.SequencesPerRank()
	for mb := per; mb > 1; mb-- {
		if per%mb == 0 && memoryOf(c, mb).Fits() {
			return mb
		}
	}
	return 1
}

// estimate predicts a validated config at micro-batch mb.
func estimate(c Config, mb int) Result {
	r := Result{Config: c, MicroBatch: mb, MicroBatches: c.SequencesPerRank() / mb,
		Params: int(c.sizes.params), FLOPsPerToken: c.sizes.flopsPerToken}
	r.Memory = memoryOf(c, mb)
	r.Time = stepTime(c, mb)
	tokensPerGPU := float64(c.BatchTokens) / float64(c.GPUs)
	r.TokensPerSPerGPU = tokensPerGPU / r.Time.Step
	r.MFU = r.TokensPerSPerGPU * r.FLOPsPerToken / c.GPU.PeakFLOPS
	r.GPUHours = c.Tokens / r.TokensPerSPerGPU / 3600
	r.Days = r.GPUHours / float64(c.GPUs) / 24
	return r
}
