package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/herd-llm/herd/shard"
)

// Nothing an operator does with herd prepare may lose their work: an --out that
// holds anything is refused before any source is read, a failed or interrupted
// preparation leaves --out as it was and no staging directory behind, and a
// committed dataset names no staging path.

// snapshot maps every entry under dir to its mode and, for files, content.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	snap := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		entry := fi.Mode().String()
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			entry += "\n" + string(b)
		}
		snap[rel] = entry
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// sameSnapshot fails t unless dir still matches before, file for file and byte for byte.
func sameSnapshot(t *testing.T, dir string, before map[string]string) {
	t.Helper()
	after := snapshot(t, dir)
	for name, was := range before {
		if now, ok := after[name]; !ok {
			t.Errorf("%s: %s was removed", dir, name)
		} else if now != was {
			t.Errorf("%s: %s changed", dir, name)
		}
	}
	for name := range after {
		if _, ok := before[name]; !ok {
			t.Errorf("%s: %s appeared", dir, name)
		}
	}
}

// runFail runs the binary, which must fail, and returns its combined output.
func runFail(t *testing.T, bin string, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("herd %s: exit 0, want a failure\n%s", strings.Join(args, " "), out)
	}
	if _, ok := err.(*exec.ExitError); !ok {
		t.Fatalf("herd %s: %v", strings.Join(args, " "), err)
	}
	return string(out)
}

// entries lists the names in dir.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// noStaging fails t if dir holds a staging directory.
func noStaging(t *testing.T, dir string) {
	t.Helper()
	for _, n := range entries(t, dir) {
		if strings.Contains(n, ".prepare-") {
			t.Errorf("staging directory %s left in %s", n, dir)
		}
	}
}

func mustContain(t *testing.T, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}

// An --out that holds a dataset, a file, or anything else is refused before any
// source is read, and left byte for byte as it was. That the refusal comes first is
// shown by a source that does not exist: its error never shows.
func TestPrepareRefusesOccupiedOut(t *testing.T) {
	bin := herdBinary(t)
	dir := t.TempDir()
	textDir, jsonl := writeCorpus(t, dir)
	ds := filepath.Join(dir, "ds")
	runBin(t, bin, "prepare", "--source", "prose="+textDir+":0.6", "--source", "code="+jsonl+":0.4", "--vocab", "320", "--out", ds)
	before := snapshot(t, ds)
	if _, ok := before["tokenizer.json"]; !ok || len(before) < 5 {
		t.Fatalf("dataset %s holds %d entries", ds, len(before))
	}
	top := entries(t, dir)
	missing := filepath.Join(dir, "no-such-source")

	// The same sources with another vocab (a different tokenizer.json), and a source
	// that does not exist.
	for _, src := range []string{"prose=" + textDir + ":1", "gone=" + missing + ":1"} {
		out := runFail(t, bin, nil, "prepare", "--source", src, "--vocab", "300", "--out", ds)
		mustContain(t, out, "--out "+ds+" already holds a dataset", "manifest.json", "nothing was changed")
		if strings.Contains(out, "no-such-source") || strings.Contains(out, "prepare: training") {
			t.Errorf("prepare read the sources before refusing --out:\n%s", out)
		}
		sameSnapshot(t, ds, before)
		if got := entries(t, dir); !slices.Equal(got, top) {
			t.Errorf("%s holds %v, was %v", dir, got, top)
		}
	}
	// The untouched dataset still trains.
	runBin(t, bin, "train", "--data", ds, "--out", filepath.Join(dir, "run"), "--steps", "2", "--seq", "32", "--batch", "4",
		"--micro-batch", "2", "--eval-every", "0", "--sample-every", "0", "--baseline=false", "--eval-seqs", "2")

	// A directory with other work in it, and a file.
	notes := filepath.Join(dir, "notes")
	os.MkdirAll(filepath.Join(notes, "drafts"), 0o755)
	os.WriteFile(filepath.Join(notes, "todo.txt"), []byte("keep me"), 0o644)
	file := filepath.Join(dir, "results.csv")
	os.WriteFile(file, []byte("a,b\n1,2\n"), 0o644)
	for out, want := range map[string]string{notes: "is not empty (drafts, todo.txt)", file: "is a file (8.0 B), not a directory"} {
		was := snapshot(t, out)
		msg := runFail(t, bin, nil, "prepare", "--source", "gone="+missing+":1", "--out", out)
		mustContain(t, msg, "--out "+out+" "+want)
		sameSnapshot(t, out, was)
	}
	noStaging(t, dir)
}

