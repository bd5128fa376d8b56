package attn

import "math"

// head is one (batch, head) pair's view of the [B, T, H, D] tensors: row t of q is
// q[t*stride : t*stride+d], and lse holds the pair's T logsumexp values. The gradient
// slices are set only for the backward pass.
type head[T Float] struct {
	q, k, v, o, lse []T
	do, dq, dk, dv  []T
	n, d, stride    int  // T, D and H*D
	off             int  // where the pair's row 0 starts in the [B, T, H, D] tensors
	scale           T    // 1/sqrt(D)
	vec             bool // rows take the vector loops of vec_amd64.go (vectorRows)
}

// newHead returns the view of pair bh = b*H + h.
func newHead[T Float](bh, B, Tn, H, D int, q, k, v, o, lse []T) *head[T] {
	b, hh := bh/H, bh%H
	off := b*Tn*H*D + hh*D
	return &head[T]{
		q: q[off:], k: k[off:], v: v[off:], o: o[off:],
		lse: lse[bh*Tn:][:Tn],
		n:   Tn, d: D, stride: H * D, off: off,
		scale: T(1 / math.Sqrt(float64(D))),
		vec:   vectorRows[T](D),
	}
}

// setGrads adds the backward pass's slices (dout and the three gradients) to the view.
func (h *head[T]) setGrads(dout, dq, dk, dv []T) {
	h.do, h.dq, h.dk, h.dv = dout[h.off:], dq[h.off:], dk[h.off:], dv[h.off:]
}

// row returns row t (the D values of token t) of x, one of the view's slices.
func (h *head[T]) row(x []T, t int) []T {
	i := t * h.stride
	return x[i : i+h.d : i+h.d]
}

// mulAdd adds sum_n w[n*ws] * row(x, first+n) for n in [0, count) to y: in the vector loop
// one row at a time, in Go four rows at a time. Each element of y therefore sees the same
// additions in the same order whoever calls.
func (h *head[T]) mulAdd(y, w []T, ws int, x []T, first, count int) {
	if h.vec && mulAddVec(y, w, ws, x[first*h.stride:], h.stride, count) {
		return
	}
	n := 0
	for ; n+4 <= count; n += 4 {
		t := first + n
		axpy4(y, w[n*ws], w[(n+1)*ws], w[(n+2)*ws], w[(n+3)*ws],
			h.row(x, t), h.row(x, t+1), h.row(x, t+2), h.row(x, t+3))
	}
	for ; n < count; n++ {
		axpy(y, w[n*ws], h.row(x, first+n))
	}
}

// dots sets dst[c] = scale * x . row(rows, first+c) for every c of dst: the vector loop takes
// the rows in groups of 8, Go the rest.
func (h *head[T]) dots(dst, x, rows []T, first int, scale T) {
	c := 0
	if h.vec {
		c = dotsVec(dst, x, rows[first*h.stride:], h.stride, scale)
	}
	for ; c < len(dst); c++ {
		dst[c] = scale * dot(x, h.row(rows, first+c))
	}
}

// expShift sets p[c] = exp(p[c] - shift): in the vector loop for the longest prefix that is a
// multiple of 8, then in Go.
func (h *head[T]) expShift(p []T, shift T) {
	c := 0
	if h.vec {
		c = expShiftVec(p, shift)
	}
	for ; c < len(p); c++ {
		p[c] = exp(p[c] - shift)
	}
}
