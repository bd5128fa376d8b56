package shard

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// prose is English text of the kind a reference holds, made from sentences with their own
// structure, so that held-out sentences share the reference's n-grams without repeating it.
func prose(rng *rand.Rand, sentences int) string {
	subjects := []string{"The committee", "A small group of farmers", "The new library", "Her brother", "The city council", "Most of the students", "The old bridge", "Our neighbours"}
	verbs := []string{"decided to build", "was asked to review", "has finally opened", "would rather avoid", "wrote a letter about", "spent the summer near", "will soon announce", "could not explain"}
	objects := []string{"the school on the hill.", "a plan for the harbour.", "the history of the river.", "their reasons for leaving.", "the price of bread in winter.", "a road through the forest.", "the results of the election.", "what happened that night."}
	var sb strings.Builder
	for range sentences {
		fmt.Fprintf(&sb, "%s %s %s ", subjects[rng.IntN(len(subjects))], verbs[rng.IntN(len(verbs))], objects[rng.IntN(len(objects))])
	}
	return sb.String()
}

// gibberish is letters and spaces at random: what a perplexity filter must put in the tail.
func gibberish(rng *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		if rng.IntN(6) == 0 {
			b[i] = ' '
		} else {
			b[i] = byte('a' + rng.IntN(26))
		}
	}
	return string(b)
}

// spam repeats a few keywords, the way pages stuffed for search engines do.
func spam(rng *rand.Rand, n int) string {
	words := []string{"cheap", "pills", "casino", "bonus", "free", "viagra", "loans", "win"}
	var sb strings.Builder
	for sb.Len() < n {
		sb.WriteString(words[rng.IntN(len(words))])
		sb.WriteString(" ")
	}
	return sb.String()
}

// The model is a distribution: after any context, seen or not, the probabilities of the 256
// bytes add up to 1.
func TestKNModelIsADistribution(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	b := NewKNBuilder()
	for range 20 {
		b.Add([]byte(prose(rng, 20)))
	}
	m, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	for _, ctx := range []string{"The c", "uncil", "zzzz", "\x02\x02\x02\x02", " the ", "qqqq"} {
		s := []byte(ctx + "?")
		var sum float64
		for c := range 256 {
			s[len(s)-1] = byte(c)
			sum += m.prob(s, len(s)-1)
		}
		if math.Abs(sum-1) > 1e-9 {
			t.Errorf("after %q the probabilities sum to %.12f", ctx, sum)
		}
	}
	for k, d := range m.discount {
		if !(d > 0 && d < 1) {
			t.Errorf("order %d: discount %v", k+1, d)
		}
	}
	if _, err := NewKNBuilder().Build(); err == nil {
		t.Error("a model of nothing was built")
	}
}

// Held-out text like the reference scores far below gibberish and keyword spam.
func TestKNModelSeparatesProseFromJunk(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 2))
	b := NewKNBuilder()
	for range 200 {
		b.Add([]byte(prose(rng, 10)))
	}
	m, _ := b.Build()
	p, g, s := m.BitsPerByte([]byte(prose(rng, 10))), m.BitsPerByte([]byte(gibberish(rng, 500))), m.BitsPerByte([]byte(spam(rng, 500)))
	t.Logf("bits per byte: held-out prose %.3f, gibberish %.3f, keyword spam %.3f", p, g, s)
	if !(p < 1.5 && g > 3*p && s > 2*p) {
		t.Errorf("prose %.3f, gibberish %.3f, spam %.3f", p, g, s)
	}
	if m.BitsPerByte(nil) != 0 {
		t.Error("an empty document scores")
	}
}

