package shard

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
)

// classifierBits is the log2 of the number of hashed features.
const classifierBits = 20

// Classifier is a linear classifier over hashed word unigrams and bigrams of normalized
// text (logistic regression, the model of LLaMA's reference-page filter, which kept the pages
// it scored as like those Wikipedia cites): Score is the probability that a document is like
// the positive examples. It is read-only once trained and safe for concurrent use.
type Classifier struct {
	w    []float32 // a weight per feature bucket
	bias float32
}

// features returns the feature buckets of a document's words (docWords), each once, and the
// weight of each (1/sqrt(n), so that a document's feature vector has unit length).
func features(words [][]byte) ([]uint32, float32) {
	seen := make(map[uint32]struct{}, 2*len(words))
	out := make([]uint32, 0, 2*len(words))
	add := func(h uint64) {
		f := uint32(h >> (64 - classifierBits))
		if _, dup := seen[f]; !dup {
			seen[f] = struct{}{}
			out = append(out, f)
		}
	}
	var prev uint64
	for i, w := range words {
		h := hash64(w)
		add(h)
		if i > 0 {
			add(mix64(prev*31 ^ h))
		}
		prev = h
	}
	if len(out) == 0 {
		return nil, 0
	}
	return out, float32(1 / math.Sqrt(float64(len(out))))
}

// Score returns the probability that doc is like the positive examples.
func (c *Classifier) Score(doc []byte) float64 { return c.scoreWords(docWords(doc)) }

// scoreWords is Score on a document's words (docWords).
func (c *Classifier) scoreWords(words [][]byte) float64 {
	fs, v := features(words)
	z := c.bias
	for _, f := range fs {
		z += c.w[f] * v
	}
	return 1 / (1 + math.Exp(-float64(z)))
}

// TrainClassifier fits a classifier to positive and negative examples by stochastic gradient
// descent on the logistic loss, a few passes in a seeded random order.
func TrainClassifier(pos, neg [][]byte) *Classifier {
	c := &Classifier{w: make([]float32, 1<<classifierBits)}
	type example struct {
		fs    []uint32
		v, y  float32
		valid bool
	}
	var ex []example
	for y, docs := range [][][]byte{neg, pos} {
		for _, d := range docs {
			fs, v := features(docWords(d))
			ex = append(ex, example{fs, v, float32(y), fs != nil})
		}
	}
	rng := rand.New(rand.NewPCG(7, 7))
	const epochs, rate = 5, 0.5
	for range epochs {
		rng.Shuffle(len(ex), func(i, j int) { ex[i], ex[j] = ex[j], ex[i] })
		for _, e := range ex {
			if !e.valid {
				continue
			}
			z := c.bias
			for _, f := range e.fs {
				z += c.w[f] * e.v
			}
			g := float32(1/(1+math.Exp(-float64(z)))) - e.y // d loss / d z
			c.bias -= rate * g
			for _, f := range e.fs {
				c.w[f] -= rate * g * e.v
			}
		}
	}
	return c
}

// ClassifierFilter keeps the documents a classifier scores at or above Threshold.
type ClassifierFilter struct {
	Positive  string  `json:"positive"`  // the path of the positive examples
	Negative  string  `json:"negative"`  // and of the negative ones
	Threshold float64 `json:"threshold"` // the least score kept
	// Trained on this many examples of each class; HeldOut examples (a tenth of each class)
	// were kept out of training, and Accuracy is the share of them it got right at Threshold.
	TrainPositive int         `json:"train_positive"`
	TrainNegative int         `json:"train_negative"`
	HeldOut       int         `json:"held_out"`
	Accuracy      float64     `json:"held_out_accuracy"`
	Model         *Classifier `json:"-"`
}

// Validate checks f.
func (f *ClassifierFilter) Validate() error {
	switch {
	case f.Model == nil:
		return fmt.Errorf("%w: the classifier filter has no model (give it positive and negative examples)", ErrConfig)
	case !(f.Threshold >= 0 && f.Threshold <= 1):
		return fmt.Errorf("%w: classifier threshold is %v, want 0..1", ErrConfig, f.Threshold)
	}
	return nil
}

// TrainClassifierFilter reads up to maxDocs documents of the positive and the negative path
// that limits keep, holds every tenth out, trains on the rest and measures the held-out
// accuracy at threshold.
func TrainClassifierFilter(ctx context.Context, positive, negative string, maxDocs int, threshold float64, limits Filter) (*ClassifierFilter, error) {
	read := func(path string) ([][]byte, error) {
		var docs [][]byte
		errFull := errors.New("full")
		_, err := ReadDocuments(ctx, path, ReadOptions{}, func(doc []byte) error {
			if len(doc) < limits.MinBytes || NonTextShare(doc) > limits.MaxNonText {
				return nil
			}
			docs = append(docs, doc)
			if len(docs) >= maxDocs {
				return errFull
			}
			return nil
		})
		if err != nil && !errors.Is(err, errFull) {
			return nil, err
		}
		if len(docs) < 10 {
			return nil, fmt.Errorf("%w: %s has %d usable documents, the classifier needs at least 10", ErrConfig, path, len(docs))
		}
		return docs, nil
	}
	pos, err := read(positive)
	if err != nil {
		return nil, err
	}
	neg, err := read(negative)
	if err != nil {
		return nil, err
	}
	split := func(docs [][]byte) (train, held [][]byte) {
		for i, d := range docs {
			if i%10 == 9 {
				held = append(held, d)
			} else {
				train = append(train, d)
			}
		}
		return train, held
	}
	pt, ph := split(pos)
	nt, nh := split(neg)
	m := TrainClassifier(pt, nt)
	right := 0
	for _, d := range ph {
		if m.Score(d) >= threshold {
			right++
		}
	}
	for _, d := range nh {
		if m.Score(d) < threshold {
			right++
		}
	}
	return &ClassifierFilter{Positive: positive, Negative: negative, Threshold: threshold, TrainPositive: len(pt), TrainNegative: len(nt),
		HeldOut: len(ph) + len(nh), Accuracy: float64(right) / float64(len(ph)+len(nh)), Model: m}, nil
}
