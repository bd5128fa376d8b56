package shard

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

// llamaMixture is the LLaMA paper's data mixture with small token counts.
func llamaMixture() Mixture {
	return Mixture{
		{"commoncrawl", 0.67, 2_000_001},
		{"c4", 0.15, 500_000},
		{"github", 0.045, 300_000},
		{"wikipedia", 0.045, 20_000},
		{"books", 0.045, 20_001},
		{"arxiv", 0.025, 100_000},
		{"stackexchange", 0.02, 60_000},
	}
}

func TestSamplerShares(t *testing.T) {
	mix := llamaMixture()
	s, err := NewSampler(mix, 7, 128)
	if err != nil {
		t.Fatal(err)
	}
	const n = 100_000
	counts := make([]int64, len(mix))
	for i := range int64(n) {
		counts[s.At(i).Source]++
	}
	if c := s.Counts(n); !slices.Equal(c, counts) {
		t.Errorf("Counts(%d) = %v, counting At gives %v", n, c, counts)
	}
	for i, c := range mix {
		share := float64(counts[i]) / n
		if rel := math.Abs(share-c.Weight) / c.Weight; rel > 0.01 {
			t.Errorf("%s: share %.5f, weight %.5f: off by %.2f%%, want < 1%%", c.Name, share, c.Weight, 100*rel)
		}
	}
	// At any n, a source is off its exact share by less than one block's
	// slots of it, plus one.
	for _, n := range []int64{1, 77, 1000, 12345, 99_999, 1_234_567} {
		for i, k := range s.Counts(n) {
			exact := mix[i].Weight * float64(n)
			if bound := math.Ceil(mix[i].Weight*float64(s.BlockSize())) + 1; math.Abs(float64(k)-exact) > bound {
				t.Errorf("n=%d %s: %d sequences, exact share %.1f, off by more than %v", n, mix[i].Name, k, exact, bound)
			}
		}
	}
	// Each block's positions hold exactly its slots.
	for b := range int64(3) {
		slots := s.Slots(b)
		got := make([]int64, len(mix))
		for i := b * s.BlockSize(); i < (b+1)*s.BlockSize(); i++ {
			got[s.At(i).Source]++
		}
		if !slices.Equal(got, slots) {
			t.Errorf("block %d holds %v, want %v", b, got, slots)
		}
	}
}

func TestCumulativeSlots(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	mixes := []Mixture{llamaMixture(), {{"a", 1, 100}, {"b", 1e-5, 100}}, {{"one", 3, 100}}}
	for range 20 {
		mix := make(Mixture, 1+rng.IntN(12))
		for i := range mix {
			mix[i] = Component{Name: "s", Weight: math.Exp(rng.Float64()*8 - 4), Tokens: 100}
		}
		mixes = append(mixes, mix)
	}
	for _, mix := range mixes {
		s, err := NewSampler(mix, 1, 8)
		if err != nil {
			t.Fatal(err)
		}
		var total float64
		for _, c := range mix {
			total += c.Weight
		}
		blocks := []int64{1, 2, 3, 1000, 1001}
		for range 50 {
			b := rng.Int64N(1 << 30)
			blocks = append(blocks, b, b+1)
		}
		for _, b := range blocks {
			c := s.cumulative(b)
			var sum int64
			for i, k := range c {
				sum += k
				exact := mix[i].Weight / total * float64(s.BlockSize()) * float64(b)
				if math.Abs(float64(k)-exact) > 1+1e-9*exact {
					t.Fatalf("weights %v, block %d: source %d has %d slots, exact share %.3f", mix, b, i, k, exact)
				}
			}
			if sum != b*s.BlockSize() {
				t.Fatalf("block %d: slots add up to %d, want %d", b, sum, b*s.BlockSize())
			}
			if slots := s.Slots(b); slices.Min(slots) < 0 {
				t.Fatalf("weights %v: block %d has slots %v", mix, b, slots)
			}
		}
	}
}

