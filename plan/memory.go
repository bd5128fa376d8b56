package plan

import (
	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/model"
)

// Bytes per element of the state that stays float32: masters, gradients, AdamW moments.
const (
	masterBytes = 4
	gradBytes   = 4
	momentBytes = 8 // m and v
)

// Memory is what one GPU holds at the peak of a step, in bytes.
type Memory struct {
	// Params: float32 masters (split W ways from ZeRO-1) and the bf16 working copy that the
	// matrix multiplies read (stages 0-2; ZeRO-3 gathers it block by block instead). Where
	// the passes compute in float32 (Config.Compute) the masters are what they read: whole
	// through ZeRO-2, split W ways by ZeRO-3.
	Params int64 `json:"params"`
	// Grads: float32 gradients (split W ways from ZeRO-2).
	Grads int64 `json:"grads"`
	// Optimizer: AdamW's two float32 moments (split W ways from ZeRO-1).
	Optimizer int64 `json:"optimizer"`
	// Activations: what the remat policy keeps for backward over one micro-batch, plus one
	// block's workspace for the activations it recomputes.
	Activations int64 `json:"activations"`
	// CommBuffers: ZeRO-2/3 gradient buckets before their reduce-scatter, ZeRO-3's gathered
	// blocks, tensor parallelism's gathered block inputs.
	CommBuffers int64 `json:"comm_buffers"`
	// Reserve: CUDA context, library workspaces and fragmentation (Assumptions).
	Reserve int64 `json:"reserve"`
	Total   int64 `json:"total"`
	HBM     int64 `json:"hbm"`
}

// Fits reports whether the total is within the GPU's memory.
func (m Memory) Fits() bool { return m.Total <= m.HBM }

// memoryOf returns the memory of one GPU of c at micro-batch mb.
func memoryOf(c Config, mb int) Memory {
	local := localParams(c)
	owned := func(stage int) int64 { // what a rank holds of a state that ZeRO splits from stage on
		if c.ZeRO >= stage {
			return ceilDiv(local, int64(c.DP()))
		}
		return local
	}
	params := owned(1)*masterBytes + local*int64(kernels.BFloat16.Size()) // masters and the working copy
	switch {
	case c.Compute == kernels.Float32:
		params = owned(3) * masterBytes
	case c.ZeRO == 3:
		params = owned(1) * masterBytes
	}
	m := Memory{
		Params:      params,
		Grads:       owned(2) * gradBytes,
		Optimizer:   owned(1) * momentBytes,
		Activations: activationBytes(c, mb),
		CommBuffers: commBufferBytes(c, mb),
		Reserve:     c.Assume.ReserveBytes + int64(c.Assume.ReserveFraction*float64(c.GPU.HBMBytes)),
		HBM:         c.GPU.HBMBytes,
	}
	m.Total = m.Params + m.Grads + m.Optimizer + m.Activations + m.CommBuffers + m.Reserve
	return m
}

// activationBytes returns the activations kept over one micro-batch of mb sequences, from the
// model's own activation table, plus one block's recompute workspace. With tensor
// parallelism every activation is split t ways: column-parallel outputs by their heads or
// hidden units, the rest by sequence (Megatron's sequence parallelism, which LLaMA used).
func activationBytes(c Config, mb int) int64 {
	m, n := c.Model, mb*c.Seq
	act := c.actType()
	kept := model.ActivationBytes(m, m.Remat, act, n)
	workspace := int64(n) * (model.ActivationBytesPerTokenPerLayer(m, model.RematNone, act) -
		model.ActivationBytesPerTokenPerLayer(m, m.Remat, act))
	return (kept + workspace) / int64(c.TP)
}

// bucketParams returns the largest group of parameters that moves as one: a block, or the
// output head with the final norm, per tensor-parallel rank.
func bucketParams(m model.Config, tp int) int64 {
	block := int64(4*m.Dim*m.Dim + 3*m.Dim*m.FFNHidden + 2*m.Dim)
	return max(block, int64(m.Vocab*m.Dim+m.Dim)) / int64(tp)
}

func commBufferBytes(c Config, mb int) int64 {
	var b int64
	bucket := bucketParams(c.Model, c.TP)
	if c.DP() > 1 && c.ZeRO >= 2 {
		b += 2 * bucket * gradBytes // a full bucket of gradients before its reduce-scatter, double-buffered
	}
	if c.DP() > 1 && c.ZeRO == 3 {
		b += int64(c.Assume.PrefetchBlocks) * bucket * gatheredBytes(c.Assume.GatherBytes, c.actType())
	}
	if c.TP > 1 {
		b += 2 * int64(mb*c.Seq*c.Model.Dim*c.actType().Size()) // a block input gathered along the sequence, and its gradient
	}
	return b
}

// gatheredBytes returns the bytes per parameter of a gathered block: the gathered elements,
// and a bf16 copy to compute with when they are wider.
func gatheredBytes(gather int, act kernels.DType) int64 {
	if gather > act.Size() {
		return int64(gather + act.Size())
	}
	return int64(gather)
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }
