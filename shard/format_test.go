package shard

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// writeTokens writes a shard file and returns its path.
func writeTokens(t *testing.T, dir, name string, vocab int, hash string, toks []int32) string {
	t.Helper()
	path := filepath.Join(dir, name)
	w, err := Create(path, vocab, hash)
	if err != nil {
		t.Fatal(err)
	}
	for len(toks) > 0 { // several Write calls of uneven size
		n := min(len(toks), 1+len(toks)/3)
		if err := w.Write(toks[:n]); err != nil {
			t.Fatal(err)
		}
		toks = toks[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func randomTokens(rng *rand.Rand, n, vocab int) []int32 {
	toks := make([]int32, n)
	for i := range toks {
		toks[i] = int32(rng.IntN(vocab))
	}
	toks[0], toks[n-1] = 0, int32(vocab-1) // both ends of the range
	return toks
}

func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		vocab, width int
	}{{257, 2}, {65536, 2}, {65537, 4}, {128256, 4}} {
		dir := t.TempDir()
		want := randomTokens(rng, 300_001, tc.vocab)
		path := writeTokens(t, dir, "a.tok", tc.vocab, "h1", want)
		if got := listFiles(t, dir); !slices.Equal(got, []string{"a.tok"}) {
			t.Errorf("vocab %d: directory holds %v, want only a.tok", tc.vocab, got)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if size := int64(HeaderSize + len(want)*tc.width); fi.Size() != size {
			t.Errorf("vocab %d: file size %d, want %d", tc.vocab, fi.Size(), size)
		}
		r, err := Open(path, OpenOptions{Hash: "h1"})
		if err != nil {
			t.Fatal(err)
		}
		h := r.Header()
		if h.Width != tc.width || h.Count != int64(len(want)) || h.VocabSize != tc.vocab || h.Hash != "h1" || h.Version != FormatVersion {
			t.Errorf("vocab %d: header %+v", tc.vocab, h)
		}
		got, err := r.ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("vocab %d: ReadAll differs from what was written", tc.vocab)
		}
		win := make([]int32, 1000)
		for _, off := range []int64{0, 12345, int64(len(want) - len(win))} {
			if err := r.ReadTokens(win, off); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(win, want[off:off+int64(len(win))]) {
				t.Errorf("vocab %d: ReadTokens at %d differs", tc.vocab, off)
			}
		}
		if err := r.ReadTokens(win, int64(len(want)-len(win)+1)); err == nil {
			t.Errorf("vocab %d: ReadTokens past the end succeeded", tc.vocab)
		}
		r.Close()
	}
}

func TestEmptyFile(t *testing.T) {
	path := writeTokens(t, t.TempDir(), "e.tok", 257, "h", nil)
	toks, h, err := ReadFile(path, OpenOptions{})
	if err != nil || len(toks) != 0 || h.Count != 0 {
		t.Fatalf("ReadFile = %v, %+v, %v; want no tokens", toks, h, err)
	}
}

// resum recomputes the header checksum after a test edits the header.
func resum(b []byte) {
	binary.LittleEndian.PutUint32(b[offHeadCRC:], crc32.Checksum(b[:offHeadCRC], castagnoli))
}

func TestReaderErrors(t *testing.T) {
	dir := t.TempDir()
	good, err := os.ReadFile(writeTokens(t, dir, "good.tok", 300, "tok-a", []int32{1, 2, 299, 3, 4, 5}))
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	cases := []struct {
		name  string
		data  []byte
		opt   OpenOptions
		errs  []error
		onAll bool // the error shows only when the tokens are read
	}{
		{"short", good[:5], OpenOptions{}, []error{ErrTruncated}, false},
		{"header cut", good[:100], OpenOptions{}, []error{ErrTruncated}, false},
		{"tokens cut", good[:len(good)-3], OpenOptions{}, []error{ErrSizeMismatch, ErrTruncated}, false},
		{"magic", edit(func(b []byte) []byte { b[1] = 'X'; return b }), OpenOptions{}, []error{ErrMagic}, false},
		{"text file", []byte("hello world, this is not a shard"), OpenOptions{}, []error{ErrMagic}, false},
		{"version", edit(func(b []byte) []byte { b[offVersion] = 2; return b }), OpenOptions{}, []error{ErrVersion}, false},
		{"header checksum", edit(func(b []byte) []byte { b[offHash] ^= 1; return b }), OpenOptions{}, []error{ErrHeaderChecksum}, false},
		{"width", edit(func(b []byte) []byte { b[offWidth] = 3; resum(b); return b }), OpenOptions{}, []error{ErrHeader}, false},
		{"vocab zero", edit(func(b []byte) []byte { clear(b[offVocab : offVocab+4]); resum(b); return b }), OpenOptions{}, []error{ErrHeader}, false},
		{"vocab too wide", edit(func(b []byte) []byte { b[offVocab+2] = 2; resum(b); return b }), OpenOptions{}, []error{ErrHeader}, false},
		{"hash length zero", edit(func(b []byte) []byte { b[offHashLen] = 0; resum(b); return b }), OpenOptions{}, []error{ErrHeader}, false},
		{"hash length long", edit(func(b []byte) []byte { b[offHashLen] = MaxHashLen + 1; resum(b); return b }), OpenOptions{}, []error{ErrHeader}, false},
		{"count huge", edit(func(b []byte) []byte { b[offCount+7] = 0x80; resum(b); return b }), OpenOptions{}, []error{ErrHeader}, false},
		{"hash mismatch", good, OpenOptions{Hash: "tok-b"}, []error{ErrTokenizerMismatch}, false},
		{"extra bytes", append(bytes.Clone(good), 0, 0), OpenOptions{}, []error{ErrSizeMismatch}, false},
		{"odd byte", append(bytes.Clone(good), 0), OpenOptions{}, []error{ErrSizeMismatch}, false},
		{"count too large", edit(func(b []byte) []byte { b[offCount]++; resum(b); return b }), OpenOptions{}, []error{ErrSizeMismatch, ErrTruncated}, false},
		{"out of vocab", good, OpenOptions{VocabSize: 257}, []error{ErrOutOfVocab}, true},
		{"data checksum", edit(func(b []byte) []byte { b[HeaderSize] ^= 1; return b }), OpenOptions{}, []error{ErrDataChecksum}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), tc.name+".tok")
			writeFile(t, path, tc.data)
			r, err := Open(path, tc.opt)
			if tc.onAll {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				defer r.Close()
				_, err = r.ReadAll()
			} else if err == nil {
				r.Close()
			}
			wantErr(t, err, tc.errs, path)
		})
	}
}

