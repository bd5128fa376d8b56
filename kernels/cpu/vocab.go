package cpu

import (
	"math"

	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/kernels/cpu/internal/par"
)

var _ kernels.VocabParallel = (*Backend[float32])(nil)

// EmbeddingShard implements kernels.VocabParallel.
func (be *Backend[T]) EmbeddingShard(out, table kernels.Buffer, tokens []int32, lo, dim int) {
	o, tab := be.data(out), be.data(table)
	checkLen("EmbeddingShard", len(tokens)*dim, out)
	rows := len(tab) / dim
	par.For(len(tokens), rowGrain(dim), func(a, b int) {
		for i := a; i < b; i++ {
			dst := o[i*dim : (i+1)*dim]
			if r := int(tokens[i]) - lo; r >= 0 && r < rows {
				copy(dst, tab[r*dim:(r+1)*dim])
			} else {
				clear(dst)
			}
		}
	})
}

// EmbeddingShardBackward implements kernels.VocabParallel. As EmbeddingBackward, goroutines
// split the columns, so each element sums its rows in token order.
func (be *Backend[T]) EmbeddingShardBackward(dtable, dout kernels.Buffer, tokens []int32, lo, dim int) {
	dt, dy := be.data(dtable), be.data(dout)
	checkLen("EmbeddingShardBackward", len(tokens)*dim, dout)
	rows := len(dt) / dim
	par.For(dim, max(1, grain/max(len(tokens), 1)), func(a, b int) {
		for i, tok := range tokens {
			r := int(tok) - lo
			if r < 0 || r >= rows {
				continue
			}
			dst, src := dt[r*dim:], dy[i*dim:]
			for j := a; j < b; j++ {
				dst[j] += src[j]
			}
		}
	})
}

// CrossEntropyShard implements kernels.VocabParallel.
func (be *Backend[T]) CrossEntropyShard(lse, target, logits kernels.Buffer, targets []int32, lo, rows, vocab int) {
	ls, tl, z := be.data(lse), be.data(target), be.data(logits)
	checkLen("CrossEntropyShard", rows*vocab, logits)
	checkLen("CrossEntropyShard", rows, lse, target)
	par.For(rows, rowGrain(vocab), func(a, b int) {
		for i := a; i < b; i++ {
			zr := z[i*vocab : (i+1)*vocab]
			mx := rowMax(zr)
			ls[i] = T(mx + math.Log(sumExp(zr, mx)))
			tl[i] = 0
			if c := int(targets[i]) - lo; targets[i] >= 0 && c >= 0 && c < vocab {
				tl[i] = zr[c]
			}
		}
	})
}

// CrossEntropyShardBackward implements kernels.VocabParallel.
func (be *Backend[T]) CrossEntropyShardBackward(dlogits, logits, lse kernels.Buffer, targets []int32, lo, rows, vocab int, scale float64) {
	dz, z, ls := be.data(dlogits), be.data(logits), be.data(lse)
	checkLen("CrossEntropyShardBackward", rows*vocab, logits, dlogits)
	checkLen("CrossEntropyShardBackward", rows, lse)
	par.For(rows, rowGrain(vocab), func(a, b int) {
		for i := a; i < b; i++ {
			zr, dr := z[i*vocab:(i+1)*vocab], dz[i*vocab:(i+1)*vocab]
			if targets[i] < 0 {
				clear(dr)
				continue
			}
			expScale(dr, zr, float64(ls[i]), scale)
			if c := int(targets[i]) - lo; c >= 0 && c < vocab {
				dr[c] -= T(scale)
			}
		}
	})
}
