package tokenizer

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"unicode/utf8"
)

func TestRoundTripRandom(t *testing.T) {
	tok := smallTokenizer(t)
	rng := rand.New(rand.NewPCG(1, 2))
	gens := []func(n int) []byte{
		func(n int) []byte { // arbitrary bytes, mostly invalid UTF-8
			b := make([]byte, n)
			for i := range b {
				b[i] = byte(rng.UintN(256))
			}
			return b
		},
		func(n int) []byte { // random code points
			var b []byte
			for len(b) < n {
				r := rune(rng.IntN(0x30000))
				if rng.IntN(4) == 0 {
					r = rune(rng.IntN(0x250))
				}
				b = utf8.AppendRune(b, r)
			}
			return b
		},
		func(n int) []byte { return randomText(rng, n) },
		func(n int) []byte { return makeCorpus(n, rng.Uint64()) },
		func(n int) []byte { // whitespace runs, digits and apostrophes
			atoms := []string{" ", "  ", "\n", "\t", "\r\n", "0", "12", "'", "'s", "''", "a"}
			var b []byte
			for len(b) < n {
				b = append(b, atoms[rng.IntN(len(atoms))]...)
			}
			return b
		},
	}
	for i := 0; i < 3000; i++ {
		s := gens[i%len(gens)](rng.IntN(300))
		ids := tok.Encode(s)
		if got := tok.Decode(ids); !bytes.Equal(got, s) {
			t.Fatalf("Decode(Encode(%q)) = %q", s, got)
		}
		for _, id := range ids {
			if tok.IsSpecial(id) || id < 0 || int(id) >= tok.VocabSize() {
				t.Fatalf("Encode(%q) produced id %d", s, id)
			}
		}
	}
}

// refBPE is the textbook algorithm: merge the lowest-rank adjacent pair, leftmost
// first, until none is left.
func refBPE(tok *Tokenizer, w []byte) []int32 {
	var syms []int32
	for _, b := range w {
		syms = append(syms, tok.byteID[b])
	}
	for {
		best, bestRank := -1, noRank
		for i := 0; i+1 < len(syms); i++ {
			if m, ok := tok.ranks[pairKey(syms[i], syms[i+1])]; ok && m.rank < bestRank {
				best, bestRank = i, m.rank
			}
		}
		if best < 0 {
			return syms
		}
		syms[best] = tok.ranks[pairKey(syms[best], syms[best+1])].result
		syms = slices.Delete(syms, best+1, best+2)
	}
}

func TestBPEMatchesReference(t *testing.T) {
	tok := smallTokenizer(t)
	e := newEncoder(tok).(*encoder)
	rng := rand.New(rand.NewPCG(3, 4))
	corpus := makeCorpus(50_000, 9)
	for i := 0; i < 5000; i++ {
		var w []byte
		if i%2 == 0 { // real words, concatenated to make long ones
			for len(w) < rng.IntN(120) {
				start := rng.IntN(len(corpus))
				w = append(w, corpus[start:min(len(corpus), start+rng.IntN(30))]...)
			}
		} else {
			w = randomText(rng, rng.IntN(120))
		}
		if len(w) == 0 {
			continue
		}
		want := refBPE(tok, w)
		if got := e.bpe(nil, w); !slices.Equal(got, want) {
			t.Fatalf("bpe(%q) = %v, want %v", w, got, want)
		}
		var syms []int32
		for _, b := range w {
			syms = append(syms, tok.byteID[b])
		}
		if got := e.mergeHeap(nil, syms); !slices.Equal(got, want) {
			t.Fatalf("mergeHeap(%q) = %v, want %v", w, got, want)
		}
	}
}

func TestEncodeWordsThroughCache(t *testing.T) {
	tok := smallTokenizer(t)
	text := makeCorpus(100_000, 11)
	first := tok.Encode(text)
	second := tok.EncodeTo([]int32{7}, text) // cache now warm; appends to dst
	if second[0] != 7 || !slices.Equal(second[1:], first) {
		t.Fatal("EncodeTo with a warm cache differs from Encode")
	}
	var want []int32
	splitWords(text, func(w []byte) { want = append(want, refBPE(tok, w)...) })
	if !slices.Equal(first, want) {
		t.Fatal("Encode differs from per-word reference BPE")
	}
}

func TestEncodeConcurrent(t *testing.T) {
	tok := smallTokenizer(t)
	text := makeCorpus(20_000, 12)
	want := tok.Encode(text)
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				if !slices.Equal(tok.Encode(text), want) {
					errs <- "concurrent Encode differs"
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
}

func TestDecodeSpecialsAndBadIDs(t *testing.T) {
	tok := smallTokenizer(t)
	hi := tok.Encode([]byte("hi"))
	ids := append(append([]int32{tok.BOS()}, hi...), tok.EOS(), tok.PAD())
	if got := string(tok.Decode(ids)); got != "hi" {
		t.Errorf("Decode with specials = %q, want %q", got, "hi")
	}
	if got := string(tok.Decode([]int32{-1, int32(tok.VocabSize())})); got != "\uFFFD\uFFFD" {
		t.Errorf("Decode of ids out of range = %q, want two U+FFFD", got)
	}
	// The content of a special token is plain text to Encode.
	ids = tok.Encode([]byte("<s>x</s><pad>"))
	for _, id := range ids {
		if tok.IsSpecial(id) {
			t.Fatalf("Encode of special token text gave special id %d", id)
		}
	}
	if got := string(tok.Decode(ids)); got != "<s>x</s><pad>" {
		t.Errorf("round trip of special token text = %q", got)
	}
}

func TestTokenNames(t *testing.T) {
	tok := smallTokenizer(t)
	for id, want := range map[int32]string{0: "<pad>", 1: "<s>", 2: "</s>", 3: "!", 4: "\"",
		190: "ÿ", 191: "Ā", 223: "Ġ", 258: "Ń"} {
		if got := tok.TokenString(id); got != want {
			t.Errorf("TokenString(%d) = %q, want %q", id, got, want)
		}
	}
	if got := tok.TokenBytes(223); string(got) != " " {
		t.Errorf("TokenBytes(223) = %q, want a space", got)
	}
	if got := tok.TokenBytes(191); string(got) != "\x00" {
		t.Errorf("TokenBytes(191) = %q, want NUL", got)
	}
	if tok.TokenString(-1) != "" || tok.TokenBytes(int32(tok.VocabSize())) != nil {
		t.Error("out-of-range ids should give empty names")
	}
}
