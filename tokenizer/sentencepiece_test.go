package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// spFile builds a small SentencePiece-style tokenizer.json in LLaMA's layout: <unk> <s> </s>,
// the 256 byte tokens, then pieces, each merge's result among them. edit changes the decoded
// object before it is encoded.
func spFile(t *testing.T, pieces []string, merges [][2]string, edit func(m map[string]any)) []byte {
	t.Helper()
	vocab := map[string]any{"<unk>": 0, "<s>": 1, "</s>": 2}
	for c := range 256 {
		vocab[byteTokenName(byte(c))] = 3 + c
	}
	for i, p := range pieces {
		vocab[p] = 259 + i
	}
	var added []any
	for i, c := range []string{"<unk>", "<s>", "</s>"} {
		added = append(added, map[string]any{"id": i, "content": c, "special": true, "normalized": false})
	}
	replace := func(from, to string) map[string]any {
		return map[string]any{"type": "Replace", "pattern": map[string]any{"String": from}, "content": to}
	}
	m := map[string]any{
		"version": "1.0", "added_tokens": added,
		"normalizer": map[string]any{"type": "Sequence", "normalizers": []any{
			map[string]any{"type": "Prepend", "prepend": "▁"}, replace(" ", "▁")}},
		"pre_tokenizer": nil,
		"decoder": map[string]any{"type": "Sequence", "decoders": []any{replace("▁", " "),
			map[string]any{"type": "ByteFallback"}, map[string]any{"type": "Fuse"},
			map[string]any{"type": "Strip", "content": " ", "start": 1, "stop": 0}}},
		"model": map[string]any{"type": "BPE", "unk_token": "<unk>", "byte_fallback": true, "fuse_unk": true,
			"vocab": vocab, "merges": merges},
	}
	if edit != nil {
		edit(m)
	}
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

var (
	spPieces = []string{"▁", "a", "b", "c", "é", "▁▁", "ab", "▁a", "▁ab", "abc", "bc"}
	spMerges = [][2]string{{"▁", "▁"}, {"a", "b"}, {"▁", "a"}, {"▁a", "b"}, {"b", "c"}, {"ab", "c"}}
)

// Hand-worked encodings of the small vocabulary: the dummy prefix, spaces as "▁", merges by
// rank then leftmost, characters outside the vocabulary and invalid bytes as byte tokens.
func TestSentencePieceEncode(t *testing.T) {
	tok, err := Unmarshal(spFile(t, spPieces, spMerges, nil))
	if err != nil {
		t.Fatal(err)
	}
	id := func(p string) int32 { return tok.ids[p] }
	bt := func(c byte) int32 { return 3 + int32(c) }
	for _, c := range []struct {
		text string
		want []int32
	}{
		{"", nil},
		{"ab", []int32{id("▁"), id("ab")}},   // (a, b) rank 1 before (▁, a) rank 2; ▁ + ab is no merge
		{"abc", []int32{id("▁"), id("abc")}}, // a b first, then ab c
		{"bc", []int32{id("▁"), id("bc")}},
		{" ab", []int32{id("▁▁"), id("ab")}},           // ▁▁ is rank 0
		{"a  b", []int32{id("▁a"), id("▁▁"), id("b")}}, // spaces stay together
		{"x", []int32{id("▁"), bt('x')}},               // not in the vocabulary
		{"é", []int32{id("▁"), id("é")}},
		{"ü", []int32{id("▁"), bt(0xC3), bt(0xBC)}},
		{"a\xffb", []int32{id("▁a"), bt(0xFF), id("b")}},
		{"a▁b", []int32{id("▁a"), id("▁"), id("b")}}, // the mark reads as a space
	} {
		got := tok.Encode([]byte(c.text))
		if !slices.Equal(got, c.want) {
			t.Errorf("Encode(%q) = %v, want %v", c.text, got, c.want)
		}
	}
	if !tok.sp.words {
		t.Error("no merge joins a word to the spaces after it, yet word-by-word encoding is off")
	}
	if got := tok.Decode(tok.Encode([]byte("a  b\xff"))); string(got) != "a  b\xff" {
		t.Errorf("Decode(Encode) = %q", got)
	}
	if tok.PAD() != -1 || tok.TokenString(id("▁ab")) != "▁ab" || string(tok.TokenBytes(id("▁a"))) != " a" {
		t.Errorf("PAD %d, TokenString %q, TokenBytes %q", tok.PAD(), tok.TokenString(id("▁ab")), tok.TokenBytes(id("▁a")))
	}
	if _, ok := tok.DocumentStart(); ok {
		t.Error("DocumentStart: a file without a post-processor puts nothing before a document")
	}
}

// A merge that joins a word to the spaces after it turns word-by-word encoding off, and the
// whole text gives the ids a word-by-word encoding would get wrong.
func TestSentencePieceMergeAcrossWords(t *testing.T) {
	tok, err := Unmarshal(spFile(t, []string{"▁", "a", "a▁"}, [][2]string{{"a", "▁"}}, nil))
	if err != nil {
		t.Fatal(err)
	}
	if tok.sp.words {
		t.Fatal("the merge a + ▁ crosses words, yet word-by-word encoding is on")
	}
	want := []int32{tok.ids["▁"], tok.ids["a▁"], tok.ids["a"]}
	if got := tok.Encode([]byte("a a")); !slices.Equal(got, want) {
		t.Errorf("Encode(\"a a\") = %v, want %v", got, want)
	}
}

// Random byte strings round-trip through every layout, word by word and whole.
func TestSentencePieceRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	alphabet := []string{"a", "b", "c", " ", "  ", "é", "ü", "▁", "\xff", "\xe2\x96", "\n", "x"}
	for _, edit := range []func(map[string]any){nil, func(m map[string]any) {
		m["normalizer"] = nil
		m["pre_tokenizer"] = map[string]any{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false}
	}} {
		tok, err := Unmarshal(spFile(t, spPieces, spMerges, edit))
		if err != nil {
			t.Fatal(err)
		}
		whole, _ := Unmarshal(spFile(t, spPieces, spMerges, edit))
		whole.sp.words = false
		for range 2000 {
			var b strings.Builder
			for range rng.IntN(12) {
				b.WriteString(alphabet[rng.IntN(len(alphabet))])
			}
			text := []byte(b.String())
			ids := tok.Encode(text)
			if w := whole.Encode(text); !slices.Equal(ids, w) {
				t.Fatalf("Encode(%q): word by word %v, whole %v", text, ids, w)
			}
			want := bytes.ReplaceAll(text, []byte("▁"), []byte(" "))
			if tok.sp.prefix == prefixUnlessSpace && startsWithSpace(text) {
				want = want[1:]
			}
			if got := tok.Decode(ids); !bytes.Equal(got, want) {
				t.Fatalf("Decode(Encode(%q)) = %q, want %q", text, got, want)
			}
		}
	}
}

