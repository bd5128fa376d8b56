package plan

import (
	"errors"
	"strings"
	"testing"
)

func TestPlanValidateNamesTheFlag(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"zero 4", func(c *Config) { c.ZeRO = 4 }, "--zero = 4: unknown ZeRO stage (allowed: 0 plain data parallelism, 1"},
		{"zero -1", func(c *Config) { c.ZeRO = -1 }, "--zero = -1: unknown ZeRO stage"},
		{"no gpus", func(c *Config) { c.GPUs = 0 }, "--gpus = 0, must be >= 1"},
		{"tp beyond a node", func(c *Config) { c.TP = 16 }, "--tp = 16, must be in [1, 8]: tensor parallelism stays inside one node of a100-80g"},
		{"tp not dividing gpus", func(c *Config) { c.GPUs, c.TP = 12, 8 }, "--tp = 8 does not divide --gpus = 12"},
		{"tp not dividing heads", func(c *Config) { c.TP = 3; c.GPUs = 3 }, "--tp = 3 must divide heads = 32"},
		{"seq", func(c *Config) { c.Seq = 4096 }, "--seq = 4096, must be in [1, max_seq = 2048]"},
		{"batch not whole sequences", func(c *Config) { c.BatchTokens = 4e6 }, "--batch-tokens = 4000000 is not a positive whole number of --seq 2048 sequences"},
		{"batch not splitting", func(c *Config) { c.GPUs = 3000 }, "--batch-tokens = 4194304 is 2048 sequences of 2048, which do not split evenly across 3000 data-parallel ranks (--gpus 3000 / --tp 1); nearest that does: --gpus 2048"},
		{"batch not splitting, both sides", func(c *Config) { c.GPUs = 1000 }, "nearest that do: --gpus 512 or 1024"},
		{"micro-batch", func(c *Config) { c.MicroBatch = 3 }, "--micro-batch = 3 must divide the 8 sequences each data-parallel rank trains on per step"},
		{"tokens", func(c *Config) { c.Tokens = 0 }, "--tokens = 0, must be > 0"},
	} {
		c := config(t, "7b", 256, 0, 1)
		tc.edit(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
		if err != nil && !errors.Is(err, ErrPlan) {
			t.Errorf("%s: %v does not wrap ErrPlan", tc.name, err)
		}
	}
}

// A ZeRO rank owns a contiguous range of the flat buffer; more ranks than parameters would
// leave some with nothing.
func TestPlanValidateEmptyShard(t *testing.T) {
	c := config(t, "tiny", 196_930, 1, 1)
	c.Seq, c.BatchTokens = 1, 196_930
	if got, want := localParams(c.withSizes()), int64(196_928); got != want {
		t.Fatalf("tiny has %d parameters, want %d", got, want)
	}
	err := c.Validate()
	want := "--gpus = 196930: ZeRO-1 splits the 196928 parameters of each tensor-parallel rank over 196930 data-parallel ranks, so 2 of them would own an empty range; at most 196928 GPUs"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("%v, want %q", err, want)
	}
	c.ZeRO = 0 // plain data parallelism replicates: nothing is empty
	if err := c.Validate(); err != nil {
		t.Errorf("ZeRO-0: %v", err)
	}
}

func TestPlanLocalParams(t *testing.T) {
	c := config(t, "65b", 8, 0, 1).withSizes()
	if got, want := localParams(c), int64(65_285_660_672); got != want {
		t.Errorf("tp 1: %d, want %d", got, want)
	}
	c.TP = 8
	gains := int64(2*80+1) * 8192
	if got, want := localParams(c), (65_285_660_672-gains)/8+gains; got != want {
		t.Errorf("tp 8: %d, want %d", got, want)
	}
}
