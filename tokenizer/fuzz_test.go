package tokenizer

import (
	"bytes"
	"testing"
)

func FuzzRoundTrip(f *testing.F) {
	for _, s := range []string{"", "hello world", "a   b", "don't stop", "\xff\xfe\x00",
		"日本語 テキスト", "x  \n\t\r\n y", "<s>not special</s>", "$100.50!!!", "'s''ll"} {
		f.Add([]byte(s))
	}
	tok := smallTokenizer(f)
	f.Fuzz(func(t *testing.T, s []byte) {
		ids := tok.Encode(s)
		if got := tok.Decode(ids); !bytes.Equal(got, s) {
			t.Fatalf("Decode(Encode(%q)) = %q", s, got)
		}
		for _, id := range ids {
			if tok.IsSpecial(id) || id < 0 || int(id) >= tok.VocabSize() {
				t.Fatalf("Encode(%q) produced id %d", s, id)
			}
		}
		var pieces [][]byte
		splitWords(s, func(w []byte) { pieces = append(pieces, w) })
		if !bytes.Equal(bytes.Join(pieces, nil), s) {
			t.Fatalf("pieces of %q do not concatenate back", s)
		}
	})
}

func FuzzLoad(f *testing.F) {
	small, err := TrainDocs([][]byte{[]byte("hello world, hello there")}, MinVocabSize+4, Options{})
	if err != nil {
		f.Fatal(err)
	}
	good, err := small.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(bytes.Replace(good, []byte(`"merges": [`), []byte(`"merges": ["h e", `), 1))
	f.Add(bytes.Replace(good, []byte(`"Ġ": 223`), []byte(`"Ġ": 1e9`), 1))
	f.Add([]byte(`{"model": {"type": "BPE", "vocab": {}, "merges": []}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tok, err := Unmarshal(data)
		if err != nil {
			return
		}
		again, err := tok.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		tok2, err := Unmarshal(again)
		if err != nil {
			t.Fatalf("re-reading a marshalled tokenizer: %v", err)
		}
		if tok2.Hash() != tok.Hash() {
			t.Fatal("hash changed through Marshal/Unmarshal")
		}
		s := []byte("fuzz \xff text 12 don't")
		if got := tok.Decode(tok.Encode(s)); !bytes.Equal(got, s) {
			t.Fatalf("round trip fails on a loaded tokenizer: %q", got)
		}
	})
}
