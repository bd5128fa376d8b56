package kernelstest

import (
	"math"
	"testing"

	"github.com/herd-llm/herd/kernels"
)

// Sizes are chosen not to be multiples of typical tile or vector widths.
var (
	rowsCases = []int{1, 7, 67}
	dimCases  = []int{6, 130}
)

func testMemory(t *testing.T, s *suite) {
	before := s.be.LiveBytes()
	b := s.be.Alloc(1000)
	if got, want := s.be.LiveBytes()-before, int64(1000*s.be.DType().Size()); got != want {
		t.Errorf("LiveBytes grew by %d after Alloc(1000), want %d", got, want)
	}
	v := make([]float64, 1000)
	s.be.Read(v, b)
	for i, x := range v {
		if x != 0 {
			t.Fatalf("Alloc: element %d is %v, want 0", i, x)
		}
	}
	view := s.be.Slice(b, 100, 10)
	if view.Len() != 10 {
		t.Errorf("Slice Len = %d, want 10", view.Len())
	}
	s.be.Write(view, []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10})
	s.be.Read(v, b)
	if v[99] != 0 || v[100] != 1 || v[109] != 10 || v[110] != 0 {
		t.Errorf("write through a view landed at the wrong place: %v", v[98:112])
	}
	s.be.Free(b)
	if got := s.be.LiveBytes(); got != before {
		t.Errorf("LiveBytes = %d after Free, want %d", got, before)
	}
	b = s.be.Alloc(1000)
	s.be.Read(v, b)
	for i, x := range v {
		if x != 0 {
			t.Fatalf("Alloc after Free: element %d is %v, want 0", i, x)
		}
	}
	s.be.Free(b)
}

func testElementwise(t *testing.T, s *suite) {
	for _, n := range []int{1, 1000, 70001} {
		a, b, out := s.random(n, 1), s.random(n, 1), s.poisoned(n)
		s.be.Add(out.got, a.got, b.got)
		s.ref.Add(out.want, a.want, b.want)
		s.check(t, "Add", out, s.tol.Elementwise)
		s.be.Add(a.got, a.got, b.got) // aliasing out and a
		s.ref.Add(a.want, a.want, b.want)
		s.check(t, "Add in place", a, s.tol.Elementwise)
		s.be.Scale(b.got, -0.37)
		s.ref.Scale(b.want, -0.37)
		s.check(t, "Scale", b, s.tol.Elementwise)
		s.be.Copy(out.got, b.got)
		s.ref.Copy(out.want, b.want)
		s.check(t, "Copy", out, s.tol.Elementwise) // b carries Scale's rounding
		s.be.Zero(out.got)
		s.ref.Zero(out.want)
		s.check(t, "Zero", out, 0)
		s.free(a, b, out)
	}
}

func testSumSquares(t *testing.T, s *suite) {
	for _, n := range []int{0, 1, 999, 100003} {
		for _, master := range []bool{false, true} {
			a := s.random(n, 1)
			if master {
				s.free(a)
				a = s.randomM(n, 1)
			}
			got, want := s.be.SumSquares(a.got), s.ref.SumSquares(a.want)
			if math.Abs(got-want) > s.tol.Reduction*math.Max(want, 1e-30) {
				t.Errorf("SumSquares(n=%d, master=%v) = %v, want %v", n, master, got, want)
			}
			s.free(a)
		}
	}
}

