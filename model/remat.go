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
//
// Under tensor parallelism (see tensor.go) widths are a rank's share (attnW, ffnW, headsW and
// vocabW shrink by the tensor-parallel size) and, with sequence parallelism, the activations
// marked stream (the residual stream, its norms and their statistics) hold only the rank's
// slice of the rows.
type actSpec struct {
	name   string
	width  func(s shape) int
	f32    bool
	keep   map[Remat]bool
	stream bool
}

// shape is what one rank computes of the network: all of it, or a tensor-parallel rank's
// share.
type shape struct {
	dim, attn, ffn, heads, vocab int // attn: the width of q, k, v and attention (heads x head dim)
	seqDiv                       int // the stream's rows are split over this many ranks; 1 without sequence parallelism
}

// wholeShape is the shape of the whole network, computed by one rank.
func wholeShape(c Config) shape {
	return shape{dim: c.Dim, attn: c.Dim, ffn: c.FFNHidden, heads: c.Heads, vocab: c.Vocab, seqDiv: 1}
}

// rows returns the rows of activation s in a pass over n tokens.
func (sh shape) rows(s actSpec, n int) int {
	if s.stream {
		return n / sh.seqDiv
	}
	return n
}

var (
	dimW   = func(s shape) int { return s.dim }
	attnW  = func(s shape) int { return s.attn }
	ffnW   = func(s shape) int { return s.ffn }
	headsW = func(s shape) int { return s.heads }
	oneW   = func(shape) int { return 1 }
	vocabW = func(s shape) int { return s.vocab }

	all    = map[Remat]bool{RematNone: true, RematHybrid: true, RematFull: true}
	noneHy = map[Remat]bool{RematNone: true, RematHybrid: true}
	hybrid = map[Remat]bool{RematHybrid: true}
	none   = map[Remat]bool{RematNone: true}
)

var layerActs = [numLayerActs]actSpec{
	aRstd1: {"rstd1", oneW, true, noneHy, true},
	aXn1:   {"xn1", dimW, false, none, true},
	aQ:     {"q", attnW, false, hybrid, false},
	aK:     {"k", attnW, false, hybrid, false},
	aQr:    {"q_rope", attnW, false, none, false},
	aKr:    {"k_rope", attnW, false, none, false},
	aV:     {"v", attnW, false, noneHy, false},
	aAtt:   {"att", attnW, false, noneHy, false},
	aLse:   {"lse", headsW, true, noneHy, false},
	aH:     {"h", dimW, true, noneHy, true},
	aRstd2: {"rstd2", oneW, true, noneHy, true},
	aXn2:   {"xn2", dimW, false, none, true},
	aA:     {"a", ffnW, false, noneHy, false},
	aB:     {"b", ffnW, false, noneHy, false},
	aG:     {"g", ffnW, false, none, false},
	aOut:   {"out", dimW, true, all, true},
}

var headActs = [numHeadActs]actSpec{
	hX0:     {"x0", dimW, true, all, true},
	hRstdF:  {"rstd_final", oneW, true, all, true},
	hXnF:    {"xn_final", dimW, false, none, true},
	hLogits: {"logits", vocabW, true, all, false},
	hLoss:   {"loss", oneW, true, all, false},
	hLseCE:  {"lse_ce", oneW, true, all, false},
}

// elemBytes returns the bytes of one element of an activation for activations of type dt:
// those marked f32 stay at least float32.
func elemBytes(dt kernels.DType, f32 bool) int {
	if f32 && dt.Size() < 4 {
		return 4
	}
	return dt.Size()
}

// keptBytes returns the bytes the activations specs keep under policy p over n tokens, as one
// rank of shape sh computes them.
func keptBytes(specs []actSpec, sh shape, p Remat, dt kernels.DType, n int) int64 {
	var b int64
	for _, s := range specs {
		if s.keep[p] {
			b += int64(sh.rows(s, n)) * int64(s.width(sh)*elemBytes(dt, s.f32))
		}
	}
	return b
}

// ActivationBytesPerTokenPerLayer returns the bytes one block keeps per token between forward
// and backward under policy p with activations of type dt.
func ActivationBytesPerTokenPerLayer(c Config, p Remat, dt kernels.DType) int64 {
	return keptBytes(layerActs[:], wholeShape(c), p, dt, 1)
}

// ActivationBytesPerTokenHead returns the bytes kept per token outside the blocks: the
// embeddings, the final norm, the logits and the loss.
func ActivationBytesPerTokenHead(c Config, p Remat, dt kernels.DType) int64 {
	return keptBytes(headActs[:], wholeShape(c), p, dt, 1)
}

// ActivationBytes returns the bytes a forward pass over n tokens keeps for backward.
func ActivationBytes(c Config, p Remat, dt kernels.DType, n int) int64 {
	return int64(n) * (int64(c.Layers)*ActivationBytesPerTokenPerLayer(c, p, dt) + ActivationBytesPerTokenHead(c, p, dt))
}

// TensorActivationBytes returns the bytes a forward pass over n tokens keeps for backward on
// rank 0 of tp tensor-parallel ranks (the rank with the largest vocabulary shard), with or
// without sequence parallelism; n must be a multiple of tp when seq is set. With tp = 1 it is
// ActivationBytes.
func TensorActivationBytes(c Config, p Remat, dt kernels.DType, n, tp int, seq bool) int64 {
	sh := shardShape(c, 0, tp, seq)
	return int64(c.Layers)*keptBytes(layerActs[:], sh, p, dt, n) + keptBytes(headActs[:], sh, p, dt, n)
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
