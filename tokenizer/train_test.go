package tokenizer

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestTrainVocabSizeAndLayout(t *testing.T) {
	for _, size := range []int{MinVocabSize, MinVocabSize + 1, 600} {
		tok, err := TrainDocs([][]byte{makeCorpus(50_000, 2)}, size, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if tok.VocabSize() != size {
			t.Errorf("VocabSize() = %d, want %d", tok.VocabSize(), size)
		}
		if tok.PAD() != 0 || tok.BOS() != 1 || tok.EOS() != 2 {
			t.Errorf("PAD, BOS, EOS = %d, %d, %d; want 0, 1, 2", tok.PAD(), tok.BOS(), tok.EOS())
		}
		for id := int32(0); id < MinVocabSize; id++ {
			if got, want := tok.IsSpecial(id), id < 3; got != want {
				t.Errorf("IsSpecial(%d) = %v", id, got)
			}
		}
		for id := MinVocabSize; id < size; id++ {
			if n := len(tok.TokenBytes(int32(id))); n < 2 {
				t.Errorf("merged token %d has %d bytes", id, n)
			}
		}
	}
}

func TestTrainCommonWordsBecomeTokens(t *testing.T) {
	text := strings.Repeat("the quick brown fox jumps over the lazy dog. ", 200) +
		strings.Repeat("hello world\n", 300)
	tok, err := TrainDocs([][]byte{[]byte(text)}, 300, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{" the", " quick", " brown", " fox", "hello", " world", " lazy"} {
		if ids := tok.Encode([]byte(w)); len(ids) != 1 {
			t.Errorf("Encode(%q) = %d tokens %q, want 1", w, len(ids), names(tok, ids))
		}
	}
}

func names(tok *Tokenizer, ids []int32) []string {
	var s []string
	for _, id := range ids {
		s = append(s, tok.TokenString(id))
	}
	return s
}

func TestTrainDeterministic(t *testing.T) {
	corpus := makeCorpus(100_000, 5)
	a, err := TrainDocs([][]byte{corpus}, 800, Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Train(bytes.NewReader(corpus), 800, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if a.Hash() != b.Hash() {
		t.Fatalf("Train and TrainDocs on the same text differ: %s vs %s", a.Hash(), b.Hash())
	}
	for i := 0; i < 3; i++ {
		c, err := TrainDocs([][]byte{corpus}, 800, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if c.Hash() != a.Hash() {
			t.Fatalf("run %d: hash %s, first run %s", i, c.Hash(), a.Hash())
		}
	}
}

// TestTrainTieBreak: all pairs of "cd ab" occur once, so the merges go in byte order
// of (left, right): " " < "a" < "c", then " a" < "c".
func TestTrainTieBreak(t *testing.T) {
	tok, err := TrainDocs([][]byte{[]byte("cd ab")}, MinVocabSize+3, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range tok.merges {
		got = append(got, tok.TokenString(m.left)+"+"+tok.TokenString(m.right))
	}
	want := []string{"Ġ+a", "Ġa+b", "c+d"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("merges %q, want %q", got, want)
	}
}

func TestTrainProgress(t *testing.T) {
	var calls, last, total int
	_, err := TrainDocs([][]byte{makeCorpus(30_000, 6)}, 400, Options{Progress: func(d, n int) {
		calls++
		last, total = d, n
	}})
	if err != nil {
		t.Fatal(err)
	}
	if calls < 141 || last != 141 || total != 141 {
		t.Errorf("progress: %d calls, last (%d, %d), want at least 141 calls ending at (141, 141)", calls, last, total)
	}
}

func TestTrainErrors(t *testing.T) {
	for _, size := range []int{0, MinVocabSize - 1, MaxVocabSize + 1} {
		if _, err := TrainDocs(nil, size, Options{}); !errors.Is(err, ErrVocabSize) {
			t.Errorf("vocab %d: err %v, want ErrVocabSize", size, err)
		}
	}
	_, err := TrainDocs([][]byte{[]byte("abc abc")}, 1000, Options{})
	if !errors.Is(err, ErrSmallCorpus) {
		t.Errorf("tiny corpus: err %v, want ErrSmallCorpus", err)
	}
	_, err = Train(failingReader{}, 300, Options{})
	if !errors.Is(err, ErrIO) || !strings.Contains(err.Error(), "disk on fire") {
		t.Errorf("failing reader: err %v, want ErrIO wrapping the cause", err)
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

// TestTrainNeverSpellsSpecials: a corpus full of "<s>" must not produce a normal
// token named like the special one (tokenizer.json could not tell them apart).
func TestTrainNeverSpellsSpecials(t *testing.T) {
	text := strings.Repeat("<s>hello</s><pad> ", 500)
	tok, err := TrainDocs([][]byte{[]byte(text)}, MinVocabSize+8, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for id := int32(3); id < int32(tok.VocabSize()); id++ {
		switch s := string(tok.TokenBytes(id)); s {
		case BOSToken, EOSToken, PadToken:
			t.Errorf("token %d spells special %q", id, s)
		}
	}
	if _, err := Unmarshal(mustMarshal(t, tok)); err != nil {
		t.Errorf("reload: %v", err)
	}
	// The pre-tokenizer already keeps "<s>" apart; check the guard itself with a
	// special token that a merge could spell.
	c := newWordCounter()
	c.add([]byte(strings.Repeat("ab ", 50) + "cd"))
	tr := newTrainer()
	tr.special["ab"] = true
	tr.loadWords(c)
	for tr.step() {
	}
	for _, tok := range tr.tokens[MinVocabSize:] {
		if string(tok) == "ab" {
			t.Fatal("trainer merged a+b into a token named like a special token")
		}
	}
	if len(tr.tokens) == MinVocabSize {
		t.Fatal("trainer made no merges at all")
	}
}

// TestTrainerPairCounts checks the incremental pair counts against a recount after
// every merge, on a corpus with repeated letters (overlapping pairs like "aaa").
func TestTrainerPairCounts(t *testing.T) {
	c := newWordCounter()
	c.add([]byte(strings.Repeat("aaaa abab aaa baaab xaaaax ababab ", 30) + string(makeCorpus(5_000, 4))))
	tr := newTrainer()
	tr.loadWords(c)
	for step := 0; step < 300 && tr.step(); step++ {
		want := make(map[uint64]int64)
		contains := make(map[uint64]map[int32]bool)
		for w, word := range tr.words {
			for i := 0; i+1 < len(word); i++ {
				p := pairKey(word[i], word[i+1])
				want[p] += tr.counts[w]
				if contains[p] == nil {
					contains[p] = make(map[int32]bool)
				}
				contains[p][int32(w)] = true
			}
		}
		for p, n := range tr.pairs {
			if n != want[p] {
				t.Fatalf("step %d: pair %x counted %d, recount %d", step, p, n, want[p])
			}
		}
		for p, ws := range contains {
			if tr.pairs[p] != want[p] {
				t.Fatalf("step %d: pair %x missing from counts", step, p)
			}
			listed := make(map[int32]bool)
			for _, w := range tr.where[p] {
				listed[w] = true
			}
			for w := range ws {
				if !listed[w] {
					t.Fatalf("step %d: word %d holds pair %x but is not indexed", step, w, p)
				}
			}
		}
	}
}
