package shard

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

func gzipped(t *testing.T, data string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := zw.Write([]byte(data)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// readAll collects the documents under path.
func readAll(t *testing.T, path string, opt ReadOptions) ([]string, ReadReport, error) {
	t.Helper()
	var docs []string
	rep, err := ReadDocuments(context.Background(), path, opt, func(doc []byte) error {
		docs = append(docs, string(doc))
		return nil
	})
	return docs, rep, err
}

// sourceTree writes a directory with every kind of file ReadDocuments handles.
func sourceTree(t *testing.T) string {
	root := t.TempDir()
	files := map[string][]byte{
		"a/1.txt":   []byte("doc one text"),
		"a/b/2.txt": []byte("doc two"),
		"a/b/c.md":  []byte("markdown doc"),
		"c.jsonl": []byte(`{"text":"j1"}` + "\n" +
			"   \n" +
			`{"text": 5}` + "\n" +
			"not json\n" +
			`{"id":1}` + "\n" +
			`{"text":"j2","meta":{"x":[1,2]}}` + "\r\n" +
			`{"text":null}` + "\n" +
			`{"text":"j3 \u00e9"}`),
		"d.jsonl.gz":    gzipped(t, `{"text":"g1"}`+"\n{bad\n"+`{"text":"g2"}`+"\n"),
		"e.txt.gz":      gzipped(t, "gzipped text"),
		"img.png":       []byte("\x89PNG\r\n\x1a\n"),
		"model.tar.gz":  gzipped(t, "tar bytes"),
		"blob.dat":      []byte("abc\x00def"),
		".hidden/x.txt": []byte("hidden"),
		".dot.txt":      []byte("dot"),
		"empty.txt":     nil,
	}
	for name, data := range files {
		writeFile(t, filepath.Join(root, name), data)
	}
	return root
}

func TestReadDocumentsTree(t *testing.T) {
	root := sourceTree(t)
	docs, rep, err := readAll(t, root, ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"doc one text", "doc two", "markdown doc", "j1", "j2", "j3 é", "g1", "g2", "gzipped text", ""}
	if !slices.Equal(docs, want) {
		t.Errorf("documents %q, want %q", docs, want)
	}
	var bytes int64
	for _, d := range want {
		bytes += int64(len(d))
	}
	if rep.Files != 7 || rep.Docs != 10 || rep.Bytes != bytes || rep.BlankLines != 1 || rep.BadLines != 5 || rep.SkippedFiles != 3 {
		t.Errorf("report %+v", rep)
	}
	c, d := filepath.Join(root, "c.jsonl"), filepath.Join(root, "d.jsonl.gz")
	wantBad := []string{c + ":3: ", c + ":4: invalid JSON", c + ":5: no \"text\" field", c + ":7: ", d + ":2: invalid JSON"}
	if len(rep.BadLineSamples) != len(wantBad) {
		t.Fatalf("bad lines %v, want %d", rep.BadLineSamples, len(wantBad))
	}
	for i, b := range rep.BadLineSamples {
		if !strings.HasPrefix(b.String(), wantBad[i]) {
			t.Errorf("bad line %d is %q, want it to start with %q", i, b, wantBad[i])
		}
	}
	if !strings.Contains(rep.BadLineSamples[0].Reason, "not a string") {
		t.Errorf("bad line reason %q", rep.BadLineSamples[0].Reason)
	}
	var skipped []string
	for _, s := range rep.Skipped {
		skipped = append(skipped, filepath.Base(s.File))
	}
	if !slices.Equal(skipped, []string{"blob.dat", "img.png", "model.tar.gz"}) {
		t.Errorf("skipped %v", rep.Skipped)
	}
}

func TestReadDocumentsSingleFile(t *testing.T) {
	root := sourceTree(t)
	for _, tc := range []struct {
		name string
		want []string
	}{
		{"c.jsonl", []string{"j1", "j2", "j3 é"}},
		{"d.jsonl.gz", []string{"g1", "g2"}},
		{"e.txt.gz", []string{"gzipped text"}},
		{"a/1.txt", []string{"doc one text"}},
		{"img.png", nil},
	} {
		docs, _, err := readAll(t, filepath.Join(root, tc.name), ReadOptions{})
		if err != nil || !slices.Equal(docs, tc.want) {
			t.Errorf("%s: %q, %v; want %q", tc.name, docs, err, tc.want)
		}
	}
}

func TestReadDocumentsErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope")
	_, _, err := readAll(t, missing, ReadOptions{})
	wantErr(t, err, nil, missing)

	corrupt := filepath.Join(dir, "bad", "x.txt.gz")
	writeFile(t, corrupt, []byte("not gzip at all"))
	_, _, err = readAll(t, filepath.Dir(corrupt), ReadOptions{})
	wantErr(t, err, nil, corrupt, "gzip")

	cut := filepath.Join(dir, "cut", "y.jsonl.gz")
	full := gzipped(t, strings.Repeat(`{"text":"some text"}`+"\n", 1000))
	writeFile(t, cut, full[:len(full)/2])
	_, _, err = readAll(t, filepath.Dir(cut), ReadOptions{})
	wantErr(t, err, nil, cut)

	stop := errors.New("stop")
	_, err = ReadDocuments(context.Background(), sourceTree(t), ReadOptions{}, func([]byte) error { return stop })
	if !errors.Is(err, stop) {
		t.Errorf("error from fn: got %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = ReadDocuments(ctx, sourceTree(t), ReadOptions{}, func([]byte) error { return nil })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("canceled context: got %v", err)
	}
}

func TestLargeTextSplits(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		text  string
		limit int
		want  []string
	}{
		{"para one\n\npara two\n\nthree", 12, []string{"para one\n\n", "para two\n\n", "three"}},
		{"exactly twelve", 14, []string{"exactly twelve"}},
		{"abcdefghij", 4, []string{"abcd", "efgh", "ij"}},
		{"line a\nline b\nline c", 10, []string{"line a\n", "line b\n", "line c"}},
		{"日本語日本語", 7, []string{"日本", "語日", "本語"}},
		{"abcd", 2, []string{"ab", "cd"}},
	}
	for i, tc := range cases {
		path := filepath.Join(dir, string(rune('a'+i))+".txt")
		writeFile(t, path, []byte(tc.text))
		docs, rep, err := readAll(t, path, ReadOptions{MaxDocBytes: tc.limit})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(docs, tc.want) {
			t.Errorf("%q split at %d: %q, want %q", tc.text, tc.limit, docs, tc.want)
		}
		if strings.Join(docs, "") != tc.text || rep.Files != 1 {
			t.Errorf("%q: pieces do not add up, or files %d", tc.text, rep.Files)
		}
	}
	// A long mixed text: every piece fits, is valid UTF-8, and nothing is lost.
	var b strings.Builder
	for i := range 2000 {
		b.WriteString(strings.Repeat("word ", i%17) + "ü✓")
		if i%7 == 0 {
			b.WriteString("\n\n")
		} else if i%3 == 0 {
			b.WriteString("\n")
		}
	}
	path := filepath.Join(dir, "long.txt")
	writeFile(t, path, []byte(b.String()))
	docs, _, err := readAll(t, path, ReadOptions{MaxDocBytes: 100})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		if len(d) > 100 || len(d) == 0 || !utf8.ValidString(d) {
			t.Fatalf("piece of %d bytes, valid UTF-8 %v", len(d), utf8.ValidString(d))
		}
	}
	if strings.Join(docs, "") != b.String() {
		t.Error("pieces of the long text do not add up to it")
	}
}
