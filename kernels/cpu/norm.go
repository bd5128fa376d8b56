package cpu

import (
	"math"

	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/kernels/cpu/internal/par"
)

// rowGrain is the number of rows below which a row-wise op stays on one goroutine.
func rowGrain(dim int) int { return max(1, grain/max(dim, 1)) }

// RMSNorm implements kernels.Backend: out = x * rstd * gain, rstd = 1/sqrt(mean(x^2) + eps).
func (be *Backend[T]) RMSNorm(out, rstd, x, gain kernels.Buffer, rows, dim int, eps float64) {
	o, r, xd, g := be.data(out), be.data(rstd), be.data(x), be.data(gain)
	checkLen("RMSNorm", rows*dim, out, x)
	checkLen("RMSNorm", rows, rstd)
	checkLen("RMSNorm", dim, gain)
	par.For(rows, rowGrain(dim), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			xr := xd[i*dim : (i+1)*dim]
			var ss float64
			for _, v := range xr {
				ss += float64(v) * float64(v)
			}
			s := T(1 / math.Sqrt(ss/float64(dim)+eps))
			r[i] = s
			or := o[i*dim : (i+1)*dim]
			for j, v := range xr {
				or[j] = v * s * g[j]
			}
		}
	})
}

// RMSNormBackward implements kernels.Backend. With c = sum_j dout_j gain_j x_j per row:
//
//	dx_j    += rstd * (dout_j gain_j - x_j rstd^2 c / dim)
//	dgain_j += sum over rows of dout_j x_j rstd
//
// dgain is reduced column by column so that no two goroutines write the same element and
// the row order of the sum is fixed.
func (be *Backend[T]) RMSNormBackward(dx, dgain, dout, x, gain, rstd kernels.Buffer, rows, dim int) {
	dxd, dg, dy, xd, g, r := be.data(dx), be.data(dgain), be.data(dout), be.data(x), be.data(gain), be.data(rstd)
	checkLen("RMSNormBackward", rows*dim, dx, dout, x)
	checkLen("RMSNormBackward", rows, rstd)
	checkLen("RMSNormBackward", dim, gain, dgain)
	par.For(rows, rowGrain(dim), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			xr, dyr, dxr := xd[i*dim:(i+1)*dim], dy[i*dim:(i+1)*dim], dxd[i*dim:(i+1)*dim]
			var c float64
			for j, v := range xr {
				c += float64(dyr[j]) * float64(g[j]) * float64(v)
			}
			s := r[i]
			k := s * s * T(c/float64(dim))
			for j, v := range xr {
				dxr[j] += s * (dyr[j]*g[j] - v*k)
			}
		}
	})
	par.For(dim, max(1, grain/max(rows, 1)), func(lo, hi int) {
		for i := 0; i < rows; i++ {
			s := r[i]
			xr, dyr := xd[i*dim:(i+1)*dim], dy[i*dim:(i+1)*dim]
			for j := lo; j < hi; j++ {
				dg[j] += dyr[j] * xr[j] * s
			}
		}
	})
}
