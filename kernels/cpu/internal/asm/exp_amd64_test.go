//go:build !purego

package asm

import (
	"math"
	"math/rand/v2"
	"testing"

	"golang.org/x/sys/cpu"
)

const ulp = 1.0 / (1 << 23) // relative spacing of float32 values in [1, 2)

func needAVX2(t *testing.T) {
	if !cpu.X86.HasAVX2 || !cpu.X86.HasFMA {
		t.Skip("this CPU has no AVX2 and FMA")
	}
}

// exp8 runs Exp on x, padded with zeros to a multiple of 8.
func exp8(x []float32) []float32 {
	n := (len(x) + 7) &^ 7
	in, out := make([]float32, n), make([]float32, n)
	copy(in, x)
	Exp(&out[0], &in[0], n)
	return out[:len(x)]
}

// TestExp compares Exp with math.Exp rounded to float32 on a dense grid over its whole range,
// and at the edges.
func TestExp(t *testing.T) {
	needAVX2(t)
	var xs []float32
	for x := float32(-87.3); x < 88.7; x += 0.0013 {
		xs = append(xs, x)
	}
	got := exp8(xs)
	var worst float64
	for i, x := range xs {
		want := float64(float32(math.Exp(float64(x))))
		worst = math.Max(worst, math.Abs(float64(got[i])-want)/want)
	}
	t.Logf("largest relative error %.2e (%.2f ulp) over %d values", worst, worst/ulp, len(xs))
	if worst > 2*ulp {
		t.Errorf("largest relative error %.3g, want <= 2 ulp (%.3g)", worst, 2*ulp)
	}
	inf := float32(math.Inf(1))
	edges := []struct{ x, want float32 }{
		{0, 1},
		{-inf, 0},
		{-100, 0},
		{-87.4, 0}, // below ln(smallest normal): flushed, as attn.expf does
		{inf, inf},
		{89, inf},
		{88.72, float32(math.Exp(float64(float32(88.72))))}, // n = 128: 2^64 * 2^64 * e^r
		{-87.3, float32(math.Exp(float64(float32(-87.3))))},
	}
	xs = xs[:0]
	for _, e := range edges {
		xs = append(xs, e.x)
	}
	xs = append(xs, float32(math.NaN()))
	got = exp8(xs)
	for i, e := range edges {
		if got[i] != e.want && math.Abs(float64(got[i]-e.want)) > 2*ulp*float64(e.want) {
			t.Errorf("Exp(%g) = %g, want %g", e.x, got[i], e.want)
		}
	}
	if nan := got[len(edges)]; nan == nan {
		t.Errorf("Exp(NaN) = %g, want NaN", nan)
	}
}

func TestSoftmaxLoops(t *testing.T) {
	needAVX2(t)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{8, 16, 24, 4096} {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(rng.NormFloat64() * 2) // below 11: 5.5 sigma
		}
		x[rng.IntN(n)] = 11 // the maximum, somewhere
		if got := Max(&x[0], n); got != 11 {
			t.Errorf("n=%d: Max = %g, want 11", n, got)
		}
		var want float64
		for _, v := range x {
			want += float64(float32(math.Exp(float64(v - 11))))
		}
		// Each term is within 2 ulp, and the float64 sum adds nothing that matters.
		if got := SumExp(&x[0], n, 11); math.Abs(got-want) > 2*ulp*want {
			t.Errorf("n=%d: SumExp = %g, want %g", n, got, want)
		}
		dst := make([]float32, n)
		ExpScale(&dst[0], &x[0], n, 11, 0.25)
		for i, v := range x {
			w := 0.25 * math.Exp(float64(v-11))
			if math.Abs(float64(dst[i])-w) > 2*ulp*w {
				t.Fatalf("n=%d: ExpScale[%d] = %g, want %g", n, i, dst[i], w)
			}
		}
		ExpScale(&x[0], &x[0], n, 11, 0.25) // in place
		for i := range x {
			if x[i] != dst[i] {
				t.Fatalf("n=%d: ExpScale in place [%d] = %g, want %g as computed out of place", n, i, x[i], dst[i])
			}
		}
	}
	x := make([]float32, 16)
	x[13] = float32(math.NaN())
	if s := SumExp(&x[0], 16, Max(&x[0], 16)); !math.IsNaN(s) {
		t.Errorf("SumExp with a NaN element = %g, want NaN", s)
	}
}

// TestSwiGLU compares SwiGLU and SwiGLUBackward with the float64 formulas. Each result is a few
// float32 roundings from the exact value: e^-x within 2 ulp, then an add, a divide and
// multiplies, so 8 ulp of the magnitude of the terms bounds the error, plus the smallest
// normal float32 for results below float32's range.
func TestSwiGLU(t *testing.T) {
	needAVX2(t)
	rng := rand.New(rand.NewPCG(3, 4))
	const n = 4096
	a, b, g := make([]float32, n), make([]float32, n), make([]float32, n)
	for i := range a {
		a[i] = float32(rng.NormFloat64() * 6)
		b[i], g[i] = float32(rng.NormFloat64()), float32(rng.NormFloat64())
	}
	a[0], a[1], a[2] = -120, 120, 0 // e^-x overflows to +Inf; underflows to 0; exactly 1
	out, da, db := make([]float32, n), make([]float32, n), make([]float32, n)
	SwiGLU(&out[0], &a[0], &b[0], n)
	SwiGLUBackward(&da[0], &db[0], &g[0], &a[0], &b[0], n)
	near := func(what string, i int, got float32, want, mag float64) {
		t.Helper()
		if math.Abs(float64(got)-want) > 8*ulp*mag+0x1p-126 {
			t.Fatalf("%s[%d] (a=%g b=%g dout=%g) = %g, want %g", what, i, a[i], b[i], g[i], got, want)
		}
	}
	for i := range a {
		x, y, d := float64(a[i]), float64(b[i]), float64(g[i])
		s := 1 / (1 + math.Exp(-x))
		silu := x * s
		near("SwiGLU", i, out[i], silu*y, math.Abs(silu*y))
		near("SwiGLUBackward db", i, db[i], d*silu, math.Abs(d*silu))
		near("SwiGLUBackward da", i, da[i], d*y*(s+silu*(1-s)), math.Abs(d*y)*(s+math.Abs(silu)*(1-s)))
	}
}
