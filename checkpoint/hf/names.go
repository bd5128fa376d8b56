package hf

import (
	"fmt"
	"strconv"
	"strings"
)

// blockNames maps the tensors of one transformer block from Meta's names to HF's. rope marks
// the projections whose rows are permuted between the two RoPE layouts.
var blockNames = []struct {
	meta, hf string
	rope     bool
}{
	{"attention_norm.weight", "input_layernorm.weight", false},
	{"attention.wq.weight", "self_attn.q_proj.weight", true},
	{"attention.wk.weight", "self_attn.k_proj.weight", true},
	{"attention.wv.weight", "self_attn.v_proj.weight", false},
	{"attention.wo.weight", "self_attn.o_proj.weight", false},
	{"ffn_norm.weight", "post_attention_layernorm.weight", false},
	{"feed_forward.w1.weight", "mlp.gate_proj.weight", false},
	{"feed_forward.w3.weight", "mlp.up_proj.weight", false},
	{"feed_forward.w2.weight", "mlp.down_proj.weight", false},
}

// topNames maps the tensors outside the blocks.
var topNames = map[string]string{
	"tok_embeddings.weight": "model.embed_tokens.weight",
	"norm.weight":           "model.norm.weight",
	"output.weight":         "lm_head.weight",
}

// hfName returns the HF name of the tensor Meta calls meta, and whether its rows are
// permuted per head (q and k projections).
func hfName(meta string) (name string, rope bool, err error) {
	if n, ok := topNames[meta]; ok {
		return n, false, nil
	}
	rest, ok := strings.CutPrefix(meta, "layers.")
	idx, suffix, ok2 := strings.Cut(rest, ".")
	if ok && ok2 {
		if i, err := strconv.Atoi(idx); err == nil && i >= 0 {
			for _, b := range blockNames {
				if b.meta == suffix {
					return fmt.Sprintf("model.layers.%d.%s", i, b.hf), b.rope, nil
				}
			}
		}
	}
	return "", false, fmt.Errorf("%w: no Hugging Face name for parameter %q", ErrUnsupported, meta)
}

// metaRow returns the row of a Meta-layout head that row r of the same HF-layout head
// holds: within each head, HF rows are Meta rows [0, 2, 4, ..., hd-2, 1, 3, ..., hd-1].
func metaRow(r, hd int) int {
	if r < hd/2 {
		return 2 * r
	}
	return 2*(r-hd/2) + 1
}

// toHF sets dst to src (a [rows, cols] weight in Meta's RoPE layout, rows a multiple of hd)
// with the rows of each head reordered for rotate_half.
func toHF(dst, src []float32, cols, hd int) {
	for h := 0; h < len(src)/(cols*hd); h++ {
		for r := 0; r < hd; r++ {
			to, from := (h*hd+r)*cols, (h*hd+metaRow(r, hd))*cols
			copy(dst[to:to+cols], src[from:from+cols])
		}
	}
}

// fromHF inverts toHF.
func fromHF(dst, src []float32, cols, hd int) {
	for h := 0; h < len(src)/(cols*hd); h++ {
		for r := 0; r < hd; r++ {
			to, from := (h*hd+metaRow(r, hd))*cols, (h*hd+r)*cols
			copy(dst[to:to+cols], src[from:from+cols])
		}
	}
}
