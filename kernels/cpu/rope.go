package cpu

import (
	"math"

	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/kernels/cpu/internal/par"
)

type ropeKey struct {
	d     int
	theta float64
}

// ropeTable holds cos and sin of pos * theta^(-2i/d) for positions [0, len/(d/2)).
type ropeTable struct {
	cos, sin []float64
}

// ropeFor returns a table covering at least n positions, growing the cached one if needed.
func (be *Backend[T]) ropeFor(n, d int, theta float64) *ropeTable {
	be.ropeMu.Lock()
	defer be.ropeMu.Unlock()
	key := ropeKey{d, theta}
	half := d / 2
	if t := be.rope[key]; t != nil && len(t.cos) >= n*half {
		return t
	}
	n = max(n, 1024)
	t := &ropeTable{cos: make([]float64, n*half), sin: make([]float64, n*half)}
	for i := 0; i < half; i++ {
		freq := math.Pow(theta, -float64(2*i)/float64(d))
		for p := 0; p < n; p++ {
			a := float64(p) * freq
			t.cos[p*half+i], t.sin[p*half+i] = math.Cos(a), math.Sin(a)
		}
	}
	be.rope[key] = t
	return t
}

// RoPE implements kernels.Backend, rotating adjacent pairs (Meta's layout).
func (be *Backend[T]) RoPE(out, x kernels.Buffer, b, t, h, d, pos0 int, theta float64) {
	be.rotate(out, x, b, t, h, d, pos0, theta, 1)
}

// RoPEBackward implements kernels.Backend: the transpose of a rotation is the rotation by
// the opposite angle.
func (be *Backend[T]) RoPEBackward(dx, dout kernels.Buffer, b, t, h, d, pos0 int, theta float64) {
	be.rotate(dx, dout, b, t, h, d, pos0, theta, -1)
}

func (be *Backend[T]) rotate(out, x kernels.Buffer, b, t, h, d, pos0 int, theta float64, sign float64) {
	if d%2 != 0 {
		panic("cpu: RoPE needs an even head dimension")
	}
	o, xd := be.data(out), be.data(x)
	checkLen("RoPE", b*t*h*d, out, x)
	tab := be.ropeFor(pos0+t, d, theta)
	half := d / 2
	width := h * d
	par.For(b*t, rowGrain(width), func(lo, hi int) {
		for row := lo; row < hi; row++ {
			p := pos0 + row%t
			cs, sn := tab.cos[p*half:(p+1)*half], tab.sin[p*half:(p+1)*half]
			xr, or := xd[row*width:(row+1)*width], o[row*width:(row+1)*width]
			for hh := 0; hh < h; hh++ {
				xh, oh := xr[hh*d:(hh+1)*d], or[hh*d:(hh+1)*d]
				for i := 0; i < half; i++ {
					c, s := T(cs[i]), T(sign*sn[i])
					x0, x1 := xh[2*i], xh[2*i+1]
					oh[2*i] = x0*c - x1*s
					oh[2*i+1] = x0*s + x1*c
				}
			}
		}
	})
}
