package shard

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// byteEncoder is the test tokenizer: token ids are the bytes, EOS is 256.
type byteEncoder struct{}

var _ Encoder = byteEncoder{}

func (byteEncoder) Encode(b []byte) []int32 {
	out := make([]int32, len(b))
	for i, c := range b {
		out[i] = int32(c)
	}
	return out
}
func (byteEncoder) EOS() int32     { return 256 }
func (byteEncoder) VocabSize() int { return 257 }
func (byteEncoder) Hash() string   { return "bytes-v1" }

// wantErr fails t unless err matches every sentinel and mentions every fragment.
func wantErr(t *testing.T, err error, sentinels []error, fragments ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v", sentinels)
	}
	for _, s := range sentinels {
		if !errors.Is(err, s) {
			t.Errorf("error %q does not match %v", err, s)
		}
	}
	for _, f := range fragments {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error %q does not mention %q", err, f)
		}
	}
}

// writeFile creates path (and its directories) holding data.
func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// listFiles returns the paths of all files under dir, relative to it.
func listFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
