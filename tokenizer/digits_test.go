package tokenizer

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func pieces(text string, digits bool) []string {
	var out []string
	forEachPiece([]byte(text), digits, func(w []byte) { out = append(out, string(w)) })
	return out
}

// Split digits as Hugging Face's Sequence of Digits (individual_digits) and ByteLevel does:
// each \p{N} rune alone, then the GPT-2 regex on each run between them, its lookahead ending
// with the run.
func TestSplitDigitsPieces(t *testing.T) {
	for _, c := range []struct {
		text string
		want []string
	}{
		{"abc 123 def", []string{"abc", " ", "1", "2", "3", " def"}},
		{"x1y", []string{"x", "1", "y"}},
		{"price: 3.50", []string{"price", ":", " ", "3", ".", "5", "0"}},
		{"a  7", []string{"a", "  ", "7"}}, // "\s+(?!\S)" keeps both spaces: the run ends before 7
		{"٣ and ½", []string{"٣", " and", " ", "½"}},
		{"no digits here", []string{"no", " digits", " here"}},
		{"", nil},
	} {
		got := pieces(c.text, true)
		if strings.Join(got, "|") != strings.Join(c.want, "|") {
			t.Errorf("%q: %q, want %q", c.text, got, c.want)
		}
		if strings.Join(got, "") != c.text {
			t.Errorf("%q: pieces do not add up to the text", c.text)
		}
	}
	if got := pieces("abc 123", false); strings.Join(got, "|") != "abc| 123" {
		t.Errorf("without split digits: %q", got)
	}
}

// A tokenizer trained with SplitDigits has no token that holds a digit and anything else,
// encodes numbers digit by digit, says so in tokenizer.json (Sequence of Digits and
// ByteLevel) and keeps that, its ids and its hash through a save and load; its hash differs
// from the same vocabulary's without split digits.
func TestSplitDigitsTrainAndRoundTrip(t *testing.T) {
	var corpus bytes.Buffer
	for i := range 400 {
		corpus.WriteString("In 1905 the year had 365 days; item 4096 cost 12.50 and 2048 more. ")
		corpus.WriteString(strings.Repeat("x", i%3))
	}
	tok, err := Train(bytes.NewReader(corpus.Bytes()), 280, Options{SplitDigits: true})
	if err != nil {
		t.Fatal(err)
	}
	if !tok.SplitDigits() {
		t.Fatal("SplitDigits() is false")
	}
	for id := range tok.VocabSize() {
		b := tok.tokens[id]
		hasDigit := false
		for len(b) > 0 {
			r, w := utf8.DecodeRune(b)
			hasDigit = hasDigit || unicode.IsNumber(r)
			b = b[w:]
		}
		if hasDigit && utf8.RuneCount(tok.tokens[id]) > 1 {
			t.Errorf("token %d %q holds a digit and more", id, tok.tokens[id])
		}
	}
	mixed, err := Train(bytes.NewReader(corpus.Bytes()), 280, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(mixed.tokens, func(b []byte) bool { return bytes.ContainsAny(b, "0123456789") && len(b) > 1 }) {
		t.Error("without split digits no token joins a digit to anything: the corpus shows nothing")
	}
	ids := tok.Encode([]byte("year 1905"))
	if n := len(ids); n < 5 || string(tok.Decode(ids)) != "year 1905" {
		t.Errorf("year 1905 -> %v (%q)", ids, tok.Decode(ids))
	}
	raw, err := tok.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var top struct {
		PreTokenizer json.RawMessage `json:"pre_tokenizer"`
	}
	json.Unmarshal(raw, &top)
	if !strings.Contains(string(top.PreTokenizer), `"type": "Sequence"`) || !strings.Contains(string(top.PreTokenizer), `"individual_digits": true`) {
		t.Errorf("pre_tokenizer: %s", top.PreTokenizer)
	}
	back, err := Unmarshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !back.SplitDigits() || back.Hash() != tok.Hash() {
		t.Errorf("loaded back: split digits %v, hash %s, want %s", back.SplitDigits(), back.Hash(), tok.Hash())
	}
	plain, err := Unmarshal(bytes.Replace(raw, top.PreTokenizer, []byte(`{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}`), 1))
	if err != nil {
		t.Fatal(err)
	}
	if plain.SplitDigits() || plain.Hash() == tok.Hash() {
		t.Error("the same vocabulary without split digits has the same hash")
	}
	bad := bytes.Replace(raw, []byte(`"individual_digits": true`), []byte(`"individual_digits": false`), 1)
	if _, err := Unmarshal(bad); err == nil || !strings.Contains(err.Error(), "pre_tokenizer.pretokenizers[0]") {
		t.Errorf("Digits without individual_digits: %v", err)
	}
}
