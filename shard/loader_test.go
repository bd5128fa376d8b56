package shard

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
)

func TestLoaderWindows(t *testing.T) {
	c := makeCorpus(t)
	out := filepath.Join(t.TempDir(), "ds")
	if _, err := Prepare(context.Background(), testConfig(c, out)); err != nil {
		t.Fatal(err)
	}
	ds, err := LoadDataset(out, "")
	if err != nil {
		t.Fatal(err)
	}
	const seqLen = 16
	s, err := NewSampler(ds.Manifest.Mixture(), 3, seqLen)
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewLoader(ds, s)
	if err != nil {
		t.Fatal(err)
	}
	const global, world = 10, 3
	for step := range 5 {
		var all []int64
		for rank := range world {
			idx, err := Batch(step, global, rank, world)
			if err != nil {
				t.Fatal(err)
			}
			in, tg := make([]int32, len(idx)*seqLen), make([]int32, len(idx)*seqLen)
			got, err := l.FillBatch(step, global, rank, world, in, tg)
			if err != nil || !slices.Equal(got, idx) {
				t.Fatalf("FillBatch: %v, %v; want indices %v", got, err, idx)
			}
			for j, i := range idx {
				r := s.At(i)
				win := ds.Train[r.Source][r.Offset : r.Offset+seqLen+1]
				if !slices.Equal(in[j*seqLen:(j+1)*seqLen], win[:seqLen]) || !slices.Equal(tg[j*seqLen:(j+1)*seqLen], win[1:]) {
					t.Fatalf("step %d rank %d row %d: inputs/targets are not the window of %+v", step, rank, j, r)
				}
				if !slices.Equal(l.Window(i), win) {
					t.Fatalf("Window(%d) differs from the train stream", i)
				}
			}
			all = append(all, idx...)
		}
		if len(all) != global || all[0] != int64(step*global) {
			t.Errorf("step %d: ranks read %v", step, all)
		}
	}
	// The windows read from the files are the documents' bytes.
	w := l.Window(0)
	r := s.At(0)
	toks, _, err := ReadFile(filepath.Join(out, ds.Manifest.Sources[r.Source].TrainFiles[0].Path), OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Offset+seqLen+1 <= int64(len(toks)) && !slices.Equal(w, toks[r.Offset:r.Offset+seqLen+1]) {
		t.Error("window differs from the first shard file")
	}
	if err := l.Fill([]int64{0}, make([]int32, seqLen), make([]int32, seqLen-1)); !errors.Is(err, ErrBatch) {
		t.Errorf("short targets: %v, want ErrBatch", err)
	}
	other, _ := NewSampler(Mixture{{"web", 1, 1000}}, 1, seqLen)
	if _, err := NewLoader(ds, other); !errors.Is(err, ErrMixture) {
		t.Errorf("NewLoader with another mixture: %v, want ErrMixture", err)
	}
}
