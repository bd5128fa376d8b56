package tokenizer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// SentencePiece-style BPE: LLaMA's tokenizer as Hugging Face's tokenizer.json spells it.
// Spaces become the piece mark "▁" (U+2581), one "▁" is put before the text (SentencePiece's
// dummy prefix), each character is a symbol (a character not in the vocabulary becomes the
// byte tokens <0x00>..<0xFF> of its UTF-8 bytes: byte_fallback), and the merges join
// adjacent symbols, lowest rank first and leftmost first, over the whole text: there is no
// pre-tokenizer. Two spellings of the same pipeline are read:
//
//	normalizer  Sequence[Prepend "▁", Replace " " -> "▁"], pre_tokenizer null
//	            (transformers' LlamaConverter, legacy; the prefix goes before every text)
//	normalizer  null, pre_tokenizer Metaspace{replacement "▁", prepend_scheme, split false}
//	            (non-legacy; no prefix when the text already starts with a space)
//
// and a Replace-only normalizer (no prefix). The decoder is Sequence[Replace "▁" -> " ",
// ByteFallback, Fuse] with or without Strip{" ", 1, 0}. A Metaspace that splits at every "▁"
// (split true, the default of older files) is refused: SentencePiece does not split there,
// and the ids would differ from LLaMA's.
//
// Bytes that are not valid UTF-8 become their byte tokens, so Decode(Encode(s)) == s for any
// byte string (Hugging Face's Python API cannot take such input; its ByteFallback decoder
// writes U+FFFD where herd writes the bytes back).

// spaceMark is SentencePiece's word-boundary mark, which stands for a space.
const spaceMark = "\u2581"

// prefixRule says when the dummy prefix "▁" goes before a text.
type prefixRule uint8

const (
	prefixAlways      prefixRule = iota // Prepend normalizer: before every non-empty text
	prefixUnlessSpace                   // Metaspace: unless the text starts with a space or "▁"
	prefixNever                         // Replace alone, or Metaspace prepend_scheme never
)

// sentencePiece is what a SentencePiece-style tokenizer has beyond the Tokenizer's tables.
type sentencePiece struct {
	pieces   []string         // id -> vocab key ("▁the", "<0x0A>", "<s>")
	chars    map[string]int32 // a one-character piece's character -> its id
	ascii    [128]int32       // ASCII byte -> id of its piece, or -1 (byte fallback)
	byteTok  [256]int32       // byte -> id of <0xXX>
	space    []int32          // the symbols of a space: "▁", or its byte tokens
	prefix   prefixRule
	scheme   string // Metaspace prepend_scheme as read; "" for the normalizer spelling
	strip    bool   // the decoder strips one leading space
	unk      string // model.unk_token
	bosFirst bool   // post_processor puts <s> before every text
	post     json.RawMessage
	// words: no merge joins a symbol that ends in a character other than "▁" to one that
	// starts with "▁", so a text encodes word by word (a word is a run of spaces and the
	// characters up to the next space), each word's ids cached, with the same result.
	words bool
}

// unmarshalSentencePiece reads a SentencePiece-style tokenizer.json.
func unmarshalSentencePiece(top map[string]json.RawMessage) (*Tokenizer, error) {
	sp := &sentencePiece{}
	if err := sp.readSpaces(top["normalizer"], top["pre_tokenizer"]); err != nil {
		return nil, err
	}
	if err := sp.readDecoder(top["decoder"]); err != nil {
		return nil, err
	}
	b := &builder{sp: true}
	if err := b.read(top); err != nil {
		return nil, err
	}
	if !b.byteFallback {
		return nil, formatErr("model.byte_fallback", "is false, want true (herd encodes a character outside the vocabulary as its bytes, never as <unk>)")
	}
	if err := json.Unmarshal(b.unk, &sp.unk); err != nil || sp.unk == "" {
		return nil, formatErr("model.unk_token", "is %s, want the unknown token's content (LLaMA's \"<unk>\")", clip(b.unk))
	}
	if post := top["post_processor"]; !isNull(post) {
		sp.post = append(json.RawMessage(nil), post...)
		sp.bosFirst = startsWithBOS(post)
	}
	return b.buildSentencePiece(sp)
}

