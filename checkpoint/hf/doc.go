// Package hf converts herd's weights to and from a Hugging Face LlamaForCausalLM directory:
// config.json, generation_config.json, model.safetensors (or a sharded set listed by
// model.safetensors.index.json), tokenizer.json and tokenizer_config.json, as transformers
// 5.17 writes and reads them (shared/hf/LAYOUT.md records the measured format;
// docs/huggingface.md explains tokenizer_config.json and the checks Import makes).
//
// herd names its tensors as Meta's LLaMA release does and rotates adjacent pairs
// (2j, 2j+1) of each head with RoPE. LlamaForCausalLM uses its own names and rotate_half,
// which pairs j with j+hd/2 (hd the head dimension). Export renames every tensor and
// permutes the rows of q_proj and k_proj within each head, so that HF row r holds Meta row
// 2r for r < hd/2 and Meta row 2(r-hd/2)+1 otherwise; Import undoes both. With that
// permutation, q·k after rotate_half equals q·k after Meta's rotation, for every pair of
// positions, so the two models compute the same logits.
//
// Name map (i is the block index; weights are [out, in]):
//
//	tok_embeddings.weight              model.embed_tokens.weight
//	layers.i.attention_norm.weight     model.layers.i.input_layernorm.weight
//	layers.i.attention.wq.weight       model.layers.i.self_attn.q_proj.weight  (rows permuted)
//	layers.i.attention.wk.weight       model.layers.i.self_attn.k_proj.weight  (rows permuted)
//	layers.i.attention.wv.weight       model.layers.i.self_attn.v_proj.weight
//	layers.i.attention.wo.weight       model.layers.i.self_attn.o_proj.weight
//	layers.i.ffn_norm.weight           model.layers.i.post_attention_layernorm.weight
//	layers.i.feed_forward.w1.weight    model.layers.i.mlp.gate_proj.weight
//	layers.i.feed_forward.w3.weight    model.layers.i.mlp.up_proj.weight
//	layers.i.feed_forward.w2.weight    model.layers.i.mlp.down_proj.weight
//	norm.weight                        model.norm.weight
//	output.weight                      lm_head.weight
package hf
