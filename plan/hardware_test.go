package plan

import (
	"errors"
	"strings"
	"testing"
)

func TestPlanBuiltinValid(t *testing.T) {
	hw := Builtin()
	for _, name := range []string{"a100-40g", "a100-80g", "h100", "h200"} {
		g, err := hw.GPU(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if _, err := hw.Fabric(g.Fabric); err != nil {
			t.Errorf("%s: default fabric: %v", name, err)
		}
	}
	for _, name := range []string{"ib-4x200", "ib-8x200", "ib-8x400"} {
		f, err := hw.Fabric(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	// DESIGN's peak for MFU on H100/H200, and the A100 datasheet's.
	for name, peak := range map[string]float64{"a100-80g": 312e12, "h100": 989e12, "h200": 989e12} {
		if g := hw.GPUs[name]; g.PeakFLOPS != peak {
			t.Errorf("%s: peak %g, want %g", name, g.PeakFLOPS, peak)
		}
	}
	if f := hw.Fabrics["ib-4x200"]; f.NodeBandwidth != 100e9 {
		t.Errorf("ib-4x200: %g bytes/s per node, want 4 x 200 Gb/s = 100e9", f.NodeBandwidth)
	}
}

func TestPlanUnknownHardwareNamesTheFlag(t *testing.T) {
	hw := Builtin()
	_, err := hw.GPU("v100")
	if err == nil || !strings.Contains(err.Error(), `--gpu "v100" is not in the hardware table (known: a100-40g, a100-80g, h100, h200)`) {
		t.Errorf("GPU: %v", err)
	}
	_, err = hw.Fabric("ethernet")
	if err == nil || !strings.Contains(err.Error(), `--fabric "ethernet" is not in the hardware table (known: ib-4x200, ib-8x200, ib-8x400)`) {
		t.Errorf("Fabric: %v", err)
	}
}

func TestPlanParseHardware(t *testing.T) {
	raw := `gpus:
  a100-80g:
    gemm_fraction: 0.7
  b200:
    peak_tflops: 2250
    gemm_fraction: 0.65
    hbm_gib: 180
    hbm_gb_per_s: 8000
    nvlink_gb_per_s: 900
    nvlink_efficiency: 0.8
    gpus_per_node: 8
    fabric: roce-8x400
fabrics:
  roce-8x400:
    node_gbit_per_s: 3200
    efficiency: 0.75
`
	hw, err := ParseHardware(Builtin(), []byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	a := hw.GPUs["a100-80g"]
	if a.GEMMFraction != 0.7 || a.PeakFLOPS != 312e12 || a.HBMBytes != 81920*mib {
		t.Errorf("override replaced more than gemm_fraction: %+v", a)
	}
	b := hw.GPUs["b200"]
	if b.PeakFLOPS != 2250e12 || b.HBMBytes != 180*gib || b.NVLinkBandwidth != 900e9 || b.Fabric != "roce-8x400" {
		t.Errorf("b200 = %+v", b)
	}
	if f := hw.Fabrics["roce-8x400"]; f.NodeBandwidth != 400e9 || f.Efficiency != 0.75 {
		t.Errorf("roce-8x400 = %+v", f)
	}
	if Builtin().GPUs["a100-80g"].GEMMFraction != 0.8 {
		t.Error("ParseHardware changed the built-in table")
	}
}

func TestPlanParseHardwareErrors(t *testing.T) {
	for _, tc := range []struct{ raw, want string }{
		{"gpus:\n  a100-80g:\n    gemm_fraction: 1.5\n", "line 3: gpus.a100-80g.gemm_fraction = 1.5, must be in (0, 1]"},
		{"gpus:\n  a100-80g:\n    peak_tflop: 300\n", "line 3: field peak_tflop not found"},
		{"gpus:\n  a100-80g:\n    gpus_per_node: eight\n", "line 3: cannot unmarshal"},
		{"gpus:\n  b200:\n    peak_tflops: 2250\n", "line 2: gpus.b200: gemm_fraction is required for an entry that is not in the built-in table"},
		{"fabrics:\n  ib-8x200:\n    efficiency: 0\n", "line 3: fabrics.ib-8x200.efficiency = 0, must be in (0, 1]"},
		{"gpus:\n  h100:\n    fabric: ethernet\n", `line 3: gpus.h100.fabric: "ethernet" is not a known fabric`},
		{"tpus: {}\n", "line 1: field tpus not found"},
	} {
		_, err := ParseHardware(Builtin(), []byte(tc.raw))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.raw, err, tc.want)
		}
		if err != nil && !errors.Is(err, ErrPlan) {
			t.Errorf("%q: %v does not wrap ErrPlan", tc.raw, err)
		}
	}
}
