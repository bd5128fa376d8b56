package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Hugging Face tokenizer.json, as tokenizers 0.23 writes it for a byte-level BPE
// (see shared/hf/LAYOUT.md): model BPE with a vocab object and merges as pairs,
// ByteLevel pre-tokenizer (add_prefix_space false, use_regex true) and decoder, no
// normalizer, no post-processor, and the special tokens in added_tokens.

type hfFile struct {
	Version       string          `json:"version"`
	Truncation    json.RawMessage `json:"truncation"`
	Padding       json.RawMessage `json:"padding"`
	AddedTokens   []hfAddedToken  `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  any             `json:"pre_tokenizer"` // hfByteLevel, or with split digits hfSequence
	PostProcessor json.RawMessage `json:"post_processor"`
	Decoder       hfByteLevel     `json:"decoder"`
	Model         hfModel         `json:"model"`
}

type hfAddedToken struct {
	ID         int    `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

type hfByteLevel struct {
	Type           string `json:"type"`
	AddPrefixSpace bool   `json:"add_prefix_space"`
	TrimOffsets    bool   `json:"trim_offsets"`
	UseRegex       bool   `json:"use_regex"`
}

// hfSequence is the pre-tokenizer of a tokenizer that splits digits: Hugging Face's
// Digits with individual_digits, then ByteLevel.
type hfSequence struct {
	Type          string `json:"type"`
	PreTokenizers []any  `json:"pretokenizers"`
}

type hfDigits struct {
	Type             string `json:"type"`
	IndividualDigits bool   `json:"individual_digits"`
}

type hfModel struct {
	Type                    string          `json:"type"`
	Dropout                 json.RawMessage `json:"dropout"`
	UnkToken                json.RawMessage `json:"unk_token"`
	ContinuingSubwordPrefix json.RawMessage `json:"continuing_subword_prefix"`
	EndOfWordSuffix         json.RawMessage `json:"end_of_word_suffix"`
	FuseUnk                 bool            `json:"fuse_unk"`
	ByteFallback            bool            `json:"byte_fallback"`
	IgnoreMerges            bool            `json:"ignore_merges"`
	Vocab                   json.RawMessage `json:"vocab"`
	Merges                  [][2]string     `json:"merges"`
}

var jsonNull = json.RawMessage("null")

// byteLevelPre is herd's ByteLevel pre-tokenizer as tokenizer.json writes it.
var byteLevelPre = hfByteLevel{Type: "ByteLevel", TrimOffsets: true, UseRegex: true}

// Marshal returns the tokenizer as a Hugging Face tokenizer.json.
func (t *Tokenizer) Marshal() ([]byte, error) {
	if t.sp != nil {
		return t.marshalSentencePiece()
	}
	f := hfFile{
		Version:       "1.0",
		Truncation:    jsonNull,
		Padding:       jsonNull,
		Normalizer:    jsonNull,
		PreTokenizer:  byteLevelPre,
		PostProcessor: jsonNull,
		Decoder:       hfByteLevel{Type: "ByteLevel", AddPrefixSpace: true, TrimOffsets: true, UseRegex: true},
		Model: hfModel{
			Type:                    "BPE",
			Dropout:                 jsonNull,
			UnkToken:                jsonNull,
			ContinuingSubwordPrefix: jsonNull,
			EndOfWordSuffix:         jsonNull,
			Vocab:                   t.vocabJSON(),
		},
	}
	if t.digits {
		f.PreTokenizer = hfSequence{Type: "Sequence", PreTokenizers: []any{hfDigits{Type: "Digits", IndividualDigits: true}, byteLevelPre}}
	}
	f.AddedTokens, f.Model.Merges = t.addedJSON(), t.mergesJSON()
	return encodeJSON(&f)
}

// addedJSON lists the special tokens as added_tokens.
func (t *Tokenizer) addedJSON() []hfAddedToken {
	added := []hfAddedToken{}
	for id := range t.tokens {
		if t.special[id] {
			added = append(added, hfAddedToken{ID: id, Content: t.TokenString(int32(id)), Special: true})
		}
	}
	return added
}

// mergesJSON lists the merges as pairs of token strings, in rank order.
func (t *Tokenizer) mergesJSON() [][2]string {
	merges := make([][2]string, len(t.merges))
	for i, m := range t.merges {
		merges[i] = [2]string{t.TokenString(m.left), t.TokenString(m.right)}
	}
	return merges
}

// encodeJSON writes a tokenizer.json as the tokenizers library does: two-space indent, no
// HTML escaping.
func encodeJSON(f any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(f); err != nil {
		return nil, fmt.Errorf("%w: encoding tokenizer.json: %w", ErrIO, err)
	}
	return buf.Bytes(), nil
}

// vocabJSON writes the vocab object in id order, as the tokenizers library does.
func (t *Tokenizer) vocabJSON() json.RawMessage {
	b := []byte{'{'}
	for id := range t.tokens {
		if id > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, t.TokenString(int32(id)))
		b = append(b, ':')
		b = strconv.AppendInt(b, int64(id), 10)
	}
	return append(b, '}')
}

