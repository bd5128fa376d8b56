package shard

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// The perplexity buckets of CCNet.
const (
	BucketHead   = "head"   // the lowest perplexity: most like the reference
	BucketMiddle = "middle" //
	BucketTail   = "tail"   // the highest
)

// PerplexityFilter keeps the documents whose perplexity under a model of reference text
// falls in the buckets Keep names: CCNet's filter, with a 5-gram Kneser-Ney model over bytes
// (KNModel) where CCNet used KenLM over SentencePiece tokens. Scores are in bits per byte.
type PerplexityFilter struct {
	Reference      string   `json:"reference"`       // the path the model was trained on
	ReferenceBytes int64    `json:"reference_bytes"` // how much of it
	HeadMax        float64  `json:"head_max"`        // bits per byte at or below which a document is head
	TailMin        float64  `json:"tail_min"`        // above which it is tail; between: middle
	Keep           []string `json:"keep"`            // the buckets kept
	Model          *KNModel `json:"-"`
}

// Validate checks f's buckets and thresholds.
func (f *PerplexityFilter) Validate() error {
	switch {
	case f.Model == nil:
		return fmt.Errorf("%w: the perplexity filter has no model (give it a reference)", ErrConfig)
	case !(f.HeadMax <= f.TailMin):
		return fmt.Errorf("%w: perplexity head threshold %v is above the tail threshold %v", ErrConfig, f.HeadMax, f.TailMin)
	case len(f.Keep) == 0:
		return fmt.Errorf("%w: the perplexity filter keeps no bucket", ErrConfig)
	}
	for _, b := range f.Keep {
		if b != BucketHead && b != BucketMiddle && b != BucketTail {
			return fmt.Errorf("%w: unknown perplexity bucket %q (head, middle or tail)", ErrConfig, b)
		}
	}
	return nil
}

// bucket returns the bucket of a score.
func (f *PerplexityFilter) bucket(bpb float64) string {
	switch {
	case bpb <= f.HeadMax:
		return BucketHead
	case bpb > f.TailMin:
		return BucketTail
	}
	return BucketMiddle
}

// ParseBuckets parses a comma-separated list of bucket names.
func ParseBuckets(list string) ([]string, error) {
	var out []string
	for _, b := range strings.Split(list, ",") {
		b = strings.TrimSpace(b)
		if b != BucketHead && b != BucketMiddle && b != BucketTail {
			return nil, fmt.Errorf("%w: unknown perplexity bucket %q (head, middle or tail)", ErrConfig, b)
		}
		if !slices.Contains(out, b) {
			out = append(out, b)
		}
	}
	return out, nil
}

// TrainReference trains a KNModel on the documents of path, up to maxBytes of them.
func TrainReference(ctx context.Context, path string, maxBytes int64) (*KNModel, error) {
	b := NewKNBuilder()
	errFull := errors.New("full")
	_, err := ReadDocuments(ctx, path, ReadOptions{}, func(doc []byte) error {
		if b.Bytes() >= maxBytes {
			return errFull
		}
		b.Add(doc[:min(int64(len(doc)), maxBytes-b.Bytes())])
		return nil
	})
	if err != nil && !errors.Is(err, errFull) {
		return nil, err
	}
	return b.Build()
}

// SampleBitsPerByte scores the first n documents of path that f's length and non-text
// limits keep, and returns their scores, sorted.
func SampleBitsPerByte(ctx context.Context, path string, m *KNModel, n int, f Filter) ([]float64, error) {
	var out []float64
	errFull := errors.New("full")
	_, err := ReadDocuments(ctx, path, ReadOptions{}, func(doc []byte) error {
		if len(doc) < f.MinBytes || NonTextShare(doc) > f.MaxNonText {
			return nil
		}
		out = append(out, m.BitsPerByte(doc))
		if len(out) >= n {
			return errFull
		}
		return nil
	})
	if err != nil && !errors.Is(err, errFull) {
		return nil, err
	}
	slices.Sort(out)
	return out, nil
}

// Quantile returns the q-quantile (0..1) of sorted values, by the nearest rank.
func Quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
