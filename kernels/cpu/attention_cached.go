package cpu

import (
	"fmt"
	"math"

	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/kernels/cpu/internal/par"
)

// AttentionCached implements kernels.Backend: one pass over the cached keys per query row and
// head, with a scratch row of tk scores per goroutine.
func (be *Backend[T]) AttentionCached(out, q, k, v kernels.Buffer, tq, tk, h, d int) {
	o, qd, kd, vd := be.data(out), be.data(q), be.data(k), be.data(v)
	if tq > tk || tq <= 0 {
		panic(fmt.Sprintf("cpu: AttentionCached with %d queries over %d keys", tq, tk))
	}
	width := h * d
	checkLen("AttentionCached", tq*width, out, q)
	checkLen("AttentionCached", tk*width, k, v)
	scale := 1 / math.Sqrt(float64(d))
	par.For(tq*h, 1, func(lo, hi int) {
		scores := make([]float64, tk)
		acc := make([]float64, d)
		for job := lo; job < hi; job++ {
			i, hh := job/h, job%h
			last := tk - tq + i // the query's position: keys 0..last are visible
			qr := qd[i*width+hh*d : i*width+hh*d+d]
			mx := math.Inf(-1)
			for j := 0; j <= last; j++ {
				kr := kd[j*width+hh*d : j*width+hh*d+d]
				var s float64
				for x := range qr {
					s += float64(qr[x]) * float64(kr[x])
				}
				s *= scale
				scores[j] = s
				mx = math.Max(mx, s)
			}
			clear(acc)
			var sum float64
			for j := 0; j <= last; j++ {
				p := math.Exp(scores[j] - mx)
				sum += p
				vr := vd[j*width+hh*d : j*width+hh*d+d]
				for x := range acc {
					acc[x] += p * float64(vr[x])
				}
			}
			or := o[i*width+hh*d : i*width+hh*d+d]
			for x := range or {
				or[x] = T(acc[x] / sum)
			}
		}
	})
}