func TestAtMatchesIterator(t *testing.T) {
	// Small sources so that draws run through many epochs.
	mix := Mixture{{"a", 5, 10_000}, {"b", 3, 81}, {"c", 1, 17}, {"d", 0.5, 5000}}
	s, err := NewSampler(mix, 42, 8)
	if err != nil {
		t.Fatal(err)
	}
	const n = 30_000 // several blocks
	want := make([]Ref, n)
	it := s.Iterator()
	for k := range want {
		i, r := it.Next()
		if i != int64(k) {
			t.Fatalf("iterator index %d, want %d", i, k)
		}
		want[k] = r
	}
	for i := range int64(n) {
		if got := s.At(i); got != want[i] {
			t.Fatalf("At(%d) = %+v, iterating gives %+v", i, got, want[i])
		}
	}
	// Random access order must not matter (the block cache is refilled).
	rng := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		i := rng.Int64N(n)
		if got := s.At(i); got != want[i] {
			t.Fatalf("At(%d) in random order = %+v, want %+v", i, got, want[i])
		}
	}
	// A fresh sampler with the same inputs gives the same stream.
	s2, _ := NewSampler(mix, 42, 8)
	if s2.At(n-1) != want[n-1] || s2.At(12345) != want[12345] {
		t.Error("a second sampler with the same seed differs")
	}
	s3, _ := NewSampler(mix, 43, 8)
	diff := 0
	for i := range int64(200) {
		if s3.At(i) != want[i] {
			diff++
		}
	}
	if diff < 100 {
		t.Errorf("seed 43 agrees with seed 42 on %d of 200 indices", 200-diff)
	}
}

func TestSamplerEpochs(t *testing.T) {
	const seqLen = 8
	mix := Mixture{{"big", 1, 100_000}, {"small", 1, 5*seqLen + 1}, {"odd", 1, 7*seqLen + 5}}
	s, err := NewSampler(mix, 1, seqLen)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.Sequences(), []int64{(100_000 - 1) / seqLen, 5, 7}; !slices.Equal(got, want) {
		t.Fatalf("Sequences = %v, want %v", got, want)
	}
	const n = 20_000
	draws := make([]int64, len(mix))
	// offsets[s][e] collects the offsets of source s's epoch e.
	offsets := make([]map[int][]int64, len(mix))
	for i := range offsets {
		offsets[i] = map[int][]int64{}
	}
	it := s.Iterator()
	for range n {
		_, r := it.Next()
		N := s.seqs[r.Source]
		if want := int(draws[r.Source] / N); r.Epoch != want {
			t.Fatalf("source %d draw %d: epoch %d, want %d", r.Source, draws[r.Source], r.Epoch, want)
		}
		if r.Offset%seqLen != 0 || r.Offset+seqLen+1 > mix[r.Source].Tokens {
			t.Fatalf("source %d: window at %d does not fit %d tokens", r.Source, r.Offset, mix[r.Source].Tokens)
		}
		draws[r.Source]++
		offsets[r.Source][r.Epoch] = append(offsets[r.Source][r.Epoch], r.Offset)
	}
	for src, byEpoch := range offsets {
		N := s.seqs[src]
		full := int(draws[src] / N)
		for e := range full {
			got := slices.Sorted(slices.Values(byEpoch[e]))
			for j, off := range got {
				if off != int64(j)*seqLen {
					t.Fatalf("source %d epoch %d: sorted offsets %v, want each of 0..%d once (times %d)", src, e, got, N-1, seqLen)
				}
			}
		}
		if src > 0 && full < 100 {
			t.Errorf("source %d: only %d epochs in %d draws", src, full, n)
		}
		if src > 0 && slices.Equal(byEpoch[0], byEpoch[1]) && slices.Equal(byEpoch[1], byEpoch[2]) {
			t.Errorf("source %d: epochs 0..2 in the same order %v", src, byEpoch[0])
		}
	}
	ep := s.Epochs(n)
	for src := range mix {
		if want := float64(draws[src]) / float64(s.seqs[src]); math.Abs(ep[src]-want) > 1e-12 {
			t.Errorf("Epochs(%d)[%d] = %v, want %v", n, src, ep[src], want)
		}
	}
	if e0 := s.Epochs(0); slices.Max(e0) != 0 {
		t.Errorf("Epochs(0) = %v, want zeros", e0)
	}
}

