package cpu

import (
	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/kernels/cpu/internal/attn"
	"github.com/herd-llm/herd/kernels/cpu/internal/gemm"
)

// MatMul implements kernels.Backend through CBLAS when loaded, pure Go otherwise.
func (be *Backend[T]) MatMul(c, a, b kernels.Buffer, m, n, k int, transA, transB bool, beta float64) {
	lda, ldb := k, n
	if transA {
		lda = m
	}
	if transB {
		ldb = k
	}
	checkLen("MatMul C", m*n, c)
	checkLen("MatMul A", m*k, a)
	checkLen("MatMul B", k*n, b)
	gemm.Gemm(be.lib, transA, transB, m, n, k, 1, be.data(a), lda, be.data(b), ldb, T(beta), be.data(c), n)
}

// Attention implements kernels.Backend with tiled causal attention and an online softmax.
func (be *Backend[T]) Attention(out, lse, q, k, v kernels.Buffer, b, t, h, d int) {
	attn.Forward(be.data(out), be.data(lse), be.data(q), be.data(k), be.data(v), b, t, h, d)
}

// AttentionBackward implements kernels.Backend, recomputing the probabilities tile by tile.
func (be *Backend[T]) AttentionBackward(dq, dk, dv, dout, out, lse, q, k, v kernels.Buffer, b, t, h, d int) {
	attn.Backward(be.data(dq), be.data(dk), be.data(dv), be.data(dout), be.data(out), be.data(lse),
		be.data(q), be.data(k), be.data(v), b, t, h, d)
}
