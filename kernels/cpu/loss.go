package cpu

import (
	"fmt"
	"math"

	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/kernels/cpu/internal/par"
)

// Embedding implements kernels.Backend.
func (be *Backend[T]) Embedding(out, table kernels.Buffer, tokens []int32, dim int) {
	o, tab := be.data(out), be.data(table)
	checkLen("Embedding", len(tokens)*dim, out)
	rows := len(tab) / dim
	par.For(len(tokens), rowGrain(dim), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			tok := int(tokens[i])
			if tok < 0 || tok >= rows {
				panic(fmt.Sprintf("cpu: token %d out of the embedding's %d rows", tok, rows))
			}
			copy(o[i*dim:(i+1)*dim], tab[tok*dim:(tok+1)*dim])
		}
	})
}

// EmbeddingBackward implements kernels.Backend. Goroutines split the columns, so repeated
// tokens never race and each element sums its rows in order.
func (be *Backend[T]) EmbeddingBackward(dtable, dout kernels.Buffer, tokens []int32, dim int) {
	dt, dy := be.data(dtable), be.data(dout)
	checkLen("EmbeddingBackward", len(tokens)*dim, dout)
	par.For(dim, max(1, grain/max(len(tokens), 1)), func(lo, hi int) {
		for i, tok := range tokens {
			dst, src := dt[int(tok)*dim:], dy[i*dim:]
			for j := lo; j < hi; j++ {
				dst[j] += src[j]
			}
		}
	})
}

// CrossEntropy implements kernels.Backend.
func (be *Backend[T]) CrossEntropy(losses, lse, logits kernels.Buffer, targets []int32, rows, vocab int) {
	l, ls, z := be.data(losses), be.data(lse), be.data(logits)
	checkLen("CrossEntropy", rows*vocab, logits)
	checkLen("CrossEntropy", rows, losses, lse)
	if len(targets) < rows {
		panic(fmt.Sprintf("cpu: CrossEntropy has %d targets for %d rows", len(targets), rows))
	}
	par.For(rows, rowGrain(vocab), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			zr := z[i*vocab : (i+1)*vocab]
			mx := rowMax(zr)
			lz := mx + math.Log(sumExp(zr, mx))
			ls[i] = T(lz)
			tg := int(targets[i])
			switch {
			case tg < 0:
				l[i] = 0
			case tg >= vocab:
				panic(fmt.Sprintf("cpu: target %d out of vocabulary %d", tg, vocab))
			default:
				l[i] = T(lz - float64(zr[tg]))
			}
		}
	})
}

// CrossEntropyBackward implements kernels.Backend.
func (be *Backend[T]) CrossEntropyBackward(dlogits, logits, lse kernels.Buffer, targets []int32, rows, vocab int, scale float64) {
	dz, z, ls := be.data(dlogits), be.data(logits), be.data(lse)
	checkLen("CrossEntropyBackward", rows*vocab, logits, dlogits)
	checkLen("CrossEntropyBackward", rows, lse)
	par.For(rows, rowGrain(vocab), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			zr, dr := z[i*vocab:(i+1)*vocab], dz[i*vocab:(i+1)*vocab]
			tg := int(targets[i])
			if tg < 0 {
				clear(dr)
				continue
			}
			expScale(dr, zr, float64(ls[i]), scale)
			dr[tg] -= T(scale)
		}
	})
}

// rowMax returns the largest element of z (len(z) >= 1), or NaN when the Go loop meets one;
// the vector routine may skip a NaN, which sumExp then turns into NaN. The vector routines of
// vec_amd64.go take a prefix of the row, the loops here the rest.
func rowMax[T Float](z []T) float64 {
	mx, n := maxVec(z)
	if n == 0 {
		mx = float64(z[0])
	}
	for _, v := range z[n:] {
		mx = math.Max(mx, float64(v))
	}
	return mx
}

// sumExp returns the sum of e^(z_j - shift) in float64.
func sumExp[T Float](z []T, shift float64) float64 {
	s, n := sumExpVec(z, shift)
	for _, v := range z[n:] {
		s += math.Exp(float64(v) - shift)
	}
	return s
}

// expScale sets dst_j = scale * e^(z_j - shift). dst may be z.
func expScale[T Float](dst, z []T, shift, scale float64) {
	n := expScaleVec(dst, z, shift, scale)
	for j, v := range z[n:] {
		dst[n+j] = T(scale * math.Exp(float64(v)-shift))
	}
}
