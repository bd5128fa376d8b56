package tokenizer

import (
	"bytes"
	"math/rand/v2"
	"reflect"
	"testing"
	"unicode"
	"unicode/utf8"
)

func split(s string) []string {
	var out []string
	splitWords([]byte(s), func(w []byte) { out = append(out, string(w)) })
	return out
}

// TestSplitByHand checks pieces written out by hand from the GPT-2 regex.
func TestSplitByHand(t *testing.T) {
	cases := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"Hello world", []string{"Hello", " world"}},
		{"a   b", []string{"a", "  ", " b"}},
		{"a\n\nb", []string{"a", "\n", "\n", "b"}},
		{"a \n b", []string{"a", " \n", " b"}},
		{"x  \n", []string{"x", "  \n"}},
		{"trailing   ", []string{"trailing", "   "}},
		{"  leading", []string{" ", " leading"}},
		{"   ", []string{"   "}},
		{" ", []string{" "}},
		{"\tx", []string{"\t", "x"}},
		{" \tx", []string{" ", "\t", "x"}},
		{"don't", []string{"don", "'t"}},
		{"I'm we're they've she'll he'd it's", []string{"I", "'m", " we", "'re", " they", "'ve",
			" she", "'ll", " he", "'d", " it", "'s"}},
		{"DON'T", []string{"DON", "'", "T"}},
		{"'s", []string{"'s"}},
		{"''s", []string{"''", "s"}},
		{"'l", []string{"'", "l"}},
		{"x 'quoted'", []string{"x", " '", "quoted", "'"}},
		{"abc123def", []string{"abc", "123", "def"}},
		{" 123 4", []string{" 123", " 4"}},
		{"$100.50", []string{"$", "100", ".", "50"}},
		{"hello!!! world", []string{"hello", "!!!", " world"}},
		{"x:=y", []string{"x", ":=", "y"}},
		{"naïve café", []string{"naïve", " café"}},
		{"日本語のテキスト", []string{"日本語のテキスト"}},
		{"٣٤ Ⅻ", []string{"٣٤", " Ⅻ"}},
		{"a\u00a0b", []string{"a", "\u00a0", "b"}},
		{"a\u3000\u3000b", []string{"a", "\u3000", "\u3000", "b"}},
		{"😀😀 ok", []string{"😀😀", " ok"}},
		{"x\xff\xfey", []string{"x", "\xff\xfe", "y"}},
		{"e\u0301t", []string{"e", "\u0301", "t"}},
		{"a\r\n\r\nb", []string{"a", "\r\n\r", "\n", "b"}},
	}
	for _, c := range cases {
		if got := split(c.in); !reflect.DeepEqual(got, c.want) {
			t.Errorf("split(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// refSplit applies the regex alternation literally, rune by rune, trying each
// alternative in order and backtracking \s+(?!\S) from the longest run.
func refSplit(s string) []string {
	type ru struct {
		r          rune
		start, end int
	}
	var rs []ru
	for i := 0; i < len(s); {
		r, w := utf8.DecodeRuneInString(s[i:])
		rs = append(rs, ru{r, i, i + w})
		i += w
	}
	isS := func(r rune) bool { return unicode.IsSpace(r) }
	isL := func(r rune) bool { return unicode.IsLetter(r) }
	isN := func(r rune) bool { return unicode.IsNumber(r) }
	isO := func(r rune) bool { return !isS(r) && !isL(r) && !isN(r) }
	n := len(rs)
	// run matches ` ?class+` at p and returns the end rune index, or -1.
	run := func(p int, in func(rune) bool) int {
		q := p
		if rs[q].r == ' ' && q+1 < n && in(rs[q+1].r) {
			q++
		}
		if !in(rs[q].r) {
			return -1
		}
		for q < n && in(rs[q].r) {
			q++
		}
		return q
	}
	var out []string
	for p := 0; p < n; {
		end := -1
		for _, c := range []string{"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"} {
			cr := []rune(c)
			if p+len(cr) <= n {
				ok := true
				for k, r := range cr {
					ok = ok && rs[p+k].r == r && rs[p+k].end-rs[p+k].start == utf8.RuneLen(r)
				}
				if ok {
					end = p + len(cr)
					break
				}
			}
		}
		for _, class := range []func(rune) bool{isL, isN, isO} {
			if end < 0 {
				end = run(p, class)
			}
		}
		if end < 0 { // \s+(?!\S), then \s+
			m := p
			for m < n && isS(rs[m].r) {
				m++
			}
			for k := m; k > p; k-- {
				if k == n || isS(rs[k].r) {
					end = k
					break
				}
			}
			if end < 0 {
				end = m
			}
		}
		out = append(out, s[rs[p].start:rs[end-1].end])
		p = end
	}
	return out
}

// randomText draws strings rich in the cases the regex distinguishes.
func randomText(rng *rand.Rand, n int) []byte {
	atoms := []string{" ", " ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u2028",
		"a", "Z", "é", "ß", "日本", "Ω", "1", "42", "٣", "Ⅻ", "½", "'", "'s", "'t", "'re",
		"'ve", "'m", "'ll", "'d", "'S", "'L", "!", ".", "$", "😀", "\u0301", "\xff", "\xc3",
		"\xe2\x80", "\x00", "\x7f", "\ufffd", "-", "_"}
	var b []byte
	for len(b) < n {
		if rng.IntN(10) == 0 {
			b = append(b, byte(rng.UintN(256)))
		} else {
			b = append(b, atoms[rng.IntN(len(atoms))]...)
		}
	}
	return b
}

func TestSplitMatchesRegexReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for i := 0; i < 20000; i++ {
		s := string(randomText(rng, rng.IntN(40)))
		got, want := split(s), refSplit(s)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("split(%q) = %q, reference gives %q", s, got, want)
		}
	}
}

// TestSafeCut checks that splitting at a safe cut gives the same pieces as the whole.
func TestSafeCut(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	for i := 0; i < 5000; i++ {
		s := randomText(rng, rng.IntN(60))
		prefix := s[:rng.IntN(len(s)+1)]
		cut := safeCut(prefix)
		if cut == 0 {
			continue
		}
		whole := split(string(s))
		parts := append(split(string(s[:cut])), split(string(s[cut:]))...)
		if !reflect.DeepEqual(whole, parts) {
			t.Fatalf("cut %d of %q: pieces %q, whole text gives %q", cut, s, parts, whole)
		}
	}
}

// TestAddReaderChunks checks that counting a stream in small chunks counts the same
// words as counting it whole.
func TestAddReaderChunks(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	text := append(makeCorpus(20_000, 3), randomText(rng, 20_000)...)
	whole := newWordCounter()
	whole.add(text)
	for _, chunk := range []int{1, 7, 64, 1000} {
		c := newWordCounter()
		if err := c.addReader(bytes.NewReader(text), chunk); err != nil {
			t.Fatal(err)
		}
		if len(c.words) != len(whole.words) {
			t.Fatalf("chunk %d: %d distinct words, want %d", chunk, len(c.words), len(whole.words))
		}
		for i, w := range whole.words {
			if k, ok := c.index[w]; !ok || c.counts[k] != whole.counts[i] {
				t.Fatalf("chunk %d: word %q counted %d, want %d", chunk, w, c.counts[k], whole.counts[i])
			}
		}
	}
}
