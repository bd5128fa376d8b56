//go:build !purego

package asm

// Vector e^x for float32 (exp_amd64.s), within 2 ulp of the rounded result: 0 where x <
// ln(smallest normal float32), +Inf where x > ln(MaxFloat32), NaN for NaN. They need AVX2 and
// FMA, and n must be a multiple of 8.

// Exp sets dst[i] = e^x[i] for i < n. dst may be x.
//
//go:noescape
func Exp(dst, x *float32, n int)

// Max returns the largest of x[0:n]; n must be at least 8. NaN elements are skipped or
// returned, depending on where they are.
//
//go:noescape
func Max(x *float32, n int) float32

// SumExp returns the sum of e^(x[i]-shift) for i < n, the terms added in float64 in an order
// that depends on n only.
//
//go:noescape
func SumExp(x *float32, n int, shift float32) float64

// ExpScale sets dst[i] = scale * e^(x[i]-shift) for i < n. dst may be x.
//
//go:noescape
func ExpScale(dst, x *float32, n int, shift, scale float32)

// SwiGLU sets out[i] = silu(a[i]) * b[i] for i < n, silu(x) = x/(1+e^-x). out may be a or b.
//
//go:noescape
func SwiGLU(out, a, b *float32, n int)

// SwiGLUBackward sets da[i] = dout[i]*b[i]*(s + silu*(1-s)) and db[i] = dout[i]*silu for
// i < n, where s = 1/(1+e^-a[i]) and silu = a[i]*s.
//
//go:noescape
func SwiGLUBackward(da, db, dout, a, b *float32, n int)
