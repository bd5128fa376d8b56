// Package attn computes causal multi-head attention for the CPU reference backend the way
// FlashAttention does: queries and keys are taken in tiles, each query row keeps an online
// softmax (running max and denominator) while the key tiles stream past, and key tiles that
// lie entirely above the diagonal are never visited. The T x T attention weights are never
// stored; the forward pass keeps only the per-row logsumexp, from which the backward pass
// recomputes the probabilities tile by tile (FlashAttention-2).
//
// Shapes: B is the batch size, T the sequence length, H the number of heads and D the head
// size. q, k, v and the output are [B, T, H, D] row-major, which is the [B*T, H*D] output of
// a linear layer; the logsumexp is [B, H, T].
//
// Every output element is summed in an order fixed by the shapes and the tile sizes alone,
// so the results are bitwise identical whatever the number of cores.
package attn

import (
	"fmt"
	"math"
	"runtime"
	"sync/atomic"

	"github.com/herd-llm/herd/kernels/cpu/internal/par"
)

// Float is the element type: float32 for training, float64 for gradient checks.
type Float interface{ ~float32 | ~float64 }

// Tile sizes. A score tile is tileQ queries x tileK keys; with D = 64 one tile of q, k or v
// rows is 16 KiB in float32, so the rows a tile touches stay in the core's L1/L2 cache.
const (
	tileQ = 64 // queries per tile (rows of a score tile)
	tileK = 64 // keys per tile (columns of a score tile)
)

// Forward computes causal softmax(q k^T / sqrt(D)) v for every batch b and head h without
// materializing the T x T weights: tiles of queries x keys with an online softmax, key tiles
// entirely above the diagonal are skipped (never computed). q, k, v, out are [B, T, H, D]
// row-major (the [B*T, H*D] output of a linear layer); lse is [B, H, T] and receives the
// per-row logsumexp of the scaled scores (natural log), kept for the backward pass.
//
// The work is spread across (batch, head, query tile) triples. out and lse must not overlap
// the inputs. Forward panics if a slice is shorter than its shape requires.
func Forward[T Float](out, lse, q, k, v []T, B, Tn, H, D int) {
	forward(out, lse, q, k, v, B, Tn, H, D, nil)
}

// Backward sets (overwrites) dq, dk, dv given dout and the saved out and lse, recomputing the
// probabilities tile by tile (FlashAttention-2 backward: Di = rowsum(dout_i * out_i), P = exp(S - lse),
// dV += P^T dO, dP = dO V^T, dS = P * (dP - Di), dQ += scale * dS K, dK += scale * dS^T Q).
//
// With at least as many (batch, head) pairs as cores, each pair is one task that visits its
// tiles once and accumulates dQ, dK and dV together. With fewer pairs than cores, the work is
// split into one task per key tile (dK, dV) and then one per query tile (dQ), which computes
// the scores and dP twice but keeps every core busy; both schedules add the same terms in the
// same order, so the bits do not depend on which one ran. The gradients must not overlap the
// inputs. Backward panics if a slice is shorter than its shape requires.
func Backward[T Float](dq, dk, dv, dout, out, lse, q, k, v []T, B, Tn, H, D int) {
	split := B*H < runtime.GOMAXPROCS(0)
	backward(dq, dk, dv, dout, out, lse, q, k, v, B, Tn, H, D, split, nil)
}

// forward is Forward; visits, when not nil, counts the (query tile, key tile) pairs computed.
func forward[T Float](out, lse, q, k, v []T, B, Tn, H, D int, visits *atomic.Int64) {
	checkArgs("Forward", B, Tn, H, D, len(lse),
		operand{"out", len(out)}, operand{"q", len(q)}, operand{"k", len(k)}, operand{"v", len(v)})
	nq := ceilDiv(Tn, tileQ)
	par.For(B*H*nq, 1, func(lo, hi int) {
		s := getScratch[T]()
		defer putScratch(s)
		acc := s.accumulator(D)
		for it := lo; it < hi; it++ {
			hd := newHead(it/nq, B, Tn, H, D, q, k, v, out, lse)
			i0 := interleave(it%nq, nq) * tileQ
			hd.forwardTile(s, acc, i0, min(i0+tileQ, Tn), visits)
		}
	})
}