// testMatMul runs every transpose combination with C an activation and, on a mixed backend,
// also with C a float32 master buffer, the form in which weight gradients accumulate.
func testMatMul(t *testing.T, s *suite) {
	cKinds := []bool{false}
	if s.mixed != nil {
		cKinds = append(cKinds, true)
	}
	for _, sh := range [][3]int{{1, 1, 1}, {7, 5, 3}, {67, 130, 33}, {64, 96, 260}} {
		m, n, k := sh[0], sh[1], sh[2]
		for _, ta := range []bool{false, true} {
			for _, tb := range []bool{false, true} {
				for _, beta := range []float64{0, 1} {
					for _, master := range cKinds {
						alloc := s.allocAct
						if master {
							alloc = s.allocMaster
						}
						a, b := s.random(m*k, 1), s.random(k*n, 1)
						c := s.poisonedIn(alloc, m*n)
						if beta != 0 {
							s.free(c)
							c = s.randomIn(alloc, m*n, 1)
						}
						s.be.MatMul(c.got, a.got, b.got, m, n, k, ta, tb, beta)
						s.ref.MatMul(c.want, a.want, b.want, m, n, k, ta, tb, beta)
						s.check(t, name("MatMul", "m", m, "n", n, "k", k, "ta", b2i(ta), "tb", b2i(tb), "beta", int(beta), "cmaster", b2i(master)), c, s.tol.Reduction)
						s.free(a, b, c)
					}
				}
			}
		}
	}
}

// residualKinds lists whether the residual stream (and its gradient) is in a master buffer:
// only in activations on a plain backend, in both on a mixed one, where the model keeps it in
// float32.
func (s *suite) residualKinds() []bool {
	if s.mixed != nil {
		return []bool{false, true}
	}
	return []bool{false}
}

// allocResidual allocates in a master buffer when master is set, an activation otherwise.
func (s *suite) allocResidual(master bool) func(int) kernels.Buffer {
	if master {
		return s.allocMaster
	}
	return s.allocAct
}

func testEmbedding(t *testing.T, s *suite) {
	vocab, dim := 37, 19
	tokens := []int32{0, 5, 36, 5, 5, 12, 0, 36, 1}
	for _, master := range s.residualKinds() {
		alloc := s.allocResidual(master)
		table := s.randomM(vocab*dim, 1)
		out := s.poisonedIn(alloc, len(tokens)*dim)
		s.be.Embedding(out.got, table.got, tokens, dim)
		s.ref.Embedding(out.want, table.want, tokens, dim)
		exact := 0.0
		if s.mixed != nil && !master {
			exact = s.tol.Elementwise // the float32 table rounded to the activation type
		}
		s.check(t, name("Embedding", "master", b2i(master)), out, exact)
		dout, dtable := s.randomIn(alloc, len(tokens)*dim, 1), s.randomM(vocab*dim, 1)
		s.be.EmbeddingBackward(dtable.got, dout.got, tokens, dim)
		s.ref.EmbeddingBackward(dtable.want, dout.want, tokens, dim)
		s.check(t, name("EmbeddingBackward (repeated tokens accumulate)", "master", b2i(master)), dtable, s.tol.Elementwise)
		s.free(table, out, dout, dtable)
	}
}

// testRMSNorm runs the norm on activations and, on a mixed backend, as the model runs it on the
// float32 residual stream: x and dx in master buffers, out and dout activations.
func testRMSNorm(t *testing.T, s *suite) {
	for _, master := range s.residualKinds() {
		for _, rows := range rowsCases {
			for _, dim := range dimCases {
				resid := s.allocResidual(master)
				x, gain := s.randomIn(resid, rows*dim, 3), s.randomM(dim, 1)
				out, rstd := s.poisoned(rows*dim), s.poisonedM(rows)
				s.be.RMSNorm(out.got, rstd.got, x.got, gain.got, rows, dim, 1e-6)
				s.ref.RMSNorm(out.want, rstd.want, x.want, gain.want, rows, dim, 1e-6)
				what := name("RMSNorm", "rows", rows, "dim", dim, "residual master", b2i(master))
				s.check(t, what+" out", out, s.tol.Reduction)
				s.check(t, what+" rstd", rstd, s.tol.Reduction)
				dout, dx, dgain := s.random(rows*dim, 1), s.randomIn(resid, rows*dim, 1), s.randomM(dim, 1)
				s.be.RMSNormBackward(dx.got, dgain.got, dout.got, x.got, gain.got, rstd.got, rows, dim)
				s.ref.RMSNormBackward(dx.want, dgain.want, dout.want, x.want, gain.want, rstd.want, rows, dim)
				s.check(t, what+" dx", dx, s.tol.Reduction)
				s.check(t, what+" dgain", dgain, s.tol.Reduction)
				s.free(x, gain, out, rstd, dout, dx, dgain)
			}
		}
	}
}