// appendJSONString quotes a valid UTF-8 string for JSON, escaping only what JSON
// requires.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = fmt.Appendf(b, `\u%04x`, c)
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// Save writes the tokenizer to path as tokenizer.json. It writes a temporary file in
// the same directory and renames it, so path never holds a partial file.
func (t *Tokenizer) Save(path string) error {
	data, err := t.Marshal()
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("%w: saving %s: %w", ErrIO, path, err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("%w: saving %s: %w", ErrIO, path, err)
	}
	return nil
}

// Load reads a tokenizer.json written by Save or by the tokenizers library. It
// accepts only what herd reproduces id for id: LLaMA's SentencePiece-style file (see
// sentencepiece.go), or a BPE model over the byte-level
// alphabet with all 256 byte tokens, a ByteLevel pre-tokenizer with use_regex true and
// add_prefix_space false (after a Digits pre-tokenizer with individual_digits, for a
// tokenizer that splits digits), a ByteLevel decoder, no normalizer, and special added tokens
// that include "<s>", "</s>" and "<pad>". The post_processor is ignored (herd adds
// BOS and EOS itself). A file that fails returns a *FormatError naming the file and
// the field.
func Load(path string) (*Tokenizer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: loading %s: %w", ErrIO, path, err)
	}
	t, err := Unmarshal(data)
	var fe *FormatError
	if errors.As(err, &fe) {
		fe.File = path
	}
	return t, err
}

// Unmarshal parses a tokenizer.json held in memory; see Load for what it accepts.
func Unmarshal(data []byte) (*Tokenizer, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, formatErr("", "not a JSON object: %v", err)
	}
	if !isByteLevel(top["decoder"]) {
		return unmarshalSentencePiece(top)
	}
	if err := checkNormalizer(top["normalizer"]); err != nil {
		return nil, err
	}
	digits, err := checkPreTokenizer(top["pre_tokenizer"])
	if err != nil {
		return nil, err
	}
	if err := checkByteLevel("decoder", top["decoder"], true); err != nil {
		return nil, err
	}
	b := &builder{digits: digits}
	if err := b.read(top); err != nil {
		return nil, err
	}
	return b.build()
}

// read reads added_tokens and model.
func (b *builder) read(top map[string]json.RawMessage) error {
	if err := b.readAdded(top["added_tokens"]); err != nil {
		return err
	}
	return b.readModel(top["model"])
}

func formatErr(field, format string, args ...any) error {
	return &FormatError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(bytes.TrimSpace(raw)) == "null"
}

// isByteLevel reports whether a decoder is ByteLevel, which tells a byte-level BPE file from
// a SentencePiece-style one (whose decoder is a Sequence ending in ByteFallback and Fuse).
func isByteLevel(decoder json.RawMessage) bool {
	var d struct {
		Type string `json:"type"`
	}
	return isNull(decoder) || json.Unmarshal(decoder, &d) != nil || d.Type == "ByteLevel"
}

func checkNormalizer(raw json.RawMessage) error {
	if !isNull(raw) {
		return formatErr("normalizer", "is %s, want null (herd does not normalize text)", clip(raw))
	}
	return nil
}