// readSpaces reads how spaces and the dummy prefix are written: a Prepend+Replace (or
// Replace) normalizer with no pre_tokenizer, or no normalizer and a Metaspace pre_tokenizer.
func (sp *sentencePiece) readSpaces(normalizer, pre json.RawMessage) error {
	if isNull(normalizer) {
		return sp.readMetaspace(pre)
	}
	if !isNull(pre) {
		return formatErr("pre_tokenizer", "is %s, want null beside a normalizer (SentencePiece encodes the text whole)", clip(pre))
	}
	var n struct {
		Type        string            `json:"type"`
		Normalizers []json.RawMessage `json:"normalizers"`
	}
	if err := json.Unmarshal(normalizer, &n); err != nil {
		return formatErr("normalizer", "%v", err)
	}
	steps := []json.RawMessage{normalizer}
	if n.Type == "Sequence" {
		steps = n.Normalizers
	}
	want := `Sequence[{"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]`
	switch {
	case len(steps) == 2 && isPrepend(steps[0]) && isReplace(steps[1], " ", spaceMark):
		sp.prefix = prefixAlways
	case len(steps) == 1 && isReplace(steps[0], " ", spaceMark):
		sp.prefix = prefixNever
	default:
		return formatErr("normalizer", "is %s, want %s (or the Replace alone)", clip(normalizer), want)
	}
	return nil
}

func (sp *sentencePiece) readMetaspace(pre json.RawMessage) error {
	var m struct {
		Type           string  `json:"type"`
		Replacement    string  `json:"replacement"`
		PrependScheme  *string `json:"prepend_scheme"`
		AddPrefixSpace *bool   `json:"add_prefix_space"`
		Split          *bool   `json:"split"`
	}
	if isNull(pre) || json.Unmarshal(pre, &m) != nil || m.Type != "Metaspace" {
		return formatErr("pre_tokenizer", "is %s, want Metaspace (or a Prepend+Replace normalizer)", clip(pre))
	}
	if m.Replacement != spaceMark {
		return formatErr("pre_tokenizer.replacement", "is %q, want %q", m.Replacement, spaceMark)
	}
	if m.Split == nil || *m.Split {
		return formatErr("pre_tokenizer.split", "is true or missing, want false: a Metaspace that splits at every \"▁\" encodes runs of spaces differently from SentencePiece, and herd reproduces SentencePiece")
	}
	switch {
	case m.PrependScheme != nil:
		sp.scheme = *m.PrependScheme
	case m.AddPrefixSpace == nil || *m.AddPrefixSpace:
		sp.scheme = "always"
	default:
		sp.scheme = "never"
	}
	switch sp.scheme {
	case "first", "always": // the same for one text with no added tokens in it
		sp.prefix = prefixUnlessSpace
	case "never":
		sp.prefix = prefixNever
	default:
		return formatErr("pre_tokenizer.prepend_scheme", "is %q, want \"first\", \"always\" or \"never\"", sp.scheme)
	}
	return nil
}

func isPrepend(raw json.RawMessage) bool {
	var p struct {
		Type    string `json:"type"`
		Prepend string `json:"prepend"`
	}
	return json.Unmarshal(raw, &p) == nil && p.Type == "Prepend" && p.Prepend == spaceMark
}

// isReplace reports whether raw is {"type": "Replace", "pattern": {"String": from}, "content": to}.
func isReplace(raw json.RawMessage, from, to string) bool {
	var r struct {
		Type    string `json:"type"`
		Pattern struct {
			String *string `json:"String"`
		} `json:"pattern"`
		Content string `json:"content"`
	}
	return json.Unmarshal(raw, &r) == nil && r.Type == "Replace" && r.Pattern.String != nil &&
		*r.Pattern.String == from && r.Content == to
}