// An empty directory is a valid --out: the dataset replaces it.
func TestPrepareIntoEmptyDirectory(t *testing.T) {
	bin := herdBinary(t)
	dir := t.TempDir()
	textDir, _ := writeCorpus(t, dir)
	ds := filepath.Join(dir, "ds")
	if err := os.Mkdir(ds, 0o750); err != nil {
		t.Fatal(err)
	}
	runBin(t, bin, "prepare", "--source", "prose="+textDir+":1", "--vocab", "300", "--out", ds)
	if _, err := shard.LoadManifest(ds); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(ds); err != nil || fi.Mode().Perm() != 0o750 {
		t.Errorf("--out mode %v (%v), want the empty directory's 0750", fi.Mode(), err)
	}
	noStaging(t, dir)
}

// writeTruncatedJSONL writes a gzipped JSONL file whose first part reads fine
// and whose stream then breaks off, so that the tokenizer sample (the first
// --tokenizer-sample-mb) succeeds and preparation fails midway.
func writeTruncatedJSONL(t *testing.T, path string, mib int) {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	for i := 0; i < mib*(1<<20)/80; i++ {
		fmt.Fprintf(zw, `{"text":"record %d says the prism refracts light of colour %d into the eye"}`+"\n", i, i%97)
	}
	zw.Close()
	b := buf.Bytes()
	if err := os.WriteFile(path, b[:len(b)*3/4], 0o644); err != nil {
		t.Fatal(err)
	}
}

// A preparation that fails midway, by a source that breaks after the tokenizer is
// trained, by Ctrl-C, or by a source that is all junk, leaves --out as it was
// (absent, or the empty directory it was) and no staging directory.
func TestPrepareFailureLeavesOutUntouched(t *testing.T) {
	bin := herdBinary(t)
	dir := t.TempDir()
	textDir, jsonl := writeCorpus(t, dir)
	broken := filepath.Join(dir, "broken.jsonl.gz")
	writeTruncatedJSONL(t, broken, 3)
	junk := filepath.Join(dir, "junk.jsonl")
	os.WriteFile(junk, []byte("{oops\n"), 0o644)
	work := filepath.Join(dir, "work")
	os.MkdirAll(work, 0o755)
	good := []string{"--source", "prose=" + textDir + ":0.6", "--source", "code=" + jsonl + ":0.4", "--vocab", "300"}
	cases := []struct {
		name string
		env  []string
		args []string
		want []string
	}{
		{"source breaks after the tokenizer sample", nil,
			[]string{"--source", "prose=" + textDir + ":0.5", "--source", "broken=" + broken + ":0.5", "--vocab", "300", "--tokenizer-sample-mb", "1"},
			[]string{"prepare: tokenizer trained", "prepare: prose: ", "prepare: broken: ", broken, "unexpected EOF"}},
		{"interrupted after the first source", []string{"HERD_PREPARE_FAILPOINT=source-done:interrupt"}, good,
			[]string{"prepare: prose: ", "interrupted; --out", "is as it was", "context canceled"}},
		{"interrupted before training the tokenizer", []string{"HERD_PREPARE_FAILPOINT=sampled:interrupt"}, good,
			[]string{"interrupted; --out"}},
		{"interrupted before the commit", []string{"HERD_PREPARE_FAILPOINT=before-commit:interrupt"}, good,
			[]string{"prepare: code: kept", "interrupted; --out"}},
		{"junk source", nil, append(slices.Clone(good), "--source", "junk="+junk+":0.1"),
			[]string{"--source junk (" + junk + "): no usable documents"}},
	}
	for _, tc := range cases {
		for _, existing := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/empty out %v", tc.name, existing), func(t *testing.T) {
				ds := filepath.Join(work, "ds")
				os.RemoveAll(ds)
				if existing {
					os.Mkdir(ds, 0o755)
				}
				args := append(append([]string{"prepare"}, tc.args...), "--out", ds)
				out := runFail(t, bin, tc.env, args...)
				mustContain(t, out, tc.want...)
				if strings.Contains(out, "dataset written") {
					t.Errorf("a failed preparation reports success:\n%s", out)
				}
				if existing {
					if names := entries(t, ds); len(names) != 0 {
						t.Errorf("--out, an empty directory before, now holds %v", names)
					}
				} else if _, err := os.Lstat(ds); !os.IsNotExist(err) {
					t.Errorf("--out exists after a failed preparation: %v", err)
				}
				noStaging(t, work)
			})
		}
	}
}

