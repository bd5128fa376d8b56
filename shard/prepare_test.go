package shard

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// corpus is a generated set of sources with the documents Prepare must keep.
type corpus struct {
	specs []SourceSpec
	kept  map[string][]string // per source, the kept documents in reading order
	want  map[string]FilterReport
	bad   map[string]int64 // bad JSONL lines per source
}

func doc(source string, i int) string {
	return fmt.Sprintf("%s document %04d: %s", source, i, strings.Repeat("lorem ipsum ", 3+i%11))
}

func makeCorpus(t *testing.T) corpus {
	t.Helper()
	root := t.TempDir()
	c := corpus{kept: map[string][]string{}, want: map[string]FilterReport{}, bad: map[string]int64{}}
	add := func(src, d string, v Verdict) {
		r := c.want[src]
		r.Add(v, len(d))
		c.want[src] = r
		if v == Keep {
			c.kept[src] = append(c.kept[src], d)
		}
	}

	// web: a directory of text files with duplicates, short and non-text ones.
	web := filepath.Join(root, "web")
	for i := range 40 {
		d := doc("web", i)
		writeFile(t, filepath.Join(web, fmt.Sprintf("p%02d/%03d.txt", i%4, i)), []byte(d))
	}
	// Reading order is lexical: p00/000, p00/004, ..., p01/001, ...
	for dir := range 4 {
		for i := dir; i < 40; i += 4 {
			add("web", doc("web", i), Keep)
		}
	}
	writeFile(t, filepath.Join(web, "z1.txt"), []byte(doc("web", 5)))
	add("web", doc("web", 5), Duplicate)
	writeFile(t, filepath.Join(web, "z2.txt"), []byte("hi"))
	add("web", "hi", TooShort)
	noise := strings.Repeat("\x01\x02\x03 text ", 10)
	writeFile(t, filepath.Join(web, "z3.txt"), []byte(noise))
	add("web", noise, NonText)
	writeFile(t, filepath.Join(web, "z4.bin"), []byte("weights"))

	// wiki: JSONL, gzipped, with bad lines and a copy of a web document.
	var lines []string
	for i := range 30 {
		lines = append(lines, fmt.Sprintf(`{"text":%q}`, doc("wiki", i)))
		add("wiki", doc("wiki", i), Keep)
		if i == 10 {
			lines = append(lines, `{"text":`+fmt.Sprintf("%q", doc("web", 7))+`}`, "{oops", `{"title":"no text"}`)
			add("wiki", doc("web", 7), Duplicate)
		}
	}
	lines = append(lines, fmt.Sprintf(`{"text":%q}`, doc("wiki", 3)))
	add("wiki", doc("wiki", 3), Duplicate)
	c.bad["wiki"] = 2
	writeFile(t, filepath.Join(root, "wiki.jsonl.gz"), gzipped(t, strings.Join(lines, "\n")+"\n"))

	// books: one large text file, cut into pieces at blank lines.
	var book strings.Builder
	for i := range 60 {
		fmt.Fprintf(&book, "Chapter %d. %s\n\n", i, strings.Repeat("It was a dark night. ", 1+i%9))
	}
	writeFile(t, filepath.Join(root, "books.txt"), []byte(book.String()))
	text := book.String()
	for len(text) > 0 {
		cut := len(text)
		if cut > testMaxDocBytes {
			cut = cutPoint([]byte(text), testMaxDocBytes)
		}
		add("books", text[:cut], Keep)
		text = text[cut:]
	}

	// one: a single document, so nothing is held out.
	writeFile(t, filepath.Join(root, "one.txt"), []byte(doc("one", 0)))
	add("one", doc("one", 0), Keep)

	c.specs = []SourceSpec{
		{Name: "web", Path: web, Weight: 0.6},
		{Name: "wiki", Path: filepath.Join(root, "wiki.jsonl.gz"), Weight: 0.25},
		{Name: "books", Path: filepath.Join(root, "books.txt"), Weight: 0.1},
		{Name: "one", Path: filepath.Join(root, "one.txt"), Weight: 0.05},
	}
	return c
}

const testMaxDocBytes = 1024

