package plan

// Assumptions are the modelling choices that are neither datasheet figures nor properties of
// the run. Every report prints them.
type Assumptions struct {
	// Overlap is the fraction of data-parallel communication that can run behind compute
	// (gradient buckets behind backward; ZeRO-3's prefetched gathers behind forward and
	// backward), up to the length of that compute.
	Overlap float64 `json:"overlap"`
	// ReduceBytes is the size of one gradient element in the data-parallel reductions
	// (all-reduce, reduce-scatter): 4, because herd sums float32 gradients.
	ReduceBytes int `json:"reduce_bytes"`
	// GatherBytes is the size of one parameter element in the all-gathers of ZeRO: 2, because
	// the passes compute with the bf16 working copy, so a rank casts the float32 masters it
	// owns and gathers bf16 (as FSDP's and DeepSpeed's mixed precision do). In elements,
	// ZeRO-1/2 move as much as an all-reduce and ZeRO-3 1.5 times as much; in bytes less.
	GatherBytes int `json:"gather_bytes"`
	// MemoryEfficiency is the fraction of HBM bandwidth that memory-bound work reaches.
	MemoryEfficiency float64 `json:"memory_efficiency"`
	// ElementwiseTraffic is how many times a block's activation bytes (all of them, as remat
	// none keeps) the non-matmul operations (norms, RoPE, SwiGLU, residual adds, their
	// gradients) read and write per token.
	ElementwiseTraffic float64 `json:"elementwise_traffic"`
	// OptimizerBytes is the memory traffic of the optimizer step per parameter it updates:
	// AdamW reads master, gradient and both moments and writes master, moments and the bf16
	// working copy (30 bytes); clipping reads the gradient and zeroing writes it (8 more).
	OptimizerBytes float64 `json:"optimizer_bytes"`
	// ReserveBytes and ReserveFraction (of HBM) are held back for the CUDA context, library
	// workspaces (cuBLASLt, NCCL) and fragmentation.
	ReserveBytes    int64   `json:"reserve_bytes"`
	ReserveFraction float64 `json:"reserve_fraction"`
	// PrefetchBlocks is how many blocks' parameters ZeRO-3 holds gathered at once (the one in
	// use and the one being fetched).
	PrefetchBlocks int `json:"prefetch_blocks"`
	// StepOverhead is the time lost between steps (validation, checkpoint stalls, slow steps)
	// as a fraction of the step itself; 0 unless calibrated.
	StepOverhead float64 `json:"step_overhead"`
}

// DefaultAssumptions returns the assumptions `herd plan` uses unless calibrated.
func DefaultAssumptions() Assumptions {
	return Assumptions{Overlap: 0.8, ReduceBytes: 4, GatherBytes: 2, MemoryEfficiency: 0.8,
		ElementwiseTraffic: 4, OptimizerBytes: 38, ReserveBytes: 3 * gib / 2, ReserveFraction: 0.05,
		PrefetchBlocks: 2}
}

// Validate checks every assumption.
func (a Assumptions) Validate() error {
	switch {
	case !(a.Overlap >= 0 && a.Overlap <= 1):
		return fieldErr("assumptions", "overlap", "= %g, must be in [0, 1]", a.Overlap)
	case a.ReduceBytes <= 0 || a.GatherBytes <= 0:
		return fieldErr("assumptions", "reduce_bytes", "= %d and gather_bytes = %d, must be > 0", a.ReduceBytes, a.GatherBytes)
	case !(a.MemoryEfficiency > 0 && a.MemoryEfficiency <= 1):
		return fieldErr("assumptions", "memory_efficiency", "= %g, must be in (0, 1]", a.MemoryEfficiency)
	case !(a.ElementwiseTraffic >= 0) || !(a.OptimizerBytes >= 0):
		return fieldErr("assumptions", "elementwise_traffic", "= %g and optimizer_bytes = %g, must be >= 0", a.ElementwiseTraffic, a.OptimizerBytes)
	case a.ReserveBytes < 0 || !(a.ReserveFraction >= 0 && a.ReserveFraction < 1):
		return fieldErr("assumptions", "reserve", "= %d bytes + %g of HBM, must be >= 0 and a fraction < 1", a.ReserveBytes, a.ReserveFraction)
	case a.PrefetchBlocks < 1:
		return fieldErr("assumptions", "prefetch_blocks", "= %d, must be >= 1", a.PrefetchBlocks)
	case !(a.StepOverhead >= 0):
		return fieldErr("assumptions", "step_overhead", "= %g, must be >= 0", a.StepOverhead)
	}
	return nil
}
