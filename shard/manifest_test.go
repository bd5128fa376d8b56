package shard

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// preparedDataset prepares the test corpus and returns its directory.
func preparedDataset(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "ds")
	if _, err := Prepare(context.Background(), testConfig(makeCorpus(t), out)); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestLoadManifestErrors(t *testing.T) {
	dir := preparedDataset(t)
	good, err := LoadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		field string
		edit  func(m *Manifest)
	}{
		{"format_version", func(m *Manifest) { m.FormatVersion = 2 }},
		{"tokenizer_hash", func(m *Manifest) { m.TokenizerHash = "" }},
		{"vocab_size", func(m *Manifest) { m.VocabSize = 0 }},
		{"eos", func(m *Manifest) { m.EOS = 257 }},
		{"sources is empty", func(m *Manifest) { m.Sources = nil }},
		{"sources[1].name", func(m *Manifest) { m.Sources[1].Name = m.Sources[0].Name }},
		{"sources[2].name", func(m *Manifest) { m.Sources[2].Name = "a/b" }},
		{"sources[0].weight", func(m *Manifest) { m.Sources[0].Weight = -1 }},
		{"sources[3].train_files is empty", func(m *Manifest) { m.Sources[3].TrainFiles = nil }},
		{"sources[0].train_files[1].path", func(m *Manifest) { m.Sources[0].TrainFiles[1].Path = "../../etc/passwd" }},
		{"sources[0].train_files[1].path", func(m *Manifest) { m.Sources[0].TrainFiles[1].Path = "/abs.tok" }},
		{"sources[1].train_files[0].path", func(m *Manifest) { m.Sources[1].TrainFiles[0].Path = m.Sources[0].TrainFiles[0].Path }},
		{"sources[0].train_files[0].tokens", func(m *Manifest) { m.Sources[0].TrainFiles[0].Tokens = 0 }},
		{"sources[1].held_out_files: tokens add up", func(m *Manifest) { m.Sources[1].HeldOutTokens++ }},
		{"sources[0]: train_docs", func(m *Manifest) { m.Sources[0].TrainDocs = 0 }},
	}
	for _, tc := range cases {
		m := cloneManifest(t, good)
		tc.edit(m)
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), ManifestName)
		writeFile(t, path, b)
		_, err = LoadManifest(path)
		wantErr(t, err, []error{ErrManifest}, path, tc.field)
		wantErr(t, m.Validate(), []error{ErrManifest}, tc.field)
	}
	bad := filepath.Join(t.TempDir(), ManifestName)
	writeFile(t, bad, []byte(`{"format_version": "one"}`))
	_, err = LoadManifest(bad)
	wantErr(t, err, []error{ErrManifest}, bad, "format_version")
	missing := filepath.Join(t.TempDir(), ManifestName)
	_, err = LoadManifest(missing)
	wantErr(t, err, []error{ErrManifest, os.ErrNotExist}, missing)
}

func cloneManifest(t *testing.T, m *Manifest) *Manifest {
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var c Manifest
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return &c
}
