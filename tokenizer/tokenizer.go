package tokenizer

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"sync"
)

// Contents of the special tokens.
const (
	PadToken = "<pad>"
	BOSToken = "<s>"
	EOSToken = "</s>"
)

// Limits on the vocabulary size passed to Train.
const (
	// MinVocabSize is the size of a tokenizer with no merges: 3 specials + 256 bytes.
	MinVocabSize = 3 + 256
	// MaxVocabSize bounds the vocabulary so that ids fit comfortably in int32.
	MaxVocabSize = 1 << 24
)

// Tokenizer is a BPE tokenizer: byte-level (herd's own, trained by Train) or
// SentencePiece-style (LLaMA's, read by Load; see sentencepiece.go).
type Tokenizer struct {
	sp      *sentencePiece   // nil for byte-level
	tokens  [][]byte         // id -> the bytes it decodes to (for specials, their content)
	special []bool           // id -> special token
	ids     map[string]int32 // byte-level: raw bytes -> id, non-special tokens only; SentencePiece: piece -> id
	byteID  [256]int32       // byte -> id of its single-byte token
	merges  []merge          // in rank order
	ranks   map[uint64]mergeRank
	bos     int32
	eos     int32
	pad     int32
	digits  bool // every \p{N} rune its own pre-token (Options.SplitDigits)
	hash    string
	pool    sync.Pool // *encoder
}

// merge joins two tokens into one; result is the id of the joined bytes.
type merge struct {
	left, right, result int32
}

// mergeRank is what the encoder looks up for an adjacent pair of tokens.
type mergeRank struct {
	rank   int32
	result int32
}

func pairKey(left, right int32) uint64 {
	return uint64(uint32(left))<<32 | uint64(uint32(right))
}

// newTokenizer builds the lookup tables of a tokenizer from its tokens and merges.
// The caller has validated them: ids are dense, byte tokens exist, merge results are
// the concatenation of their parts, and no merge is repeated.
func newTokenizer(tokens [][]byte, special []bool, merges []merge, bos, eos, pad int32, digits bool) *Tokenizer {
	t := &Tokenizer{
		digits:  digits,
		tokens:  tokens,
		special: special,
		ids:     make(map[string]int32, len(tokens)),
		merges:  merges,
		bos:     bos,
		eos:     eos,
		pad:     pad,
	}
	for id, tok := range tokens {
		if !special[id] {
			t.ids[string(tok)] = int32(id)
			if len(tok) == 1 {
				t.byteID[tok[0]] = int32(id)
			}
		}
	}
	t.finish()
	return t
}

// finish builds the merge ranks, the hash and the encoder pool of a tokenizer whose tokens
// and merges are set.
func (t *Tokenizer) finish() {
	t.ranks = make(map[uint64]mergeRank, len(t.merges))
	for r, m := range t.merges {
		t.ranks[pairKey(m.left, m.right)] = mergeRank{rank: int32(r), result: m.result}
	}
	t.hash = t.computeHash()
	t.pool.New = func() any { return newEncoder(t) }
}

// VocabSize returns the number of token ids, special tokens included. Ids run from
// 0 to VocabSize()-1.
func (t *Tokenizer) VocabSize() int { return len(t.tokens) }

// BOS returns the id of the beginning-of-sequence token "<s>".
func (t *Tokenizer) BOS() int32 { return t.bos }

// EOS returns the id of the end-of-sequence token "</s>".
func (t *Tokenizer) EOS() int32 { return t.eos }

// PAD returns the id of the padding token "<pad>", or -1 for a tokenizer without one
// (LLaMA's).
func (t *Tokenizer) PAD() int32 { return t.pad }

// NumMerges returns the number of BPE merges.
func (t *Tokenizer) NumMerges() int { return len(t.merges) }

// IsSpecial reports whether id is a special token (never produced by Encode).
func (t *Tokenizer) IsSpecial(id int32) bool {
	return id >= 0 && int(id) < len(t.tokens) && t.special[id]
}

// TokenString returns the name of token id as tokenizer.json spells it: a special
// token's content, the token's bytes in the byte-level alphabet (a space shows as
// 'Ġ', a newline as 'Ċ'), or a SentencePiece piece ("▁the", "<0x0A>"). It returns ""
// for an id out of range.
func (t *Tokenizer) TokenString(id int32) string {
	if id < 0 || int(id) >= len(t.tokens) {
		return ""
	}
	if t.sp != nil {
		return t.sp.pieces[id]
	}
	if t.special[id] {
		return string(t.tokens[id])
	}
	return byteLevelString(t.tokens[id])
}