func testConfig(c corpus, out string) PrepareConfig {
	cfg := DefaultPrepareConfig()
	cfg.Sources = c.specs
	cfg.Out = out
	cfg.Encoder = byteEncoder{}
	cfg.HeldOutFraction = 0.1
	cfg.MaxShardTokens = 500
	cfg.Filter = Filter{MinBytes: 32, MaxNonText: 0.1}
	cfg.MaxDocBytes = testMaxDocBytes
	cfg.Workers = 3
	return cfg
}

// splitDocs cuts a byte-level token stream at EOS into documents.
func splitDocs(t *testing.T, toks []int32) []string {
	t.Helper()
	var docs []string
	var cur []byte
	for _, tok := range toks {
		if tok == 256 {
			docs = append(docs, string(cur))
			cur = nil
			continue
		}
		cur = append(cur, byte(tok))
	}
	if len(cur) > 0 {
		t.Fatalf("stream does not end with EOS")
	}
	return docs
}

func TestPrepare(t *testing.T) {
	c := makeCorpus(t)
	out := filepath.Join(t.TempDir(), "ds")
	cfg := testConfig(c, out)
	var events []ProgressEvent
	cfg.Progress = func(e ProgressEvent) { events = append(events, e) }
	m, err := Prepare(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadManifest(out)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(loaded, m) {
		t.Errorf("loaded manifest differs from the one Prepare returned:\n%+v\n%+v", loaded, m)
	}
	if m.TokenizerHash != "bytes-v1" || m.VocabSize != 257 || m.EOS != 256 || len(m.Sources) != 4 {
		t.Errorf("manifest header %+v", m)
	}
	ds, err := LoadDataset(out, "bytes-v1")
	if err != nil {
		t.Fatal(err)
	}
	threshold := heldOutThreshold(cfg.HeldOutFraction)
	for i, sm := range m.Sources {
		name := sm.Name
		if !reflect.DeepEqual(sm.Filter, c.want[name]) {
			t.Errorf("%s: filter report %+v, want %+v", name, sm.Filter, c.want[name])
		}
		if sm.Read.BadLines != c.bad[name] || int64(len(sm.Read.BadLineSamples)) != c.bad[name] {
			t.Errorf("%s: bad lines %d %v, want %d", name, sm.Read.BadLines, sm.Read.BadLineSamples, c.bad[name])
		}
		train, held := splitDocs(t, ds.Train[i]), splitDocs(t, ds.HeldOut[i])
		kept := c.kept[name]
		if int64(len(train)) != sm.TrainDocs || int64(len(held)) != sm.HeldOutDocs || len(train)+len(held) != len(kept) {
			t.Errorf("%s: %d train + %d held-out documents, manifest %d + %d, kept %d",
				name, len(train), len(held), sm.TrainDocs, sm.HeldOutDocs, len(kept))
		}
		if len(kept) >= 2 && (len(held) == 0 || len(train) == 0) || len(kept) == 1 && len(held) != 0 {
			t.Errorf("%s: %d kept, %d held out", name, len(kept), len(held))
		}
		// Both splits keep reading order, and together they are the kept documents.
		ti, hi := 0, 0
		for _, d := range kept {
			switch {
			case ti < len(train) && train[ti] == d:
				ti++
			case hi < len(held) && held[hi] == d:
				hi++
			default:
				t.Fatalf("%s: kept document %.30q is in neither split at its place", name, d)
			}
		}
		// Held-out documents are those with a small hash, but for at most one moved across.
		moved := 0
		for _, d := range held {
			if NewCleaner(Filter{MinBytes: 1, MaxNonText: 1}).hashKey(d) >= threshold {
				moved++
			}
		}
		for _, d := range train {
			if NewCleaner(Filter{MinBytes: 1, MaxNonText: 1}).hashKey(d) < threshold {
				moved++
			}
		}
		if moved > 1 {
			t.Errorf("%s: %d documents on the wrong side of the hash threshold", name, moved)
		}
		for j, f := range sm.TrainFiles {
			if f.Tokens > cfg.MaxShardTokens || j < len(sm.TrainFiles)-1 && f.Tokens != cfg.MaxShardTokens {
				t.Errorf("%s: file %s has %d tokens", name, f.Path, f.Tokens)
			}
		}
	}
	if n := len(m.Sources[0].TrainFiles); n < 3 {
		t.Errorf("web has %d train files, want several", n)
	}
	for _, f := range listFiles(t, out) {
		if strings.Contains(f, ".tmp-") {
			t.Errorf("temporary file %s left behind", f)
		}
	}
	// Progress: a Done event per source with the source's totals.
	var done []ProgressEvent
	for _, e := range events {
		if e.Done {
			done = append(done, e)
		}
	}
	if len(done) != 4 {
		t.Fatalf("%d Done events, want 4", len(done))
	}
	for i, e := range done {
		sm := m.Sources[i]
		if e.Source != sm.Name || e.Docs != sm.TrainDocs+sm.HeldOutDocs || e.Tokens != sm.TrainTokens+sm.HeldOutTokens || e.Bytes != sm.Filter.Kept.Bytes {
			t.Errorf("Done event %+v for source %+v", e, sm)
		}
	}
	if _, err := Prepare(context.Background(), cfg); !errors.Is(err, ErrExists) {
		t.Errorf("second Prepare into %s: %v, want ErrExists", out, err)
	}
}

// hashKey is the held-out key of a document.
func (c *Cleaner) hashKey(d string) uint64 {
	_, h := c.Check([]byte(d))
	return h.HeldOutKey()
}

func TestPrepareDeterministic(t *testing.T) {
	c := makeCorpus(t)
	dir := t.TempDir()
	outs := []string{filepath.Join(dir, "w1"), filepath.Join(dir, "w8")}
	for i, workers := range []int{1, 8} {
		cfg := testConfig(c, outs[i])
		cfg.Workers = workers
		if _, err := Prepare(context.Background(), cfg); err != nil {
			t.Fatal(err)
		}
	}
	files := listFiles(t, outs[0])
	if other := listFiles(t, outs[1]); !slices.Equal(files, other) {
		t.Fatalf("1 worker wrote %v, 8 workers %v", files, other)
	}
	for _, f := range files {
		a, _ := os.ReadFile(filepath.Join(outs[0], f))
		b, _ := os.ReadFile(filepath.Join(outs[1], f))
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs between 1 and 8 workers", f)
		}
	}
}