func testRoPE(t *testing.T, s *suite) {
	for _, sh := range [][5]int{{1, 1, 1, 2, 0}, {2, 13, 3, 8, 0}, {1, 9, 2, 64, 300}} {
		b, tt, h, d, pos0 := sh[0], sh[1], sh[2], sh[3], sh[4]
		n := b * tt * h * d
		x, out := s.random(n, 1), s.poisoned(n)
		what := name("RoPE", "b", b, "t", tt, "h", h, "d", d, "pos0", pos0)
		s.be.RoPE(out.got, x.got, b, tt, h, d, pos0, 10000)
		s.ref.RoPE(out.want, x.want, b, tt, h, d, pos0, 10000)
		s.check(t, what, out, s.tol.Elementwise*10)
		dx := s.poisoned(n)
		s.be.RoPEBackward(dx.got, out.got, b, tt, h, d, pos0, 10000)
		s.ref.RoPEBackward(dx.want, out.want, b, tt, h, d, pos0, 10000)
		s.check(t, what+" backward", dx, s.tol.Elementwise*10)
		s.be.RoPE(x.got, x.got, b, tt, h, d, pos0, 10000) // in place
		s.ref.RoPE(x.want, x.want, b, tt, h, d, pos0, 10000)
		s.check(t, what+" in place", x, s.tol.Elementwise*10)
		s.free(x, out, dx)
	}
}

func testAttention(t *testing.T, s *suite) {
	for _, sh := range [][4]int{{1, 1, 1, 8}, {2, 67, 3, 16}, {1, 130, 2, 64}} {
		b, tt, h, d := sh[0], sh[1], sh[2], sh[3]
		n := b * tt * h * d
		q, k, v := s.random(n, 1), s.random(n, 1), s.random(n, 1)
		out, lse := s.poisoned(n), s.poisonedM(b*h*tt)
		what := name("Attention", "b", b, "t", tt, "h", h, "d", d)
		s.be.Attention(out.got, lse.got, q.got, k.got, v.got, b, tt, h, d)
		s.ref.Attention(out.want, lse.want, q.want, k.want, v.want, b, tt, h, d)
		s.check(t, what+" out", out, s.tol.Reduction)
		s.check(t, what+" lse", lse, s.tol.Reduction)
		dout := s.random(n, 1)
		dq, dk, dv := s.poisoned(n), s.poisoned(n), s.poisoned(n)
		s.be.AttentionBackward(dq.got, dk.got, dv.got, dout.got, out.got, lse.got, q.got, k.got, v.got, b, tt, h, d)
		s.ref.AttentionBackward(dq.want, dk.want, dv.want, dout.want, out.want, lse.want, q.want, k.want, v.want, b, tt, h, d)
		s.check(t, what+" dq", dq, s.tol.Reduction)
		s.check(t, what+" dk", dk, s.tol.Reduction)
		s.check(t, what+" dv", dv, s.tol.Reduction)
		s.free(q, k, v, out, lse, dout, dq, dk, dv)
	}
}

