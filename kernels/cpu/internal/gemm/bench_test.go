package gemm

import (
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/gonum/blas/blas64"
)

// benchShape is one matrix multiply of a LLaMA 125m training step with B*T = 256 tokens,
// d = 768, ffn = 2048 and vocab = 32000. A linear layer y = x W^T with W [out, in] runs
// forward as y[256,out] = x[256,in] W^T (transB), and backward as dW[out,in] += dY^T X
// (transA, beta 1) and dX[256,in] = dY W.
type benchShape struct {
	name           string
	transA, transB bool
	m, n, k        int
	beta           float64
}

func linearShapes(name string, out, in int) []benchShape {
	const tokens = 256
	return []benchShape{
		{name + "_fwd", false, true, tokens, out, in, 0},
		{name + "_dW", true, false, out, in, tokens, 1},
		{name + "_dX", false, false, tokens, in, out, 0},
	}
}

func benchShapes() []benchShape {
	var s []benchShape
	s = append(s, linearShapes("qkv_2304x768", 2304, 768)...)
	s = append(s, linearShapes("attnout_768x768", 768, 768)...)
	s = append(s, linearShapes("ffnup_2048x768", 2048, 768)...)
	s = append(s, linearShapes("ffndown_768x2048", 768, 2048)...)
	s = append(s, linearShapes("lmhead_32000x768", 32000, 768)...)
	return s
}

// benchOperands returns dense operands for s, stored as Gemm reads them.
func benchOperands[T Float](s benchShape) (a, b, c []T, lda, ldb int) {
	rng := rand.New(rand.NewPCG(7, 8))
	fill := func(n int) []T {
		v := make([]T, n)
		for i := range v {
			v[i] = T(rng.Float64() - 0.5)
		}
		return v
	}
	lda, ldb = s.k, s.n
	if s.transA {
		lda = s.m
	}
	if s.transB {
		ldb = s.k
	}
	return fill(s.m * s.k), fill(s.k * s.n), fill(s.m * s.n), lda, ldb
}

func gonumTrans(t bool) blas.Transpose {
	if t {
		return blas.Trans
	}
	return blas.NoTrans
}

// reportGFLOPS reports 2mnk floating-point operations per multiply.
func reportGFLOPS(b *testing.B, s benchShape) {
	b.ReportMetric(2*float64(s.m)*float64(s.n)*float64(s.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

// BenchmarkGemm runs the float32 shapes on each path: purego, blas (skipped when no library
// loads) and gonum's blas32, which is pure Go with assembly vector kernels.
func BenchmarkGemm(b *testing.B) {
	lib, libErr := Default()
	for _, s := range benchShapes() {
		b.Run(s.name, func(b *testing.B) {
			a, bm, c, lda, ldb := benchOperands[float32](s)
			b.Run("purego", func(b *testing.B) {
				for b.Loop() {
					Gemm[float32](nil, s.transA, s.transB, s.m, s.n, s.k, 1, a, lda, bm, ldb, float32(s.beta), c, s.n)
				}
				reportGFLOPS(b, s)
			})
			b.Run("blas", func(b *testing.B) {
				if lib == nil {
					b.Skipf("no BLAS library: %v", libErr)
				}
				for b.Loop() {
					Gemm(lib, s.transA, s.transB, s.m, s.n, s.k, 1, a, lda, bm, ldb, float32(s.beta), c, s.n)
				}
				reportGFLOPS(b, s)
			})
			b.Run("gonum", func(b *testing.B) {
				ga := blas32.General{Rows: s.m, Cols: s.k, Stride: lda, Data: a}
				if s.transA {
					ga.Rows, ga.Cols = s.k, s.m
				}
				gb := blas32.General{Rows: s.k, Cols: s.n, Stride: ldb, Data: bm}
				if s.transB {
					gb.Rows, gb.Cols = s.n, s.k
				}
				gc := blas32.General{Rows: s.m, Cols: s.n, Stride: s.n, Data: c}
				for b.Loop() {
					blas32.Gemm(gonumTrans(s.transA), gonumTrans(s.transB), 1, ga, gb, float32(s.beta), gc)
				}
				reportGFLOPS(b, s)
			})
		})
	}
}

// BenchmarkGemmFloat64 runs the smaller float64 shapes (the float64 path serves the CPU
// reference, not training) on purego, blas and gonum's blas64.
func BenchmarkGemmFloat64(b *testing.B) {
	lib, libErr := Default()
	for _, s := range linearShapes("qkv_2304x768", 2304, 768) {
		b.Run(s.name, func(b *testing.B) {
			a, bm, c, lda, ldb := benchOperands[float64](s)
			b.Run("purego", func(b *testing.B) {
				for b.Loop() {
					Gemm[float64](nil, s.transA, s.transB, s.m, s.n, s.k, 1, a, lda, bm, ldb, s.beta, c, s.n)
				}
				reportGFLOPS(b, s)
			})
			b.Run("blas", func(b *testing.B) {
				if lib == nil {
					b.Skipf("no BLAS library: %v", libErr)
				}
				for b.Loop() {
					Gemm(lib, s.transA, s.transB, s.m, s.n, s.k, 1, a, lda, bm, ldb, s.beta, c, s.n)
				}
				reportGFLOPS(b, s)
			})
			b.Run("gonum", func(b *testing.B) {
				ga := blas64.General{Rows: s.m, Cols: s.k, Stride: lda, Data: a}
				if s.transA {
					ga.Rows, ga.Cols = s.k, s.m
				}
				gb := blas64.General{Rows: s.k, Cols: s.n, Stride: ldb, Data: bm}
				if s.transB {
					gb.Rows, gb.Cols = s.n, s.k
				}
				gc := blas64.General{Rows: s.m, Cols: s.n, Stride: s.n, Data: c}
				for b.Loop() {
					blas64.Gemm(gonumTrans(s.transA), gonumTrans(s.transB), 1, ga, gb, s.beta, gc)
				}
				reportGFLOPS(b, s)
			})
		})
	}
}

// BenchmarkKernel measures the float32 micro-kernel alone on strips that sit in L1: the
// ceiling of the pure Go path on one core.
func BenchmarkKernel(b *testing.B) {
	const depth = 256
	a, bm, c := make([]float32, mr*depth), make([]float32, nr*depth), make([]float32, mr*nr)
	for i := range a {
		a[i] = float32(i%7) * 0.01
	}
	for i := range bm {
		bm[i] = float32(i%5) * 0.01
	}
	for b.Loop() {
		kernel(depth, a, bm, c, nr, mr, nr, 1)
	}
	b.ReportMetric(2*mr*nr*depth*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}
