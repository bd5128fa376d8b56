package model

import "github.com/herd-llm/herd/kernels"

// act names one activation of a block (or of the head), in forward order.
type act int

const (
	aRstd1 act = iota // [N]      1/rms of the block input
	aXn1              // [N, d]   attention_norm(x)
	aQ                // [N, d]   x_n1 wq^T, before RoPE
	aK                // [N, d]   x_n1 wk^T, before RoPE
	aQr               // [N, d]   RoPE(q)
	aKr               // [N, d]   RoPE(k)
	aV                // [N, d]   x_n1 wv^T
	aAtt              // [N, d]   attention output, before wo
	aLse              // [N, H]   attention logsumexp per row and head
	aH                // [N, d]   x + att wo^T, the mid-block residual stream (f32)
	aRstd2            // [N]      1/rms of h
	aXn2              // [N, d]   ffn_norm(h)
	aA                // [N, f]   x_n2 w1^T
	aB                // [N, f]   x_n2 w3^T
	aG                // [N, f]   silu(a) * b
	aOut              // [N, d]   h + g w2^T, the block output, next block's input (f32)
	numLayerActs
)

// Activations outside the blocks, in forward order.
const (
	hX0     act = iota // [N, d] token embeddings, block 0's input (f32)
	hRstdF             // [N]    1/rms before the final norm
	hXnF               // [N, d] norm(x_L)
	hLogits            // [N, V] logits, overwritten by their gradient in backward (f32)
	hLoss              // [N]    per-token loss
	hLseCE             // [N]    logsumexp of the logits
	numHeadActs
)

// actSpec describes one activation: its width per token, whether it stays float32 on a
// mixed-precision backend, and which policies keep it between forward and backward.
// Activations a policy does not keep live in a per-model workspace and are recomputed by
// backward when it needs them. The model allocates from this table and `herd plan` reports
// from it, so the two cannot disagree.
//
// f32 marks what mixed-precision training keeps in float32, as PyTorch's autocast does: the
// per-row statistics (rstd, lse, losses), the residual stream (x0, h, out: every block adds
// into it in float32, so bf16 rounding does not accumulate over the layers) and the logits,
// which feed the cross-entropy in float32. Everything else is an input or output of a matrix
// multiplication and is bf16 there.
type actSpec struct {
	name  string
	width func(c Config) int
	f32   bool
	keep  map[Remat]bool
}

var (
	dimW   = func(c Config) int { return c.Dim }
	ffnW   = func(c Config) int { return c.FFNHidden }
	headsW = func(c Config) int { return c.Heads }
	oneW   = func(Config) int { return 1 }
	vocabW = func(c Config) int { return c.Vocab }

	all    = map[Remat]bool{RematNone: true, RematHybrid: true, RematFull: true}
	noneHy = map[Remat]bool{RematNone: true, RematHybrid: true}
	hybrid = map[Remat]bool{RematHybrid: true}
	none   = map[Remat]bool{RematNone: true}
)

var layerActs = [numLayerActs]actSpec{
	aRstd1: {"rstd1", oneW, true, noneHy},
	aXn1:   {"xn1", dimW, false, none},
	aQ:     {"q", dimW, false, hybrid},
	aK:     {"k", dimW, false, hybrid},
	aQr:    {"q_rope", dimW, false, none},
	aKr:    {"k_rope", dimW, false, none},
	aV:     {"v", dimW, false, noneHy},
	aAtt:   {"att", dimW, false, noneHy},
	aLse:   {"lse", headsW, true, noneHy},
	aH:     {"h", dimW, true, noneHy},
	aRstd2: {"rstd2", oneW, true, noneHy},
	aXn2:   {"xn2", dimW, false, none},
	aA:     {"a", ffnW, false, noneHy},
	aB:     {"b", ffnW, false, noneHy},
	aG:     {"g", ffnW, false, none},
	aOut:   {"out", dimW, true, all},
}

var headActs = [numHeadActs]actSpec{
	hX0:     {"x0", dimW, true, all},
	hRstdF:  {"rstd_final", oneW, true, all},
	hXnF:    {"xn_final", dimW, false, none},
	hLogits: {"logits", vocabW, true, all},
	hLoss:   {"loss", oneW, true, all},
	hLseCE:  {"lse_ce", oneW, true, all},
}

// elemBytes returns the bytes of one element of an activation for activations of type dt:
// those marked f32 stay at least float32.
func elemBytes(dt kernels.DType, f32 bool) int {
	if f32 && dt.Size() < 4 {
		return 4
	}
	return dt.Size()
}

func bytesPerToken(specs []actSpec, c Config, p Remat, dt kernels.DType) int64 {
	var n int64
	for _, s := range specs {
		if s.keep[p] {
			n += int64(s.width(c) * elemBytes(dt, s.f32))
		}
	}
	return n
}

// ActivationBytesPerTokenPerLayer returns the bytes one block keeps per token between forward
// and backward under policy p with activations of type dt.
func ActivationBytesPerTokenPerLayer(c Config, p Remat, dt kernels.DType) int64 {
	return bytesPerToken(layerActs[:], c, p, dt)
}

// ActivationBytesPerTokenHead returns the bytes kept per token outside the blocks: the
// embeddings, the final norm, the logits and the loss.
func ActivationBytesPerTokenHead(c Config, p Remat, dt kernels.DType) int64 {
	return bytesPerToken(headActs[:], c, p, dt)
}

// ActivationBytes returns the bytes a forward pass over n tokens keeps for backward.
func ActivationBytes(c Config, p Remat, dt kernels.DType, n int) int64 {
	return int64(n) * (int64(c.Layers)*ActivationBytesPerTokenPerLayer(c, p, dt) + ActivationBytesPerTokenHead(c, p, dt))
}

// KeptActivations lists, per policy, the names of the block activations it keeps.
func KeptActivations(p Remat) []string {
	var names []string
	for _, s := range layerActs {
		if s.keep[p] {
			names = append(names, s.name)
		}
	}
	return names
}