// readDecoder reads Sequence[Replace "▁" -> " ", ByteFallback, Fuse, Strip{" ", 1, 0}?].
func (sp *sentencePiece) readDecoder(raw json.RawMessage) error {
	var d struct {
		Type     string            `json:"type"`
		Decoders []json.RawMessage `json:"decoders"`
	}
	bad := func() error {
		return formatErr("decoder", "is %s, want ByteLevel, or Sequence[Replace \"▁\" -> \" \", ByteFallback, Fuse] optionally followed by Strip{\" \", 1, 0}", clip(raw))
	}
	if json.Unmarshal(raw, &d) != nil || d.Type != "Sequence" || len(d.Decoders) < 3 || len(d.Decoders) > 4 {
		return bad()
	}
	if !isReplace(d.Decoders[0], spaceMark, " ") || !hasType(d.Decoders[1], "ByteFallback") || !hasType(d.Decoders[2], "Fuse") {
		return bad()
	}
	if len(d.Decoders) == 4 {
		var s struct {
			Type    string `json:"type"`
			Content string `json:"content"`
			Start   int    `json:"start"`
			Stop    int    `json:"stop"`
		}
		if json.Unmarshal(d.Decoders[3], &s) != nil || s.Type != "Strip" || s.Content != " " || s.Start != 1 || s.Stop != 0 {
			return bad()
		}
		sp.strip = true
	}
	return nil
}

func hasType(raw json.RawMessage, typ string) bool {
	var v struct {
		Type string `json:"type"`
	}
	return json.Unmarshal(raw, &v) == nil && v.Type == typ
}

// startsWithBOS reports whether a TemplateProcessing post_processor puts <s> first in a
// single text, as LLaMA's does ("<s> $A").
func startsWithBOS(raw json.RawMessage) bool {
	var p struct {
		Type   string `json:"type"`
		Single []struct {
			SpecialToken *struct {
				ID string `json:"id"`
			} `json:"SpecialToken"`
		} `json:"single"`
	}
	return json.Unmarshal(raw, &p) == nil && p.Type == "TemplateProcessing" && len(p.Single) > 0 &&
		p.Single[0].SpecialToken != nil && p.Single[0].SpecialToken.ID == BOSToken
}

// byteTokenName is the piece of byte c: "<0x0A>".
func byteTokenName(c byte) string { return fmt.Sprintf("<0x%02X>", c) }

// buildSentencePiece checks ids, specials, byte tokens and merges, and makes the Tokenizer.
func (b *builder) buildSentencePiece(sp *sentencePiece) (*Tokenizer, error) {
	if err := b.addSpecials(); err != nil {
		return nil, err
	}
	for _, content := range b.added {
		b.vocab[content] = b.specials[content]
	}
	n := len(b.byID)
	sp.pieces = make([]string, n)
	tokens := make([][]byte, n)
	special := make([]bool, n)
	for id, key := range b.byID {
		if int(id) >= n {
			return nil, formatErr("model.vocab", "id %d of %q is not below the number of tokens %d; ids must be 0..%d without gaps", id, key, n, n-1)
		}
		sp.pieces[id] = key
		_, special[id] = b.specials[key]
	}
	if _, ok := b.vocab[sp.unk]; !ok {
		return nil, formatErr("model.unk_token", "%q is not in model.vocab", sp.unk)
	}
	for c := range 256 {
		id, ok := b.vocab[byteTokenName(byte(c))]
		if !ok || special[id] {
			return nil, formatErr("model.vocab", "byte token %q missing (byte_fallback needs all 256)", byteTokenName(byte(c)))
		}
		sp.byteTok[c] = id
		tokens[id] = []byte{byte(c)}
	}
	sp.chars = make(map[string]int32)
	for id, key := range sp.pieces {
		switch {
		case special[id]:
			tokens[id] = []byte(key)
		case tokens[id] != nil: // a byte token
		default:
			tokens[id] = []byte(strings.ReplaceAll(key, spaceMark, " "))
			if utf8.RuneCountInString(key) == 1 {
				sp.chars[key] = int32(id)
			}
		}
	}
	for c := range sp.ascii {
		sp.ascii[c] = -1
		if id, ok := sp.chars[string(rune(c))]; ok {
			sp.ascii[c] = id
		}
	}
	sp.space = sp.charSymbols(nil, []byte(spaceMark))
	merges := make([]merge, len(b.merges))
	seen := make(map[uint64]bool, len(b.merges))
	sp.words = len(sp.space) == 1
	for i, m := range b.merges {
		field := fmt.Sprintf("model.merges[%d]", i)
		var part [2]int32
		for k, s := range m {
			id, ok := b.vocab[s]
			if !ok || special[id] {
				return nil, formatErr(field, "unknown token %q", s)
			}
			part[k] = id
		}
		result, ok := b.vocab[m[0]+m[1]]
		if !ok || special[result] {
			return nil, formatErr(field, "result %q of merging %q and %q is not in model.vocab", m[0]+m[1], m[0], m[1])
		}
		key := pairKey(part[0], part[1])
		if seen[key] {
			return nil, formatErr(field, "merge %q %q repeated", m[0], m[1])
		}
		seen[key] = true
		merges[i] = merge{left: part[0], right: part[1], result: result}
		if strings.HasPrefix(m[1], spaceMark) && !strings.HasSuffix(m[0], spaceMark) {
			sp.words = false
		}
	}
	pad := int32(-1)
	if id, ok := b.specials[PadToken]; ok {
		pad = id
	}
	t := &Tokenizer{
		sp:      sp,
		tokens:  tokens,
		special: special,
		ids:     b.vocab,
		merges:  merges,
		bos:     b.specials[BOSToken],
		eos:     b.specials[EOSToken],
		pad:     pad,
	}
	t.finish()
	return t, nil
}