// A preparation killed outright leaves its staging directory; the next preparation
// of the same --out removes it, and only it: a live process's staging directory and
// one from another host stay.
func TestPrepareRemovesDeadStaging(t *testing.T) {
	bin := herdBinary(t)
	dir := t.TempDir()
	textDir, _ := writeCorpus(t, dir)
	work := filepath.Join(dir, "work")
	os.MkdirAll(work, 0o755)
	ds := filepath.Join(work, "ds")
	args := []string{"prepare", "--source", "prose=" + textDir + ":1", "--vocab", "300", "--out", ds}

	runFail(t, bin, []string{"HERD_PREPARE_FAILPOINT=before-commit"}, args...)
	if _, err := os.Lstat(ds); !os.IsNotExist(err) {
		t.Fatalf("--out exists after a kill before the commit: %v", err)
	}
	dead := entries(t, work)
	if len(dead) != 1 || !strings.HasPrefix(dead[0], ".ds.prepare-") {
		t.Fatalf("after the kill %s holds %v, want one staging directory", work, dead)
	}
	live := fmt.Sprintf(".ds.prepare-%d-%s-1", os.Getpid(), hostTag())
	other := fmt.Sprintf(".ds.prepare-%s-ffffffff-2", strings.Split(dead[0], "-")[1])
	for _, n := range []string{live, other} {
		os.MkdirAll(filepath.Join(work, n, "code"), 0o755)
	}

	_, log := runBin(t, bin, args...)
	mustContain(t, log, "prepare: removed "+filepath.Join(work, dead[0]), "no longer running")
	got := entries(t, work)
	slices.Sort(got)
	want := []string{live, other, "ds"}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s holds %v, want %v", work, got, want)
	}
	if _, err := shard.LoadManifest(ds); err != nil {
		t.Error(err)
	}
}