func testSwiGLU(t *testing.T, s *suite) {
	n := 5003
	a, b, out := s.random(n, 2), s.random(n, 1), s.poisoned(n)
	s.be.SwiGLU(out.got, a.got, b.got)
	s.ref.SwiGLU(out.want, a.want, b.want)
	s.check(t, "SwiGLU", out, s.tol.Elementwise*10)
	dout, da, db := s.random(n, 1), s.poisoned(n), s.poisoned(n)
	s.be.SwiGLUBackward(da.got, db.got, dout.got, a.got, b.got)
	s.ref.SwiGLUBackward(da.want, db.want, dout.want, a.want, b.want)
	s.check(t, "SwiGLUBackward da", da, s.tol.Elementwise*10)
	s.check(t, "SwiGLUBackward db", db, s.tol.Elementwise*10)
	s.free(a, b, out, dout, da, db)
}

// testCrossEntropy runs on activation logits and, on a mixed backend, on float32 logits, as
// the model feeds them.
func testCrossEntropy(t *testing.T, s *suite) {
	for _, master := range s.residualKinds() {
		testCrossEntropyIn(t, s, s.allocResidual(master), master)
	}
}

func testCrossEntropyIn(t *testing.T, s *suite, alloc func(int) kernels.Buffer, master bool) {
	for _, sh := range [][2]int{{1, 2}, {9, 1000}, {33, 32000}} {
		rows, vocab := sh[0], sh[1]
		targets := make([]int32, rows)
		for i := range targets {
			targets[i] = int32(s.rng.IntN(vocab))
		}
		if rows > 2 {
			targets[1] = -1 // ignored row
		}
		logits := s.randomIn(alloc, rows*vocab, 4)
		losses, lse := s.poisonedM(rows), s.poisonedM(rows)
		what := name("CrossEntropy", "rows", rows, "vocab", vocab, "master", b2i(master))
		s.be.CrossEntropy(losses.got, lse.got, logits.got, targets, rows, vocab)
		s.ref.CrossEntropy(losses.want, lse.want, logits.want, targets, rows, vocab)
		s.check(t, what+" losses", losses, s.tol.Reduction)
		s.check(t, what+" lse", lse, s.tol.Reduction)
		dl := s.poisonedIn(alloc, rows*vocab)
		s.be.CrossEntropyBackward(dl.got, logits.got, lse.got, targets, rows, vocab, 0.25)
		s.ref.CrossEntropyBackward(dl.want, logits.want, lse.want, targets, rows, vocab, 0.25)
		// Each element of dlogits is scale times a difference of probabilities in [-1, 1].
		s.checkScaled(t, what+" dlogits", dl, s.tol.Reduction, 0.25)
		s.be.CrossEntropyBackward(logits.got, logits.got, lse.got, targets, rows, vocab, 0.25)
		s.ref.CrossEntropyBackward(logits.want, logits.want, lse.want, targets, rows, vocab, 0.25)
		s.checkScaled(t, what+" dlogits in place", logits, s.tol.Reduction, 0.25)
		s.free(logits, losses, lse, dl)
	}
}

// testAdamW updates master buffers; on a mixed backend through AdamWUpdateCast, whose working
// copy must equal the updated parameters up to rounding to the activation type. Master state
// is float32 on every backend, so its tolerance is float32's whatever the activation type.
// testCrossEntropyNaN: a NaN logit anywhere in a row makes that row's loss NaN, so a model
// that diverged cannot report a finite loss. Early columns matter on a GPU, where each thread's
// first value meets a running maximum of -inf.
func testCrossEntropyNaN(t *testing.T, s *suite) {
	const rows, vocab = 3, 1000
	v := make([]float64, rows*vocab)
	for i := range v {
		v[i] = s.rng.NormFloat64()
	}
	v[0*vocab+5] = math.NaN()
	v[2*vocab+vocab-1] = math.NaN()
	logits := s.from(v)
	losses, lse := s.poisonedM(rows), s.poisonedM(rows)
	s.be.CrossEntropy(losses.got, lse.got, logits.got, []int32{1, 2, 3}, rows, vocab)
	got := make([]float64, rows)
	s.be.Read(got, losses.got)
	if !math.IsNaN(got[0]) || math.IsNaN(got[1]) || !math.IsNaN(got[2]) {
		t.Errorf("losses %v for rows with a NaN logit at column 5, none, and column %d: want NaN, finite, NaN", got, vocab-1)
	}
	s.free(logits, losses, lse)
}

