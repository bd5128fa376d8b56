package model

import (
	"errors"
	"strings"
	"testing"
)

// The paper's parameter counts (arXiv 2302.13971) must come out exactly.
func TestPresetParamCounts(t *testing.T) {
	for name, want := range map[string]int{
		"7b":  6_738_415_616,
		"13b": 13_015_864_320,
		"33b": 32_528_943_616,
		"65b": 65_285_660_672,
	} {
		c, err := Preset(name)
		if err != nil {
			t.Fatal(err)
		}
		if got := NumParams(c); got != want {
			t.Errorf("%s: %d parameters, want %d", name, got, want)
		}
	}
}

func TestFFNHidden(t *testing.T) {
	for d, want := range map[int]int{4096: 11008, 5120: 13824, 6656: 17920, 8192: 22016, 768: 2048, 2048: 5632, 64: 256} {
		if got := FFNHiddenFor(d); got != want {
			t.Errorf("FFNHiddenFor(%d) = %d, want %d", d, got, want)
		}
	}
}

func TestPresetsValidate(t *testing.T) {
	for _, n := range PresetNames() {
		c, _ := Preset(n)
		if err := c.Validate(); err != nil {
			t.Errorf("preset %s: %v", n, err)
		}
	}
	if err := Default().Validate(); err != nil {
		t.Error(err)
	}
}

func TestConfigErrors(t *testing.T) {
	base := Default()
	cases := []struct {
		mutate func(*Config)
		want   string
	}{
		{func(c *Config) { c.Dim = 0 }, "dim = 0, must be > 0"},
		{func(c *Config) { c.Layers = -1 }, "layers = -1"},
		{func(c *Config) { c.Vocab = 0 }, "vocab = 0"},
		{func(c *Config) { c.Heads = 5 }, "dim = 64 is not divisible by heads = 5"},
		{func(c *Config) { c.Heads = 64 }, "head dim = dim/heads = 1 must be even"},
		{func(c *Config) { c.Remat = "some" }, `remat = "some", allowed: none, hybrid, full`},
		{func(c *Config) { c.NormEps = 0 }, "norm_eps"},
	}
	for _, tc := range cases {
		c := base
		tc.mutate(&c)
		err := c.Validate()
		if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate() = %v, want an ErrConfig containing %q", err, tc.want)
		}
	}
	if _, err := Preset("huge"); err == nil || !strings.Contains(err.Error(), `unknown preset "huge" (allowed: tiny, 15m, 125m, 1b, 7b, 13b, 33b, 65b)`) {
		t.Errorf("Preset(huge) = %v", err)
	}
	if _, err := ParseRemat("partial"); err == nil || !strings.Contains(err.Error(), "allowed: none, hybrid, full") {
		t.Errorf("ParseRemat(partial) = %v", err)
	}
	if err := base.CheckSeq(base.MaxSeq + 1); err == nil || !strings.Contains(err.Error(), "seq = 4097, must be in [1, max_seq = 4096]") {
		t.Errorf("CheckSeq = %v", err)
	}
}

func TestLayoutIsContiguous(t *testing.T) {
	c, _ := Preset("125m")
	l := NewLayout(c)
	off := 0
	for _, s := range l.Specs {
		if s.Offset != off {
			t.Fatalf("%s at %d, want %d", s.Name, s.Offset, off)
		}
		n := 1
		for _, d := range s.Shape {
			n *= d
		}
		if n != s.Size {
			t.Fatalf("%s: size %d, shape %v", s.Name, s.Size, s.Shape)
		}
		if s.Decay != (len(s.Shape) == 2) {
			t.Errorf("%s: decay %v for shape %v", s.Name, s.Decay, s.Shape)
		}
		off += s.Size
	}
	if off != l.Size {
		t.Errorf("layout size %d, specs sum to %d", l.Size, off)
	}
	if s, ok := l.Lookup("layers.11.feed_forward.w2.weight"); !ok || s.Shape[0] != 768 || s.Shape[1] != 2048 {
		t.Errorf("Lookup w2 = %+v, %v", s, ok)
	}
}

func TestSchedule(t *testing.T) {
	s := Schedule{PeakLR: 1e-3, WarmupSteps: 10, TotalSteps: 110, MinRatio: 0.1}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	near := func(a, b float64) bool { return a-b < 1e-15 && b-a < 1e-15 }
	if !near(s.LR(0), 1e-4) || !near(s.LR(9), 1e-3) {
		t.Errorf("warmup: LR(0) = %g, LR(9) = %g", s.LR(0), s.LR(9))
	}
	if !near(s.LR(60), 0.55e-3) {
		t.Errorf("cosine midpoint LR(60) = %g, want 5.5e-4", s.LR(60))
	}
	if !near(s.LR(110), 1e-4) || !near(s.LR(500), 1e-4) {
		t.Errorf("floor: LR(110) = %g, LR(500) = %g", s.LR(110), s.LR(500))
	}
	for i := 10; i < 110; i++ {
		if s.LR(i+1) > s.LR(i) {
			t.Fatalf("LR rises after warmup at step %d", i)
		}
	}
	if err := (Schedule{PeakLR: 1, WarmupSteps: 5, TotalSteps: 4, MinRatio: 0.1}).Validate(); err == nil || !strings.Contains(err.Error(), "warmup_steps = 5 exceeds total_steps = 4") {
		t.Errorf("Validate = %v", err)
	}
}