// forwardTile computes the output rows and logsumexp of the queries [i0, i1), streaming the
// key tiles [0, i1) through an online softmax.
func (h *head[T]) forwardTile(s *scratch[T], acc []T, i0, i1 int, visits *atomic.Int64) {
	nr := i1 - i0
	m, l := s.m[:nr], s.l[:nr]
	for r := range m {
		m[r], l[r] = T(math.Inf(-1)), 0
	}
	clear(acc[:nr*h.d])
	for j0 := 0; j0 < i1; j0 += tileK {
		j1 := min(j0+tileK, h.n)
		count(visits)
		h.scores(s.s, i0, i1, j0, j1)
		for r := range nr {
			nv := validCols(i0+r, j0, j1)
			if nv == 0 {
				continue
			}
			p := s.s[r*tileK:][:nv]
			mx := m[r]
			for _, x := range p {
				if x > mx {
					mx = x
				}
			}
			corr := exp(m[r] - mx)
			h.expShift(p, mx)
			var sum T
			for _, x := range p {
				sum += x
			}
			m[r], l[r] = mx, l[r]*corr+sum
			ar := acc[r*h.d:][:h.d]
			if corr != 1 {
				for d := range ar {
					ar[d] *= corr
				}
			}
			h.mulAdd(ar, p, 1, h.v, j0, nv)
		}
	}
	for r := range nr {
		or, ar := h.row(h.o, i0+r), acc[r*h.d:][:h.d]
		for d := range or {
			or[d] = ar[d] / l[r]
		}
		h.lse[i0+r] = m[r] + T(math.Log(float64(l[r])))
	}
}

// backward is Backward with the schedule chosen by split; visits, when not nil, counts the
// (query tile, key tile) pairs computed.
func backward[T Float](dq, dk, dv, dout, out, lse, q, k, v []T, B, Tn, H, D int, split bool, visits *atomic.Int64) {
	checkArgs("Backward", B, Tn, H, D, len(lse),
		operand{"dq", len(dq)}, operand{"dk", len(dk)}, operand{"dv", len(dv)}, operand{"dout", len(dout)},
		operand{"out", len(out)}, operand{"q", len(q)}, operand{"k", len(k)}, operand{"v", len(v)})
	nq, nk := ceilDiv(Tn, tileQ), ceilDiv(Tn, tileK)
	view := func(bh int) *head[T] {
		hd := newHead(bh, B, Tn, H, D, q, k, v, out, lse)
		hd.setGrads(dout, dq, dk, dv)
		return hd
	}
	if !split {
		par.For(B*H, 1, func(lo, hi int) {
			s := getScratch[T]()
			defer putScratch(s)
			for bh := lo; bh < hi; bh++ {
				view(bh).backwardHead(s, nk, visits)
			}
		})
		return
	}
	par.For(B*H*nk, 1, func(lo, hi int) {
		s := getScratch[T]()
		defer putScratch(s)
		for it := lo; it < hi; it++ {
			j0 := interleave(it%nk, nk) * tileK
			view(it/nk).backwardKeys(s, j0, min(j0+tileK, Tn), visits)
		}
	})
	par.For(B*H*nq, 1, func(lo, hi int) {
		s := getScratch[T]()
		defer putScratch(s)
		for it := lo; it < hi; it++ {
			i0 := interleave(it%nq, nq) * tileQ
			view(it/nq).backwardQueries(s, i0, min(i0+tileQ, Tn), visits)
		}
	})
}

// backwardHead computes all of one head's gradients, key tile by key tile (each key tile's
// dK and dV rows stay hot while the query tiles at or below the diagonal stream past).
func (h *head[T]) backwardHead(s *scratch[T], nk int, visits *atomic.Int64) {
	for t := range h.n {
		clear(h.row(h.dq, t))
		clear(h.row(h.dk, t))
		clear(h.row(h.dv, t))
	}
	for jt := range nk {
		j0 := jt * tileK
		j1 := min(j0+tileK, h.n)
		for i0 := j0 / tileQ * tileQ; i0 < h.n; i0 += tileQ {
			count(visits)
			h.gradTile(s, i0, min(i0+tileQ, h.n), j0, j1, true, true)
		}
	}
}

// backwardKeys sets the dK and dV rows of the keys [j0, j1) from the query tiles at or below
// the diagonal.
func (h *head[T]) backwardKeys(s *scratch[T], j0, j1 int, visits *atomic.Int64) {
	for t := j0; t < j1; t++ {
		clear(h.row(h.dk, t))
		clear(h.row(h.dv, t))
	}
	for i0 := j0 / tileQ * tileQ; i0 < h.n; i0 += tileQ {
		count(visits)
		h.gradTile(s, i0, min(i0+tileQ, h.n), j0, j1, false, true)
	}
}