// checkPreTokenizer checks the pre_tokenizer: ByteLevel, or a Sequence of Digits with
// individual_digits and ByteLevel (a tokenizer that splits digits, which it reports).
func checkPreTokenizer(raw json.RawMessage) (digits bool, err error) {
	var seq struct {
		Type          string            `json:"type"`
		PreTokenizers []json.RawMessage `json:"pretokenizers"`
	}
	if isNull(raw) || json.Unmarshal(raw, &seq) != nil || seq.Type != "Sequence" {
		return false, checkByteLevel("pre_tokenizer", raw, false)
	}
	if len(seq.PreTokenizers) != 2 {
		return false, formatErr("pre_tokenizer.pretokenizers", "has %d entries, want Digits (individual_digits) then ByteLevel", len(seq.PreTokenizers))
	}
	var d struct {
		Type             string `json:"type"`
		IndividualDigits bool   `json:"individual_digits"`
	}
	if err := json.Unmarshal(seq.PreTokenizers[0], &d); err != nil || d.Type != "Digits" || !d.IndividualDigits {
		return false, formatErr("pre_tokenizer.pretokenizers[0]", "is %s, want {\"type\": \"Digits\", \"individual_digits\": true}", clip(seq.PreTokenizers[0]))
	}
	return true, checkByteLevel("pre_tokenizer.pretokenizers[1]", seq.PreTokenizers[1], false)
}

// checkByteLevel checks a ByteLevel pre_tokenizer or decoder. Missing options take the
// tokenizers library's defaults (add_prefix_space true, use_regex true).
func checkByteLevel(field string, raw json.RawMessage, isDecoder bool) error {
	if isNull(raw) {
		return formatErr(field, "missing, want a ByteLevel %s", field)
	}
	v := struct {
		Type           *string `json:"type"`
		AddPrefixSpace *bool   `json:"add_prefix_space"`
		UseRegex       *bool   `json:"use_regex"`
	}{}
	if err := json.Unmarshal(raw, &v); err != nil {
		return formatErr(field, "%v", err)
	}
	if v.Type == nil || *v.Type != "ByteLevel" {
		return formatErr(field+".type", "is %s, want \"ByteLevel\"", clip(fieldRaw(raw, "type")))
	}
	if isDecoder {
		return nil // the ByteLevel decoder ignores its options
	}
	if v.AddPrefixSpace == nil || *v.AddPrefixSpace {
		return formatErr(field+".add_prefix_space", "is true or missing, want false")
	}
	if v.UseRegex != nil && !*v.UseRegex {
		return formatErr(field+".use_regex", "is false, want true (herd splits with the GPT-2 regex)")
	}
	return nil
}

func fieldRaw(raw json.RawMessage, key string) json.RawMessage {
	var m map[string]json.RawMessage
	_ = json.Unmarshal(raw, &m) // raw is known to be an object
	if v, ok := m[key]; ok {
		return v
	}
	return json.RawMessage("missing")
}

// clip shortens raw JSON for an error message.
func clip(raw json.RawMessage) string {
	s := string(bytes.TrimSpace(raw))
	if len(s) > 60 {
		s = strings.ToValidUTF8(s[:60], "") + "..."
	}
	if s == "" {
		return "missing"
	}
	return s
}

// builder collects and validates the parts of a tokenizer.json.
type builder struct {
	specials map[string]int32 // content -> id, from added_tokens
	added    []string         // special contents in file order
	vocab    map[string]int32 // vocab key -> id, specials included
	byID     map[int32]string // id -> vocab key or special content
	merges   [][2]string
	digits   bool // the pre-tokenizer splits digits first

	sp           bool            // a SentencePiece-style file (sentencepiece.go)
	byteFallback bool            // model.byte_fallback
	unk          json.RawMessage // model.unk_token
}

