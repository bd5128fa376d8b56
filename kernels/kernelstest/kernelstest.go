// Package kernelstest is the conformance suite every kernels.Backend must pass: each op runs
// on the backend under test and on the float64 CPU reference with the same random inputs,
// and the outputs must agree within the backend's stated tolerance. Outputs that an op
// overwrites are poisoned with NaN first, so an element the op forgets to write fails.
package kernelstest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/kernels/cpu"
)

// Tolerance bounds the error of a backend against the float64 reference, as
// max|got - want| / max(max|want|, 1e-30) over each output tensor.
type Tolerance struct {
	Elementwise float64 // ops without long reductions: add, swiglu, rope, embedding, adamw
	Reduction   float64 // ops that sum over a row or more: matmul, norms, attention, softmax
}

// Float32 is the tolerance of a float32 backend: a few units of float32's 1.2e-7 epsilon for
// elementwise ops, and the growth of rounding error over reductions of up to ~1000 terms
// (attention softmax, matmul inner dimension) for the rest.
var Float32 = Tolerance{Elementwise: 1e-6, Reduction: 2e-5}

// BFloat16 is the tolerance of a mixed-precision backend with bfloat16 activations: two units
// of bfloat16's rounding error 2^-9 for elementwise ops, whose only error is the rounding of
// the output; for reductions, the output rounding plus that of intermediates a fast kernel
// keeps in bfloat16 (attention's probabilities before they multiply v, GEMM outputs), with
// every sum accumulated in float32.
var BFloat16 = Tolerance{Elementwise: 4e-3, Reduction: 2e-2}

// RunAll runs every op of the suite as a subtest.
func RunAll(t *testing.T, be kernels.Backend, tol Tolerance) {
	ref := cpu.New[float64](cpu.Options{})
	s := &suite{be: be, ref: ref, tol: tol, rng: rand.New(rand.NewPCG(1, 7))}
	s.mixed, _ = be.(kernels.Mixed)
	for _, c := range []struct {
		name string
		fn   func(t *testing.T, s *suite)
	}{
		{"Memory", testMemory},
		{"Elementwise", testElementwise},
		{"SumSquares", testSumSquares},
		{"MatMul", testMatMul},
		{"Embedding", testEmbedding},
		{"RMSNorm", testRMSNorm},
		{"RoPE", testRoPE},
		{"Attention", testAttention},
		{"AttentionCached", testAttentionCached},
		{"SwiGLU", testSwiGLU},
		{"CrossEntropy", testCrossEntropy},
		{"CrossEntropyNaN", testCrossEntropyNaN},
		{"AdamW", testAdamW},
		{"Cast", testCast},
	} {
		t.Run(c.name, func(t *testing.T) { c.fn(t, s) })
	}
}

type suite struct {
	be, ref kernels.Backend
	mixed   kernels.Mixed // be, when it implements kernels.Mixed
	tol     Tolerance
	rng     *rand.Rand
}

// allocAct and allocMaster allocate in the backend under test: an activation buffer, and a
// float32 buffer where kernels.Mixed says ops take one (the backend's own type otherwise).
func (s *suite) allocAct(n int) kernels.Buffer { return s.be.Alloc(n) }

func (s *suite) allocMaster(n int) kernels.Buffer {
	if s.mixed != nil {
		return s.mixed.AllocMaster(n)
	}
	return s.be.Alloc(n)
}

// pair is one tensor held by both backends with the same values.
type pair struct {
	got, want kernels.Buffer
	n         int
}

func (s *suite) random(n int, scale float64) pair { return s.randomIn(s.allocAct, n, scale) }

// randomM is random in a master buffer (see allocMaster).
func (s *suite) randomM(n int, scale float64) pair { return s.randomIn(s.allocMaster, n, scale) }

func (s *suite) randomIn(alloc func(int) kernels.Buffer, n int, scale float64) pair {
	v := make([]float64, n)
	for i := range v {
		v[i] = s.rng.NormFloat64() * scale
	}
	return s.fromIn(alloc, v)
}

// from writes v to both backends. The reference receives the values as the backend under
// test stored them (rounded to its dtype), so both compute on identical inputs.
func (s *suite) from(v []float64) pair { return s.fromIn(s.allocAct, v) }

func (s *suite) fromIn(alloc func(int) kernels.Buffer, v []float64) pair {
	p := pair{got: alloc(len(v)), want: s.ref.Alloc(len(v)), n: len(v)}
	s.be.Write(p.got, v)
	s.be.Read(v, p.got)
	s.ref.Write(p.want, v)
	return p
}

// poisoned returns a pair whose backend copy is NaN; the reference copy is zero.
func (s *suite) poisoned(n int) pair { return s.poisonedIn(s.allocAct, n) }

// poisonedM is poisoned in a master buffer (see allocMaster).
func (s *suite) poisonedM(n int) pair { return s.poisonedIn(s.allocMaster, n) }

func (s *suite) poisonedIn(alloc func(int) kernels.Buffer, n int) pair {
	v := make([]float64, n)
	for i := range v {
		v[i] = math.NaN()
	}
	p := pair{got: alloc(n), want: s.ref.Alloc(n), n: n}
	s.be.Write(p.got, v)
	return p
}

func (s *suite) free(ps ...pair) {
	for _, p := range ps {
		s.be.Free(p.got)
		s.ref.Free(p.want)
	}
}

// check compares one output pair and reports the normalized error.
func (s *suite) check(t *testing.T, what string, p pair, tol float64) {
	t.Helper()
	s.checkScaled(t, what, p, tol, 0)
}

// checkScaled is check with the error normalized by at least scale, for outputs whose natural
// magnitude is known and whose largest element may be far smaller by chance (a softmax
// gradient p - 1 with p close to 1 cancels to a few units of rounding).
func (s *suite) checkScaled(t *testing.T, what string, p pair, tol, scale float64) {
	t.Helper()
	got, want := make([]float64, p.n), make([]float64, p.n)
	s.be.Read(got, p.got)
	s.ref.Read(want, p.want)
	if err := compare(got, want, tol, scale); err != nil {
		t.Errorf("%s: %v", what, err)
	}
}

func compare(got, want []float64, tol, scale float64) error {
	var maxRef, maxErr float64
	worst := -1
	for i := range want {
		maxRef = math.Max(maxRef, math.Abs(want[i]))
		e := math.Abs(got[i] - want[i])
		if math.IsNaN(got[i]) || math.IsInf(got[i], 0) {
			return fmt.Errorf("element %d is %v (want %v)", i, got[i], want[i])
		}
		if e > maxErr {
			maxErr, worst = e, i
		}
	}
	rel := maxErr / math.Max(maxRef, math.Max(scale, 1e-30))
	if rel > tol {
		return fmt.Errorf("normalized error %.3g > %.3g (element %d: got %v, want %v)", rel, tol, worst, got[worst], want[worst])
	}
	return nil
}

// name formats a case name from an op and key/value pairs.
func name(op string, kv ...any) string {
	s := op
	for i := 0; i+1 < len(kv); i += 2 {
		s += fmt.Sprintf(" %v=%v", kv[i], kv[i+1])
	}
	return s
}

// RequireBLAS reports whether the environment demands the BLAS path (HERD_REQUIRE_BLAS=1),
// as CI does, so a missing library fails instead of silently testing the fallback twice.
func RequireBLAS() bool { return os.Getenv("HERD_REQUIRE_BLAS") == "1" }
