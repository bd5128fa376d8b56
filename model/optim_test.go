package model_test

import (
	"math"
	"testing"

	"github.com/herd-llm/herd/kernels/cpu"
	"github.com/herd-llm/herd/model"
)

// Optimizer.Step against a host implementation of AdamW with clipping and matrix-only decay.
func TestOptimizerStep(t *testing.T) {
	be := cpu.New[float64](cpu.Options{})
	c := model.Default()
	c.Layers = 1
	m := newModel(t, c, be, 1)
	n := m.Layout.Size
	grad := make([]float64, n)
	for i := range grad {
		grad[i] = math.Sin(float64(i)) * 0.01
	}
	be.Write(m.Grads(), grad)
	p0 := make([]float64, n)
	be.Read(p0, m.Params())
	cfg := model.DefaultOptim()
	opt, err := model.NewOptimizer(m, cfg)
	if err != nil {
		t.Fatal(err)
	}
	const lr, gradScale = 1e-2, 0.5
	var ss float64
	for _, g := range grad {
		ss += g * g
	}
	wantNorm := math.Sqrt(ss) * gradScale
	norm := opt.Step(lr, gradScale)
	if math.Abs(norm-wantNorm) > 1e-12*wantNorm {
		t.Fatalf("norm %v, want %v", norm, wantNorm)
	}
	clip := gradScale
	if wantNorm > cfg.ClipNorm {
		clip *= cfg.ClipNorm / wantNorm
	}
	if wantNorm <= cfg.ClipNorm {
		t.Fatalf("test gradient norm %v does not exercise clipping", wantNorm)
	}
	p1 := make([]float64, n)
	be.Read(p1, m.Params())
	for _, s := range m.Layout.Specs {
		wd := 0.0
		if s.Decay {
			wd = cfg.WeightDecay
		}
		for i := s.Offset; i < s.Offset+s.Size; i++ {
			g := grad[i] * clip
			mh := (1 - cfg.Beta1) * g / (1 - cfg.Beta1)
			vh := (1 - cfg.Beta2) * g * g / (1 - cfg.Beta2)
			want := p0[i]*(1-lr*wd) - lr*mh/(math.Sqrt(vh)+cfg.Eps)
			if math.Abs(p1[i]-want) > 1e-12 {
				t.Fatalf("%s element %d: %v, want %v", s.Name, i-s.Offset, p1[i], want)
			}
		}
	}
	if opt.Steps() != 1 {
		t.Errorf("Steps = %d", opt.Steps())
	}
}

// A non-finite gradient norm leaves the parameters and the step count alone.
func TestOptimizerSkipsNonFinite(t *testing.T) {
	be := cpu.New[float32](cpu.Options{})
	m := newModel(t, model.Default(), be, 1)
	defer m.Close()
	opt, _ := model.NewOptimizer(m, model.DefaultOptim())
	defer opt.Close()
	g := cpu.Data[float32](m.Grads())
	g[7] = float32(math.Inf(1))
	before := append([]float32(nil), cpu.Data[float32](m.Params())...)
	if norm := opt.Step(1e-3, 1); !math.IsInf(norm, 1) && !math.IsNaN(norm) {
		t.Fatalf("norm %v, want +Inf or NaN", norm)
	}
	for i, p := range cpu.Data[float32](m.Params()) {
		if p != before[i] {
			t.Fatalf("parameter %d changed after a non-finite gradient", i)
		}
	}
	if opt.Steps() != 0 {
		t.Errorf("Steps = %d after a skipped update", opt.Steps())
	}
}