func (b *builder) readAdded(raw json.RawMessage) error {
	var added []struct {
		ID      *int64  `json:"id"`
		Content *string `json:"content"`
		Special *bool   `json:"special"`
	}
	if !isNull(raw) {
		if err := json.Unmarshal(raw, &added); err != nil {
			return formatErr("added_tokens", "%v", err)
		}
	}
	b.specials = make(map[string]int32)
	for i, a := range added {
		field := fmt.Sprintf("added_tokens[%d]", i)
		switch {
		case a.ID == nil || a.Content == nil:
			return formatErr(field, "needs id and content")
		case *a.ID < 0 || *a.ID > MaxVocabSize:
			return formatErr(field+".id", "%d out of range 0..%d", *a.ID, MaxVocabSize)
		case a.Special == nil || !*a.Special:
			return formatErr(field+".special", "token %q is not special; herd supports only special added tokens", *a.Content)
		case *a.Content == "":
			return formatErr(field+".content", "is empty")
		}
		if _, dup := b.specials[*a.Content]; dup {
			return formatErr(field+".content", "%q listed twice", *a.Content)
		}
		b.specials[*a.Content] = int32(*a.ID)
		b.added = append(b.added, *a.Content)
	}
	required := []string{BOSToken, EOSToken, PadToken}
	if b.sp {
		required = required[:2] // LLaMA's vocabulary has no <pad>
	}
	for _, name := range required {
		if _, ok := b.specials[name]; !ok {
			return formatErr("added_tokens", "no special token %q", name)
		}
	}
	return nil
}