// charSymbols appends the symbol of one character: its piece, or else its byte tokens.
func (sp *sentencePiece) charSymbols(syms []int32, ch []byte) []int32 {
	if id, ok := sp.chars[string(ch)]; ok {
		return append(syms, id)
	}
	for _, c := range ch {
		syms = append(syms, sp.byteTok[c])
	}
	return syms
}

// symbols appends the symbols of text, a space as "▁" and an invalid byte as its byte token.
func (sp *sentencePiece) symbols(syms []int32, text []byte) []int32 {
	for i := 0; i < len(text); {
		c := text[i]
		switch {
		case c == ' ':
			syms = append(syms, sp.space...)
			i++
		case c < utf8.RuneSelf && sp.ascii[c] >= 0:
			syms = append(syms, sp.ascii[c])
			i++
		case c < utf8.RuneSelf:
			syms = append(syms, sp.byteTok[c])
			i++
		default:
			r, n := utf8.DecodeRune(text[i:])
			if r == utf8.RuneError && n == 1 {
				syms = append(syms, sp.byteTok[c])
			} else {
				syms = sp.charSymbols(syms, text[i:i+n])
			}
			i += n
		}
	}
	return syms
}

// startsWithSpace reports whether text starts with a space or "▁".
func startsWithSpace(text []byte) bool {
	return len(text) > 0 && text[0] == ' ' || bytes.HasPrefix(text, []byte(spaceMark))
}

// isSpaceAt reports the length of a space or "▁" at text[i:], or 0.
func isSpaceAt(text []byte, i int) int {
	switch {
	case text[i] == ' ':
		return 1
	case bytes.HasPrefix(text[i:], []byte(spaceMark)):
		return len(spaceMark)
	}
	return 0
}

// wordEnd returns the end of the word starting at i: its run of spaces, then the characters
// up to the next space.
func wordEnd(text []byte, i int) int {
	for i < len(text) {
		n := isSpaceAt(text, i)
		if n == 0 {
			break
		}
		i += n
	}
	for i < len(text) && isSpaceAt(text, i) == 0 {
		i++
	}
	return i
}

