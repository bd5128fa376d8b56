package collective_test

import (
	"context"
	"math"
	"sync"
	"testing"

	"github.com/herd-llm/herd/collective"
)

func TestBF16Rounding(t *testing.T) {
	cases := []struct {
		in   float32
		want uint16
	}{
		{1, 0x3f80},
		{-2, 0xc000},
		{math.Float32frombits(0x3f808000), 0x3f80}, // tie, even stays
		{math.Float32frombits(0x3f818000), 0x3f82}, // tie, odd rounds up
		{math.Float32frombits(0x3f808001), 0x3f81}, // above the tie
		{math.MaxFloat32, 0x7f80},                  // rounds past the largest bfloat16
		{float32(math.Inf(-1)), 0xff80},
	}
	for _, c := range cases {
		if got := collective.Float32ToBF16(c.in); got != c.want {
			t.Errorf("Float32ToBF16(%v) = %#04x, want %#04x", c.in, got, c.want)
		}
	}
	if nan := collective.BF16ToFloat32(collective.Float32ToBF16(float32(math.NaN()))); !math.IsNaN(float64(nan)) {
		t.Errorf("NaN became %v", nan)
	}
	for h := range 1 << 16 {
		f := collective.BF16ToFloat32(uint16(h))
		if !math.IsNaN(float64(f)) && collective.Float32ToBF16(f) != uint16(h) {
			t.Fatalf("%#04x does not survive widening and rounding", h)
		}
	}
}

// TestAllReduceBF16 sums values whose bfloat16 partial sums would lose bits: with float32
// accumulation the result is exact, then rounded once.
func TestAllReduceBF16(t *testing.T) {
	const n = 4
	g := collective.NewInMemGroup(n)
	defer func() {
		for _, c := range g {
			c.Close()
		}
	}()
	// 256 + 1 + 1 + 1: bfloat16 steps of 2 at 256 would drop each 1; float32 keeps them.
	vals := []float32{256, 1, 1, 1}
	bufs := make([][]uint16, n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for r, c := range g {
		bufs[r] = []uint16{collective.Float32ToBF16(vals[r])}
		wg.Go(func() { errs[r] = collective.AllReduceBF16(context.Background(), c, bufs[r], collective.Sum, nil) })
	}
	wg.Wait()
	for r := range n {
		if errs[r] != nil {
			t.Fatal(errs[r])
		}
		if got := collective.BF16ToFloat32(bufs[r][0]); got != 260 {
			t.Fatalf("rank %d: %v, want 260 (259 rounded to even)", r, got)
		}
	}
}