// Sources that hold nothing usable fail before a tokenizer is trained, naming the
// source, its path and why each file or document was rejected.
func TestPrepareJunkSources(t *testing.T) {
	bin := herdBinary(t)
	dir := t.TempDir()
	textDir, _ := writeCorpus(t, dir)
	bins := filepath.Join(dir, "bins")
	os.MkdirAll(bins, 0o755)
	os.WriteFile(filepath.Join(bins, "a.bin"), []byte("weights"), 0o644)
	os.WriteFile(filepath.Join(bins, "b.png"), []byte("\x89PNG\r\n\x1a\n"), 0o644)
	os.WriteFile(filepath.Join(bins, "c.dat"), []byte("head\x00tail"), 0o644)
	os.WriteFile(filepath.Join(bins, "d.txt"), []byte("tiny"), 0o644)
	empty := filepath.Join(dir, "empty.txt")
	os.WriteFile(empty, nil, 0o644)
	bad := filepath.Join(dir, "bad.jsonl")
	os.WriteFile(bad, []byte("{oops\n{\"title\":\"no text\"}\n\n{\"text\":42}\n"), 0o644)
	short := filepath.Join(dir, "short")
	os.MkdirAll(short, 0o755)
	for i := range 5 {
		os.WriteFile(filepath.Join(short, fmt.Sprintf("%d.txt", i)), []byte(fmt.Sprintf("a line of forty-odd bytes, number %d", i)), 0o644)
	}

	cases := []struct {
		name, path string
		extra      []string
		want       []string
	}{
		{"bins", bins, nil, []string{"4 files read", "3 skipped (a.bin: binary extension .bin; b.png: binary extension .png; c.dat: NUL byte in the first 8000 bytes)",
			"1 document dropped as too short (< 32 bytes)"}},
		{"empty", empty, nil, []string{"1 file read, 1 document dropped as too short (< 32 bytes)"}},
		{"bad", bad, nil, []string{"1 file read", "3 JSONL lines without a document (bad.jsonl:1: invalid JSON", `bad.jsonl:2: no "text" field; bad.jsonl:4: "text" is not a string)`, "1 blank JSONL line"}},
		{"short", short, []string{"--min-bytes", "64"}, []string{"5 files read, 5 documents dropped as too short (< 64 bytes)"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ds := filepath.Join(dir, "ds-"+tc.name)
			for _, srcs := range [][]string{
				{"--source", tc.name + "=" + tc.path + ":1"},
				{"--source", "prose=" + textDir + ":0.9", "--source", tc.name + "=" + tc.path + ":0.1"},
			} {
				args := append(append(append([]string{"prepare"}, srcs...), tc.extra...), "--vocab", "300", "--out", ds)
				out := runFail(t, bin, nil, args...)
				mustContain(t, out, append([]string{"--source " + tc.name + " (" + tc.path + "): no usable documents: "}, tc.want...)...)
				for _, never := range []string{"corpus too small", "prepare: training"} {
					if strings.Contains(out, never) {
						t.Errorf("output says %q:\n%s", never, out)
					}
				}
				if _, err := os.Lstat(ds); !os.IsNotExist(err) {
					t.Errorf("--out exists after a failed preparation: %v", err)
				}
			}
		})
	}
	// With --tokenizer nothing is trained; a junk source is refused all the same.
	runBin(t, bin, "prepare", "--source", "prose="+textDir+":1", "--vocab", "300", "--out", filepath.Join(dir, "ok"))
	out := runFail(t, bin, nil, "prepare", "--source", "prose="+textDir+":1", "--source", "bins="+bins+":1",
		"--tokenizer", filepath.Join(dir, "ok", "tokenizer.json"), "--out", filepath.Join(dir, "ds-reuse"))
	mustContain(t, out, "--source bins ("+bins+"): no usable documents: 4 files read")
	noStaging(t, dir)
}

// Usable text too small for the vocabulary says how much there was and what to change.
func TestPrepareVocabTooLarge(t *testing.T) {
	bin := herdBinary(t)
	dir := t.TempDir()
	textDir, _ := writeCorpus(t, dir)
	out := runFail(t, bin, nil, "prepare", "--source", "prose="+textDir+":1", "--vocab", "60000", "--out", filepath.Join(dir, "ds"))
	mustContain(t, out, "--vocab 60000 is more than this text can train: the sources hold ", "KiB of usable text in ", " documents from 1 source",
		"no pairs left at vocab", "give a smaller --vocab")
	noStaging(t, dir)
}

// The tokenizer learns only from documents the dataset keeps: short documents full
// of one rare pair would otherwise win the first merges.
func TestPrepareTokenizerSkipsDroppedDocuments(t *testing.T) {
	bin := herdBinary(t)
	dir := t.TempDir()
	textDir, _ := writeCorpus(t, dir)
	for i := range 400 {
		os.WriteFile(filepath.Join(textDir, fmt.Sprintf("noise%03d.txt", i)), []byte(fmt.Sprintf("zqzqzqzqzqzq %d", i)), 0o644)
	}
	merged := func(minBytes string) bool {
		ds := filepath.Join(dir, "ds-"+minBytes)
		runBin(t, bin, "prepare", "--source", "prose="+textDir+":1", "--vocab", "300", "--min-bytes", minBytes, "--out", ds)
		raw, err := os.ReadFile(filepath.Join(ds, "tokenizer.json"))
		if err != nil {
			t.Fatal(err)
		}
		var tj struct {
			Model struct {
				Vocab map[string]int `json:"vocab"`
			} `json:"model"`
		}
		if err := json.Unmarshal(raw, &tj); err != nil {
			t.Fatal(err)
		}
		_, ok := tj.Model.Vocab["zq"]
		return ok
	}
	if !merged("1") {
		t.Fatalf(`with --min-bytes 1 the noise is kept, yet "zq" is no token: the check cannot tell`)
	}
	// --min-bytes 20 drops the noise documents (at most 16 bytes) and keeps the prose.
	if merged("20") {
		t.Errorf(`"zq" is a token although every document holding it is dropped by --min-bytes`)
	}
}

