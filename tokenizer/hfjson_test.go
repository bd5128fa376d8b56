package tokenizer

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func mustMarshal(tb testing.TB, tok *Tokenizer) []byte {
	tb.Helper()
	data, err := tok.Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

func TestSaveLoad(t *testing.T) {
	tok := smallTokenizer(t)
	path := filepath.Join(t.TempDir(), "tokenizer.json")
	if err := tok.Save(path); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Hash() != tok.Hash() {
		t.Fatalf("hash after load %s, before %s", got.Hash(), tok.Hash())
	}
	text := append(makeCorpus(50_000, 21), "\xff\xfe <s> 日本語 \u00a0\n"...)
	if !slices.Equal(got.Encode(text), tok.Encode(text)) {
		t.Fatal("loaded tokenizer encodes differently")
	}
	if got.VocabSize() != tok.VocabSize() || got.BOS() != tok.BOS() || got.EOS() != tok.EOS() || got.PAD() != tok.PAD() {
		t.Fatal("loaded tokenizer has different sizes or special ids")
	}
	for id := int32(0); id < int32(tok.VocabSize()); id++ {
		if got.TokenString(id) != tok.TokenString(id) {
			t.Fatalf("token %d: %q after load, %q before", id, got.TokenString(id), tok.TokenString(id))
		}
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries after Save, want only tokenizer.json", len(entries))
	}
	if again := mustMarshal(t, got); string(again) != string(mustMarshal(t, tok)) {
		t.Error("Marshal after Load differs from the saved file")
	}
}

// TestMarshalLayout checks the fields LAYOUT.md records for tokenizers 0.23.
func TestMarshalLayout(t *testing.T) {
	tok := smallTokenizer(t)
	var f map[string]any
	if err := json.Unmarshal(mustMarshal(t, tok), &f); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"truncation", "padding", "normalizer", "post_processor"} {
		if v, ok := f[k]; !ok || v != nil {
			t.Errorf("%s = %v, want null", k, v)
		}
	}
	if f["version"] != "1.0" {
		t.Errorf("version %v", f["version"])
	}
	pre := f["pre_tokenizer"].(map[string]any)
	if pre["type"] != "ByteLevel" || pre["add_prefix_space"] != false || pre["use_regex"] != true || pre["trim_offsets"] != true {
		t.Errorf("pre_tokenizer %v", pre)
	}
	if dec := f["decoder"].(map[string]any); dec["type"] != "ByteLevel" {
		t.Errorf("decoder %v", dec)
	}
	added := f["added_tokens"].([]any)
	wantAdded := []string{"<pad>", "<s>", "</s>"}
	if len(added) != 3 {
		t.Fatalf("added_tokens %v", added)
	}
	for i, a := range added {
		a := a.(map[string]any)
		if a["id"] != float64(i) || a["content"] != wantAdded[i] || a["special"] != true || a["normalized"] != false {
			t.Errorf("added_tokens[%d] = %v", i, a)
		}
	}
	m := f["model"].(map[string]any)
	if m["type"] != "BPE" || m["unk_token"] != nil || m["byte_fallback"] != false || m["ignore_merges"] != false {
		t.Errorf("model header %v", m["type"])
	}
	vocab := m["vocab"].(map[string]any)
	for k, id := range map[string]float64{"<pad>": 0, "<s>": 1, "</s>": 2, "!": 3, "\"": 4, "Ġ": 223} {
		if vocab[k] != id {
			t.Errorf("vocab[%q] = %v, want %v", k, vocab[k], id)
		}
	}
	if len(vocab) != tok.VocabSize() {
		t.Errorf("vocab has %d entries, want %d", len(vocab), tok.VocabSize())
	}
	merges := m["merges"].([]any)
	first := merges[0].([]any)
	if len(merges) != tok.NumMerges() || len(first) != 2 {
		t.Errorf("merges: %d entries, first %v", len(merges), first)
	}
}

func TestLoadStringMerges(t *testing.T) {
	tok := smallTokenizer(t)
	f := decodeFile(t, mustMarshal(t, tok))
	model := f["model"].(map[string]any)
	merges := model["merges"].([]any)
	for i, m := range merges {
		p := m.([]any)
		merges[i] = p[0].(string) + " " + p[1].(string)
	}
	got, err := Unmarshal(encodeFile(t, f))
	if err != nil {
		t.Fatal(err)
	}
	if got.Hash() != tok.Hash() {
		t.Fatal("\"a b\" merges load to a different tokenizer")
	}
}

func decodeFile(tb testing.TB, data []byte) map[string]any {
	tb.Helper()
	var f map[string]any
	if err := json.Unmarshal(data, &f); err != nil {
		tb.Fatal(err)
	}
	return f
}

