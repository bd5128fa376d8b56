package gemm

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
)

// gemmCase is one Gemm call to check: the shape, the scalars, and how many unused columns
// pad each leading dimension beyond its row width.
type gemmCase struct {
	transA, transB bool
	m, n, k        int
	alpha, beta    float64
	pad            int
}

func (tc gemmCase) String() string {
	return fmt.Sprintf("transA=%v transB=%v m=%d n=%d k=%d alpha=%g beta=%g pad=%d",
		tc.transA, tc.transB, tc.m, tc.n, tc.k, tc.alpha, tc.beta, tc.pad)
}

var scalars = []float64{0, 1, 0.5, -2}

// gemmCases returns the cases every path runs: every shape built from {0, 1, 7, 33}, larger and
// non-square shapes that cross the tile and kc boundaries, each in all four transpose
// combinations with the 16 (alpha, beta) pairs cycled through; and every pair on one shape.
func gemmCases() []gemmCase {
	var shapes [][3]int
	small := []int{0, 1, 7, 33}
	for _, m := range small {
		for _, n := range small {
			for _, k := range small {
				shapes = append(shapes, [3]int{m, n, k})
			}
		}
	}
	shapes = append(shapes,
		[3]int{65, 129, 33}, [3]int{129, 65, 129}, [3]int{129, 129, 65},
		[3]int{7, 129, 65}, [3]int{129, 1, 33}, [3]int{1, 129, 129}, [3]int{65, 33, 129},
		[3]int{33, 65, 300}, [3]int{200, 7, 1}, [3]int{5, 400, 9},
	)
	var cases []gemmCase
	i := 0
	for _, s := range shapes {
		for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
			cases = append(cases, gemmCase{
				transA: tr[0], transB: tr[1], m: s[0], n: s[1], k: s[2],
				alpha: scalars[i%4], beta: scalars[i/4%4], pad: 3 * (i % 2),
			})
			i++
		}
	}
	for _, alpha := range scalars {
		for _, beta := range scalars {
			for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
				cases = append(cases, gemmCase{transA: tr[0], transB: tr[1], m: 17, n: 19, k: 23, alpha: alpha, beta: beta, pad: 2})
			}
		}
	}
	return cases
}

// operands holds the inputs of one case, stored as Gemm reads them. Padding columns hold NaN,
// so a read outside the matrix shows up in the result, and so does a write into C's padding.
type operands[T Float] struct {
	a, b, c       []T
	lda, ldb, ldc int
}

func newOperands[T Float](tc gemmCase, rng *rand.Rand) operands[T] {
	rowsA, colsA := tc.m, tc.k
	if tc.transA {
		rowsA, colsA = tc.k, tc.m
	}
	rowsB, colsB := tc.k, tc.n
	if tc.transB {
		rowsB, colsB = tc.n, tc.k
	}
	o := operands[T]{lda: colsA + tc.pad, ldb: colsB + tc.pad, ldc: tc.n + tc.pad}
	o.lda, o.ldb, o.ldc = max(1, o.lda), max(1, o.ldb), max(1, o.ldc)
	o.a = randomMatrix[T](rng, rowsA, colsA, o.lda, false)
	o.b = randomMatrix[T](rng, rowsB, colsB, o.ldb, false)
	o.c = randomMatrix[T](rng, tc.m, tc.n, o.ldc, tc.beta == 0)
	return o
}

// randomMatrix returns a rows x cols matrix with leading dimension ld, values uniform in
// [-1, 1), or NaN everywhere when allNaN. The padding columns hold NaN.
func randomMatrix[T Float](rng *rand.Rand, rows, cols, ld int, allNaN bool) []T {
	s := make([]T, rows*ld)
	for i := range s {
		s[i] = T(math.NaN())
		if i%ld < cols && !allNaN {
			s[i] = T(2*rng.Float64() - 1)
		}
	}
	return s
}

