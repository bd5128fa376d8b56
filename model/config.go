// Package model is the LLaMA network of herd: its configuration and presets, the flat
// parameter layout, the forward and hand-written backward pass of every layer under a
// rematerialization policy, the loss, AdamW and the learning-rate schedule.
//
// All computation goes through a kernels.Backend, so the same code trains on the CPU
// reference and on a GPU. Parallelism across devices is applied from outside: nothing here
// knows about ranks or collectives.
//
// Symbols used throughout: B batch size, T sequence length, N = B*T rows (tokens), d model
// dimension, H heads, hd = d/H head dimension, f feed-forward hidden size, V vocabulary, L layers.
package model

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("model: invalid config")

// Config describes a LLaMA network.
type Config struct {
	Dim       int     `json:"dim"`        // model dimension d
	Layers    int     `json:"layers"`     // number of transformer blocks L
	Heads     int     `json:"heads"`      // attention heads H; Dim must be a multiple
	FFNHidden int     `json:"ffn_hidden"` // SwiGLU hidden size f
	Vocab     int     `json:"vocab"`      // vocabulary size V
	MaxSeq    int     `json:"max_seq"`    // longest sequence the model accepts
	NormEps   float64 `json:"norm_eps"`   // RMSNorm epsilon
	RopeTheta float64 `json:"rope_theta"` // rotary base
	Remat     Remat   `json:"remat"`      // activation rematerialization policy
	PeakLR    float64 `json:"peak_lr"`    // peak learning rate of the preset
}

// FFNHiddenFor returns LLaMA's feed-forward size for model dimension d: 2/3 of 4d, rounded
// up to a multiple of 256.
func FFNHiddenFor(d int) int {
	f := (2 * 4 * d) / 3
	if (2*4*d)%3 != 0 {
		f++
	}
	return (f + 255) / 256 * 256
}

func preset(d, layers, heads, vocab, maxSeq int, lr float64) Config {
	return Config{Dim: d, Layers: layers, Heads: heads, FFNHidden: FFNHiddenFor(d), Vocab: vocab,
		MaxSeq: maxSeq, NormEps: 1e-6, RopeTheta: 10000, Remat: RematHybrid, PeakLR: lr}
}

// presets holds the paper's models (arXiv 2302.13971, table 2) and small models for
// development machines. The small ones keep LLaMA's shape rules.
var presets = map[string]Config{
	"tiny": preset(64, 2, 4, 512, 4096, 1e-3),
	"15m":  preset(320, 7, 5, 8192, 1024, 1e-3),
	"125m": preset(768, 12, 12, 32000, 2048, 6e-4),
	"1b":   preset(2048, 16, 16, 32000, 2048, 3e-4),
	"7b":   preset(4096, 32, 32, 32000, 2048, 3e-4),
	"13b":  preset(5120, 40, 40, 32000, 2048, 3e-4),
	"33b":  preset(6656, 60, 52, 32000, 2048, 1.5e-4),
	"65b":  preset(8192, 80, 64, 32000, 2048, 1.5e-4),
}

// PresetNames lists the presets, smallest first.
func PresetNames() []string {
	names := make([]string, 0, len(presets))
	for n := range presets {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		a, b := presets[names[i]], presets[names[j]]
		return a.Dim*a.Layers < b.Dim*b.Layers
	})
	return names
}

// Preset returns the named preset.
func Preset(name string) (Config, error) {
	c, ok := presets[strings.ToLower(name)]
	if !ok {
		return Config{}, fmt.Errorf("%w: unknown preset %q (allowed: %s)", ErrConfig, name, strings.Join(PresetNames(), ", "))
	}
	return c, nil
}

// Default returns the tiny preset, which trains in minutes on a laptop-class CPU.
func Default() Config { return presets["tiny"] }

// HeadDim returns d/H.
func (c Config) HeadDim() int { return c.Dim / c.Heads }

// Validate checks every field and names the first bad one with its allowed range.
func (c Config) Validate() error {
	pos := []struct {
		name string
		v    int
	}{{"dim", c.Dim}, {"layers", c.Layers}, {"heads", c.Heads}, {"ffn_hidden", c.FFNHidden}, {"vocab", c.Vocab}, {"max_seq", c.MaxSeq}}
	for _, f := range pos {
		if f.v <= 0 {
			return fmt.Errorf("%w: %s = %d, must be > 0", ErrConfig, f.name, f.v)
		}
	}
	if c.Dim%c.Heads != 0 {
		return fmt.Errorf("%w: dim = %d is not divisible by heads = %d", ErrConfig, c.Dim, c.Heads)
	}
	if c.HeadDim()%2 != 0 {
		return fmt.Errorf("%w: head dim = dim/heads = %d must be even for rotary embeddings", ErrConfig, c.HeadDim())
	}
	if !(c.NormEps > 0) {
		return fmt.Errorf("%w: norm_eps = %g, must be > 0", ErrConfig, c.NormEps)
	}
	if !(c.RopeTheta > 0) {
		return fmt.Errorf("%w: rope_theta = %g, must be > 0", ErrConfig, c.RopeTheta)
	}
	if !slices.Contains(rematPolicies, c.Remat) {
		return fmt.Errorf("%w: remat = %q, allowed: %s", ErrConfig, c.Remat, rematNames())
	}
	if c.PeakLR < 0 {
		return fmt.Errorf("%w: peak_lr = %g, must be >= 0", ErrConfig, c.PeakLR)
	}
	return nil
}

// CheckSeq returns an error unless 1 <= t <= MaxSeq.
func (c Config) CheckSeq(t int) error {
	if t <= 0 || t > c.MaxSeq {
		return fmt.Errorf("%w: seq = %d, must be in [1, max_seq = %d]", ErrConfig, t, c.MaxSeq)
	}
	return nil
}

// Remat is an activation rematerialization policy: which activations the forward pass keeps
// for the backward pass and which the backward pass recomputes.
type Remat string

const (
	// RematNone keeps every activation the backward pass reads.
	RematNone Remat = "none"
	// RematHybrid is LLaMA's policy: keep the outputs of the linear layers (q, k, v, the
	// attention output, w1 and w3 outputs), the residual stream and per-row statistics;
	// recompute RMSNorm outputs, RoPE, the SwiGLU product and attention probabilities.
	RematHybrid Remat = "hybrid"
	// RematFull keeps only each layer's input and recomputes the whole layer in backward.
	RematFull Remat = "full"
)

var rematPolicies = []Remat{RematNone, RematHybrid, RematFull}

func rematNames() string {
	s := make([]string, len(rematPolicies))
	for i, p := range rematPolicies {
		s[i] = string(p)
	}
	return strings.Join(s, ", ")
}

// ParseRemat parses a policy name.
func ParseRemat(s string) (Remat, error) {
	r := Remat(strings.ToLower(s))
	if !slices.Contains(rematPolicies, r) {
		return "", fmt.Errorf("%w: unknown remat policy %q (allowed: %s)", ErrConfig, s, rematNames())
	}
	return r, nil
}

// RematPolicies lists the policies.
func RematPolicies() []Remat { return slices.Clone(rematPolicies) }