// Flags out of range are refused before anything is read or written, naming the flag and the range.
func TestPrepareFlagRanges(t *testing.T) {
	bin := herdBinary(t)
	dir := t.TempDir()
	ds := filepath.Join(dir, "ds")
	src := "--source=gone=" + filepath.Join(dir, "no-such-source") + ":1"
	for _, tc := range []struct {
		flag, value, want string
	}{
		{"--vocab", "100", "--vocab = 100, must be in 259..16777216"},
		{"--vocab", "-5", "--vocab = -5, must be in 259..16777216"},
		{"--vocab", "16777217", "--vocab = 16777217, must be in 259..16777216"},
		{"--held-out", "0.6", "--held-out = 0.6, must be in 0..0.5"},
		{"--held-out", "-0.1", "--held-out = -0.1, must be in 0..0.5"},
		{"--held-out", "NaN", "--held-out = NaN, must be in 0..0.5"},
		{"--min-bytes", "-1", "--min-bytes = -1, must be >= 1"},
		{"--min-bytes", "0", "--min-bytes = 0, must be >= 1"},
		{"--max-nontext", "1.5", "--max-nontext = 1.5, must be in 0..1"},
		{"--max-nontext", "-0.2", "--max-nontext = -0.2, must be in 0..1"},
		{"--tokenizer-sample-mb", "0", "--tokenizer-sample-mb = 0, must be in 1..1048576"},
		{"--tokenizer-sample-mb", "-3", "--tokenizer-sample-mb = -3, must be in 1..1048576"},
		{"--max-shard-tokens", "0", "--max-shard-tokens = 0, must be >= 1"},
		{"--max-shard-tokens", "-7", "--max-shard-tokens = -7, must be >= 1"},
	} {
		out := runFail(t, bin, nil, "prepare", src, tc.flag+"="+tc.value, "--out", ds)
		mustContain(t, out, tc.want)
		if strings.Contains(out, "no-such-source") {
			t.Errorf("%s=%s: a source was read before the flags were checked:\n%s", tc.flag, tc.value, out)
		}
	}
	// herd train prepares the built-in corpus with its --vocab, checked the same way.
	out := runFail(t, bin, []string{"XDG_CACHE_HOME=" + filepath.Join(dir, "cache")}, "train", "--vocab", "100", "--out", filepath.Join(dir, "run"))
	mustContain(t, out, "--vocab = 100, must be in 259..16777216")
	if names := entries(t, dir); len(names) != 0 {
		t.Errorf("refused flags left %v in %s", names, dir)
	}
}

// Two herd train processes that start together on a fresh cache, after one that was
// killed while preparing, both train on one built-in dataset; the killed run's
// staging directory is gone and the manifest names no staging path.
func TestBuiltinPreparedConcurrently(t *testing.T) {
	bin := herdBinary(t)
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	env := []string{"XDG_CACHE_HOME=" + cache}
	trainArgs := func(run string) []string {
		return []string{"train", "--vocab", "300", "--out", filepath.Join(dir, run), "--steps", "2", "--seq", "32", "--batch", "4",
			"--micro-batch", "2", "--eval-every", "0", "--sample-every", "0", "--baseline=false", "--eval-seqs", "2"}
	}
	runFail(t, bin, append(env, "HERD_PREPARE_FAILPOINT=before-commit"), trainArgs("killed")...)
	herdCache := filepath.Join(cache, "herd")
	if names := entries(t, herdCache); len(names) != 1 || !strings.Contains(names[0], ".prepare-") {
		t.Fatalf("after the kill the cache holds %v, want one staging directory", names)
	}

	var wg sync.WaitGroup
	logs := make([]string, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() {
			cmd := exec.Command(bin, trainArgs(fmt.Sprintf("run%d", i))...)
			cmd.Env = append(os.Environ(), env...)
			out, err := cmd.CombinedOutput()
			logs[i], errs[i] = string(out), err
		})
	}
	wg.Wait()
	for i := range 2 {
		if errs[i] != nil || !strings.Contains(logs[i], "step 2/2") {
			t.Errorf("train %d: %v\n%s", i, errs[i], logs[i])
		}
	}
	names := entries(t, herdCache)
	if len(names) != 1 || names[0] != "builtin-"+builtinVersion+"-vocab300" {
		t.Fatalf("cache holds %v, want only the built-in dataset", names)
	}
	ds := filepath.Join(herdCache, names[0])
	raw, err := os.ReadFile(filepath.Join(ds, shard.ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(".prepare-")) || bytes.Contains(raw, []byte(cache)) {
		t.Errorf("manifest names a staging or cache path:\n%s", raw)
	}
	m, err := shard.LoadManifest(ds)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range m.Sources {
		if fi, err := os.Stat(filepath.Join(ds, filepath.FromSlash(s.Input))); err != nil || !fi.IsDir() {
			t.Errorf("source %s: input %q is not a directory in the dataset: %v", s.Name, s.Input, err)
		}
	}
}

