package tokenizer

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// corpusWords feeds synthetic text: a Zipf-like mix of English, code, numbers,
// punctuation, non-Latin scripts and whitespace runs.
var corpusWords = strings.Fields(`the of and to in is that for it as with was on be by
	at this are from or have an they which one you were her all she there would their we him
	been has when who will more no if out so said what up its about into than them can only
	other new some could time these two may then do first any my now such like our over man
	me even most made after also did many before must through back years where much your way
	well down should because each just those people func return error nil struct interface
	package import string int32 byte slice range append len make type var const go defer
	naïve café résumé Straße Ελληνικά русский 日本語 中文 한국어 العربية हिन्दी`)

var corpusPunct = []string{".", ",", "!", "?", ";", ":", "'s", "'t", "'re", "'ll", "(", ")",
	"{", "}", "[", "]", "\"", "-", "--", "...", "==", "!=", ":=", "//", "😀"}

// makeCorpus returns about n bytes of synthetic text, the same for the same seed.
func makeCorpus(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	var b bytes.Buffer
	for b.Len() < n {
		switch r := rng.IntN(100); {
		case r < 70:
			// Zipf-like: low indices much more frequent.
			i := int(float64(len(corpusWords)) * rng.Float64() * rng.Float64() * rng.Float64())
			if rng.IntN(8) > 0 {
				b.WriteByte(' ')
			}
			w := corpusWords[i]
			if rng.IntN(20) == 0 {
				w = strings.ToUpper(w[:1]) + w[1:]
			}
			b.WriteString(w)
		case r < 82:
			b.WriteString(corpusPunct[rng.IntN(len(corpusPunct))])
		case r < 88:
			b.WriteString(" " + strings.Repeat("7", 1+rng.IntN(4)) + "0")
		case r < 94:
			b.WriteString("\n")
		case r < 97:
			b.WriteString("\n\t" + strings.Repeat(" ", rng.IntN(6)))
		default:
			b.WriteString(strings.Repeat(" ", 1+rng.IntN(8)))
		}
	}
	return b.Bytes()
}

var (
	smallOnce sync.Once
	smallTok  *Tokenizer
	smallErr  error
)

// smallTokenizer is a 1000-token tokenizer trained on 300 KB of synthetic text,
// shared by tests that only need some tokenizer.
func smallTokenizer(tb testing.TB) *Tokenizer {
	tb.Helper()
	smallOnce.Do(func() {
		smallTok, smallErr = TrainDocs([][]byte{makeCorpus(300_000, 1)}, 1000, Options{})
	})
	if smallErr != nil {
		tb.Fatal(smallErr)
	}
	return smallTok
}

// gorootText returns up to n bytes of real text from the Go distribution: the
// Opticks in src/testdata when present, then .go files of a few std packages.
// It skips the test when GOROOT cannot be found.
func gorootText(tb testing.TB, n int) []byte {
	tb.Helper()
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		tb.Skipf("go env GOROOT: %v", err)
	}
	src := filepath.Join(strings.TrimSpace(string(out)), "src")
	var buf bytes.Buffer
	if txts, _ := filepath.Glob(filepath.Join(src, "testdata", "*.txt")); len(txts) > 0 {
		for _, f := range txts {
			if data, err := os.ReadFile(f); err == nil {
				buf.Write(data)
			}
		}
	}
	for _, dir := range []string{"net/http", "runtime", "go", "cmd/compile", "crypto", "encoding", "fmt", "strings"} {
		filepath.WalkDir(filepath.Join(src, dir), func(path string, d os.DirEntry, err error) error {
			if err != nil || buf.Len() >= n {
				return filepath.SkipDir
			}
			if !d.IsDir() && strings.HasSuffix(path, ".go") {
				if data, err := os.ReadFile(path); err == nil {
					buf.Write(data)
				}
			}
			return nil
		})
		if buf.Len() >= n {
			break
		}
	}
	if buf.Len() == 0 {
		tb.Skip("no text found under GOROOT")
	}
	if buf.Len() > n {
		buf.Truncate(n)
	}
	return buf.Bytes()
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