// backwardQueries sets the dQ rows of the queries [i0, i1) from the key tiles at or left of
// the diagonal.
func (h *head[T]) backwardQueries(s *scratch[T], i0, i1 int, visits *atomic.Int64) {
	for t := i0; t < i1; t++ {
		clear(h.row(h.dq, t))
	}
	for j0 := 0; j0 < i1; j0 += tileK {
		count(visits)
		h.gradTile(s, i0, i1, j0, min(j0+tileK, h.n), true, false)
	}
}

// gradTile handles the tile of queries [i0, i1) x keys [j0, j1) of the backward pass: it
// recomputes P = exp(S - lse) and dS = scale * P * (dO V^T - Di) in scratch, then adds
// dS K to the dQ rows (wantQ) and P^T dO, dS^T Q to the dV, dK rows (wantKV).
func (h *head[T]) gradTile(s *scratch[T], i0, i1, j0, j1 int, wantQ, wantKV bool) {
	h.scores(s.s, i0, i1, j0, j1)
	for i := i0; i < i1; i++ {
		nv := validCols(i, j0, j1)
		if nv == 0 {
			continue
		}
		r := i - i0
		p, ds := s.s[r*tileK:][:nv], s.ds[r*tileK:][:nv]
		doi := h.row(h.do, i)
		di := dot(doi, h.row(h.o, i))
		h.expShift(p, h.lse[i])
		h.dots(ds, doi, h.v, j0, 1)
		for c, x := range ds {
			ds[c] = h.scale * p[c] * (x - di)
		}
		if wantQ {
			h.mulAdd(h.row(h.dq, i), ds, 1, h.k, j0, nv)
		}
	}
	if !wantKV {
		return
	}
	for j := j0; j < j1; j++ {
		first := max(i0, j) // the first query that sees key j
		if first >= i1 {
			continue
		}
		at := (first-i0)*tileK + j - j0
		h.mulAdd(h.row(h.dv, j), s.s[at:], tileK, h.do, first, i1-first)
		h.mulAdd(h.row(h.dk, j), s.ds[at:], tileK, h.q, first, i1-first)
	}
}

// scores sets s[r*tileK+c] = scale * q_{i0+r} . k_{j0+c} for the entries of the tile on or
// below the diagonal (c < validCols(i0+r, j0, j1)); the others are left untouched.
func (h *head[T]) scores(s []T, i0, i1, j0, j1 int) {
	for i := i0; i < i1; i++ {
		h.dots(s[(i-i0)*tileK:][:validCols(i, j0, j1)], h.row(h.q, i), h.k, j0, h.scale)
	}
}

// validCols is how many of the keys [j0, j1) query i attends to (those with j <= i).
func validCols(i, j0, j1 int) int { return max(0, min(j1, i+1)-j0) }

// interleave maps position t of n tiles to a tile so that consecutive positions alternate
// between the cheap and the expensive end of the triangle (0, n-1, 1, n-2, ...); contiguous
// chunks of positions, as par.For hands them out, then carry about equal work.
func interleave(t, n int) int {
	if t%2 == 0 {
		return t / 2
	}
	return n - 1 - t/2
}

// count adds one visited tile to visits when counting is on (tests only).
func count(visits *atomic.Int64) {
	if visits != nil {
		visits.Add(1)
	}
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// operand is a [B, T, H, D] slice argument's name and length, for checkArgs.
type operand struct {
	name string
	len  int
}

// checkArgs panics with a message naming op, the argument and the shape when a dimension is
// below 1, lse holds fewer than B*H*T elements or a tensor fewer than B*T*H*D.
func checkArgs(op string, B, Tn, H, D, lseLen int, tensors ...operand) {
	shape := func() string { return fmt.Sprintf("B=%d T=%d H=%d D=%d", B, Tn, H, D) }
	if B < 1 || Tn < 1 || H < 1 || D < 1 {
		panic(fmt.Sprintf("attn.%s: shape %s, want every dimension >= 1", op, shape()))
	}
	if lseLen < B*H*Tn {
		panic(fmt.Sprintf("attn.%s: len(lse) = %d, want >= B*H*T = %d (%s)", op, lseLen, B*H*Tn, shape()))
	}
	for _, x := range tensors {
		if x.len < B*Tn*H*D {
			panic(fmt.Sprintf("attn.%s: len(%s) = %d, want >= B*T*H*D = %d (%s)", op, x.name, x.len, B*Tn*H*D, shape()))
		}
	}
}
