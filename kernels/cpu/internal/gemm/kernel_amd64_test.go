//go:build !purego

package gemm

import (
	"slices"
	"testing"

	"golang.org/x/sys/cpu"
)

// TestKernelsDetected checks that a CPU with AVX2 and FMA (or AVX-512) gets the assembly
// kernels, and that Gemm uses the first of them, so that a broken feature check cannot quietly
// send every product to the portable kernel.
func TestKernelsDetected(t *testing.T) {
	want32, want64 := []string{"portable"}, []string{"portable"}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		want32 = append([]string{"avx2"}, want32...)
		want64 = append([]string{"avx2"}, want64...)
	}
	if cpu.X86.HasAVX512F {
		want32 = append([]string{"avx512"}, want32...)
	}
	if got := names(kernelsFor[float32]()); !slices.Equal(got, want32) {
		t.Errorf("float32 kernels %v, want %v on this CPU", got, want32)
	}
	if got := names(kernelsFor[float64]()); !slices.Equal(got, want64) {
		t.Errorf("float64 kernels %v, want %v on this CPU", got, want64)
	}
	if best := bestKernel[float32](); best.name != want32[0] {
		t.Errorf("Gemm uses the %s kernel for float32, want %s", best.name, want32[0])
	}
}

func names[T Float](ks []microKernel[T]) []string {
	var s []string
	for _, k := range ks {
		s = append(s, k.name)
	}
	return s
}
