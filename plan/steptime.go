package plan

import "github.com/herd-llm/herd/model"

// StepTime is the predicted time of one optimizer step on one GPU, in seconds.
// Step = Compute + Comm.Exposed + Overhead.
type StepTime struct {
	// Forward and Backward are one micro-batch's passes at the achievable fraction of peak;
	// Backward includes the recomputation of the remat policy.
	Forward  float64 `json:"forward_s"`
	Backward float64 `json:"backward_s"`
	// Compute is all micro-batches of the step.
	Compute float64 `json:"compute_s"`
	Comm    Comm    `json:"comm"`
	// Optimizer and Elementwise are memory-bound work at the assumed fraction of HBM
	// bandwidth; Stall is Assumptions.StepOverhead of the rest.
	Optimizer   float64 `json:"optimizer_s"`
	Elementwise float64 `json:"elementwise_s"`
	Stall       float64 `json:"stall_s"`
	Overhead    float64 `json:"overhead_s"`
	Step        float64 `json:"step_s"`
}

// stepTime predicts the step of c at micro-batch mb.
func stepTime(c Config, mb int) StepTime {
	var t StepTime
	k := float64(c.SequencesPerRank() / mb)
	t.Forward, t.Backward = passTimes(c, mb)
	t.Compute = k * (t.Forward + t.Backward)
	t.Comm = commTime(c, mb, t.Forward, t.Backward)
	t.Optimizer, t.Elementwise = memoryBoundTimes(c, mb)
	base := t.Compute + t.Comm.Exposed + t.Optimizer + t.Elementwise
	t.Stall = c.Assume.StepOverhead * base
	t.Overhead = t.Optimizer + t.Elementwise + t.Stall
	t.Step = base + t.Stall
	return t
}

// passTimes returns the forward and backward time of one micro-batch on one GPU: the model
// FLOPs (one third forward, two thirds backward), split t ways, plus what the remat policy
// recomputes, at the GPU's achievable fraction of its peak.
func passTimes(c Config, mb int) (fwd, bwd float64) {
	tokens := float64(mb * c.Seq)
	rate := c.GPU.PeakFLOPS * c.GPU.GEMMFraction * float64(c.TP)
	f := c.sizes.flopsPerToken * tokens
	return f / 3 / rate, (2*f/3 + recomputeFLOPsPerToken(c)*tokens) / rate
}

// recomputeFLOPsPerToken returns the matrix-multiply FLOPs that backward repeats under the
// remat policy. Full remat runs each block's forward again: 2 FLOPs per block parameter and
// 4*T*d for attention. Hybrid remat keeps every linear layer's output and recomputes only
// norms, RoPE, the SwiGLU product and the attention probabilities, which a tiled attention
// backward recomputes under any policy; that work is not counted, as the PaLM formula's
// full (not causal) attention count already over-credits attention.
func recomputeFLOPsPerToken(c Config) float64 {
	m := c.Model
	if m.Remat != model.RematFull {
		return 0
	}
	blocks := c.sizes.params - int64(2*m.Vocab*m.Dim+m.Dim) // all but embedding, head and final norm
	return 2*float64(blocks) + 4*float64(m.Layers*c.Seq*m.Dim)
}

// memoryBoundTimes returns the optimizer step (over the parameters this GPU updates) and the
// non-matmul operations of all micro-batches, at the assumed fraction of HBM bandwidth.
func memoryBoundTimes(c Config, mb int) (optimizer, elementwise float64) {
	bw := c.GPU.HBMBandwidth * c.Assume.MemoryEfficiency
	updated := localParams(c)
	if c.ZeRO >= 1 {
		updated = ceilDiv(updated, int64(c.DP()))
	}
	optimizer = float64(updated) * c.Assume.OptimizerBytes / bw
	perToken := float64(c.Model.Layers) * float64(model.ActivationBytesPerTokenPerLayer(c.Model, model.RematNone, c.actType()))
	tokens := float64(c.SequencesPerRank() * c.Seq)
	elementwise = tokens * perToken * c.Assume.ElementwiseTraffic / float64(c.TP) / bw
	return optimizer, elementwise
}