func testAdamW(t *testing.T, s *suite) {
	n := 4099
	p, g := s.randomM(n, 0.1), s.randomM(n, 0.01)
	m, v := s.randomM(n, 0.001), s.randomM(n, 0.001)
	s.be.Write(v.got, abs(s.readRef(v)))
	s.ref.Write(v.want, abs(s.readRef(v)))
	w := s.poisoned(n)
	for step := 1; step <= 3; step++ {
		hp := kernels.AdamW{LR: 1e-3, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1, Step: step, GradScale: 0.5}
		if s.mixed != nil {
			s.mixed.AdamWUpdateCast(w.got, p.got, g.got, m.got, v.got, hp)
		} else {
			s.be.AdamWUpdate(p.got, g.got, m.got, v.got, hp)
		}
		s.ref.AdamWUpdate(p.want, g.want, m.want, v.want, hp)
	}
	tol := s.tol.Elementwise * 10
	if s.mixed != nil {
		tol = Float32.Elementwise * 10
		s.ref.Copy(w.want, p.want)
		s.check(t, "AdamWUpdateCast working copy", w, s.tol.Elementwise)
	}
	s.check(t, "AdamW params", p, tol)
	s.check(t, "AdamW m", m, tol)
	s.check(t, "AdamW v", v, tol)
	s.free(p, g, m, v, w)
}

// testCast converts between master and activation buffers, both ways, on a mixed backend.
func testCast(t *testing.T, s *suite) {
	if s.mixed == nil {
		t.Skip("the backend is not mixed-precision")
	}
	for _, n := range []int{1, 1000, 70001} {
		src := s.randomM(n, 1)
		act := s.poisoned(n)
		s.mixed.Cast(act.got, src.got)
		s.ref.Copy(act.want, src.want)
		s.check(t, name("Cast master->activation", "n", n), act, s.tol.Elementwise)
		back := s.poisonedM(n)
		s.mixed.Cast(back.got, act.got)
		s.ref.Copy(back.want, act.want)
		vals := make([]float64, n)
		s.be.Read(vals, act.got)
		s.ref.Write(back.want, vals) // widening is exact: the master must hold the activation's values
		s.check(t, name("Cast activation->master", "n", n), back, 0)
		s.free(src, act, back)
	}
}

func (s *suite) readRef(p pair) []float64 {
	v := make([]float64, p.n)
	s.ref.Read(v, p.want)
	return v
}

func abs(v []float64) []float64 {
	for i := range v {
		v[i] = math.Abs(v[i])
	}
	return v
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// AttentionCached over a cache must equal the last rows of full causal attention.
func testAttentionCached(t *testing.T, s *suite) {
	for _, sh := range [][3]int{{1, 1, 8}, {3, 70, 16}, {70, 70, 8}} {
		tq, tk, d := sh[0], sh[1], sh[2]
		h := 3
		w := h * d
		q, k, v := s.random(tk*w, 1), s.random(tk*w, 1), s.random(tk*w, 1)
		full, lse := s.ref.Alloc(tk*w), s.ref.Alloc(h*tk)
		s.ref.Attention(full, lse, q.want, k.want, v.want, 1, tk, h, d)
		out := s.poisoned(tq * w)
		qLast := s.be.Slice(q.got, (tk-tq)*w, tq*w)
		s.be.AttentionCached(out.got, qLast, k.got, v.got, tq, tk, h, d)
		s.ref.Copy(out.want, s.ref.Slice(full, (tk-tq)*w, tq*w))
		s.check(t, name("AttentionCached", "tq", tq, "tk", tk, "d", d), out, s.tol.Reduction)
		s.ref.Free(full)
		s.ref.Free(lse)
		s.free(q, k, v, out)
	}
}