// encodeSentencePiece appends the ids of text.
func (e *encoder) encodeSentencePiece(dst []int32, text []byte) []int32 {
	sp := e.t.sp
	if len(text) == 0 {
		return dst
	}
	prefix := sp.prefix == prefixAlways || sp.prefix == prefixUnlessSpace && !startsWithSpace(text)
	if !sp.words {
		syms := e.syms[:0]
		if prefix {
			syms = append(syms, sp.space...)
		}
		syms = sp.symbols(syms, text)
		e.syms = syms
		return e.merge(dst, syms)
	}
	for i := 0; i < len(text); {
		j := wordEnd(text, i)
		w := text[i:j]
		if i == 0 && prefix {
			syms := sp.symbols(append(e.syms[:0], sp.space...), w)
			e.syms = syms
			dst = e.merge(dst, syms)
		} else {
			dst = e.spWord(dst, w)
		}
		i = j
	}
	return dst
}

// spWord appends the ids of one word, through the cache.
func (e *encoder) spWord(dst []int32, w []byte) []int32 {
	if len(w) <= cacheMaxWord {
		if ids, ok := e.cache[string(w)]; ok {
			return append(dst, ids...)
		}
	}
	n := len(dst)
	syms := e.t.sp.symbols(e.syms[:0], w)
	e.syms = syms
	dst = e.merge(dst, syms)
	if len(w) <= cacheMaxWord {
		if len(e.cache) >= cacheEntries {
			clear(e.cache)
		}
		e.cache[string(w)] = append([]int32(nil), dst[n:]...)
	}
	return dst
}

// marshalSentencePiece writes the tokenizer.json the tokenizer was read from, in the
// tokenizers library's layout.
func (t *Tokenizer) marshalSentencePiece() ([]byte, error) {
	sp := t.sp
	replace := func(from, to string) map[string]any {
		return map[string]any{"type": "Replace", "pattern": map[string]any{"String": from}, "content": to}
	}
	var normalizer, pre any
	switch {
	case sp.scheme != "":
		pre = map[string]any{"type": "Metaspace", "replacement": spaceMark, "prepend_scheme": sp.scheme, "split": false}
	case sp.prefix == prefixAlways:
		normalizer = map[string]any{"type": "Sequence", "normalizers": []any{
			map[string]any{"type": "Prepend", "prepend": spaceMark}, replace(" ", spaceMark)}}
	default:
		normalizer = replace(" ", spaceMark)
	}
	decoders := []any{replace(spaceMark, " "), map[string]any{"type": "ByteFallback"}, map[string]any{"type": "Fuse"}}
	if sp.strip {
		decoders = append(decoders, map[string]any{"type": "Strip", "content": " ", "start": 1, "stop": 0})
	}
	post := sp.post
	if post == nil {
		post = jsonNull
	}
	unk, _ := json.Marshal(sp.unk)
	f := struct {
		Version       string          `json:"version"`
		Truncation    json.RawMessage `json:"truncation"`
		Padding       json.RawMessage `json:"padding"`
		AddedTokens   []hfAddedToken  `json:"added_tokens"`
		Normalizer    any             `json:"normalizer"`
		PreTokenizer  any             `json:"pre_tokenizer"`
		PostProcessor json.RawMessage `json:"post_processor"`
		Decoder       any             `json:"decoder"`
		Model         hfModel         `json:"model"`
	}{
		Version: "1.0", Truncation: jsonNull, Padding: jsonNull, AddedTokens: t.addedJSON(),
		Normalizer: normalizer, PreTokenizer: pre, PostProcessor: post,
		Decoder: map[string]any{"type": "Sequence", "decoders": decoders},
		Model: hfModel{
			Type: "BPE", Dropout: jsonNull, UnkToken: unk, ContinuingSubwordPrefix: jsonNull,
			EndOfWordSuffix: jsonNull, FuseUnk: true, ByteFallback: true,
			Vocab: t.vocabJSON(), Merges: t.mergesJSON(),
		},
	}
	return encodeJSON(&f)
}

// hashInto writes what a SentencePiece-style tokenizer adds to the hash.
func (sp *sentencePiece) hashInto(w interface{ Write([]byte) (int, error) }) {
	flags := []byte{byte(sp.prefix), 0, 0}
	if sp.strip {
		flags[1] = 1
	}
	if sp.bosFirst {
		flags[2] = 1
	}
	w.Write(flags)
	w.Write([]byte(sp.unk + "\x00"))
}