// reference returns alpha*op(A)*op(B) + beta*C computed naively in float64, dense m x n, and
// for each element the magnitude |alpha| sum_p |op(A)_ip op(B)_pj| + |beta C_ij| that rounding
// errors scale with. Like BLAS it ignores C when beta == 0.
func reference[T Float](tc gemmCase, o operands[T]) (want, mag []float64) {
	at := func(i, p int) float64 {
		if tc.transA {
			return float64(o.a[p*o.lda+i])
		}
		return float64(o.a[i*o.lda+p])
	}
	bt := func(p, j int) float64 {
		if tc.transB {
			return float64(o.b[j*o.ldb+p])
		}
		return float64(o.b[p*o.ldb+j])
	}
	want, mag = make([]float64, tc.m*tc.n), make([]float64, tc.m*tc.n)
	for i := range tc.m {
		for j := range tc.n {
			var sum, abs float64
			for p := range tc.k {
				x := at(i, p) * bt(p, j)
				sum += x
				abs += math.Abs(x)
			}
			w, g := tc.alpha*sum, math.Abs(tc.alpha)*abs
			if tc.beta != 0 {
				cij := float64(o.c[i*o.ldc+j])
				w += tc.beta * cij
				g += math.Abs(tc.beta * cij)
			}
			want[i*tc.n+j], mag[i*tc.n+j] = w, g
		}
	}
	return want, mag
}

// epsilon is the spacing of T's values just above 1: 2^-23 for float32, 2^-52 for float64.
func epsilon[T Float]() float64 {
	if one := T(1); float64(one+T(math.Pow(2, -52))) != 1 {
		return math.Pow(2, -52)
	}
	return math.Pow(2, -23)
}

// check compares the C that a path computed with the reference. The tolerance is
// 2(k+3)·eps·mag: a k-term dot product summed in any order, then scaled by alpha and added to
// beta*C, is within γ(k+2)·mag ≈ (k+2)·eps/2·mag of the exact result (Higham, Accuracy and
// Stability of Numerical Algorithms, §3.1), and so is the float64 reference for float64 inputs;
// the factor covers both with room to spare. It also checks that C's padding still holds NaN.
func check[T Float](t *testing.T, tc gemmCase, o operands[T], got []T, want, mag []float64) bool {
	t.Helper()
	tol := 2 * float64(tc.k+3) * epsilon[T]()
	for i := range tc.m {
		for j := range o.ldc {
			g := float64(got[i*o.ldc+j])
			if j >= tc.n {
				if !math.IsNaN(g) {
					t.Errorf("%v: padding C[%d][%d] = %g, want it untouched (NaN)", tc, i, j, g)
					return false
				}
				continue
			}
			w, bound := want[i*tc.n+j], tol*mag[i*tc.n+j]
			if !(math.Abs(g-w) <= bound) {
				t.Errorf("%v: C[%d][%d] = %g, want %g ± %g", tc, i, j, g, w, bound)
				return false
			}
		}
	}
	return true
}

// path is one way of computing a product: Gemm with or without a library, or the pure Go
// path forced onto one micro-kernel, with its own tile sizes or with tiles so small that tile,
// strip and kc edges fall inside even the small shapes.
type path struct {
	lib    *Lib
	kernel string // "": call Gemm
	small  bool
}

// kernelNames are the micro-kernels the tests force, on the CPUs that run them.
var kernelNames = []string{"avx512", "avx2", "portable"}

// runner returns a function that computes a case on p. It skips t when p's micro-kernel does
// not run for T on this CPU.
func runner[T Float](t *testing.T, p path) func(tc gemmCase, o operands[T], c []T) {
	t.Helper()
	if p.kernel == "" {
		return func(tc gemmCase, o operands[T], c []T) {
			Gemm(p.lib, tc.transA, tc.transB, tc.m, tc.n, tc.k, T(tc.alpha), o.a, o.lda, o.b, o.ldb, T(tc.beta), c, o.ldc)
		}
	}
	kern, ok := kernelNamed[T](p.kernel)
	if !ok {
		t.Skipf("the %s kernel does not run for %T on this CPU (or this build)", p.kernel, T(0))
	}
	bl := kern.bl
	if p.small {
		bl = blocking{mc: 2 * kern.mr, nc: 2 * kern.nr, kc: 5}
	}
	return func(tc gemmCase, o operands[T], c []T) {
		checkArgs(tc.transA, tc.transB, tc.m, tc.n, tc.k, len(o.a), o.lda, len(o.b), o.ldb, len(c), o.ldc)
		q := problem[T]{tc.transA, tc.transB, tc.m, tc.n, tc.k, T(tc.alpha), T(tc.beta), o.a, o.lda, o.b, o.ldb, c, o.ldc}
		q.solve(nil, kern, bl)
	}
}

// runCases runs every case on p and checks it, stopping after a few failures.
func runCases[T Float](t *testing.T, p path) {
	gemmOn := runner[T](t, p)
	rng := rand.New(rand.NewPCG(1, 2))
	failures := 0
	for _, tc := range gemmCases() {
		o := newOperands[T](tc, rng)
		want, mag := reference(tc, o)
		got := append([]T(nil), o.c...)
		gemmOn(tc, o, got)
		if !check(t, tc, o, got, want, mag) {
			if failures++; failures == 5 {
				t.Fatal("stopping after 5 failing cases")
			}
		}
	}
}

