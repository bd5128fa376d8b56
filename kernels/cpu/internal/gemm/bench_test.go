package gemm

import (
	"math/rand/v2"
	"testing"
	"time"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/gonum/blas/blas64"
)

// benchShape is one matrix multiply of a training step: of LLaMA 125m with B*T = 256 tokens,
// d = 768, ffn = 2048 and vocab = 32000, or of the quickstart's tiny model with B*T = 2048
// tokens, d = 64, ffn = 256 and vocab = 4096. A linear layer y = x W^T with W [out, in] runs
// forward as y[tokens,out] = x[tokens,in] W^T (transB), and backward as dW[out,in] += dY^T X
// (transA, beta 1) and dX[tokens,in] = dY W.
type benchShape struct {
	name           string
	transA, transB bool
	m, n, k        int
	beta           float64
}

func linearShapes(name string, tokens, out, in int) []benchShape {
	return []benchShape{
		{name + "_fwd", false, true, tokens, out, in, 0},
		{name + "_dW", true, false, out, in, tokens, 1},
		{name + "_dX", false, false, tokens, in, out, 0},
	}
}

func benchShapes() []benchShape {
	var s []benchShape
	s = append(s, linearShapes("qkv_2304x768", 256, 2304, 768)...)
	s = append(s, linearShapes("attnout_768x768", 256, 768, 768)...)
	s = append(s, linearShapes("ffnup_2048x768", 256, 2048, 768)...)
	s = append(s, linearShapes("ffndown_768x2048", 256, 768, 2048)...)
	s = append(s, linearShapes("lmhead_32000x768", 256, 32000, 768)...)
	return s
}

// tinyShapes are the quickstart model's multiplies: small d, many tokens, and an output head
// that does most of the arithmetic.
func tinyShapes() []benchShape {
	var s []benchShape
	s = append(s, linearShapes("tiny_qkv_192x64", 2048, 192, 64)...)
	s = append(s, linearShapes("tiny_ffnup_256x64", 2048, 256, 64)...)
	s = append(s, linearShapes("tiny_ffndown_64x256", 2048, 64, 256)...)
	s = append(s, linearShapes("tiny_lmhead_4096x64", 2048, 4096, 64)...)
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
	b.ReportMetric(gflops(s, b.N, b.Elapsed()), "GFLOP/s")
}

// gflops is the rate of n multiplies of shape s in time d.
func gflops(s benchShape, n int, d time.Duration) float64 {
	return 2 * float64(s.m) * float64(s.n) * float64(s.k) * float64(n) / d.Seconds() / 1e9
}

// BenchmarkGemm runs the float32 shapes on each path: purego (with the fastest micro-kernel of
// this CPU), blas (skipped when no library loads) and gonum's blas32, which is pure Go with
// assembly vector kernels.
func BenchmarkGemm(b *testing.B) {
	lib, libErr := Default()
	for _, s := range append(benchShapes(), tinyShapes()...) {
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
	for _, s := range linearShapes("qkv_2304x768", 256, 2304, 768) {
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

// BenchmarkGemmKernels runs each float32 shape on the pure Go path once with each
// micro-kernel this CPU runs (the assembly ones and the portable one), in turn in the same
// loop, and reports each one's rate and the ratio of the fastest kernel's (the one Gemm uses)
// to the portable kernel's:
//
//	go test ./kernels/cpu/internal/gemm -run '^$' -bench GemmKernels -benchtime 3x
func BenchmarkGemmKernels(b *testing.B) {
	kerns := kernelsFor[float32]()
	if len(kerns) == 1 {
		b.Skip("only the portable kernel runs on this CPU")
	}
	for _, s := range append(benchShapes(), tinyShapes()...) {
		b.Run(s.name, func(b *testing.B) {
			a, bm, c, lda, ldb := benchOperands[float32](s)
			q := problem[float32]{s.transA, s.transB, s.m, s.n, s.k, 1, float32(s.beta), a, lda, bm, ldb, c, s.n}
			spent := make([]time.Duration, len(kerns))
			for b.Loop() {
				for i, k := range kerns {
					start := time.Now()
					q.solve(nil, k, k.bl)
					spent[i] += time.Since(start)
				}
			}
			for i, k := range kerns {
				b.ReportMetric(gflops(s, b.N, spent[i]), k.name+"-GFLOP/s")
			}
			b.ReportMetric(spent[len(kerns)-1].Seconds()/spent[0].Seconds(), "speedup")
		})
	}
}

// BenchmarkKernel measures each float32 micro-kernel alone on strips that sit in L1: the
// ceiling of the pure Go path on one core.
func BenchmarkKernel(b *testing.B) {
	const depth = 256
	for _, k := range kernelsFor[float32]() {
		b.Run(k.name, func(b *testing.B) {
			a, bm, c := make([]float32, k.mr*depth), make([]float32, k.nr*depth), make([]float32, k.mr*k.nr)
			for i := range a {
				a[i] = float32(i%7) * 0.01
			}
			for i := range bm {
				bm[i] = float32(i%5) * 0.01
			}
			for b.Loop() {
				k.run(depth, a, bm, c, k.nr, 1, 1)
			}
			b.ReportMetric(2*float64(k.mr*k.nr*depth*b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}
