package cuda

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// The segments must list every position once, grouped by token with distinct tokens per
// segment, positions ascending within a segment: the order in which the kernel sums, which
// matches the CPU reference's.
func TestEmbeddingSegments(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	for _, n := range []int{1, 2, 9, 1000} {
		tokens := make([]int32, n)
		for i := range tokens {
			tokens[i] = int32(rng.IntN(1 + n/3))
		}
		order, segStart, segTok := embeddingSegments(tokens)
		if len(segStart) != len(segTok)+1 || segStart[0] != 0 || int(segStart[len(segTok)]) != n {
			t.Fatalf("n=%d: segStart %v for %d segments", n, segStart, len(segTok))
		}
		seen := make([]bool, n)
		for s, tok := range segTok {
			if s > 0 && segTok[s-1] >= tok {
				t.Fatalf("n=%d: segment tokens not strictly increasing: %v", n, segTok)
			}
			for k := segStart[s]; k < segStart[s+1]; k++ {
				p := order[k]
				if tokens[p] != tok || seen[p] || (k > segStart[s] && order[k-1] >= p) {
					t.Fatalf("n=%d: segment %d (token %d) holds position %d (token %d) out of order or twice", n, s, tok, p, tokens[p])
				}
				seen[p] = true
			}
		}
		if slices.Contains(seen, false) {
			t.Fatalf("n=%d: a position is in no segment", n)
		}
	}
}

func TestDensePeak(t *testing.T) {
	for name, want := range map[string]float64{
		"NVIDIA H200": 989e12, "NVIDIA H100 80GB HBM3": 989e12, "NVIDIA H100 PCIe": 756e12,
		"NVIDIA A100-SXM4-80GB": 312e12, "Tesla T4": 0,
	} {
		if got := densePeak(name); got != want {
			t.Errorf("densePeak(%q) = %g, want %g", name, got, want)
		}
	}
}