func TestReadTokensOutOfVocab(t *testing.T) {
	path := writeTokens(t, t.TempDir(), "v.tok", 300, "h", []int32{1, 2, 299, 3})
	r, err := Open(path, OpenOptions{VocabSize: 257})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	win := make([]int32, 2)
	if err := r.ReadTokens(win, 0); err != nil {
		t.Errorf("window before the bad id: %v", err)
	}
	wantErr(t, r.ReadTokens(win, 1), []error{ErrOutOfVocab}, path, "299", "position 2")
}

func TestWriterErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "w.tok")
	w, err := Create(path, 257, "h")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write([]int32{1, 2}); err != nil {
		t.Fatal(err)
	}
	wantErr(t, w.Write([]int32{3, 257}), []error{ErrOutOfVocab}, path, "position 3")
	wantErr(t, w.Write([]int32{-1}), []error{ErrOutOfVocab}, path)
	if w.Len() != 2 {
		t.Errorf("Len after rejected writes = %d, want 2", w.Len())
	}
	w.Abort()
	if got := listFiles(t, dir); len(got) != 0 {
		t.Errorf("Abort left %v", got)
	}
	for _, tc := range []struct {
		vocab int
		hash  string
	}{{0, "h"}, {MaxVocab + 1, "h"}, {257, ""}, {257, string(make([]byte, MaxHashLen+1))}} {
		if _, err := Create(path, tc.vocab, tc.hash); err == nil {
			t.Errorf("Create(vocab %d, hash of %d bytes) succeeded", tc.vocab, len(tc.hash))
		}
	}
}

func FuzzReader(f *testing.F) {
	dir := f.TempDir()
	for i, vocab := range []int{257, 70000} {
		b, err := os.ReadFile(writeTokensF(f, dir, vocab, []int32{0, 1, 2, int32(vocab - 1), 256}))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:HeaderSize+i])
	}
	f.Add([]byte("\x93HERDTOK"))
	f.Fuzz(func(t *testing.T, b []byte) {
		readFuzz(t, b)
		if len(b) >= HeaderSize { // again with a valid header checksum, to reach the field checks
			b = bytes.Clone(b)
			resum(b)
			readFuzz(t, b)
		}
	})
}

// readFuzz reads b as a shard file; it may fail but must not panic or lie.
func readFuzz(t *testing.T, b []byte) {
	r, err := NewReader(bytes.NewReader(b), int64(len(b)), "fuzz", OpenOptions{VocabSize: 300})
	if err != nil {
		return
	}
	if want := HeaderSize + r.Len()*int64(r.Header().Width); want != int64(len(b)) {
		t.Fatalf("accepted %d bytes for %d tokens of width %d", len(b), r.Len(), r.Header().Width)
	}
	toks, err := r.ReadAll()
	if err == nil && int64(len(toks)) != r.Len() {
		t.Fatalf("ReadAll returned %d tokens, header says %d", len(toks), r.Len())
	}
	if r.Len() > 0 {
		win := make([]int32, min(r.Len(), 4))
		_ = r.ReadTokens(win, r.Len()-int64(len(win)))
	}
}

func writeTokensF(f *testing.F, dir string, vocab int, toks []int32) string {
	path := filepath.Join(dir, "seed.tok")
	w, err := Create(path, vocab, "fuzz-seed")
	if err != nil {
		f.Fatal(err)
	}
	if err := w.Write(toks); err != nil {
		f.Fatal(err)
	}
	if err := w.Close(); err != nil {
		f.Fatal(err)
	}
	return path
}
