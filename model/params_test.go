package model

import (
	"math"
	"slices"
	"testing"
)

// The initial weights depend on the seed alone, not on how many goroutines draw them.
func TestInitParamsIndependentOfCores(t *testing.T) {
	c, _ := Preset("tiny")
	c.Vocab = 8192 // about 20 chunks, several per worker
	l := NewLayout(c)
	one := make([]float32, l.Size)
	initParams(c, l, 3, one, 1)
	for _, w := range []int{2, 7, 64} {
		many := make([]float32, l.Size)
		initParams(c, l, 3, many, w)
		if !slices.Equal(one, many) {
			t.Fatalf("%d workers draw different weights than 1", w)
		}
	}
	other := make([]float32, l.Size)
	initParams(c, l, 4, other, 2)
	if slices.Equal(one, other) {
		t.Fatal("seeds 3 and 4 give the same weights")
	}
}

// Each tensor has the distribution it should: gains of 1, matrices normal with standard
// deviation 0.02, wo and w2 scaled by 1/sqrt(2L); tensors and chunks are not copies of each
// other.
func TestInitParamsDistribution(t *testing.T) {
	c, _ := Preset("15m")
	l := NewLayout(c)
	w := make([]float32, l.Size)
	InitParams(c, l, 1, w)
	resid := 0.02 / math.Sqrt(2*float64(c.Layers))
	for i, s := range l.Specs {
		v := w[s.Offset : s.Offset+s.Size]
		if len(s.Shape) == 1 {
			for j, x := range v {
				if x != 1 {
					t.Fatalf("%s[%d] = %v, want 1", s.Name, j, x)
				}
			}
			continue
		}
		want := 0.02
		if s.Layer >= 0 && ((i-1)%perLayer == pWo || (i-1)%perLayer == pW2) {
			want = resid
		}
		var sum, sq float64
		for _, x := range v {
			sum += float64(x)
			sq += float64(x) * float64(x)
		}
		n := float64(len(v))
		mean, std := sum/n, math.Sqrt(sq/n-(sum/n)*(sum/n))
		// Over at least 100k draws the sample standard deviation is within 1% of the true one
		// and the mean within a few standard errors (std/sqrt(n)) of 0.
		if math.Abs(std/want-1) > 0.01 || math.Abs(mean) > 5*want/math.Sqrt(n) {
			t.Errorf("%s: mean %.3g std %.4g, want 0 and %.4g", s.Name, mean, std, want)
		}
	}
	// Two chunks of one tensor, and the same chunk of two tensors, must not repeat each other.
	wq, _ := l.Lookup("layers.0.attention.wq.weight")
	wk, _ := l.Lookup("layers.0.attention.wk.weight")
	a := w[wq.Offset : wq.Offset+initChunk]
	if slices.Equal(a, w[wq.Offset+initChunk:wq.Offset+2*initChunk]) || slices.Equal(a, w[wk.Offset:wk.Offset+initChunk]) {
		t.Error("chunks repeat")
	}
}