// A file herd cannot reproduce id for id is refused, naming the field.
func TestSentencePieceRefused(t *testing.T) {
	for _, c := range []struct {
		name, field string
		edit        func(m map[string]any)
	}{
		{"metaspace that splits", "pre_tokenizer.split", func(m map[string]any) {
			m["normalizer"] = nil
			m["pre_tokenizer"] = map[string]any{"type": "Metaspace", "replacement": "▁", "add_prefix_space": true}
		}},
		{"pre_tokenizer beside normalizer", "pre_tokenizer", func(m map[string]any) {
			m["pre_tokenizer"] = map[string]any{"type": "Whitespace"}
		}},
		{"other normalizer", "normalizer", func(m map[string]any) { m["normalizer"] = map[string]any{"type": "NFKC"} }},
		{"no byte fallback", "model.byte_fallback", func(m map[string]any) { m["model"].(map[string]any)["byte_fallback"] = false }},
		{"no unk", "model.unk_token", func(m map[string]any) { m["model"].(map[string]any)["unk_token"] = nil }},
		{"byte token missing", "model.vocab", func(m map[string]any) {
			delete(m["model"].(map[string]any)["vocab"].(map[string]any), "<0x7F>")
		}},
		{"decoder without ByteFallback", "decoder", func(m map[string]any) {
			m["decoder"] = map[string]any{"type": "Metaspace", "replacement": "▁"}
		}},
		{"merge result not in vocab", "model.merges[6]", func(m map[string]any) {
			mm := m["model"].(map[string]any)
			mm["merges"] = append(mm["merges"].([][2]string), [2]string{"c", "c"})
		}},
		{"no </s>", "added_tokens", func(m map[string]any) { m["added_tokens"] = m["added_tokens"].([]any)[:2] }},
	} {
		_, err := Unmarshal(spFile(t, spPieces, spMerges, c.edit))
		var fe *FormatError
		if !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("%s: error %v, want a FormatError on %s", c.name, err, c.field)
		}
	}
}
