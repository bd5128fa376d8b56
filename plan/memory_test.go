package plan

import (
	"testing"

	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/model"
)

// Bytes per parameter under each stage: fp32 masters, bf16 working copy, fp32 gradients,
// two fp32 moments, each split W ways from its stage on.
func TestPlanMemoryZeROStages(t *testing.T) {
	const w = 8
	n := int64(model.NumParams(config(t, "7b", w, 0, 1).Model))
	shard := (n + w - 1) / w
	for _, tc := range []struct {
		compute                 kernels.DType
		zero                    int
		params, grads, optState int64
	}{
		{0, 0, 4*n + 2*n, 4 * n, 8 * n},
		{0, 1, 4*shard + 2*n, 4 * n, 8 * shard},
		{0, 2, 4*shard + 2*n, 4 * shard, 8 * shard},
		{0, 3, 4 * shard, 4 * shard, 8 * shard},
		// Computing in float32 on the masters themselves: no working copy, and the masters
		// stay whole until ZeRO-3.
		{kernels.Float32, 0, 4 * n, 4 * n, 8 * n},
		{kernels.Float32, 1, 4 * n, 4 * n, 8 * shard},
		{kernels.Float32, 2, 4 * n, 4 * shard, 8 * shard},
		{kernels.Float32, 3, 4 * shard, 4 * shard, 8 * shard},
	} {
		c := config(t, "7b", w, tc.zero, 1).withSizes()
		c.Compute = tc.compute
		m := memoryOf(c, 1)
		if m.Params != tc.params || m.Grads != tc.grads || m.Optimizer != tc.optState {
			t.Errorf("ZeRO-%d, compute %v: params %d grads %d optimizer %d, want %d %d %d", tc.zero, tc.compute, m.Params, m.Grads, m.Optimizer, tc.params, tc.grads, tc.optState)
		}
		if sum := m.Params + m.Grads + m.Optimizer + m.Activations + m.CommBuffers + m.Reserve; m.Total != sum {
			t.Errorf("ZeRO-%d: total %d, parts sum to %d", tc.zero, m.Total, sum)
		}
	}
}

// Activations come from the model's own table; tensor parallelism splits them t ways.
func TestPlanMemoryActivations(t *testing.T) {
	c := config(t, "13b", 8, 0, 1).withSizes()
	m := c.Model
	kept := model.ActivationBytes(m, model.RematHybrid, kernels.BFloat16, 4*2048)
	workspace := int64(4*2048) * (model.ActivationBytesPerTokenPerLayer(m, model.RematNone, kernels.BFloat16) - model.ActivationBytesPerTokenPerLayer(m, model.RematHybrid, kernels.BFloat16))
	if got := activationBytes(c, 4); got != kept+workspace {
		t.Errorf("tp 1: %d, want %d", got, kept+workspace)
	}
	c.TP = 4
	if got := activationBytes(c, 4); got != (kept+workspace)/4 {
		t.Errorf("tp 4: %d, want %d", got, (kept+workspace)/4)
	}
	c.TP, c.Model.Remat = 1, model.RematFull
	if full := activationBytes(c, 4); full >= kept {
		t.Errorf("full remat keeps %d bytes, hybrid %d", full, kept)
	}
}

func TestPlanMemoryReserveAndFit(t *testing.T) {
	c := config(t, "7b", 8, 0, 1).withSizes()
	m := memoryOf(c, 1)
	if want := int64(3*gib/2) + int64(0.05*float64(81920*mib)); m.Reserve != want {
		t.Errorf("reserve %d, want %d", m.Reserve, want)
	}
	// 7B with plain data parallelism needs 18 bytes per parameter, 113 GiB: not on 80 GiB.
	if m.Fits() {
		t.Errorf("7b ZeRO-0 fits in %d bytes", m.Total)
	}
	c.ZeRO = 3
	if m := memoryOf(c, 1); !m.Fits() {
		t.Errorf("7b ZeRO-3 on 8 GPUs does not fit: %+v", m)
	}
}