func TestHeldOutFraction(t *testing.T) {
	root := t.TempDir()
	var lines []string
	for i := range 2000 {
		lines = append(lines, fmt.Sprintf(`{"text":"a document for the held-out fraction test, number %d"}`, i))
	}
	writeFile(t, filepath.Join(root, "in.jsonl"), []byte(strings.Join(lines, "\n")))
	for _, tc := range []struct {
		frac     float64
		min, max int64
	}{{0, 0, 0}, {0.1, 140, 260}, {0.5, 900, 1100}} {
		cfg := testConfig(corpus{}, filepath.Join(t.TempDir(), "ds"))
		cfg.Sources = []SourceSpec{{Name: "s", Path: filepath.Join(root, "in.jsonl"), Weight: 1}}
		cfg.HeldOutFraction = tc.frac
		cfg.MaxShardTokens = 1 << 20
		m, err := Prepare(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		s := m.Sources[0]
		if s.HeldOutDocs < tc.min || s.HeldOutDocs > tc.max || s.TrainDocs+s.HeldOutDocs != 2000 {
			t.Errorf("fraction %v: %d held out of %d, want %d..%d", tc.frac, s.HeldOutDocs, s.TrainDocs+s.HeldOutDocs, tc.min, tc.max)
		}
	}
}

func TestSplitterMovesOne(t *testing.T) {
	for _, tc := range []struct {
		keys        []uint64
		train, held []int32 // documents (one token each, the key) per split
	}{
		{[]uint64{50, 30, 70}, []int32{50, 70}, []int32{30}},           // none below the threshold: the smallest key is held out
		{[]uint64{1, 2, 3}, []int32{3}, []int32{1, 2}},                 // all below: the largest goes to train
		{[]uint64{50}, []int32{50}, nil},                               // one document stays in train
		{[]uint64{50, 5, 60, 7}, []int32{50, 60}, []int32{5, 7}},       // both kinds: no move
		{[]uint64{5, 50, 7, 60, 8}, []int32{50, 60}, []int32{5, 7, 8}}, // both kinds, held first
	} {
		dir := t.TempDir()
		mk := func(name string) *stream {
			return &stream{root: dir, rel: name, vocab: 1000, hash: "h", max: 100, done: func(string) {}}
		}
		sp := &splitter{threshold: 10, train: mk("train"), held: mk("held")}
		for _, k := range tc.keys {
			if err := sp.add([]int32{int32(k)}, k); err != nil {
				t.Fatal(err)
			}
		}
		if err := sp.finish(); err != nil {
			t.Fatal(err)
		}
		for _, st := range []*stream{sp.train, sp.held} {
			if err := st.finish(); err != nil {
				t.Fatal(err)
			}
		}
		if sp.trainDocs != int64(len(tc.train)) || sp.heldDocs != int64(len(tc.held)) {
			t.Errorf("keys %v: %d train, %d held; want %v, %v", tc.keys, sp.trainDocs, sp.heldDocs, tc.train, tc.held)
		}
		for name, want := range map[string][]int32{"train": tc.train, "held": tc.held} {
			toks, _, err := ReadFile(filepath.Join(dir, name+"-00000.tok"), OpenOptions{})
			if len(want) == 0 {
				if !errors.Is(err, os.ErrNotExist) {
					t.Errorf("keys %v: %s split has a file (%v)", tc.keys, name, err)
				}
				continue
			}
			if err != nil || !slices.Equal(toks, want) {
				t.Errorf("keys %v: %s split %v, %v; want %v", tc.keys, name, toks, err, want)
			}
		}
	}
}

func TestPrepareFailureLeavesNothing(t *testing.T) {
	c := makeCorpus(t)
	fail := errors.New("injected failure")
	cases := []struct {
		name  string
		point string
		after int // fail on this call of the point
	}{
		{"before manifest", "before-manifest", 1},
		{"after second source", "after-source", 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "ds")
			cfg := testConfig(c, out)
			calls := 0
			cfg.failpoint = func(name string) error {
				if name == tc.point {
					if calls++; calls == tc.after {
						return fail
					}
				}
				return nil
			}
			if _, err := Prepare(context.Background(), cfg); !errors.Is(err, fail) {
				t.Fatalf("Prepare: %v, want the injected failure", err)
			}
			if entries, _ := os.ReadDir(out); len(entries) != 0 {
				t.Errorf("failed Prepare left %v", entries)
			}
			// The directory is usable afterwards, and a killed run's
			// temporary file is cleared away.
			stale := filepath.Join(out, "web", ".train-00000.tok.tmp-123")
			writeFile(t, stale, []byte("partial"))
			cfg.failpoint = nil
			if _, err := Prepare(context.Background(), cfg); err != nil {
				t.Errorf("Prepare after a failure: %v", err)
			}
			if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("stale temporary file still there: %v", err)
			}
		})
	}
	t.Run("corrupt source", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "ds")
		bad := filepath.Join(t.TempDir(), "bad.jsonl.gz")
		writeFile(t, bad, []byte("\x1f\x8b garbage"))
		cfg := testConfig(c, out)
		cfg.Sources = append(slices.Clone(c.specs[:2]), SourceSpec{Name: "bad", Path: bad, Weight: 1})
		_, err := Prepare(context.Background(), cfg)
		wantErr(t, err, nil, bad)
		if files := listFiles(t, out); len(files) != 0 {
			t.Errorf("failed Prepare left %v", files)
		}
	})
	t.Run("encoder out of vocabulary", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "ds")
		cfg := testConfig(c, out)
		cfg.Encoder = oovEncoder{}
		_, err := Prepare(context.Background(), cfg)
		wantErr(t, err, []error{ErrOutOfVocab}, filepath.Join(out, "web", "train-00000.tok"))
		if entries, _ := os.ReadDir(out); len(entries) != 0 {
			t.Errorf("failed Prepare left %v", entries)
		}
	})
	t.Run("canceled", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "ds")
		ctx, cancel := context.WithCancel(context.Background())
		cfg := testConfig(c, out)
		cfg.Progress = func(e ProgressEvent) {
			if e.Done {
				cancel()
			}
		}
		if _, err := Prepare(ctx, cfg); !errors.Is(err, context.Canceled) {
			t.Fatalf("Prepare: %v, want context.Canceled", err)
		}
		if files := listFiles(t, out); len(files) != 0 {
			t.Errorf("canceled Prepare left %v", files)
		}
	})
}

