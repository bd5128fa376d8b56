package cuda

import (
	"slices"
	"strings"
)

// Host-side preparation for the kernels, in plain Go so that it is tested on every machine.

// embeddingSegments groups token positions by token: order lists the positions sorted by
// token (stable), segment s covers order[segStart[s]:segStart[s+1]] and holds token segTok[s].
func embeddingSegments(tokens []int32) (order, segStart, segTok []int32) {
	order = make([]int32, len(tokens))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortStableFunc(order, func(a, b int32) int { return int(tokens[a]) - int(tokens[b]) })
	for k, p := range order {
		if k == 0 || tokens[p] != tokens[order[k-1]] {
			segStart = append(segStart, int32(k))
			segTok = append(segTok, tokens[p])
		}
	}
	segStart = append(segStart, int32(len(tokens)))
	return order, segStart, segTok
}

// rmsRowsPerBlock depends on the shape only, so dgain's partial sums, and thus its rounding,
// are the same on every GPU.
func rmsRowsPerBlock(rows int) int { return max(1, rows/(4*132)) }

// densePeaks lists datasheet dense bf16 tensor-core FLOP/s by a substring of the device name,
// most specific first. The SXM parts are the defaults; PCIe and NVL boards run lower clocks.
var densePeaks = []struct {
	name  string
	flops float64
}{
	{"H100 PCIe", 756e12},
	{"H100 NVL", 835e12},
	{"H100", 989e12},
	{"H200", 989e12},
	{"H800", 989e12},
	{"A100", 312e12},
	{"A800", 312e12},
	{"L40S", 362e12},
}

// densePeak returns the dense bf16 peak of the device named name, or 0 when unknown.
func densePeak(name string) float64 {
	for _, p := range densePeaks {
		if strings.Contains(name, p.name) {
			return p.flops
		}
	}
	return 0
}
