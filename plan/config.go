package plan

import (
	"fmt"

	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/model"
)

// Config is one planned run. Field errors name the `herd plan` flag that sets the field.
type Config struct {
	Preset string       `json:"preset"` // for reports only
	Model  model.Config `json:"model"`  // Model.Remat is the rematerialization policy (--remat)
	GPUs   int          `json:"gpus"`   // --gpus, the world size W*t
	GPU    GPU          `json:"gpu"`    // --gpu
	Fabric Fabric       `json:"fabric"` // --fabric, used when the run spans nodes
	ZeRO   int          `json:"zero"`   // --zero: 0 plain data parallelism, 1, 2 or 3
	TP     int          `json:"tp"`     // --tp: tensor-parallel size t, inside one node
	Seq    int          `json:"seq"`    // --seq: tokens per sequence T
	// BatchTokens is the global batch of one optimizer step (--batch-tokens).
	BatchTokens int64 `json:"batch_tokens"`
	// MicroBatch is the sequences of one forward and backward pass on a data-parallel rank
	// (--micro-batch); 0 lets Estimate choose the largest that fits.
	MicroBatch int `json:"micro_batch"`
	// Tokens is the training budget (--tokens).
	Tokens float64     `json:"tokens"`
	Assume Assumptions `json:"assumptions"`
	// Compute is the element type the passes compute in: 0 or kernels.BFloat16 on GPUs (a
	// bf16 working copy of the float32 masters, bf16 activations), kernels.Float32 on herd's
	// CPU backend, which computes on the float32 masters themselves: no working copy, so
	// ZeRO-1 and -2 keep the masters whole and ZeRO-3 gathers float32 (set
	// Assume.GatherBytes to 4 to match).
	Compute kernels.DType `json:"compute,omitempty"`

	sizes sizes // from the model's spec table; set by the exported entry points
}

// sizes holds what the model's spec table gives. Building the table for a large model takes
// a fraction of a millisecond, and searches over layouts estimate thousands of configs of
// one model, so the entry points compute it once.
type sizes struct {
	params        int64   // N
	flopsPerToken float64 // 6*(N - N_embedding) + 12*L*T*d
}

// withSizes returns c with its sizes computed.
func (c Config) withSizes() Config {
	c.sizes = sizes{params: int64(model.NumParams(c.Model)), flopsPerToken: model.FLOPsPerToken(c.Model, c.Seq)}
	return c
}

// DP returns the data-parallel size W = GPUs / TP.
func (c Config) DP() int { return c.GPUs / c.TP }

// Sequences returns the sequences of one optimizer step, S = BatchTokens / T.
func (c Config) Sequences() int { return int(c.BatchTokens / int64(c.Seq)) }

// SequencesPerRank returns the sequences each data-parallel rank trains on per step.
func (c Config) SequencesPerRank() int { return c.Sequences() / c.DP() }

// Validate checks the config and names the flag at fault with the allowed values. A
// MicroBatch of 0 is valid: Estimate chooses one.
func (c Config) Validate() error {
	_, err := prepare(c)
	return err
}

// prepare validates c and returns it with its sizes set.
func prepare(c Config) (Config, error) {
	if err := c.checkModel(); err != nil {
		return c, err
	}
	c = c.withSizes()
	return c, c.validate()
}