// plantPerplexityCorpus writes a reference of prose and a source of prose with planted
// gibberish and keyword spam, and returns the source's documents with whether each is junk.
func plantPerplexityCorpus(t *testing.T, dir string) (ref, src string, junk map[string]bool) {
	rng := rand.New(rand.NewPCG(3, 3))
	ref, src = filepath.Join(dir, "ref"), filepath.Join(dir, "src")
	os.MkdirAll(ref, 0o755)
	os.MkdirAll(src, 0o755)
	for i := range 100 {
		writeFile(t, filepath.Join(ref, fmt.Sprintf("r%03d.txt", i)), []byte(prose(rng, 12)))
	}
	junk = map[string]bool{}
	for i := range 150 {
		doc, bad := prose(rng, 8), false
		switch i % 5 {
		case 1:
			doc, bad = gibberish(rng, 400), true
		case 3:
			doc, bad = spam(rng, 400), true
		}
		writeFile(t, filepath.Join(src, fmt.Sprintf("d%03d.txt", i)), []byte(doc))
		junk[doc] = bad
	}
	return ref, src, junk
}

// The perplexity filter on planted gibberish and keyword spam, with CCNet's buckets from the
// source's own tertiles (the junk is 40% of it, so the head and middle hold only prose): every
// junk document lands in the tail and goes, and no prose does. The figures are in
// docs/data.md.
func TestPerplexityFilterPlanted(t *testing.T) {
	ref, src, junk := plantPerplexityCorpus(t, t.TempDir())
	m, err := TrainReference(t.Context(), ref, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	scores, err := SampleBitsPerByte(t.Context(), src, m, 1000, DefaultFilter())
	if err != nil || len(scores) != len(junk) || !slices.IsSorted(scores) {
		t.Fatalf("sampled %d scores of %d documents: %v", len(scores), len(junk), err)
	}
	f := &PerplexityFilter{Model: m, HeadMax: Quantile(scores, 0.33), TailMin: Quantile(scores, 0.66), Keep: []string{BucketHead, BucketMiddle}}
	if err := f.Validate(); err != nil {
		t.Fatal(err)
	}
	var c tally
	for doc, bad := range junk {
		c.add(!slices.Contains(f.Keep, f.bucket(m.BitsPerByte([]byte(doc)))), bad)
	}
	tp, fp, fn := c.tp, c.fp, c.fn
	t.Logf("perplexity (tail dropped; head <= %.3f, tail > %.3f bits/byte): %d junk dropped, %d prose dropped, %d junk kept; precision %.3f, recall %.3f",
		f.HeadMax, f.TailMin, tp, fp, fn, float64(tp)/float64(tp+fp), float64(tp)/float64(tp+fn))
	// The tail is a third of the source and the junk 40%: the tail holds junk only.
	if fp != 0 || tp < 45 {
		t.Errorf("%d prose documents dropped (want 0), %d junk dropped (want >= 45 of 60)", fp, tp)
	}
	// Keeping only the head drops all junk.
	f.Keep = []string{BucketHead}
	for doc, bad := range junk {
		if bad && f.bucket(m.BitsPerByte([]byte(doc))) == BucketHead {
			t.Errorf("junk in the head: %.40q", doc)
		}
	}
}

func TestPerplexityFilterValidate(t *testing.T) {
	m := &KNModel{}
	for _, c := range []struct {
		f    PerplexityFilter
		want string
	}{
		{PerplexityFilter{Keep: []string{"head"}}, "has no model"},
		{PerplexityFilter{Model: m, HeadMax: 3, TailMin: 2, Keep: []string{"head"}}, "head threshold 3 is above the tail threshold 2"},
		{PerplexityFilter{Model: m, Keep: nil}, "keeps no bucket"},
		{PerplexityFilter{Model: m, Keep: []string{"top"}}, `unknown perplexity bucket "top"`},
	} {
		if err := c.f.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.f, err, c.want)
		}
	}
	if _, err := ParseBuckets("head,tial"); err == nil || !strings.Contains(err.Error(), `"tial"`) {
		t.Errorf("ParseBuckets: %v", err)
	}
	if q := Quantile([]float64{1, 2, 3, 4}, 0.5); q != 2 {
		t.Errorf("median of 1..4 by nearest rank: %v", q)
	}
}

// tally counts a filter's decisions against the planted truth.
type tally struct{ tp, fp, fn int }

// add counts one document: dropped by the filter, bad (planted) or not.
func (c *tally) add(dropped, bad bool) {
	switch {
	case dropped && bad:
		c.tp++
	case dropped:
		c.fp++
	case bad:
		c.fn++
	}
}
