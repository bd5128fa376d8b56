//go:build !purego

package asm

// Row loops of the CPU attention (attn_amd64.s). They need AVX2 and FMA. Rows are d
// contiguous float32 values, d a multiple of 8, stride floats apart.

// DotRows sets dst[c] = scale * sum_t x[t]*rows[c*stride+t] (t < d) for c < n &^ 7: the
// rows past the last multiple of 8 are left to the caller.
//
//go:noescape
func DotRows(dst, x, rows *float32, stride, n, d int, scale float32)

// MulAddRows adds sum_n w[n*ws] * rows[n*stride+t] to y[t] for t < d, over n < count, each
// element adding its terms in order of n.
//
//go:noescape
func MulAddRows(y, w *float32, ws int, rows *float32, stride, count, d int)
