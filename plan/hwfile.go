package plan

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/herd-llm/herd/internal/yamlpos"
)

// A hardware file (--hardware FILE.yaml) extends or overrides the table. An entry whose name
// is already in the table replaces only the keys it gives; a new entry must give every key.
//
//	gpus:
//	  a100-80g:
//	    gemm_fraction: 0.72      # measured on our cluster
//	  b200:
//	    peak_tflops: 2250        # dense bf16
//	    gemm_fraction: 0.7
//	    hbm_gib: 180
//	    hbm_gb_per_s: 8000
//	    nvlink_gb_per_s: 900     # one direction
//	    nvlink_efficiency: 0.8
//	    gpus_per_node: 8
//	    fabric: ib-8x400         # default --fabric
//	fabrics:
//	  roce-8x400:
//	    node_gbit_per_s: 3200    # all of a node's adapters, one direction
//	    efficiency: 0.8
type hardwareFile struct {
	GPUs    map[string]gpuEntry    `yaml:"gpus"`
	Fabrics map[string]fabricEntry `yaml:"fabrics"`
}

type gpuEntry struct {
	PeakTFLOPS       *float64 `yaml:"peak_tflops"`
	GEMMFraction     *float64 `yaml:"gemm_fraction"`
	HBMGiB           *float64 `yaml:"hbm_gib"`
	HBMGBPerS        *float64 `yaml:"hbm_gb_per_s"`
	NVLinkGBPerS     *float64 `yaml:"nvlink_gb_per_s"`
	NVLinkEfficiency *float64 `yaml:"nvlink_efficiency"`
	GPUsPerNode      *int     `yaml:"gpus_per_node"`
	Fabric           *string  `yaml:"fabric"`
}

type fabricEntry struct {
	NodeGbitPerS *float64 `yaml:"node_gbit_per_s"`
	Efficiency   *float64 `yaml:"efficiency"`
}

// setter is one key of an entry: whether the file gives it, and how it applies.
type setter struct {
	key   string
	given bool
	apply func()
}

func (e gpuEntry) setters(g *GPU) []setter {
	return []setter{
		{"peak_tflops", e.PeakTFLOPS != nil, func() { g.PeakFLOPS = *e.PeakTFLOPS * 1e12 }},
		{"gemm_fraction", e.GEMMFraction != nil, func() { g.GEMMFraction = *e.GEMMFraction }},
		{"hbm_gib", e.HBMGiB != nil, func() { g.HBMBytes = int64(*e.HBMGiB * gib) }},
		{"hbm_gb_per_s", e.HBMGBPerS != nil, func() { g.HBMBandwidth = *e.HBMGBPerS * 1e9 }},
		{"nvlink_gb_per_s", e.NVLinkGBPerS != nil, func() { g.NVLinkBandwidth = *e.NVLinkGBPerS * 1e9 }},
		{"nvlink_efficiency", e.NVLinkEfficiency != nil, func() { g.NVLinkEfficiency = *e.NVLinkEfficiency }},
		{"gpus_per_node", e.GPUsPerNode != nil, func() { g.GPUsPerNode = *e.GPUsPerNode }},
		{"fabric", e.Fabric != nil, func() { g.Fabric = strings.ToLower(*e.Fabric) }},
	}
}

func (e fabricEntry) setters(f *Fabric) []setter {
	return []setter{
		{"node_gbit_per_s", e.NodeGbitPerS != nil, func() { f.NodeBandwidth = *e.NodeGbitPerS * 1e9 / 8 }},
		{"efficiency", e.Efficiency != nil, func() { f.Efficiency = *e.Efficiency }},
	}
}

// apply sets the given keys; a new entry (not in the table) must give them all.
func apply(ss []setter, isNew bool, path string, root *yaml.Node) error {
	for _, s := range ss {
		if s.given {
			s.apply()
		} else if isNew {
			return fmt.Errorf("%w: line %d: %s: %s is required for an entry that is not in the built-in table",
				ErrPlan, yamlpos.Line(root, strings.Split(path, ".")...), path, s.key)
		}
	}
	return nil
}

// ParseHardware decodes a hardware file strictly (unknown keys, wrong types and repeated keys
// are refused with their line) and returns base with the file's entries merged in. Errors
// name the line and the key.
func ParseHardware(base Hardware, raw []byte) (Hardware, error) {
	var f hardwareFile
	root, err := yamlpos.DecodeStrict(raw, &f)
	if err != nil && !errors.Is(err, yamlpos.ErrEmpty) {
		return Hardware{}, fmt.Errorf("%w: %v", ErrPlan, err)
	}
	h := Hardware{GPUs: maps.Clone(base.GPUs), Fabrics: maps.Clone(base.Fabrics)}
	if err := mergeFabrics(h, f.Fabrics, root); err != nil {
		return Hardware{}, err
	}
	if err := mergeGPUs(h, f.GPUs, root); err != nil {
		return Hardware{}, err
	}
	return h, nil
}

func mergeFabrics(h Hardware, entries map[string]fabricEntry, root *yaml.Node) error {
	for _, name := range slices.Sorted(maps.Keys(entries)) {
		key := strings.ToLower(name)
		fb, ok := h.Fabrics[key]
		fb.Name = key
		path := "fabrics." + name
		if err := apply(entries[name].setters(&fb), !ok, path, root); err != nil {
			return err
		}
		if err := fb.Validate(); err != nil {
			return atLine(err, path, root)
		}
		h.Fabrics[key] = fb
	}
	return nil
}

func mergeGPUs(h Hardware, entries map[string]gpuEntry, root *yaml.Node) error {
	for _, name := range slices.Sorted(maps.Keys(entries)) {
		key := strings.ToLower(name)
		g, ok := h.GPUs[key]
		g.Name = key
		path := "gpus." + name
		if err := apply(entries[name].setters(&g), !ok, path, root); err != nil {
			return err
		}
		if err := g.Validate(); err != nil {
			return atLine(err, path, root)
		}
		if _, ok := h.Fabrics[g.Fabric]; !ok {
			return fmt.Errorf("%w: line %d: %s.fabric: %q is not a known fabric (known: %s)",
				ErrPlan, yamlpos.Line(root, strings.Split(path+".fabric", ".")...), path, g.Fabric, knownNames(h.Fabrics))
		}
		h.GPUs[key] = g
	}
	return nil
}

// atLine rewrites a FieldError of the entry at path with the line of its key.
func atLine(err error, path string, root *yaml.Node) error {
	var fe *FieldError
	if !errors.As(err, &fe) {
		return err
	}
	key := path + "." + fe.Field
	return fmt.Errorf("%w: line %d: %s %s", ErrPlan, yamlpos.Line(root, strings.Split(key, ".")...), key, fe.Msg)
}
