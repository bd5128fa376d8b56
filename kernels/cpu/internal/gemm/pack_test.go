package gemm

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestPackVectorMatchesGo packs blocks of float32 with the vector routines (where the build
// and CPU have them) and with the Go loops alone, in both orientations, for strip widths of
// every kernel, partial strips, depths around multiples of 8 and padded leading dimensions,
// and requires the same bytes. Destinations start filled with garbage, so an element either
// path forgets to write shows up.
func TestPackVectorMatchesGo(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, width := range []int{3, 4, 8, 12, 24, 32} {
		for _, n := range []int{1, 3, 4, 5, 8, 11, 12, 13, 31, 33, 50} {
			for _, depth := range []int{1, 7, 8, 9, 16, 23, 64} {
				for _, pad := range []int{0, 5} {
					name := fmt.Sprintf("width=%d n=%d depth=%d pad=%d", width, n, depth, pad)
					// along: depth stored rows of n (+pad); across: n stored rows of depth (+pad)
					along := make([]float32, depth*(n+pad))
					across := make([]float32, n*(depth+pad))
					for i := range along {
						along[i] = rng.Float32()
					}
					for i := range across {
						across[i] = rng.Float32()
					}
					size := roundUp(n, width) * depth
					for _, c := range []struct {
						kind string
						pack func(dst []float32, vec bool)
					}{
						{"along", func(dst []float32, vec bool) { packAlong(dst, along, 0, n+pad, depth, n, width, vec) }},
						{"across", func(dst []float32, vec bool) { packAcross(dst, across, 0, depth+pad, depth, n, width, vec) }},
					} {
						want, got := garbage(size), garbage(size)
						c.pack(want, false)
						c.pack(got, true)
						if i := firstDiff(got, want); i >= 0 {
							t.Fatalf("%s %s: element %d = %g with the vector routines, %g with Go", c.kind, name, i, got[i], want[i])
						}
						if c.kind == "along" && !checkAlong(want, along, n+pad, depth, n, width) {
							t.Fatalf("along %s: Go packing is not the layout pack.go describes", name)
						}
					}
				}
			}
		}
	}
}

func garbage(n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = -12345
	}
	return s
}

func firstDiff(a, b []float32) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// checkAlong checks a packAlong result against the layout: element j of step p lands in strip
// j/width at ((j/width)*depth + p)*width + j%width, and padding is zero.
func checkAlong(dst, src []float32, ld, depth, n, width int) bool {
	want := make([]float32, roundUp(n, width)*depth)
	for p := range depth {
		for j := range n {
			want[((j/width)*depth+p)*width+j%width] = src[p*ld+j]
		}
	}
	return slices.Equal(dst, want)
}