// The tokenizer sample holds only documents that pass the dataset's filter, and no duplicates.
func TestSampleSourcesFilters(t *testing.T) {
	dir := t.TempDir()
	keep := strings.Repeat("a document long enough to keep. ", 3)
	files := map[string]string{"1.txt": keep, "2.txt": "short", "3.txt": strings.Repeat("\x01\x02 ", 40), "4.txt": keep}
	for name, text := range files {
		os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644)
	}
	o := prepareOptions{sources: []shard.SourceSpec{{Name: "s", Path: dir, Weight: 1}}, minBytes: 32, maxNonText: 0.1, sampleMB: 1}
	smp, err := sampleSources(context.Background(), o, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if len(smp.docs) != 1 || string(smp.docs[0]) != keep || smp.bytes != int64(len(keep)) || smp.cut {
		t.Errorf("sample %d docs %q, %d bytes, cut %v; want the one kept document", len(smp.docs), smp.docs, smp.bytes, smp.cut)
	}
	// A budget smaller than the source stops at it.
	smp, err = sampleSources(context.Background(), o, 1)
	if err != nil || len(smp.docs) != 1 || !smp.cut {
		t.Errorf("sample with a 1-byte budget: %v, %+v", err, smp)
	}
}

// A commit that loses the race leaves the winner's dataset and says what is there.
func TestStagingCommitRace(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "ds")
	a, err := newStaging(out, "prepare", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	b, err := newStaging(out, "prepare", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(a.dir, shard.ManifestName), []byte("a"), 0o644)
	os.WriteFile(filepath.Join(b.dir, shard.ManifestName), []byte("b"), 0o644)
	if err := a.commit(); err != nil {
		t.Fatal(err)
	}
	err = b.commit()
	if err == nil || !strings.Contains(err.Error(), "another process filled --out") || !strings.Contains(err.Error(), "already holds a dataset") {
		t.Fatalf("losing commit: %v", err)
	}
	b.discard()
	a.discard()
	if got, _ := os.ReadFile(filepath.Join(out, shard.ManifestName)); string(got) != "a" {
		t.Errorf("--out holds manifest %q, want the winner's", got)
	}
	if names := entries(t, dir); !slices.Equal(names, []string{"ds"}) {
		t.Errorf("%s holds %v", dir, names)
	}
}

// A partial built-in dataset left by an earlier herd, which prepared in place, is
// neither used nor removed: herd train says what it is and leaves it as it was.
func TestBuiltinLeftoverKept(t *testing.T) {
	bin := herdBinary(t)
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	left := filepath.Join(cache, "herd", "builtin-"+builtinVersion+"-vocab300")
	os.MkdirAll(filepath.Join(left, "corpus", "english"), 0o755)
	os.WriteFile(filepath.Join(left, "tokenizer.json"), []byte("{}"), 0o644)
	before := snapshot(t, left)
	out := runFail(t, bin, []string{"XDG_CACHE_HOME=" + cache}, "train", "--vocab", "300", "--out", filepath.Join(dir, "run"), "--steps", "1")
	mustContain(t, out, "preparing the built-in corpus in "+left, "is not empty (corpus, tokenizer.json)", "interrupted preparation by an earlier herd: remove it")
	sameSnapshot(t, left, before)
	noStaging(t, filepath.Join(cache, "herd"))
}