// blasForTest returns the library the BLAS tests use: Default's. Without one the test is
// skipped, or fails when HERD_REQUIRE_BLAS=1 (as CI sets it).
func blasForTest(t *testing.T) *Lib {
	t.Helper()
	lib, err := Default()
	if lib != nil {
		return lib
	}
	reason := "HERD_BLAS=off"
	if err != nil {
		reason = err.Error()
	}
	if os.Getenv("HERD_REQUIRE_BLAS") == "1" {
		t.Fatalf("HERD_REQUIRE_BLAS=1 but no BLAS library: %s", reason)
	}
	t.Skipf("no BLAS library: %s", reason)
	return nil
}

// testPaths are the paths every case runs on: the default (Gemm with a nil Lib), each
// micro-kernel with its own tiles and with small ones, and BLAS. get skips the test when its
// path is unavailable.
var testPaths = func() []testPath {
	paths := []testPath{{"purego", func(*testing.T) path { return path{} }}}
	for _, k := range kernelNames {
		paths = append(paths,
			testPath{"kernel=" + k, func(*testing.T) path { return path{kernel: k} }},
			testPath{"kernel=" + k + "/smallblocks", func(*testing.T) path { return path{kernel: k, small: true} }})
	}
	return append(paths, testPath{"blas", func(t *testing.T) path { return path{lib: blasForTest(t)} }})
}()

type testPath struct {
	name string
	get  func(t *testing.T) path
}

func TestGemm(t *testing.T) {
	for _, tp := range testPaths {
		t.Run(tp.name, func(t *testing.T) {
			p := tp.get(t)
			t.Run("float32", func(t *testing.T) { runCases[float32](t, p) })
			t.Run("float64", func(t *testing.T) { runCases[float64](t, p) })
		})
	}
}

// TestGemmNamedType checks a named element type, which takes the same paths as its
// underlying type.
func TestGemmNamedType(t *testing.T) {
	type f32 float32
	for _, tp := range testPaths {
		t.Run(tp.name, func(t *testing.T) {
			gemmOn := runner[f32](t, tp.get(t))
			tc := gemmCase{transB: true, m: 9, n: 10, k: 11, alpha: 1, beta: 0.5}
			o := newOperands[f32](tc, rand.New(rand.NewPCG(3, 4)))
			want, mag := reference(tc, o)
			got := append([]f32(nil), o.c...)
			gemmOn(tc, o, got)
			check(t, tc, o, got, want, mag)
		})
	}
}

// TestGemmConcurrent runs products from several goroutines at once, as the CPU backend does,
// and compares each with the same product computed alone.
func TestGemmConcurrent(t *testing.T) {
	for _, tp := range testPaths {
		t.Run(tp.name, func(t *testing.T) {
			gemmOn := runner[float32](t, tp.get(t))
			tc := gemmCase{transA: true, m: 48, n: 40, k: 64, alpha: 1, beta: 1}
			o := newOperands[float32](tc, rand.New(rand.NewPCG(5, 6)))
			alone := append([]float32(nil), o.c...)
			gemmOn(tc, o, alone)
			var wg sync.WaitGroup
			results := make([][]float32, 4)
			for g := range results {
				results[g] = append([]float32(nil), o.c...)
				wg.Go(func() {
					for range 3 {
						copy(results[g], o.c)
						gemmOn(tc, o, results[g])
					}
				})
			}
			wg.Wait()
			for g, r := range results {
				for j := range r {
					if r[j] != alone[j] && !(math.IsNaN(float64(r[j])) && math.IsNaN(float64(alone[j]))) {
						t.Fatalf("goroutine %d: C[%d] = %g, computed alone %g", g, j, r[j], alone[j])
					}
				}
			}
		})
	}
}

