package plan

import (
	"fmt"

	"github.com/herd-llm/herd/model"
)

// PaperRun is one model of the LLaMA paper's training cost (arXiv 2302.13971, the carbon
// footprint table): GPU-hours on A100-80GB for a number of training tokens.
type PaperRun struct {
	Preset   string  `json:"preset"`
	Tokens   float64 `json:"tokens"`
	GPUHours float64 `json:"gpu_hours"`
}

// TokensPerSPerGPU returns the throughput the paper's figures imply.
func (p PaperRun) TokensPerSPerGPU() float64 { return p.Tokens / (p.GPUHours * 3600) }

// LLaMAPaper returns the paper's four runs.
func LLaMAPaper() []PaperRun {
	return []PaperRun{
		{"7b", 1.0e12, 82432},
		{"13b", 1.0e12, 135168},
		{"33b", 1.4e12, 530432},
		{"65b", 1.4e12, 1022362},
	}
}

// LLaMASetup is the one set of assumptions under which the planner predicts every row of
// the paper's table. The paper states the GPU (A100-80GB), the 2048 GPUs of the 65B run,
// the 4M-token batches of 2048-token sequences, the remat policy (keep the outputs of the
// linear layers) and that model and sequence parallelism were used; the rest is assumed.
type LLaMASetup struct {
	GPU         string      `json:"gpu"`
	Fabric      string      `json:"fabric"`
	GPUs        int         `json:"gpus"`
	Seq         int         `json:"seq"`
	BatchTokens int64       `json:"batch_tokens"`
	Remat       model.Remat `json:"remat"`
	Assume      Assumptions `json:"assumptions"`
	// Layout is how the parallel layout of each model was chosen.
	Layout string `json:"layout"`
}

// DefaultLLaMASetup returns the setup herd's figures use: the paper's facts, the hardware
// table's A100-80GB in DGX A100 nodes (eight GPUs, eight 200 Gb/s InfiniBand adapters, the
// reference design of the time; assumed), the same 2048 GPUs for every model (stated only
// for 65B), the planner's default assumptions, and for each model the fastest layout that
// fits (the planner's search over ZeRO stage, tensor-parallel size and micro-batch; the
// paper does not give its data-parallel scheme).
func DefaultLLaMASetup() LLaMASetup {
	return LLaMASetup{GPU: "a100-80g", Fabric: "ib-8x200", GPUs: 2048, Seq: 2048, BatchTokens: 4 << 20,
		Remat: model.RematHybrid, Assume: DefaultAssumptions(),
		Layout: "the fastest that fits, searched over ZeRO 0-3, tensor parallelism 1-8 and micro-batch"}
}

// LLaMARow is one model: the paper's figures and the planner's prediction.
type LLaMARow struct {
	Paper  PaperRun `json:"paper"`
	Result Result   `json:"predicted"`
}

// GPUHoursRatio returns predicted over paper GPU-hours.
func (r LLaMARow) GPUHoursRatio() float64 { return r.Result.GPUHours / r.Paper.GPUHours }

// LLaMATable predicts every run of the paper under setup s with the GPUs and fabrics of hw.
func LLaMATable(hw Hardware, s LLaMASetup) ([]LLaMARow, error) {
	var rows []LLaMARow
	for _, p := range LLaMAPaper() {
		c, err := s.config(hw, p)
		if err != nil {
			return nil, err
		}
		r, ok, err := Fastest(c)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("%w: llama %s: no layout fits on %d x %s", ErrPlan, p.Preset, s.GPUs, s.GPU)
		}
		rows = append(rows, LLaMARow{Paper: p, Result: r})
	}
	return rows, nil
}

func (s LLaMASetup) config(hw Hardware, p PaperRun) (Config, error) {
	m, err := model.Preset(p.Preset)
	if err != nil {
		return Config{}, err
	}
	m.Remat = s.Remat
	g, err := hw.GPU(s.GPU)
	if err != nil {
		return Config{}, err
	}
	f, err := hw.Fabric(s.Fabric)
	if err != nil {
		return Config{}, err
	}
	return Config{Preset: p.Preset, Model: m, GPUs: s.GPUs, GPU: g, Fabric: f, TP: 1, Seq: s.Seq,
		BatchTokens: s.BatchTokens, Tokens: p.Tokens, Assume: s.Assume}, nil
}
