package shard

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestLoadDatasetChecksFiles(t *testing.T) {
	dir := preparedDataset(t)
	m, err := LoadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = LoadDataset(dir, "other-tokenizer")
	wantErr(t, err, []error{ErrTokenizerMismatch}, filepath.Join(dir, ManifestName))

	// Swap two train files of web: counts or checksums no longer match.
	a := filepath.Join(dir, filepath.FromSlash(m.Sources[0].TrainFiles[0].Path))
	b := filepath.Join(dir, filepath.FromSlash(m.Sources[0].TrainFiles[1].Path))
	ab, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	writeFile(t, a, bb)
	writeFile(t, b, ab)
	_, err = LoadDataset(dir, "")
	wantErr(t, err, []error{ErrManifest}, a, "sources[0].train_files[0]")
	writeFile(t, a, ab)
	writeFile(t, b, bb)

	// A damaged token file is caught by its checksum.
	ab[len(ab)-1] ^= 1
	writeFile(t, a, ab)
	_, err = LoadDataset(dir, "")
	wantErr(t, err, []error{ErrDataChecksum}, a)

	// A missing file names itself.
	os.Remove(a)
	_, err = LoadDataset(dir, "")
	wantErr(t, err, nil, a)
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want os.ErrNotExist", err)
	}
}