func (b *builder) readModel(raw json.RawMessage) error {
	if isNull(raw) {
		return formatErr("model", "missing")
	}
	var m struct {
		Type                    *string           `json:"type"`
		Dropout                 json.RawMessage   `json:"dropout"`
		ContinuingSubwordPrefix json.RawMessage   `json:"continuing_subword_prefix"`
		EndOfWordSuffix         json.RawMessage   `json:"end_of_word_suffix"`
		IgnoreMerges            bool              `json:"ignore_merges"`
		ByteFallback            bool              `json:"byte_fallback"`
		UnkToken                json.RawMessage   `json:"unk_token"`
		Vocab                   json.RawMessage   `json:"vocab"`
		Merges                  []json.RawMessage `json:"merges"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return formatErr("model", "%v", err)
	}
	b.byteFallback, b.unk = m.ByteFallback, m.UnkToken
	if m.Type == nil || *m.Type != "BPE" {
		return formatErr("model.type", "is %s, want \"BPE\"", clip(fieldRaw(raw, "type")))
	}
	if !isNull(m.Dropout) && string(m.Dropout) != "0" && string(m.Dropout) != "0.0" {
		return formatErr("model.dropout", "is %s, want null", clip(m.Dropout))
	}
	if v := m.ContinuingSubwordPrefix; !isNull(v) && string(v) != `""` {
		return formatErr("model.continuing_subword_prefix", "is %s, want null", clip(v))
	}
	if v := m.EndOfWordSuffix; !isNull(v) && string(v) != `""` {
		return formatErr("model.end_of_word_suffix", "is %s, want null", clip(v))
	}
	if m.IgnoreMerges {
		return formatErr("model.ignore_merges", "is true, want false")
	}
	if err := b.readVocab(m.Vocab); err != nil {
		return err
	}
	return b.readMerges(m.Merges)
}

// readVocab reads the vocab object token by token, to catch repeated keys.
func (b *builder) readVocab(raw json.RawMessage) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return formatErr("model.vocab", "missing or not an object")
	}
	b.vocab = make(map[string]int32)
	b.byID = make(map[int32]string)
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return formatErr("model.vocab", "%v", err)
		}
		key := kt.(string) // object keys are always strings
		vt, err := dec.Token()
		num, ok := vt.(json.Number)
		if err != nil || !ok {
			return formatErr("model.vocab", "id of %q is not a number", key)
		}
		id, err := strconv.ParseInt(string(num), 10, 32)
		if err != nil || id < 0 || id > MaxVocabSize {
			return formatErr("model.vocab", "id of %q is %s, want an integer in 0..%d", key, num, MaxVocabSize)
		}
		if _, dup := b.vocab[key]; dup {
			return formatErr("model.vocab", "token %q listed twice", key)
		}
		if other, dup := b.byID[int32(id)]; dup {
			return formatErr("model.vocab", "id %d used by both %q and %q", id, other, key)
		}
		b.vocab[key] = int32(id)
		b.byID[int32(id)] = key
	}
	return nil
}

func (b *builder) readMerges(raws []json.RawMessage) error {
	b.merges = make([][2]string, len(raws))
	for i, raw := range raws {
		var pair []string
		var s string
		switch {
		case json.Unmarshal(raw, &pair) == nil && len(pair) == 2:
			b.merges[i] = [2]string{pair[0], pair[1]}
		case json.Unmarshal(raw, &s) == nil && strings.Count(s, " ") == 1:
			left, right, _ := strings.Cut(s, " ")
			b.merges[i] = [2]string{left, right}
		default:
			return formatErr(fmt.Sprintf("model.merges[%d]", i), "is %s, want [\"left\", \"right\"] or \"left right\"", clip(raw))
		}
	}
	return nil
}

// addSpecials puts the added tokens among the ids of model.vocab, checking that the two agree.
func (b *builder) addSpecials() error {
	for _, content := range b.added {
		id := b.specials[content]
		if vid, ok := b.vocab[content]; ok && vid != id {
			return formatErr("added_tokens", "%q has id %d, but model.vocab gives it %d", content, id, vid)
		}
		if key, ok := b.byID[id]; ok && key != content {
			return formatErr("added_tokens", "%q has id %d, already used by %q in model.vocab", content, id, key)
		}
		b.byID[id] = content
	}
	return nil
}

// build checks ids, specials, byte tokens and merges, and makes the Tokenizer.
func (b *builder) build() (*Tokenizer, error) {
	if err := b.addSpecials(); err != nil {
		return nil, err
	}
	n := len(b.byID)
	tokens := make([][]byte, n)
	special := make([]bool, n)
	ids := make(map[string]int32, n)
	order := make([]int32, 0, n)
	for id := range b.byID {
		order = append(order, id)
	}
	slices.Sort(order)
	for _, id := range order {
		key := b.byID[id]
		if int(id) >= n {
			return nil, formatErr("model.vocab", "id %d of %q is not below the number of tokens %d; ids must be 0..%d without gaps", id, key, n, n-1)
		}
		if _, ok := b.specials[key]; ok {
			tokens[id], special[id] = []byte(key), true
			continue
		}
		raw, ok := byteLevelBytes(key)
		if !ok || len(raw) == 0 {
			return nil, formatErr("model.vocab", "token %q is not in the byte-level alphabet", key)
		}
		tokens[id] = raw
		ids[string(raw)] = id
	}
	for _, c := range byteOrder {
		if _, ok := ids[string([]byte{c})]; !ok {
			return nil, formatErr("model.vocab", "byte token %q (byte 0x%02x) missing", string(byteToRune[c]), c)
		}
	}
	merges, err := b.resolveMerges(ids)
	if err != nil {
		return nil, err
	}
	return newTokenizer(tokens, special, merges,
		b.specials[BOSToken], b.specials[EOSToken], b.specials[PadToken], b.digits), nil
}

func (b *builder) resolveMerges(ids map[string]int32) ([]merge, error) {
	merges := make([]merge, len(b.merges))
	seen := make(map[uint64]bool, len(b.merges))
	for i, m := range b.merges {
		field := fmt.Sprintf("model.merges[%d]", i)
		var part [2]int32
		var joined []byte
		for k, s := range m {
			raw, ok := byteLevelBytes(s)
			id, known := ids[string(raw)]
			if !ok || !known || len(raw) == 0 {
				return nil, formatErr(field, "unknown token %q", s)
			}
			part[k] = id
			joined = append(joined, raw...)
		}
		result, ok := ids[string(joined)]
		if !ok {
			name := m[0] + m[1]
			if _, sp := b.specials[name]; sp {
				return nil, formatErr(field, "merge %q + %q spells the special token %q", m[0], m[1], name)
			}
			return nil, formatErr(field, "result %q of merging %q and %q is not in model.vocab", name, m[0], m[1])
		}
		key := pairKey(part[0], part[1])
		if seen[key] {
			return nil, formatErr(field, "merge %q %q repeated", m[0], m[1])
		}
		seen[key] = true
		merges[i] = merge{left: part[0], right: part[1], result: result}
	}
	return merges, nil
}
