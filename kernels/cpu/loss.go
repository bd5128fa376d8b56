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
			mx := float64(zr[0])
			for _, v := range zr {
				mx = math.Max(mx, float64(v))
			}
			var s float64
			for _, v := range zr {
				s += math.Exp(float64(v) - mx)
			}
			lz := mx + math.Log(s)
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
			lz := float64(ls[i])
			for j, v := range zr {
				dr[j] = T(scale * math.Exp(float64(v)-lz))
			}
			dr[tg] -= T(scale)
		}
	})
}