func TestBatchUnion(t *testing.T) {
	s, err := NewSampler(llamaMixture(), 5, 64)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range []int{1, 7, 64, 100} {
		for _, step := range []int{0, 1, 5, 1000} {
			var ref []Ref
			for _, world := range []int{1, 2, 3, 8} {
				var all []int64
				sizes := []int{}
				for rank := range world {
					idx, err := Batch(step, g, rank, world)
					if err != nil {
						t.Fatal(err)
					}
					sizes = append(sizes, len(idx))
					all = append(all, idx...)
				}
				if slices.Max(sizes)-slices.Min(sizes) > 1 {
					t.Errorf("g=%d world=%d: rank sizes %v", g, world, sizes)
				}
				for j, i := range all {
					if i != int64(step*g+j) {
						t.Fatalf("g=%d step=%d world=%d: ranks in order give %v, want %d..%d", g, step, world, all, step*g, step*g+g-1)
					}
				}
				refs := make([]Ref, len(all))
				for j, i := range all {
					refs[j] = s.At(i)
				}
				if ref == nil {
					ref = refs
				} else if !slices.Equal(ref, refs) {
					t.Errorf("g=%d step=%d: world %d reads other sequences than world 1", g, step, world)
				}
			}
		}
	}
	for _, bad := range [][4]int{{-1, 8, 0, 1}, {0, 0, 0, 1}, {0, 8, 1, 1}, {0, 8, -1, 2}, {0, 8, 0, 0}} {
		if _, err := Batch(bad[0], bad[1], bad[2], bad[3]); !errors.Is(err, ErrBatch) {
			t.Errorf("Batch%v: err %v, want ErrBatch", bad, err)
		}
	}
}

func TestNewSamplerErrors(t *testing.T) {
	cases := []struct {
		name   string
		mix    Mixture
		seqLen int
		frag   string
	}{
		{"empty", nil, 8, "no sources"},
		{"seqlen", Mixture{{"a", 1, 100}}, 0, "sequence length"},
		{"zero weight", Mixture{{"a", 1, 100}, {"b", 0, 100}}, 8, `"b"`},
		{"nan weight", Mixture{{"a", math.NaN(), 100}}, 8, `"a"`},
		{"inf weight", Mixture{{"a", math.Inf(1), 100}}, 8, `"a"`},
		{"too few tokens", Mixture{{"a", 1, 100}, {"tiny", 1, 8}}, 8, `"tiny"`},
		{"weight too small", Mixture{{"a", 1, 100}, {"b", 1e-9, 100}}, 8, "weight"},
	}
	for _, tc := range cases {
		_, err := NewSampler(tc.mix, 1, tc.seqLen)
		wantErr(t, err, []error{ErrMixture}, tc.frag)
	}
	// Exactly one sequence is enough.
	if _, err := NewSampler(Mixture{{"a", 1, 9}}, 1, 8); err != nil {
		t.Errorf("9 tokens, seqLen 8: %v", err)
	}
}

func TestSmallWeightGrowsBlock(t *testing.T) {
	s, err := NewSampler(Mixture{{"a", 1, 1000}, {"b", 1e-5, 1000}}, 1, 8)
	if err != nil {
		t.Fatal(err)
	}
	if s.BlockSize() <= minBlock || s.Counts(s.BlockSize() * 10)[1] < 10 {
		t.Errorf("block %d, counts %v; want a larger block with a slot for b in every block", s.BlockSize(), s.Counts(s.BlockSize()*10))
	}
}

func TestApportion(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	for range 200 {
		w := make([]float64, 1+rng.IntN(20))
		for i := range w {
			w[i] = rng.Float64() + 1e-3
		}
		m := int64(1 + rng.IntN(10000))
		n := apportion(w, m)
		var sum, total float64
		for _, x := range w {
			total += x
		}
		for i, k := range n {
			sum += float64(k)
			if q := w[i] / total * float64(m); math.Abs(float64(k)-q) >= 1 {
				t.Fatalf("weights %v, m %d: slot %d gets %d for quota %v", w, m, i, k, q)
			}
		}
		if int64(sum) != m {
			t.Fatalf("weights %v: slots add up to %v, want %d", w, sum, m)
		}
	}
	if got := apportion([]float64{1, 1, 1}, 4); !slices.Equal(got, []int64{2, 1, 1}) {
		t.Errorf("apportion(1,1,1; 4) = %v, want ties to the lower index", got)
	}
}

func TestSamplerConcurrent(t *testing.T) {
	s, err := NewSampler(llamaMixture(), 11, 32)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]Ref, 3*minBlock)
	for i := range want {
		want[i] = s.At(int64(i))
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for k := range 3000 {
				i := (k*7919 + g*minBlock) % len(want)
				if got := s.At(int64(i)); got != want[i] {
					t.Errorf("At(%d) = %+v concurrently, want %+v", i, got, want[i])
					return
				}
			}
		})
	}
	wg.Wait()
}