func TestGemmPanicsOnBadArguments(t *testing.T) {
	s := make([]float32, 12)
	tests := []struct {
		name string
		call func()
		want string
	}{
		{"short a", func() { Gemm(nil, false, false, 3, 2, 4, 1, s[:11], 4, s, 2, 0, s, 2) }, "len(a)=11, want >= 12"},
		{"short b transB", func() { Gemm(nil, false, true, 2, 3, 4, 1, s, 4, s[:10], 4, 0, s, 3) }, "len(b)=10, want >= 12"},
		{"short c", func() { Gemm(nil, false, false, 3, 4, 1, 1, s, 1, s, 4, 0, s[:11], 4) }, "len(c)=11, want >= 12"},
		{"small lda", func() { Gemm(nil, true, false, 3, 2, 2, 1, s, 2, s, 2, 0, s, 2) }, "lda=2, want >= max(1, 3)"},
		{"small ldc", func() { Gemm(nil, false, false, 1, 1, 1, 1, s, 1, s, 1, 0, s, 0) }, "ldc=0, want >= max(1, 1)"},
		{"negative", func() { Gemm(nil, false, false, -1, 1, 1, 1, s, 1, s, 1, 0, s, 1) }, "negative dimension"},
		{"zero Lib", func() { Gemm(&Lib{}, false, false, 1, 1, 1, 1, s, 1, s, 1, 0, s, 1) }, "not returned by Load"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				r := recover()
				if msg, _ := r.(string); !strings.Contains(msg, tt.want) {
					t.Fatalf("panic = %v, want a message containing %q", r, tt.want)
				}
			}()
			tt.call()
		})
	}
}

func TestSplitKeepsTilesAligned(t *testing.T) {
	for _, kern := range kernelsFor[float32]() {
		for _, workers := range []int{1, 2, 3, 8, 64} {
			for _, mn := range [][2]int{{1, 1}, {256, 768}, {256, 32000}, {2304, 768}, {5, 5000}, {2048, 64}, {4096, 64}} {
				m, n := mn[0], mn[1]
				bl := kern.bl.split(m, n, workers, kern.mr, kern.nr)
				if bl.mc%kern.mr != 0 || bl.nc%kern.nr != 0 || bl.mc > kern.bl.mc || bl.nc > kern.bl.nc || bl.kc != kern.bl.kc {
					t.Errorf("%s: split(%d, %d, %d) = %+v, want mc a multiple of %d, nc of %d, within %+v",
						kern.name, m, n, workers, bl, kern.mr, kern.nr, kern.bl)
				}
				// Tiles as even as the block allows: the last one is at most one block short.
				if last := m - (ceilDiv(m, bl.mc)-1)*bl.mc; bl.mc-last >= kern.mr*ceilDiv(m, bl.mc) {
					t.Errorf("%s: split(%d, %d, %d) = %+v leaves a last row of tiles of %d rows", kern.name, m, n, workers, bl, last)
				}
			}
		}
	}
}

// TestSplitPacksLess checks the tiles split picks for 2 workers and a 12 x 32 kernel with
// tiles of up to 240 x 1024: at least 8, even, and cut along the dimension that packs less.
func TestSplitPacksLess(t *testing.T) {
	bl := blocking{mc: 240, nc: 1024, kc: 256}
	for _, c := range []struct{ m, n, mc, nc int }{
		{256, 768, 132, 192},    // 2 x 4 tiles: 4 columns pack op(A) (256 rows) 4 times
		{256, 2304, 132, 576},   // 2 x 4
		{2048, 64, 228, 64},     // 9 x 1: a 64-column B is cheap to pack 9 times
		{2048, 4096, 228, 1024}, // 9 x 4, within the largest tiles already
		{24, 40, 24, 64},        // too small to cut: one tile
	} {
		if got := bl.split(c.m, c.n, 2, 12, 32); got.mc != c.mc || got.nc != c.nc {
			t.Errorf("split(%d, %d) = %d x %d tiles, want %d x %d", c.m, c.n, got.mc, got.nc, c.mc, c.nc)
		}
	}
}

// TestKernelBlockings checks each kernel's own tile sizes: multiples of its block, and kc
// deep enough that the k loop runs unrolled.
func TestKernelBlockings(t *testing.T) {
	check := func(name string, mr, nr int, bl blocking) {
		if bl.mc%mr != 0 || bl.nc%nr != 0 || bl.kc < 4 {
			t.Errorf("%s kernel (%dx%d): blocking %+v, want mc a multiple of mr, nc of nr, kc >= 4", name, mr, nr, bl)
		}
	}
	for _, k := range kernelsFor[float32]() {
		check(k.name+" float32", k.mr, k.nr, k.bl)
	}
	for _, k := range kernelsFor[float64]() {
		check(k.name+" float64", k.mr, k.nr, k.bl)
	}
	if k := kernelsFor[float32](); k[len(k)-1].name != "portable" {
		t.Errorf("float32 kernels end with %q, want the portable kernel last", k[len(k)-1].name)
	}
}
