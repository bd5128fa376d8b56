package plan

import (
	"strconv"
	"strings"
	"testing"
)

func TestPlanSuggestWhatFits(t *testing.T) {
	c := config(t, "65b", 64, 0, 1)
	if r := mustEstimate(t, c); r.Fits() {
		t.Fatalf("65b with plain data parallelism fits in %d bytes", r.Memory.Total)
	}
	ss, err := Suggest(c)
	if err != nil {
		t.Fatal(err)
	}
	changes := map[string]bool{}
	for _, s := range ss {
		changes[s.Change] = true
		if !s.Result.Fits() {
			t.Errorf("%s does not fit: %d bytes", s.Change, s.Result.Memory.Total)
		}
	}
	if !changes["--zero 3"] {
		t.Errorf("suggestions %v lack --zero 3", changes)
	}
	if changes["--zero 1"] || changes["--zero 2"] {
		t.Errorf("suggestions %v name a stage that does not fit", changes)
	}
	c.ZeRO = 3
	if ss, _ := Suggest(c); ss != nil {
		t.Errorf("a plan that fits got suggestions %v", ss)
	}
}

// The GPU count suggested is the smallest that fits: the valid count below it does not.
func TestPlanSuggestSmallestGPUCount(t *testing.T) {
	c := config(t, "65b", 8, 3, 1)
	c.BatchTokens = 64 * 2048
	ss, err := Suggest(c)
	if err != nil {
		t.Fatal(err)
	}
	var gpus int
	for _, s := range ss {
		if g, ok := strings.CutPrefix(s.Change, "--gpus "); ok {
			gpus, _ = strconv.Atoi(g)
		}
	}
	if gpus == 0 {
		t.Fatalf("no GPU count among %+v", ss)
	}
	for g := gpus - 1; g > c.GPUs; g-- {
		v := c
		v.GPUs = g
		if r, err := Estimate(v); err == nil && r.Fits() {
			t.Errorf("suggested %d GPUs, but %d fit", gpus, g)
		}
	}
}

func TestPlanFastestFits(t *testing.T) {
	c := config(t, "65b", 2048, 0, 1)
	best, ok, err := Fastest(c)
	if err != nil || !ok {
		t.Fatalf("%v %v", ok, err)
	}
	for _, v := range layouts(c.withSizes()) {
		if r := resolve(v); r.Fits() && r.TokensPerSPerGPU > best.TokensPerSPerGPU {
			t.Errorf("ZeRO-%d tp %d: %g tokens/s/GPU beats the fastest, %g", v.ZeRO, v.TP, r.TokensPerSPerGPU, best.TokensPerSPerGPU)
		}
	}
	if !best.Fits() || best.Config.TP == 1 {
		t.Errorf("65b on 2048 GPUs: fastest is ZeRO-%d tp %d (fits %v)", best.Config.ZeRO, best.Config.TP, best.Fits())
	}
}