func TestPrepareEmptySource(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "a.txt"), []byte("tiny"))
	writeFile(t, filepath.Join(root, "b.txt"), []byte("small"))
	cfg := testConfig(corpus{}, filepath.Join(t.TempDir(), "ds"))
	cfg.Sources = []SourceSpec{{Name: "tiny", Path: root, Weight: 1}}
	_, err := Prepare(context.Background(), cfg)
	wantErr(t, err, []error{ErrEmptySource}, "tiny", root, "2 files read", "2 documents dropped as too short (< 32 bytes)")
	var e *EmptySourceError
	if !errors.As(err, &e) || e.Name != "tiny" || e.Path != root || e.Filter.TooShort.Docs != 2 || e.Read.Files != 2 {
		t.Errorf("error %#v, want an *EmptySourceError with the source's counts", err)
	}
}

// Every kind of rejection is counted and named, with samples of the files
// and lines, relative to the source.
func TestEmptySourceReasons(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "a.bin"), []byte("weights"))
	writeFile(t, filepath.Join(root, "b/blob.dat"), []byte("abc\x00def"))
	writeFile(t, filepath.Join(root, "empty.txt"), nil)
	writeFile(t, filepath.Join(root, "noise.txt"), []byte(strings.Repeat("\x01\x02\x03 text ", 10)))
	writeFile(t, filepath.Join(root, "rows.jsonl"), []byte("{oops\n\n"+`{"id":1}`+"\n"))
	cfg := testConfig(corpus{}, filepath.Join(t.TempDir(), "ds"))
	cfg.Sources = []SourceSpec{{Name: "junk", Path: root, Weight: 1}}
	_, err := Prepare(context.Background(), cfg)
	wantErr(t, err, []error{ErrEmptySource}, "junk ("+root+"): ",
		"5 files read",
		"2 skipped (a.bin: binary extension .bin; b/blob.dat: NUL byte in the first 8000 bytes)",
		"2 JSONL lines without a document (rows.jsonl:1: invalid JSON",
		`rows.jsonl:3: no "text" field)`,
		"1 blank JSONL line",
		"1 document dropped as too short (< 32 bytes)",
		"1 document dropped as non-text (over 10% control bytes or invalid UTF-8)")
	if strings.Contains(err.Error(), "duplicate") {
		t.Errorf("error %q reports duplicates, there are none", err)
	}

	// Duplicates of an earlier source, and samples beyond the first few.
	for i := range 5 {
		writeFile(t, filepath.Join(root, fmt.Sprintf("more/%d.png", i)), []byte("png"))
	}
	dup := filepath.Join(t.TempDir(), "dup.txt")
	writeFile(t, dup, []byte(doc("one", 0)))
	first := filepath.Join(t.TempDir(), "first.txt")
	writeFile(t, first, []byte(doc("one", 0)))
	cfg.Sources = []SourceSpec{{Name: "first", Path: first, Weight: 1}, {Name: "dup", Path: dup, Weight: 1}}
	_, err = Prepare(context.Background(), cfg)
	wantErr(t, err, []error{ErrEmptySource}, "dup ("+dup+"): 1 file read, 1 document dropped as duplicates of documents kept before")
	cfg.Sources = []SourceSpec{{Name: "junk", Path: root, Weight: 1}}
	_, err = Prepare(context.Background(), cfg)
	wantErr(t, err, []error{ErrEmptySource}, "7 skipped (", "; 4 more)")
}

