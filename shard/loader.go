package shard

import "fmt"

// Loader reads the training sequences a Sampler picks from a Dataset.
type Loader struct {
	ds *Dataset
	s  *Sampler
}

// NewLoader pairs a dataset with a sampler built for it, for example with
// NewSampler(ds.Manifest.Mixture(), seed, seqLen). The sampler's sources
// must be the dataset's, in order, with the same token counts; the weights
// may differ.
func NewLoader(ds *Dataset, s *Sampler) (*Loader, error) {
	mix := s.Mixture()
	if len(mix) != len(ds.Train) {
		return nil, fmt.Errorf("%w: sampler has %d sources, dataset %s has %d", ErrMixture, len(mix), ds.Dir, len(ds.Train))
	}
	for i, c := range mix {
		name := ds.Manifest.Sources[i].Name
		if c.Name != name || c.Tokens != int64(len(ds.Train[i])) {
			return nil, fmt.Errorf("%w: sampler source %d is %q with %d tokens, dataset %s has %q with %d",
				ErrMixture, i, c.Name, c.Tokens, ds.Dir, name, len(ds.Train[i]))
		}
	}
	return &Loader{ds: ds, s: s}, nil
}

// Sampler is the loader's sampler.
func (l *Loader) Sampler() *Sampler { return l.s }

// Window returns the SeqLen+1 tokens of global sequence i. The slice shares
// the dataset's memory and must not be modified.
func (l *Loader) Window(i int64) []int32 {
	r := l.s.At(i)
	n := int64(l.s.seqLen) + 1
	return l.ds.Train[r.Source][r.Offset : r.Offset+n : r.Offset+n]
}

// Fill writes the sequences of indices into inputs and targets, each
// len(indices)*SeqLen long: row j of inputs is window[:SeqLen] of
// indices[j], row j of targets is window[1:].
func (l *Loader) Fill(indices []int64, inputs, targets []int32) error {
	t := l.s.seqLen
	if len(inputs) != len(indices)*t || len(targets) != len(indices)*t {
		return fmt.Errorf("%w: %d sequences of %d tokens need inputs and targets of %d, got %d and %d",
			ErrBatch, len(indices), t, len(indices)*t, len(inputs), len(targets))
	}
	for j, i := range indices {
		if i < 0 {
			return fmt.Errorf("%w: sequence index %d is negative", ErrBatch, i)
		}
		w := l.Window(i)
		copy(inputs[j*t:(j+1)*t], w[:t])
		copy(targets[j*t:(j+1)*t], w[1:])
	}
	return nil
}

// FillBatch fills rank's part of step's global batch (see Batch) and
// returns the indices it read.
func (l *Loader) FillBatch(step, globalBatch, rank, world int, inputs, targets []int32) ([]int64, error) {
	idx, err := Batch(step, globalBatch, rank, world)
	if err != nil {
		return nil, err
	}
	return idx, l.Fill(idx, inputs, targets)
}
