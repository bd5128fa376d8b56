package plan

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// ErrPlan is wrapped by every error of this package.
var ErrPlan = errors.New("planner")

// GPU describes one accelerator model and the node it usually sits in.
type GPU struct {
	Name string `json:"name"`
	// PeakFLOPS is the datasheet dense (no sparsity) bf16 tensor-core peak, FLOP/s.
	PeakFLOPS float64 `json:"peak_flops"`
	// GEMMFraction is the fraction of PeakFLOPS the model's FLOPs run at (an assumption;
	// Calibrate replaces it with a measured one).
	GEMMFraction float64 `json:"gemm_fraction"`
	// HBMBytes is the device memory that the driver reports (nvidia-smi memory.total).
	HBMBytes int64 `json:"hbm_bytes"`
	// HBMBandwidth is the datasheet memory bandwidth, bytes/s.
	HBMBandwidth float64 `json:"hbm_bandwidth"`
	// NVLinkBandwidth is the NVLink bandwidth of one GPU in one direction, bytes/s (half the
	// bidirectional figure datasheets give).
	NVLinkBandwidth float64 `json:"nvlink_bandwidth"`
	// NVLinkEfficiency is the fraction of NVLinkBandwidth a large ring collective reaches.
	NVLinkEfficiency float64 `json:"nvlink_efficiency"`
	// GPUsPerNode is the GPUs that share one NVLink domain and the node's network adapters.
	GPUsPerNode int `json:"gpus_per_node"`
	// Fabric names the inter-node fabric used when --fabric is not given.
	Fabric string `json:"fabric"`
}

// Fabric describes an inter-node network, per node.
type Fabric struct {
	Name string `json:"name"`
	// NodeBandwidth is the sum of a node's adapters in one direction, bytes/s. Each GPU of the
	// node gets NodeBandwidth/GPUsPerNode (one adapter per GPU, or a share of fewer).
	NodeBandwidth float64 `json:"node_bandwidth"`
	// Efficiency is the fraction of NodeBandwidth a large ring collective reaches.
	Efficiency float64 `json:"efficiency"`
}

// Hardware is the table of known GPUs and fabrics, by name.
type Hardware struct {
	GPUs    map[string]GPU
	Fabrics map[string]Fabric
}

const (
	gib = 1 << 30
	mib = 1 << 20
)

// Builtin returns herd's hardware table.
//
// Datasheet figures (NVIDIA A100 Tensor Core GPU datasheet, H100 and H200 datasheets, SXM
// form factor): dense bf16 312 TFLOP/s (A100), 989 TFLOP/s (H100, H200); HBM bandwidth
// 1,555 GB/s (A100 40GB), 2,039 GB/s (A100 80GB), 3.35 TB/s (H100), 4.8 TB/s (H200); NVLink
// 600 GB/s (A100, third generation) and 900 GB/s (H100, H200, fourth generation) in both
// directions together. Memory is what the driver reports on these boards (40,960 MiB,
// 81,920 MiB, 81,559 MiB, 143,771 MiB). Eight GPUs per node, as in DGX/HGX systems.
//
// Assumptions, not datasheet figures: the GEMM fractions (large bf16 matrix multiplies on an
// A100 reach about 80% of peak; an H100 at its 700 W limit runs its tensor cores below the
// boost clock the peak assumes, about 70%) and the link efficiencies (ring collectives over
// NVLink reach about 80% of the link rate, over InfiniBand about 85%).
func Builtin() Hardware {
	a100 := GPU{PeakFLOPS: 312e12, GEMMFraction: 0.80, NVLinkBandwidth: 300e9, NVLinkEfficiency: 0.80,
		GPUsPerNode: 8, Fabric: "ib-8x200"}
	h100 := GPU{PeakFLOPS: 989e12, GEMMFraction: 0.70, NVLinkBandwidth: 450e9, NVLinkEfficiency: 0.80,
		GPUsPerNode: 8, Fabric: "ib-8x400"}
	gpu := func(base GPU, name string, hbm int64, bw float64) GPU {
		base.Name, base.HBMBytes, base.HBMBandwidth = name, hbm, bw
		return base
	}
	fabric := func(name string, nics int, gbit float64) Fabric {
		return Fabric{Name: name, NodeBandwidth: float64(nics) * gbit * 1e9 / 8, Efficiency: 0.85}
	}
	return Hardware{
		GPUs: byName([]GPU{
			gpu(a100, "a100-40g", 40960*mib, 1555e9),
			gpu(a100, "a100-80g", 81920*mib, 2039e9),
			gpu(h100, "h100", 81559*mib, 3.35e12),
			gpu(h100, "h200", 143771*mib, 4.8e12),
		}, func(g GPU) string { return g.Name }),
		Fabrics: byName([]Fabric{
			fabric("ib-4x200", 4, 200), // four HDR adapters per node
			fabric("ib-8x200", 8, 200), // DGX A100: eight HDR adapters, one per GPU
			fabric("ib-8x400", 8, 400), // DGX H100: eight NDR adapters, one per GPU
		}, func(f Fabric) string { return f.Name }),
	}
}