// A source inside the dataset directory (a corpus copied there) is recorded
// relative to it, with its skipped files and bad lines, so the dataset is the
// same wherever it ends up; a source outside keeps the path it was given.
func TestPrepareRecordsPathsInsideOut(t *testing.T) {
	stage := filepath.Join(t.TempDir(), ".ds.stage")
	inside := filepath.Join(stage, "corpus", "web")
	for i := range 4 {
		writeFile(t, filepath.Join(inside, fmt.Sprintf("%d.txt", i)), []byte(doc("web", i)))
	}
	writeFile(t, filepath.Join(inside, "x.png"), []byte("png"))
	writeFile(t, filepath.Join(inside, "rows.jsonl"), []byte(fmt.Sprintf("{oops\n{\"text\":%q}\n", doc("rows", 1))))
	outside := filepath.Join(t.TempDir(), "one.txt")
	writeFile(t, outside, []byte(doc("one", 0)))
	cfg := testConfig(corpus{}, stage)
	cfg.Sources = []SourceSpec{{Name: "web", Path: inside, Weight: 1}, {Name: "one", Path: outside, Weight: 1}}
	m, err := Prepare(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	web := m.Sources[0].Read
	if got := m.Sources[0].Input; got != "corpus/web" {
		t.Errorf("input of a source inside the dataset: %q, want corpus/web", got)
	}
	if len(web.Skipped) != 1 || web.Skipped[0].File != "corpus/web/x.png" {
		t.Errorf("skipped files %+v, want corpus/web/x.png", web.Skipped)
	}
	if len(web.BadLineSamples) != 1 || web.BadLineSamples[0].File != "corpus/web/rows.jsonl" {
		t.Errorf("bad lines %+v, want in corpus/web/rows.jsonl", web.BadLineSamples)
	}
	if got := m.Sources[1].Input; got != outside {
		t.Errorf("input of a source outside the dataset: %q, want %q", got, outside)
	}
	raw, err := os.ReadFile(filepath.Join(stage, ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(stage)) {
		t.Errorf("manifest names the directory it was written in, %s:\n%s", stage, raw)
	}
	// Renamed into place, the dataset loads and reads its sources there.
	final := filepath.Join(filepath.Dir(stage), "ds")
	if err := os.Rename(stage, final); err != nil {
		t.Fatal(err)
	}
	m2, err := LoadManifest(final)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(final, filepath.FromSlash(m2.Sources[0].Input))); err != nil {
		t.Errorf("recorded input is not inside the renamed dataset: %v", err)
	}
	if _, err := LoadDataset(final, "bytes-v1"); err != nil {
		t.Errorf("renamed dataset: %v", err)
	}
}

func TestPrepareConfigValidate(t *testing.T) {
	base := testConfig(corpus{specs: []SourceSpec{{Name: "a", Path: "/x", Weight: 1}}}, "/out")
	if err := base.Validate(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		field string
		edit  func(*PrepareConfig)
	}{
		{"Sources", func(c *PrepareConfig) { c.Sources = nil }},
		{"Sources[1].Name", func(c *PrepareConfig) { c.Sources = append(c.Sources, c.Sources[0]) }},
		{"Sources[0].Path", func(c *PrepareConfig) { c.Sources = []SourceSpec{{Name: "a", Path: "", Weight: 1}} }},
		{"weight", func(c *PrepareConfig) { c.Sources = []SourceSpec{{Name: "a", Path: "/x", Weight: 0}} }},
		{"Out", func(c *PrepareConfig) { c.Out = "" }},
		{"Encoder", func(c *PrepareConfig) { c.Encoder = nil }},
		{"Encoder.EOS()", func(c *PrepareConfig) { c.Encoder = badEncoder{eos: 257, vocab: 257, hash: "h"} }},
		{"Encoder.VocabSize()", func(c *PrepareConfig) { c.Encoder = badEncoder{eos: 0, vocab: 0, hash: "h"} }},
		{"Encoder.Hash()", func(c *PrepareConfig) { c.Encoder = badEncoder{eos: 0, vocab: 257} }},
		{"HeldOutFraction", func(c *PrepareConfig) { c.HeldOutFraction = 0.7 }},
		{"MaxShardTokens", func(c *PrepareConfig) { c.MaxShardTokens = 0 }},
		{"MinBytes", func(c *PrepareConfig) { c.Filter.MinBytes = 0 }},
		{"Workers", func(c *PrepareConfig) { c.Workers = -1 }},
	}
	for _, tc := range cases {
		cfg := base
		cfg.Sources = slices.Clone(base.Sources)
		tc.edit(&cfg)
		wantErr(t, cfg.Validate(), []error{ErrConfig}, tc.field)
	}
}

// badEncoder reports whatever it is told to, for configuration checks.
type badEncoder struct {
	eos   int32
	vocab int
	hash  string
}

func (badEncoder) Encode([]byte) []int32 { return nil }
func (e badEncoder) EOS() int32          { return e.eos }
func (e badEncoder) VocabSize() int      { return e.vocab }
func (e badEncoder) Hash() string        { return e.hash }

// oovEncoder is byteEncoder with an id past the vocabulary after each document.
type oovEncoder struct{ byteEncoder }

func (e oovEncoder) Encode(b []byte) []int32 { return append(e.byteEncoder.Encode(b), 999) }
