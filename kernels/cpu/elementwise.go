package cpu

import (
	"math"

	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/kernels/cpu/internal/par"
)

// grain is the number of elements below which an elementwise op stays on one goroutine.
const grain = 1 << 14

// Zero implements kernels.Backend.
func (be *Backend[T]) Zero(x kernels.Buffer) {
	d := be.data(x)
	par.For(len(d), grain, func(lo, hi int) { clear(d[lo:hi]) })
}

// Copy implements kernels.Backend.
func (be *Backend[T]) Copy(dst, src kernels.Buffer) {
	d, s := be.data(dst), be.data(src)
	checkLen("Copy", len(d), src)
	par.For(len(d), grain, func(lo, hi int) { copy(d[lo:hi], s[lo:hi]) })
}

// Add implements kernels.Backend.
func (be *Backend[T]) Add(out, a, b kernels.Buffer) {
	o, x, y := be.data(out), be.data(a), be.data(b)
	checkLen("Add", len(o), a, b)
	par.For(len(o), grain, func(lo, hi int) {
		x, y := x[lo:hi], y[lo:hi]
		for i := range o[lo:hi] {
			o[lo+i] = x[i] + y[i]
		}
	})
}

// Scale implements kernels.Backend.
func (be *Backend[T]) Scale(x kernels.Buffer, s float64) {
	d := be.data(x)
	st := T(s)
	par.For(len(d), grain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			d[i] *= st
		}
	})
}

// sumChunk is the fixed chunk of SumSquares: partial sums are formed per chunk and added in
// chunk order, so the result does not depend on the number of cores.
const sumChunk = 1 << 15

// SumSquares implements kernels.Backend. Each chunk is summed in float64 with four
// independent accumulators, which keeps the loop at memory speed instead of add latency.
func (be *Backend[T]) SumSquares(x kernels.Buffer) float64 {
	d := be.data(x)
	chunks := (len(d) + sumChunk - 1) / sumChunk
	part := make([]float64, chunks)
	par.For(chunks, 1, func(lo, hi int) {
		for c := lo; c < hi; c++ {
			v := d[c*sumChunk : min((c+1)*sumChunk, len(d))]
			var s0, s1, s2, s3 float64
			for ; len(v) >= 4; v = v[4:] {
				a, b, e, f := float64(v[0]), float64(v[1]), float64(v[2]), float64(v[3])
				s0 += a * a
				s1 += b * b
				s2 += e * e
				s3 += f * f
			}
			for _, x := range v {
				s0 += float64(x) * float64(x)
			}
			part[c] = (s0 + s1) + (s2 + s3)
		}
	})
	var s float64
	for _, p := range part {
		s += p
	}
	return s
}

// SwiGLU implements kernels.Backend: out = silu(a) * b. The goroutines take groups of 8
// elements, so that which elements the vector routine computes (all but the last len%8) does
// not depend on the number of cores.
func (be *Backend[T]) SwiGLU(out, a, b kernels.Buffer) {
	o, x, y := be.data(out), be.data(a), be.data(b)
	checkLen("SwiGLU", len(o), a, b)
	forGroups(len(o), func(lo, hi int) {
		for i := lo + swigluVec(o[lo:hi], x[lo:hi], y[lo:hi]); i < hi; i++ {
			s := sigmoid(x[i])
			o[i] = x[i] * s * y[i]
		}
	})
}

// SwiGLUBackward implements kernels.Backend:
// da = dout * b * s(a) * (1 + a*(1-s(a))), db = dout * a * s(a).
func (be *Backend[T]) SwiGLUBackward(da, db, dout, a, b kernels.Buffer) {
	dx, dy, g, x, y := be.data(da), be.data(db), be.data(dout), be.data(a), be.data(b)
	checkLen("SwiGLUBackward", len(g), da, db, a, b)
	forGroups(len(g), func(lo, hi int) {
		for i := lo + swigluBackwardVec(dx[lo:hi], dy[lo:hi], g[lo:hi], x[lo:hi], y[lo:hi]); i < hi; i++ {
			s := sigmoid(x[i])
			silu := x[i] * s
			dx[i] = g[i] * y[i] * (s + silu*(1-s))
			dy[i] = g[i] * silu
		}
	})
}

// forGroups runs fn over [0, n) across the cores like par.For, in chunks that start at
// multiples of 8.
func forGroups(n int, fn func(lo, hi int)) {
	par.For((n+7)/8, grain/8, func(lo, hi int) { fn(lo*8, min(hi*8, n)) })
}

func sigmoid[T Float](x T) T { return T(1 / (1 + math.Exp(-float64(x)))) }

// AdamWUpdate implements kernels.Backend with PyTorch's AdamW order: decay the weights by
// (1 - lr*wd), then step by the bias-corrected moments. The update runs in T with the
// per-step constants folded: p = p*decay - (lr/c1) * m / (sqrt(v)/sqrt(c2) + eps), where
// c1, c2 are the bias corrections. It streams four arrays once, so it runs at memory speed.
func (be *Backend[T]) AdamWUpdate(p, g, m, v kernels.Buffer, hp kernels.AdamW) {
	pd, gd, md, vd := be.data(p), be.data(g), be.data(m), be.data(v)
	checkLen("AdamWUpdate", len(pd), g, m, v)
	c1 := 1 - math.Pow(hp.Beta1, float64(hp.Step))
	c2 := 1 - math.Pow(hp.Beta2, float64(hp.Step))
	b1, b2 := T(hp.Beta1), T(hp.Beta2)
	omb1, omb2 := T(1-hp.Beta1), T(1-hp.Beta2)
	lr := T(hp.LR / c1)
	isc2 := T(1 / math.Sqrt(c2))
	eps := T(hp.Eps)
	decay := T(1 - hp.LR*hp.WeightDecay)
	gs := T(hp.GradScale)
	par.For(len(pd), grain, func(lo, hi int) {
		pd, gd, md, vd := pd[lo:hi], gd[lo:hi], md[lo:hi], vd[lo:hi]
		for i := range pd {
			gi := gd[i] * gs
			mi := b1*md[i] + omb1*gi
			vi := b2*vd[i] + omb2*gi*gi
			md[i], vd[i] = mi, vi
			pd[i] = pd[i]*decay - lr*mi/(T(math.Sqrt(float64(vi)))*isc2+eps)
		}
	})
}