func byName[T any](items []T, name func(T) string) map[string]T {
	m := make(map[string]T, len(items))
	for _, it := range items {
		m[name(it)] = it
	}
	return m
}

// GPU returns the named GPU; the error names the --gpu flag and lists the known ones.
func (h Hardware) GPU(name string) (GPU, error) {
	g, ok := h.GPUs[strings.ToLower(name)]
	if !ok {
		return GPU{}, fmt.Errorf("%w: --gpu %q is not in the hardware table (known: %s)", ErrPlan, name, knownNames(h.GPUs))
	}
	return g, nil
}

// Fabric returns the named fabric; the error names the --fabric flag and lists the known ones.
func (h Hardware) Fabric(name string) (Fabric, error) {
	f, ok := h.Fabrics[strings.ToLower(name)]
	if !ok {
		return Fabric{}, fmt.Errorf("%w: --fabric %q is not in the hardware table (known: %s)", ErrPlan, name, knownNames(h.Fabrics))
	}
	return f, nil
}

func knownNames[T any](m map[string]T) string {
	return strings.Join(slices.Sorted(maps.Keys(m)), ", ")
}

// Validate checks every field of g and names the first bad one by its hardware-file key.
func (g GPU) Validate() error {
	where := "gpu " + g.Name
	switch {
	case !(g.PeakFLOPS > 0):
		return fieldErr(where, "peak_tflops", "= %g, must be > 0", g.PeakFLOPS/1e12)
	case !(g.GEMMFraction > 0 && g.GEMMFraction <= 1):
		return fieldErr(where, "gemm_fraction", "= %g, must be in (0, 1]", g.GEMMFraction)
	case g.HBMBytes <= 0:
		return fieldErr(where, "hbm_gib", "= %g, must be > 0", float64(g.HBMBytes)/gib)
	case !(g.HBMBandwidth > 0):
		return fieldErr(where, "hbm_gb_per_s", "= %g, must be > 0", g.HBMBandwidth/1e9)
	case !(g.NVLinkBandwidth > 0):
		return fieldErr(where, "nvlink_gb_per_s", "= %g, must be > 0", g.NVLinkBandwidth/1e9)
	case !(g.NVLinkEfficiency > 0 && g.NVLinkEfficiency <= 1):
		return fieldErr(where, "nvlink_efficiency", "= %g, must be in (0, 1]", g.NVLinkEfficiency)
	case g.GPUsPerNode <= 0:
		return fieldErr(where, "gpus_per_node", "= %d, must be > 0", g.GPUsPerNode)
	}
	return nil
}

// Validate checks every field of f and names the first bad one by its hardware-file key.
func (f Fabric) Validate() error {
	where := "fabric " + f.Name
	switch {
	case !(f.NodeBandwidth > 0):
		return fieldErr(where, "node_gbit_per_s", "= %g, must be > 0", f.NodeBandwidth*8/1e9)
	case !(f.Efficiency > 0 && f.Efficiency <= 1):
		return fieldErr(where, "efficiency", "= %g, must be in (0, 1]", f.Efficiency)
	}
	return nil
}
