package attn

import (
	"math"
	"testing"
)

// TestExpf compares expf with math.Exp rounded to float32 on a dense grid over its whole
// range, and at the edges.
func TestExpf(t *testing.T) {
	const ulp = 1.0 / (1 << 23) // relative spacing of float32 values in [1, 2)
	var worst float64
	for x := float32(-87.3); x < 88.7; x += 0.0013 {
		want := float64(float32(math.Exp(float64(x))))
		got := float64(expf(x))
		worst = math.Max(worst, math.Abs(got-want)/want)
	}
	t.Logf("largest relative error %.2e (%.2f ulp)", worst, worst/ulp)
	if worst > 2*ulp {
		t.Errorf("largest relative error %.3g, want <= 2 ulp (%.3g)", worst, 2*ulp)
	}
	for _, c := range []struct{ x, want float32 }{
		{0, 1},
		{float32(math.Inf(-1)), 0},
		{-100, 0},
		{float32(math.Inf(1)), float32(math.Inf(1))},
		{89, float32(math.Inf(1))},
		{88.72, float32(math.Exp(float64(float32(88.72))))}, // 2^128 * e^r with r < 0
	} {
		if got := expf(c.x); got != c.want && math.Abs(float64(got-c.want)) > 2*ulp*float64(c.want) {
			t.Errorf("expf(%g) = %g, want %g", c.x, got, c.want)
		}
	}
	if nan := expf(float32(math.NaN())); nan == nan {
		t.Errorf("expf(NaN) = %g, want NaN", nan)
	}
}
