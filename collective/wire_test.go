package collective

import (
	"bytes"
	"math"
	"testing"
)

// TestWireMatchesPortable checks the in-place little-endian path against the portable one
// that big-endian machines use.
func TestWireMatchesPortable(t *testing.T) {
	src := []float32{0, -0, 1, -1.5, float32(math.Inf(1)), math.SmallestNonzeroFloat32, 3.4e38, 1e-3}
	var w1, w2 wireScratch
	fast, portable := encodeFloats(&w1, src), encodeFloatsPortable(&w2, src)
	if !bytes.Equal(fast, portable) {
		t.Fatalf("encodeFloats %x, portable %x", fast, portable)
	}
	got := make([]float32, len(src))
	if err := readFloats(bytes.NewReader(portable), got, &w1); err != nil {
		t.Fatal(err)
	}
	sum := append([]float32(nil), src...)
	if err := readAddFloats(bytes.NewReader(portable), sum, &w1); err != nil {
		t.Fatal(err)
	}
	sumPortable := append([]float32(nil), src...)
	if err := readAddFloatsPortable(bytes.NewReader(portable), sumPortable, &w2); err != nil {
		t.Fatal(err)
	}
	for i := range src {
		if math.Float32bits(got[i]) != math.Float32bits(src[i]) ||
			math.Float32bits(sum[i]) != math.Float32bits(sumPortable[i]) {
			t.Fatalf("element %d: read %v add %v portable add %v, want %v", i, got[i], sum[i], sumPortable[i], src[i])
		}
	}
}

func TestAddTo(t *testing.T) {
	for n := range 20 {
		dst, src := make([]float32, n), make([]float32, n)
		for i := range n {
			dst[i], src[i] = float32(i), float32(10*i)
		}
		addTo(dst, src)
		for i := range n {
			if dst[i] != float32(11*i) {
				t.Fatalf("n=%d: dst[%d] = %v, want %v", n, i, dst[i], 11*i)
			}
		}
	}
}
