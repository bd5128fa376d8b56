package shard

import (
	"cmp"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"sync/atomic"
)

// Component is one source of a sampling mixture: its name, its sampling
// weight (relative; weights need not sum to 1) and its train token count.
type Component struct {
	Name   string
	Weight float64
	Tokens int64
}

// Mixture is the list of sources a Sampler draws from, in a fixed order.
type Mixture []Component

// Ref locates one training sequence: the window of SeqLen+1 tokens starting
// at Offset in the concatenated train tokens of source Source, drawn in the
// source's epoch Epoch (0 for the first pass over the source).
type Ref struct {
	Source int
	Epoch  int
	Offset int64
}

// Block sizes: the smallest block is minBlock; it doubles while some source
// would get less than one slot per block, up to maxBlock.
const (
	minBlock = 256
	maxBlock = 1 << 24
)

// quotaBits is the precision of the normalized weights: source s owns
// quota_s / 2^quotaBits of the stream, and the quotas add up to 2^quotaBits.
const quotaBits = 62

// Sampler maps a global sequence index to a training sequence. It is a pure
// function of (mixture, seed, seqLen, index): the data cursor of a run is just
// its step number, and any world size reads the same stream.
//
// Source choice. Indices are grouped in blocks of M, the smallest power of
// two from 256 up that gives every source at least one slot per block (256
// for LLaMA's mixture, whose smallest weight is 2%). C_s(b), the slots
// source s owns in blocks [0, b), is the largest-remainder rounding of
// w_s*M*b (computed exactly in integers, ties to the lower source index), so
// after any whole number of blocks every source is within one sequence of
// its exact share. Block b gives source s C_s(b+1)-C_s(b) slots, placed in
// the block by a permutation keyed by (seed, b). The number of draws of s
// before index i is C_s(i/M) plus a count inside one block: O(M) work, no
// iteration from 0. Over the first n sequences a source's count is within
// ceil(w_s*M)+1 of w_s*n: for LLaMA's 2% source, 7 sequences at any n.
//
// Position in source. Source s holds N_s = (Tokens_s-1)/SeqLen sequences,
// windows of SeqLen+1 tokens with stride SeqLen. Its k-th draw is sequence
// perm_{seed,s,e}(k mod N_s) of epoch e = k / N_s, so every sequence is seen
// once per epoch, in a new order each epoch. The permutation is computed one
// element at a time (see permutation), so N_s may be large.
//
// A Sampler is safe for concurrent use.
type Sampler struct {
	mix    Mixture
	seed   uint64
	seqLen int
	block  int64    // M
	quota  []uint64 // normalized weights, summing to 2^quotaBits
	seqs   []int64  // N_s: sequences of source s per epoch
	cache  atomic.Pointer[blockLayout]
}

// blockLayout is block b's first draw index per source and, per position,
// its source and how many earlier positions of the block the source holds.
type blockLayout struct {
	b     int64
	base  []int64 // C_s(b)
	owner []int32
	rank  []int32
}

// NewSampler checks the mixture and builds a sampler for sequences of
// seqLen tokens (each read as a window of seqLen+1 tokens).
func NewSampler(mix Mixture, seed uint64, seqLen int) (*Sampler, error) {
	if len(mix) == 0 {
		return nil, fmt.Errorf("%w: no sources", ErrMixture)
	}
	if seqLen < 1 {
		return nil, fmt.Errorf("%w: sequence length %d, want >= 1", ErrMixture, seqLen)
	}
	s := &Sampler{mix: slices.Clone(mix), seed: seed, seqLen: seqLen, seqs: make([]int64, len(mix))}
	weights := make([]float64, len(mix))
	for i, c := range mix {
		if err := checkWeight(c.Weight); err != nil {
			return nil, fmt.Errorf("%w: source %q (%d): %v", ErrMixture, c.Name, i, err)
		}
		weights[i] = c.Weight
		if c.Tokens < int64(seqLen)+1 {
			return nil, fmt.Errorf("%w: source %q (%d) has %d train tokens, fewer than one sequence of %d+1",
				ErrMixture, c.Name, i, c.Tokens, seqLen)
		}
		s.seqs[i] = (c.Tokens - 1) / int64(seqLen)
	}
	q := apportion(weights, 1<<quotaBits)
	s.quota = make([]uint64, len(q))
	for i, v := range q {
		s.quota[i] = uint64(v)
	}
	minQuota := slices.Min(s.quota)
	for m := int64(minBlock); m <= maxBlock && s.block == 0; m *= 2 {
		if minQuota >= (1<<quotaBits)/uint64(m) { // quota_s*M >= 2^quotaBits; M is a power of two
			s.block = m
		}
	}
	if s.block == 0 {
		return nil, fmt.Errorf("%w: a weight is below 1/%d of the total; no block size gives every source a slot per block", ErrMixture, maxBlock)
	}
	return s, nil
}

// cumulative returns C_s(b) for every source: the largest-remainder
// rounding of quota_s*M*b / 2^quotaBits, which adds up to M*b. With every
// quota_s*M of at least 2^quotaBits (one slot per block), C_s never
// decreases from one block to the next.
func (s *Sampler) cumulative(b int64) []int64 {
	total := uint64(b) * uint64(s.block)
	c := make([]int64, len(s.quota))
	rem := make([]uint64, len(s.quota))
	left := total
	for i, q := range s.quota {
		hi, lo := bits.Mul64(q, total)
		c[i] = int64(hi<<(64-quotaBits) | lo>>quotaBits)
		rem[i] = lo & (1<<quotaBits - 1)
		left -= uint64(c[i])
	}
	if left == 0 {
		return c
	}
	order := make([]int, len(c))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(x, y int) int { return cmp.Compare(rem[y], rem[x]) })
	for _, i := range order[:left] {
		c[i]++
	}
	return c
}

