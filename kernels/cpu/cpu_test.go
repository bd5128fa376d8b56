package cpu_test

import (
	"testing"

	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/kernels/cpu"
	"github.com/herd-llm/herd/kernels/kernelstest"
)

// The float32 backend against the float64 reference, through BLAS (when the library is
// present) and through the pure-Go matmul, which must stay correct as the fallback.
func TestConformanceFloat32(t *testing.T) {
	t.Run("default", func(t *testing.T) {
		be := cpu.New[float32](cpu.Options{})
		path, err := be.BLAS()
		t.Logf("matmul: BLAS %q (%v)", path, err)
		kernelstest.RunAll(t, be, kernelstest.Float32)
	})
	t.Run("purego", func(t *testing.T) {
		be := cpu.New[float32](cpu.Options{PureGo: true})
		if path, _ := be.BLAS(); path != "" {
			t.Fatalf("PureGo backend uses BLAS %s", path)
		}
		kernelstest.RunAll(t, be, kernelstest.Float32)
	})
}

// The pure-Go float64 path must agree with the BLAS float64 reference to rounding.
func TestConformanceFloat64PureGo(t *testing.T) {
	kernelstest.RunAll(t, cpu.New[float64](cpu.Options{PureGo: true}), kernelstest.Tolerance{Elementwise: 1e-14, Reduction: 1e-12})
}

func TestBLASRequired(t *testing.T) {
	be := cpu.New[float32](cpu.Options{})
	if path, err := be.BLAS(); path == "" {
		if kernelstest.RequireBLAS() {
			t.Fatalf("HERD_REQUIRE_BLAS is set but no BLAS library loaded: %v", err)
		}
		t.Skipf("no BLAS library: %v", err)
	}
}

// mixed32 presents the float32 backend as a kernels.Mixed one whose activation type is also
// float32, so the suite's mixed-precision cases (master buffers for statistics and gradients,
// Cast, AdamWUpdateCast) run here and not only on a GPU.
type mixed32 struct{ *cpu.Backend[float32] }

func (m mixed32) AllocMaster(n int) kernels.Buffer { return m.Alloc(n) }
func (m mixed32) Cast(dst, src kernels.Buffer)     { m.Copy(dst, src) }
func (m mixed32) AdamWUpdateCast(w, p, g, mm, v kernels.Buffer, hp kernels.AdamW) {
	m.AdamWUpdate(p, g, mm, v, hp)
	m.Copy(w, p)
}

func TestConformanceMixedPaths(t *testing.T) {
	kernelstest.RunAll(t, mixed32{cpu.New[float32](cpu.Options{})}, kernelstest.Float32)
}

// PeakBytes keeps the high-water mark of LiveBytes until ResetPeak.
func TestPeakBytes(t *testing.T) {
	be := cpu.New[float32](cpu.Options{})
	a, b := be.Alloc(100), be.Alloc(50)
	be.Free(a)
	c := be.Alloc(20)
	if got := be.PeakBytes(); got != 600 {
		t.Errorf("peak %d bytes after 100+50 live elements, want 600", got)
	}
	be.ResetPeak()
	if got := be.PeakBytes(); got != 280 {
		t.Errorf("peak %d bytes after ResetPeak with 70 live elements, want 280", got)
	}
	be.Free(b)
	be.Free(c)
}
