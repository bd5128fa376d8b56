package cpu_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/kernels/cpu"
)

// Gradient checks: every backward op of the float64 backend against central finite
// differences of the scalar L = sum(w * forward(inputs)) for a random w. The relative error
// ||fd - analytic|| / ||fd|| must stay below 1e-6; with float64 and h = 1e-5 the truncation
// error of central differences is about 1e-10 relative, so this bound has ample margin and
// still catches any wrong term.
const (
	fdStep = 1e-5
	fdTol  = 1e-6
)

type gradEnv struct {
	be  *cpu.Backend[float64]
	rng *rand.Rand
}

func newGradEnv(seed uint64) *gradEnv {
	return &gradEnv{be: cpu.New[float64](cpu.Options{}), rng: rand.New(rand.NewPCG(seed, 3))}
}

func (e *gradEnv) rand(n int, scale float64) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = e.rng.NormFloat64() * scale
	}
	return v
}

func (e *gradEnv) buf(v []float64) kernels.Buffer {
	b := e.be.Alloc(len(v))
	e.be.Write(b, v)
	return b
}

func (e *gradEnv) read(b kernels.Buffer) []float64 {
	v := make([]float64, b.Len())
	e.be.Read(v, b)
	return v
}

func dot(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

// checkGrad perturbs every element of x, evaluating loss after each change, and compares the
// central differences with analytic.
func checkGrad(t *testing.T, what string, x, analytic []float64, loss func() float64) {
	t.Helper()
	var num, den float64
	for i := range x {
		orig := x[i]
		x[i] = orig + fdStep
		lp := loss()
		x[i] = orig - fdStep
		lm := loss()
		x[i] = orig
		fd := (lp - lm) / (2 * fdStep)
		num += (fd - analytic[i]) * (fd - analytic[i])
		den += fd * fd
	}
	rel := math.Sqrt(num) / math.Max(math.Sqrt(den), 1e-300)
	if rel > fdTol || den == 0 {
		t.Errorf("%s: relative gradient error %.3g (bound %g, |fd| = %.3g)", what, rel, fdTol, math.Sqrt(den))
	} else {
		t.Logf("%s: relative gradient error %.2g", what, rel)
	}
}

func TestGradRMSNorm(t *testing.T) {
	e := newGradEnv(1)
	rows, dim := 5, 13
	x, gain, w := e.rand(rows*dim, 2), e.rand(dim, 1), e.rand(rows*dim, 1)
	fwd := func() float64 {
		out, rstd := e.be.Alloc(rows*dim), e.be.Alloc(rows)
		e.be.RMSNorm(out, rstd, e.buf(x), e.buf(gain), rows, dim, 1e-6)
		return dot(e.read(out), w)
	}
	xb, gb := e.buf(x), e.buf(gain)
	out, rstd := e.be.Alloc(rows*dim), e.be.Alloc(rows)
	e.be.RMSNorm(out, rstd, xb, gb, rows, dim, 1e-6)
	dx, dgain := e.be.Alloc(rows*dim), e.be.Alloc(dim)
	e.be.RMSNormBackward(dx, dgain, e.buf(w), xb, gb, rstd, rows, dim)
	checkGrad(t, "RMSNorm dx", x, e.read(dx), fwd)
	checkGrad(t, "RMSNorm dgain", gain, e.read(dgain), fwd)
}

func TestGradRoPE(t *testing.T) {
	e := newGradEnv(2)
	b, tt, h, d, pos0 := 2, 5, 3, 8, 7
	n := b * tt * h * d
	x, w := e.rand(n, 1), e.rand(n, 1)
	fwd := func() float64 {
		out := e.be.Alloc(n)
		e.be.RoPE(out, e.buf(x), b, tt, h, d, pos0, 10000)
		return dot(e.read(out), w)
	}
	dx := e.buf(w)
	e.be.RoPEBackward(dx, dx, b, tt, h, d, pos0, 10000)
	checkGrad(t, "RoPE dx", x, e.read(dx), fwd)
}

func TestGradSwiGLU(t *testing.T) {
	e := newGradEnv(3)
	n := 200
	a, bv, w := e.rand(n, 3), e.rand(n, 1), e.rand(n, 1)
	fwd := func() float64 {
		out := e.be.Alloc(n)
		e.be.SwiGLU(out, e.buf(a), e.buf(bv))
		return dot(e.read(out), w)
	}
	da, db := e.be.Alloc(n), e.be.Alloc(n)
	e.be.SwiGLUBackward(da, db, e.buf(w), e.buf(a), e.buf(bv))
	checkGrad(t, "SwiGLU da", a, e.read(da), fwd)
	checkGrad(t, "SwiGLU db", bv, e.read(db), fwd)
}

// Attention with T crossing the tile boundary (tiles are 64 wide) and ending mid-tile.
func TestGradAttention(t *testing.T) {
	e := newGradEnv(4)
	b, tt, h, d := 1, 70, 2, 4
	n := b * tt * h * d
	q, k, v, w := e.rand(n, 1), e.rand(n, 1), e.rand(n, 1), e.rand(n, 1)
	fwd := func() float64 {
		out, lse := e.be.Alloc(n), e.be.Alloc(b*h*tt)
		e.be.Attention(out, lse, e.buf(q), e.buf(k), e.buf(v), b, tt, h, d)
		return dot(e.read(out), w)
	}
	qb, kb, vb := e.buf(q), e.buf(k), e.buf(v)
	out, lse := e.be.Alloc(n), e.be.Alloc(b*h*tt)
	e.be.Attention(out, lse, qb, kb, vb, b, tt, h, d)
	dq, dk, dv := e.be.Alloc(n), e.be.Alloc(n), e.be.Alloc(n)
	e.be.AttentionBackward(dq, dk, dv, e.buf(w), out, lse, qb, kb, vb, b, tt, h, d)
	checkGrad(t, "Attention dq", q, e.read(dq), fwd)
	checkGrad(t, "Attention dk", k, e.read(dk), fwd)
	checkGrad(t, "Attention dv", v, e.read(dv), fwd)
}

func TestGradCrossEntropy(t *testing.T) {
	e := newGradEnv(5)
	rows, vocab := 6, 11
	logits := e.rand(rows*vocab, 2)
	targets := []int32{3, -1, 0, 10, 3, 7}
	w := e.rand(rows, 1)
	fwd := func() float64 {
		loss, lse := e.be.Alloc(rows), e.be.Alloc(rows)
		e.be.CrossEntropy(loss, lse, e.buf(logits), targets, rows, vocab)
		return dot(e.read(loss), w)
	}
	// With per-row weights the gradient is row-scaled; check the op at scale 1 row by row.
	lb := e.buf(logits)
	loss, lse := e.be.Alloc(rows), e.be.Alloc(rows)
	e.be.CrossEntropy(loss, lse, lb, targets, rows, vocab)
	dl := e.be.Alloc(rows * vocab)
	e.be.CrossEntropyBackward(dl, lb, lse, targets, rows, vocab, 1)
	g := e.read(dl)
	for r := 0; r < rows; r++ {
		for j := 0; j < vocab; j++ {
			g[r*vocab+j] *= w[r]
		}
	}
	checkGrad(t, "CrossEntropy dlogits", logits, g, fwd)
}

func TestGradEmbedding(t *testing.T) {
	e := newGradEnv(6)
	vocab, dim := 9, 5
	tokens := []int32{1, 8, 1, 0, 1}
	table, w := e.rand(vocab*dim, 1), e.rand(len(tokens)*dim, 1)
	fwd := func() float64 {
		out := e.be.Alloc(len(tokens) * dim)
		e.be.Embedding(out, e.buf(table), tokens, dim)
		return dot(e.read(out), w)
	}
	dt := e.be.Alloc(vocab * dim)
	e.be.EmbeddingBackward(dt, e.buf(w), tokens, dim)
	got := e.read(dt)
	// Rows of tokens that never occur have zero gradient; finite differences agree, but the
	// relative check needs a nonzero total, which the used rows provide.
	checkGrad(t, "Embedding dtable", table, got, fwd)
}

// Linear layers as the model uses them: y = x W^T, dW += dy^T x, dx = dy W.
func TestGradLinear(t *testing.T) {
	e := newGradEnv(7)
	n, in, out := 7, 5, 6
	x, wt, w := e.rand(n*in, 1), e.rand(out*in, 1), e.rand(n*out, 1)
	fwd := func() float64 {
		y := e.be.Alloc(n * out)
		e.be.MatMul(y, e.buf(x), e.buf(wt), n, out, in, false, true, 0)
		return dot(e.read(y), w)
	}
	dy := e.buf(w)
	dW, dx := e.be.Alloc(out*in), e.be.Alloc(n*in)
	e.be.MatMul(dW, dy, e.buf(x), out, in, n, true, false, 1)
	e.be.MatMul(dx, dy, e.buf(wt), n, in, out, false, false, 0)
	checkGrad(t, "Linear dW", wt, e.read(dW), fwd)
	checkGrad(t, "Linear dx", x, e.read(dx), fwd)
}