// apportion splits m slots in proportion to weights by largest remainder:
// each gets the floor of its quota, and the slots left go to the largest
// fractional parts, ties to the lower index.
func apportion(weights []float64, m int64) []int64 {
	var total float64
	for _, w := range weights {
		total += w
	}
	n := make([]int64, len(weights))
	frac := make([]float64, len(weights))
	left := m
	for i, w := range weights {
		q := w / total * float64(m)
		f := math.Floor(q)
		n[i], frac[i] = int64(f), q-f
		left -= n[i]
	}
	order := make([]int, len(weights))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(frac[b], frac[a]) })
	for k := int64(0); left > 0; k++ {
		n[order[k%int64(len(order))]]++
		left--
	}
	for k := 0; left < 0; k++ { // rounding pushed the floors over m: take back from the smallest remainders
		i := order[len(order)-1-k%len(order)]
		if n[i] > 0 {
			n[i]--
			left++
		}
	}
	return n
}

// Mixture returns the sampler's sources.
func (s *Sampler) Mixture() Mixture { return slices.Clone(s.mix) }

// SeqLen is the number of input tokens per sequence.
func (s *Sampler) SeqLen() int { return s.seqLen }

// BlockSize is M, the number of indices over which the mixture is exact.
func (s *Sampler) BlockSize() int64 { return s.block }

// Slots returns how many positions of block b each source owns.
func (s *Sampler) Slots(b int64) []int64 {
	lo, hi := s.cumulative(b), s.cumulative(b+1)
	for i := range hi {
		hi[i] -= lo[i]
	}
	return hi
}

// Sequences returns N_s, the sequences in one epoch of each source.
func (s *Sampler) Sequences() []int64 { return slices.Clone(s.seqs) }

// At returns the sequence at global index i >= 0. It panics when i < 0.
func (s *Sampler) At(i int64) Ref {
	if i < 0 {
		panic(fmt.Sprintf("shard: Sampler.At(%d): negative index", i))
	}
	b, pos := i/s.block, i%s.block
	l := s.layout(b)
	src := l.owner[pos]
	return s.ref(int(src), l.base[src]+int64(l.rank[pos]))
}

// ref maps the k-th draw of source src to its epoch and token offset.
func (s *Sampler) ref(src int, k int64) Ref {
	n := s.seqs[src]
	e := k / n
	p := newPermutation(uint64(n), sourceKey(s.seed, src, e))
	return Ref{Source: src, Epoch: int(e), Offset: int64(p.at(uint64(k%n))) * int64(s.seqLen)}
}

// layout returns block b's layout, computing it unless it is the cached one.
func (s *Sampler) layout(b int64) *blockLayout {
	if l := s.cache.Load(); l != nil && l.b == b {
		return l
	}
	l := &blockLayout{b: b, base: s.cumulative(b), owner: make([]int32, s.block), rank: make([]int32, s.block)}
	slotOwner := s.slotOwners(b)
	p := newPermutation(uint64(s.block), blockKey(s.seed, b))
	count := make([]int32, len(s.mix))
	for pos := range s.block {
		src := slotOwner[p.at(uint64(pos))]
		l.owner[pos], l.rank[pos] = src, count[src]
		count[src]++
	}
	s.cache.Store(l)
	return l
}

// slotOwners lists the source of each of block b's M slots before they are
// placed: source 0's slots first, then source 1's, and so on.
func (s *Sampler) slotOwners(b int64) []int32 {
	owners := make([]int32, 0, s.block)
	for src, n := range s.Slots(b) {
		for range n {
			owners = append(owners, int32(src))
		}
	}
	return owners
}

// Counts returns how many of the indices [0, n) each source serves.
func (s *Sampler) Counts(n int64) []int64 {
	if n < 0 {
		n = 0
	}
	b, r := n/s.block, n%s.block
	c := s.cumulative(b)
	if r > 0 {
		for _, src := range s.layout(b).owner[:r] {
			c[src]++
		}
	}
	return c
}

// Epochs returns, per source, the epochs consumed by the first n sequences:
// draws / N_s. This is the "epochs" column of LLaMA's data mixture table.
func (s *Sampler) Epochs(n int64) []float64 {
	c := s.Counts(n)
	e := make([]float64, len(c))
	for src, k := range c {
		e[src] = float64(k) / float64(s.seqs[src])
	}
	return e
}

// Iterator walks the sampler's stream from index 0 in order. It keeps running
// draw counts per source instead of computing them as At does, and is cheaper
// than At for a sequential pass (statistics, a check of At).
type Iterator struct {
	s     *Sampler
	next  int64
	draws []int64
	slots []int32 // source of each slot of the current block
	perm  permutation
}

// Iterator returns an iterator at index 0.
func (s *Sampler) Iterator() *Iterator {
	return &Iterator{s: s, draws: make([]int64, len(s.mix))}
}

// Next returns the next index and its sequence.
func (it *Iterator) Next() (int64, Ref) {
	i, s := it.next, it.s
	b, pos := i/s.block, i%s.block
	if pos == 0 {
		it.slots = s.slotOwners(b)
		it.perm = newPermutation(uint64(s.block), blockKey(s.seed, b))
	}
	src := it.slots[it.perm.at(uint64(pos))]
	k := it.draws[src]
	it.draws[src]++
	it.next++
	return i, s.ref(int(src), k)
}