// validate is Validate for a config whose sizes are set.
func (c Config) validate() error {
	checks := []func() error{c.checkModel, c.checkHardware, c.checkParallel, c.checkShards, c.checkBatch,
		c.checkMicroBatch, c.checkTokens, c.Assume.Validate}
	for _, check := range checks {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

func (c Config) checkModel() error {
	if err := c.Model.Validate(); err != nil {
		return err
	}
	if err := c.Model.CheckSeq(c.Seq); err != nil {
		return flagErr("--seq", "= %d, must be in [1, max_seq = %d]", c.Seq, c.Model.MaxSeq)
	}
	return nil
}

func (c Config) checkHardware() error {
	if err := c.GPU.Validate(); err != nil {
		return err
	}
	return c.Fabric.Validate()
}

func (c Config) checkParallel() error {
	m := c.Model
	switch {
	case c.GPUs < 1:
		return flagErr("--gpus", "= %d, must be >= 1", c.GPUs)
	case c.Compute != 0 && c.Compute != kernels.BFloat16 && c.Compute != kernels.Float32:
		return fieldErr("", "compute", "= %v: the passes compute in bfloat16 (GPUs) or float32 (the CPU backend)", c.Compute)
	case c.ZeRO < 0 || c.ZeRO > 3:
		return flagErr("--zero", "= %d: unknown ZeRO stage (allowed: 0 plain data parallelism, 1 optimizer state, 2 and gradients, 3 and parameters)", c.ZeRO)
	case c.TP < 1 || c.TP > c.GPU.GPUsPerNode:
		return flagErr("--tp", "= %d, must be in [1, %d]: tensor parallelism stays inside one node of %s", c.TP, c.GPU.GPUsPerNode, c.GPU.Name)
	case c.GPUs%c.TP != 0:
		return flagErr("--tp", "= %d does not divide --gpus = %d", c.TP, c.GPUs)
	case m.Heads%c.TP != 0 || m.FFNHidden%c.TP != 0 || m.Vocab%c.TP != 0:
		return flagErr("--tp", "= %d must divide heads = %d, ffn_hidden = %d and vocab = %d", c.TP, m.Heads, m.FFNHidden, m.Vocab)
	}
	return nil
}

// checkShards refuses a ZeRO layout in which some rank would own an empty range of the flat
// parameter buffer (the buffer is split into W contiguous ranges).
func (c Config) checkShards() error {
	n := localParams(c)
	if c.ZeRO == 0 || int64(c.DP()) <= n {
		return nil
	}
	return flagErr("--gpus", "= %d: ZeRO-%d splits the %d parameters of each tensor-parallel rank over %d data-parallel ranks, so %d of them would own an empty range; at most %d GPUs",
		c.GPUs, c.ZeRO, n, c.DP(), int64(c.DP())-n, n*int64(c.TP))
}

func (c Config) checkBatch() error {
	if c.BatchTokens <= 0 || c.BatchTokens%int64(c.Seq) != 0 {
		return flagErr("--batch-tokens", "= %d is not a positive whole number of --seq %d sequences", c.BatchTokens, c.Seq)
	}
	if s := c.Sequences(); s%c.DP() != 0 {
		return flagErr("--batch-tokens", "= %d is %d sequences of %d, which do not split evenly across %d data-parallel ranks (--gpus %d / --tp %d)%s",
			c.BatchTokens, s, c.Seq, c.DP(), c.GPUs, c.TP, nearbyGPUs(c))
	}
	return nil
}

// nearbyGPUs names the nearest GPU counts below and above c.GPUs whose data-parallel size
// divides the sequences of a step.
func nearbyGPUs(c Config) string {
	s := c.Sequences()
	lo, hi := 0, 0
	for w := c.DP() - 1; w >= 1 && lo == 0; w-- {
		if s%w == 0 {
			lo = w * c.TP
		}
	}
	for w := c.DP() + 1; w <= s && hi == 0; w++ {
		if s%w == 0 {
			hi = w * c.TP
		}
	}
	switch {
	case lo > 0 && hi > 0:
		return fmt.Sprintf("; nearest that do: --gpus %d or %d", lo, hi)
	case lo > 0:
		return fmt.Sprintf("; nearest that does: --gpus %d", lo)
	}
	return ""
}

func (c Config) checkMicroBatch() error {
	per := c.SequencesPerRank()
	if c.MicroBatch < 0 || (c.MicroBatch > 0 && per%c.MicroBatch != 0) {
		return flagErr("--micro-batch", "= %d must divide the %d sequences each data-parallel rank trains on per step", c.MicroBatch, per)
	}
	return nil
}

func (c Config) checkTokens() error {
	if !(c.Tokens > 0) {
		return flagErr("--tokens", "= %g, must be > 0", c.Tokens)
	}
	return nil
}

// actType returns the element type of activations, and of the tensor-parallel collectives
// that move them.
func (c Config) actType() kernels.DType {
	if c.Compute == kernels.Float32 {
		return kernels.Float32
	}
	return kernels.BFloat16
}

// embeddingParams returns the token embedding's parameters on one tensor-parallel rank: the
// one table that backward does not read (its gradient is a scatter-add of the incoming
// gradient), so ZeRO-3 gathers it before forward only.
func embeddingParams(c Config) int64 {
	return int64(c.Model.Vocab) * int64(c.Model.Dim) / int64(c.TP)
}

// localParams returns the parameters one tensor-parallel rank holds: every matrix split t
// ways (column-parallel wq, wk, wv, w1, w3; row-parallel wo, w2; vocabulary-parallel
// embedding and head), the RMSNorm gains replicated.
func localParams(c Config) int64 {
	gains := int64(2*c.Model.Layers+1) * int64(c.Model.Dim)
	return (c.sizes.params-gains)/int64(c.TP) + gains
}
