package shard

import (
	"bytes"
	"math"
)

// minhashPerms is the length of a MinHash signature.
const minhashPerms = 128

// nearDupIndex finds near-duplicate documents (Broder 1997; Leskovec et al., Mining of
// Massive Datasets, ch. 3): a document is its set of word shingles, Shingle consecutive words
// of its normalized text; a signature of minhashPerms MinHash values estimates the Jaccard
// similarity of two sets as the share of positions where the signatures agree; locality
// sensitive hashing over bands of the signature finds the candidates, and a candidate whose
// estimated similarity reaches the threshold makes the document a near-duplicate. It holds a
// signature (512 bytes) and one bucket entry per band for every document it keeps, in memory
// (about 3.3 KiB of resident memory per document, measured); neardupspill.go bounds that.
type nearDupIndex struct {
	cfg         NearDup
	bands, rows int
	a, b        [minhashPerms]uint64  // the permutations: x -> a*x + b mod 2^64, high 32 bits
	sigs        []uint32              // the kept documents' signatures, one after another
	buckets     []map[uint64][]uint32 // per band: band hash -> documents

	// In bounded memory (neardupspill.go), instead of sigs and buckets: the first pass
	// records every signature, and Prepare's pass reads the verdicts it decided.
	plan     *nearDupPlan
	verdicts *nearDupVerdicts
}

func newNearDupIndex(cfg NearDup) *nearDupIndex {
	x := &nearDupIndex{cfg: cfg}
	x.bands, x.rows = lshBands(cfg.Threshold, minhashPerms)
	seed := uint64(0x6e656172647570) // fixed: the same corpus gives the same verdicts on every run
	for i := range minhashPerms {
		seed += 0x9e3779b97f4a7c15
		x.a[i] = mix64(seed) | 1
		seed += 0x9e3779b97f4a7c15
		x.b[i] = mix64(seed)
	}
	x.buckets = make([]map[uint64][]uint32, x.bands)
	for i := range x.buckets {
		x.buckets[i] = map[uint64][]uint32{}
	}
	return x
}

// lshBands chooses the bands and rows per band (bands*rows <= perms): the most rows (the
// fewest candidates to check) whose S-curve 1-(1-s^rows)^bands still makes a pair 0.05 below
// the threshold a candidate with probability 0.9 or more. A candidate is then judged on its
// whole signature, whose estimate decides near the threshold; a pair the bands miss is never
// seen, so the bands are chosen for recall.
func lshBands(threshold float64, perms int) (bands, rows int) {
	bands, rows = perms, 1
	for r := 2; r <= perms; r++ {
		b := perms / r
		if 1-math.Pow(1-math.Pow(threshold-0.05, float64(r)), float64(b)) < 0.9 {
			break
		}
		bands, rows = b, r
	}
	return bands, rows
}

// signature returns the MinHash signature of doc's shingles, or nil when doc has no word.
func (x *nearDupIndex) signature(doc []byte) []uint32 { return x.signatureOf(docWords(doc)) }

// docWords returns the words of doc's normalized text, which near-dup shingles and the
// classifier's features are made of.
func docWords(doc []byte) [][]byte { return bytes.Fields(NormalizeLine(doc)) }

// signatureOf returns the MinHash signature of the shingles of words (docWords), or nil when
// there are none.
func (x *nearDupIndex) signatureOf(words [][]byte) []uint32 {
	if len(words) == 0 {
		return nil
	}
	// A shingle's hash combines its words' hashes, each word hashed once.
	wh := make([]uint64, len(words))
	for i, w := range words {
		wh[i] = hash64(w)
	}
	var sig [minhashPerms]uint32
	for i := range sig {
		sig[i] = math.MaxUint32
	}
	k := min(x.cfg.Shingle, len(words))
	for i := 0; i+k <= len(words); i++ {
		h := uint64(k)
		for _, w := range wh[i : i+k] {
			h = mix64(h ^ w)
		}
		for j := range sig {
			if v := uint32((x.a[j]*h + x.b[j]) >> 32); v < sig[j] {
				sig[j] = v
			}
		}
	}
	return sig[:]
}

// bandKey hashes band i of sig.
func (x *nearDupIndex) bandKey(sig []uint32, i int) uint64 {
	h := uint64(i) + 1
	for _, v := range sig[i*x.rows : (i+1)*x.rows] {
		h = mix64(h ^ uint64(v))
	}
	return h
}

// check reports whether doc is a near-duplicate of a document kept before; when it is not,
// it is kept and indexed.
func (x *nearDupIndex) check(doc []byte) bool { return x.checkSignature(x.signature(doc)) }

// checkSignature is check on the signature of a document (nil: one without words, which is
// never a near-duplicate and not indexed). Signatures may be computed on any goroutine, as
// signature only reads the index's hash functions; checkSignature must run on one.
func (x *nearDupIndex) checkSignature(sig []uint32) bool {
	switch {
	case sig == nil:
		return false
	case x.plan != nil:
		x.plan.record(x, sig)
		return false
	case x.verdicts != nil:
		return x.verdicts.next()
	}
	keys := make([]uint64, x.bands)
	tried := map[uint32]bool{}
	for i := range x.bands {
		keys[i] = x.bandKey(sig, i)
		for _, id := range x.buckets[i][keys[i]] {
			if tried[id] {
				continue
			}
			tried[id] = true
			if similarity(sig, x.sigs[int(id)*minhashPerms:(int(id)+1)*minhashPerms]) >= x.cfg.Threshold {
				return true
			}
		}
	}
	id := uint32(len(x.sigs) / minhashPerms)
	x.sigs = append(x.sigs, sig...)
	for i, k := range keys {
		x.buckets[i][k] = append(x.buckets[i][k], id)
	}
	return false
}

// bandOf returns the band whose key in sig is key (-1 if none).
func (x *nearDupIndex) bandOf(key uint64, sig []uint32) int {
	for i := range x.bands {
		if x.bandKey(sig, i) == key {
			return i
		}
	}
	return -1
}

// shareBandBefore reports whether a and b have the same key in a band before band.
func (x *nearDupIndex) shareBandBefore(a, b []uint32, band int) bool {
	for i := range band {
		if x.bandKey(a, i) == x.bandKey(b, i) {
			return true
		}
	}
	return false
}

// err returns the first error of the index's disk state.
func (x *nearDupIndex) err() error {
	switch {
	case x.plan != nil:
		return x.plan.err
	case x.verdicts != nil:
		return x.verdicts.err
	}
	return nil
}

// similarity is the share of positions where two signatures agree: an unbiased estimate of
// the Jaccard similarity of the sets behind them.
func similarity(a, b []uint32) float64 {
	n := 0
	for i := range a {
		if a[i] == b[i] {
			n++
		}
	}
	return float64(n) / float64(len(a))
}