func encodeFile(tb testing.TB, f map[string]any) []byte {
	tb.Helper()
	data, err := json.Marshal(f)
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

func TestLoadBadFiles(t *testing.T) {
	tok := smallTokenizer(t)
	good := mustMarshal(t, tok)
	model := func(f map[string]any) map[string]any { return f["model"].(map[string]any) }
	vocab := func(f map[string]any) map[string]any { return model(f)["vocab"].(map[string]any) }
	cases := []struct {
		name  string
		edit  func(f map[string]any)
		field string
		msg   string
	}{
		{"wrong model type", func(f map[string]any) { model(f)["type"] = "WordPiece" }, "model.type", "WordPiece"},
		{"missing model", func(f map[string]any) { delete(f, "model") }, "model", "missing"},
		{"unknown merge token", func(f map[string]any) {
			model(f)["merges"].([]any)[5] = []any{"zzzq", "a"}
		}, "model.merges[5]", `unknown token "zzzq"`},
		{"merge result missing", func(f map[string]any) {
			if _, ok := vocab(f)["ÿÿ"]; ok {
				t.Fatal("test needs a pair that is not a token")
			}
			model(f)["merges"].([]any)[0] = []any{"ÿ", "ÿ"}
		}, "model.merges[0]", "not in model.vocab"},
		{"bad merge shape", func(f map[string]any) { model(f)["merges"].([]any)[1] = []any{"a"} }, "model.merges[1]", "want"},
		{"repeated merge", func(f map[string]any) {
			ms := model(f)["merges"].([]any)
			ms[3] = ms[2]
		}, "model.merges[3]", "repeated"},
		{"duplicate id", func(f map[string]any) { vocab(f)["b"] = vocab(f)["a"] }, "model.vocab", "used by both"},
		{"missing byte token", func(f map[string]any) {
			delete(vocab(f), "Ċ")
			vocab(f)["zz"] = vocab(f)["Ċ"]
		}, "model.vocab", ""},
		{"id gap", func(f map[string]any) { vocab(f)["!"] = 99999 }, "model.vocab", "without gaps"},
		{"negative id", func(f map[string]any) { vocab(f)["!"] = -1 }, "model.vocab", "want an integer"},
		{"not byte-level", func(f map[string]any) {
			v := vocab(f)
			v["\u4e00"] = v["!"]
			delete(v, "!")
		}, "model.vocab", "byte-level alphabet"},
		{"no pad", func(f map[string]any) { f["added_tokens"] = f["added_tokens"].([]any)[1:] }, "added_tokens", `"<pad>"`},
		{"non-special added", func(f map[string]any) {
			f["added_tokens"].([]any)[0].(map[string]any)["special"] = false
		}, "added_tokens[0].special", "not special"},
		{"added id mismatch", func(f map[string]any) {
			f["added_tokens"].([]any)[1].(map[string]any)["id"] = 5
		}, "added_tokens", "model.vocab gives it 1"},
		{"prefix space", func(f map[string]any) {
			f["pre_tokenizer"].(map[string]any)["add_prefix_space"] = true
		}, "pre_tokenizer.add_prefix_space", ""},
		{"no regex", func(f map[string]any) {
			f["pre_tokenizer"].(map[string]any)["use_regex"] = false
		}, "pre_tokenizer.use_regex", ""},
		{"other pre-tokenizer", func(f map[string]any) {
			f["pre_tokenizer"] = map[string]any{"type": "Whitespace"}
		}, "pre_tokenizer.type", "Whitespace"},
		{"normalizer", func(f map[string]any) { f["normalizer"] = map[string]any{"type": "NFC"} }, "normalizer", "NFC"},
		{"decoder", func(f map[string]any) { f["decoder"] = nil }, "decoder", "missing"},
		{"ignore merges", func(f map[string]any) { model(f)["ignore_merges"] = true }, "model.ignore_merges", ""},
		{"subword prefix", func(f map[string]any) { model(f)["continuing_subword_prefix"] = "##" }, "model.continuing_subword_prefix", "##"},
		{"vocab not object", func(f map[string]any) { model(f)["vocab"] = []any{1} }, "model.vocab", "not an object"},
	}
	dir := t.TempDir()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := decodeFile(t, good)
			c.edit(f)
			path := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_")+".json")
			if err := os.WriteFile(path, encodeFile(t, f), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path)
			var fe *FormatError
			if !errors.Is(err, ErrFormat) || !errors.As(err, &fe) {
				t.Fatalf("err %v, want a *FormatError", err)
			}
			if fe.Field != c.field || !strings.Contains(fe.Msg, c.msg) {
				t.Errorf("field %q msg %q, want field %q msg containing %q", fe.Field, fe.Msg, c.field, c.msg)
			}
			if !strings.HasPrefix(err.Error(), "tokenizer: bad tokenizer.json "+path+": "+c.field) {
				t.Errorf("message %q does not name the file and field", err)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "none.json"))
	if !errors.Is(err, ErrIO) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("err %v, want ErrIO wrapping ErrNotExist", err)
	}
	if _, err := Unmarshal([]byte("[1,2")); !errors.Is(err, ErrFormat) {
		t.Errorf("truncated JSON: err %v, want ErrFormat", err)
	}
}

// TestLoadForeignIDs: a file whose specials come after the bytes (the other common
// layout) loads and keeps its ids.
func TestLoadForeignIDs(t *testing.T) {
	tok := smallTokenizer(t)
	f := decodeFile(t, mustMarshal(t, tok))
	n := float64(tok.VocabSize())
	v := f["model"].(map[string]any)["vocab"].(map[string]any)
	for k, id := range v {
		v[k] = id.(float64) - 3
	}
	for i, name := range []string{"<pad>", "<s>", "</s>"} {
		v[name] = n - 3 + float64(i)
		f["added_tokens"].([]any)[i].(map[string]any)["id"] = n - 3 + float64(i)
	}
	got, err := Unmarshal(encodeFile(t, f))
	if err != nil {
		t.Fatal(err)
	}
	if got.PAD() != int32(n-3) || got.BOS() != int32(n-2) || got.EOS() != int32(n-1) {
		t.Errorf("PAD, BOS, EOS = %d, %d, %d", got.PAD(), got.BOS(), got.EOS())
	}
	text := makeCorpus(10_000, 30)
	want := tok.Encode(text)
	for i := range want {
		want[i] -= 3
	}
	if !slices.Equal(got.Encode(text), want) {
		t.Error("ids of the shifted file are not the shifted ids")
	}
	if !slices.Equal(got.Decode(got.Encode(text)), text) {
		t.Error("round trip fails with shifted ids")
	}
}
