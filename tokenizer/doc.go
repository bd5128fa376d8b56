// Package tokenizer is herd's byte-level BPE tokenizer, the GPT-2 / LLaMA-3 kind,
// trained on herd's own corpus and stored as a Hugging Face tokenizer.json. It also reads,
// encodes with and writes back LLaMA's own SentencePiece-style tokenizer.json (BPE over
// characters with byte fallback; sentencepiece.go); what follows is about the byte-level kind.
//
// Text is first split into words by the GPT-2 pre-tokenizer regex (see
// pretokenize.go), then each word's bytes are merged by the learned BPE merges, lowest
// rank first. Because the 256 single bytes are tokens, every byte string, valid UTF-8
// or not, encodes, and Decode(Encode(s)) == s always. There is no unknown token.
//
// Token ids of a tokenizer made by Train:
//
//	0        <pad>  (PAD)
//	1        <s>    (BOS)
//	2        </s>   (EOS)
//	3..258   the 256 single bytes, ordered by their byte-level rune: '!' is 3,
//	         '"' is 4, ..., 'ÿ' is 190, then the bytes outside printable Latin-1 in
//	         byte order: 0x00 is 191, ..., the space 0x20 ('Ġ') is 223
//	259..    the merged tokens, in the order training made them
//
// That is the layout of the tokenizer.json recorded in shared/hf/LAYOUT.md (specials
// first, then the byte alphabet sorted by rune, as the tokenizers library's BPE
// trainer lays it out), and BOS 1 / EOS 2 agree with the bos_token_id and eos_token_id
// of LLaMA's config.json. There is one merge per merged token, rank = id - 259 (were a
// merge ever to spell a token made earlier by another merge, it would be kept without
// adding a token, as the tokenizers library does). A tokenizer read by Load keeps
// whatever ids its file gives.
//
// Special tokens are never produced by Encode, even when the text contains "<s>"
// literally: herd adds BOS and EOS around documents itself. Decode skips them. (Hugging
// Face's encode matches added tokens inside text unless split_special_tokens is set;
// herd's ids equal Hugging Face's for any text that does not contain a special
// token's content.)
//
// A Tokenizer is immutable and safe for concurrent use.
package tokenizer