// TokenBytes returns the bytes token id decodes to (a special token's content for a
// special token), or nil for an id out of range. The caller must not modify them. A
// SentencePiece piece's "▁" decodes to a space, so the dummy prefix before a document
// counts as one byte.
func (t *Tokenizer) TokenBytes(id int32) []byte {
	if id < 0 || int(id) >= len(t.tokens) {
		return nil
	}
	return t.tokens[id]
}

// replacement is what Decode writes for an id out of range: U+FFFD.
var replacement = []byte("\uFFFD")

// Decode returns the bytes of ids. Special tokens are skipped, so Decode inverts
// Encode exactly and drops the BOS/EOS/PAD that surround training sequences. An id
// outside [0, VocabSize()) decodes to U+FFFD, so a model that samples from a padded
// output layer still produces visible text. A SentencePiece-style tokenizer whose decoder
// strips the dummy prefix drops one leading space, as the tokenizers library does (for a
// Metaspace file, Encode gives a text that starts with a space no prefix, and Decode loses
// that space as Hugging Face's does).
func (t *Tokenizer) Decode(ids []int32) []byte {
	n := 0
	for _, id := range ids {
		if id >= 0 && int(id) < len(t.tokens) {
			n += len(t.tokens[id])
		}
	}
	out := make([]byte, 0, n)
	return t.DecodeTo(out, ids)
}

// DecodeTo appends the bytes of ids to dst, as Decode does, and returns the result.
func (t *Tokenizer) DecodeTo(dst []byte, ids []int32) []byte {
	start := len(dst)
	for _, id := range ids {
		switch {
		case id < 0 || int(id) >= len(t.tokens):
			dst = append(dst, replacement...)
		case !t.special[id]:
			dst = append(dst, t.tokens[id]...)
		}
	}
	if t.sp != nil && t.sp.strip && len(dst) > start && dst[start] == ' ' {
		dst = append(dst[:start], dst[start+1:]...)
	}
	return dst
}

// Hash returns the hex SHA-256 of a canonical serialization of the tokenizer: every
// token's bytes and special flag in id order, the merges in rank order, the BOS/EOS/PAD
// ids, and whether digits are split. Two tokenizers with the same Hash encode and decode identically; a
// tokenizer saved and loaded again keeps its Hash. Data shards record it so that
// tokens are never mixed across tokenizers.
func (t *Tokenizer) Hash() string { return t.hash }

func (t *Tokenizer) computeHash() string {
	h := sha256.New()
	var buf [4]byte
	u32 := func(v int) {
		binary.LittleEndian.PutUint32(buf[:], uint32(v))
		h.Write(buf[:])
	}
	if t.sp != nil {
		h.Write([]byte("herd sentencepiece bpe v1\x00"))
		t.sp.hashInto(h)
	} else {
		h.Write([]byte("herd byte-level bpe v1\x00"))
	}
	u32(len(t.tokens))
	for id, tok := range t.tokens {
		flag := byte(0)
		if t.special[id] {
			flag = 1
		}
		h.Write([]byte{flag})
		if t.sp != nil {
			tok = []byte(t.sp.pieces[id]) // "<0x41>" and "A" decode alike
		}
		u32(len(tok))
		h.Write(tok)
	}
	u32(len(t.merges))
	for _, m := range t.merges {
		u32(int(m.left))
		u32(int(m.right))
		u32(int(m.result))
	}
	u32(int(t.bos))
	u32(int(t.eos))
	u32(int(t.pad))
	if t.digits { // absent otherwise, so that the hashes of earlier tokenizers stay
		h.Write([]byte("split digits\x00"))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// SplitDigits reports whether every digit is a pre-token of its own (Options.SplitDigits).
func (t *Tokenizer) SplitDigits() bool { return t.digits }

// SentencePiece reports whether the tokenizer is SentencePiece-style (LLaMA's), rather than
// byte-level.
func (t *Tokenizer) SentencePiece() bool { return t.sp != nil }

// DocumentStart returns the token put before every document and true when the tokenizer's
// post-processor puts <s> before a text (LLaMA's "<s> $A"); herd's own tokenizers have none.
func (t *Tokenizer) DocumentStart() (int32, bool) {
	if t.sp != nil && t.sp.bosFirst {
		return t.bos, true
	}
	return 0, false
}

// Boundary returns the ids between two documents of herd's data: EOS, then the document
// start when the tokenizer has one. A model generates "after a document boundary" from them.
func (t *Tokenizer) Boundary() []int32 {
	if id, ok := t.DocumentStart(); ok {
		return []int32{t.eos, id}
	}
	return []int32{t.eos}
}
