package shard

import (
	"fmt"
	"math"
)

// knOrder is the order of the byte n-gram model: 5, as CCNet's KenLM models.
const knOrder = 5

// knPad is the byte a document is preceded by, knOrder-1 times, so that its first bytes have
// a full context: STX, which text does not hold.
const knPad = 0x02

// KNModel is an interpolated Kneser-Ney language model of order 5 over bytes (Chen and
// Goodman, "An empirical study of smoothing techniques for language modeling", 1998): the
// highest order discounts raw counts, the lower orders continuation counts (how many
// different bytes precede an n-gram), and the lowest interpolates with the uniform
// distribution over the 256 bytes, so that every byte has a probability. An n-gram of up to
// 5 bytes is its own key (no hashing), so counts are exact. It is read-only once built and
// safe for concurrent use.
type KNModel struct {
	// counts[k-1] maps a k-gram (packed, see gram) to its raw count for k = 5 and to its
	// continuation count for k < 5.
	counts [knOrder]map[uint64]uint32
	// ctx[k-1] maps a context (the first k-1 bytes of a k-gram) to the sum of counts[k-1]
	// over its k-grams and the number of them.
	ctx [knOrder]map[uint64]knContext
	// discount[k-1] is the absolute discount of order k: n1/(n1+2*n2), with n1 and n2 the
	// numbers of k-grams counted once and twice.
	discount [knOrder]float64
	// Bytes is the size of the text the model was trained on.
	Bytes int64
}

type knContext struct{ total, distinct uint32 }

// gram packs the k bytes ending at s[i] (i >= k-1) with their length.
func gram(s []byte, i, k int) uint64 {
	var g uint64
	for j := i - k + 1; j <= i; j++ {
		g = g<<8 | uint64(s[j])
	}
	return g | uint64(k)<<56
}

// padded returns doc preceded by knOrder-1 pad bytes.
func padded(doc []byte) []byte {
	p := make([]byte, 0, len(doc)+knOrder-1)
	for range knOrder - 1 {
		p = append(p, knPad)
	}
	return append(p, doc...)
}

// KNBuilder counts the 5-grams of documents, then builds a KNModel.
type KNBuilder struct {
	top   map[uint64]uint32
	bytes int64
}

// NewKNBuilder returns an empty builder.
func NewKNBuilder() *KNBuilder { return &KNBuilder{top: map[uint64]uint32{}} }

// Add counts doc's 5-grams.
func (b *KNBuilder) Add(doc []byte) {
	p := padded(doc)
	for i := knOrder - 1; i < len(p); i++ {
		b.top[gram(p, i, knOrder)]++
	}
	b.bytes += int64(len(doc))
}

// Bytes returns how much text was added.
func (b *KNBuilder) Bytes() int64 { return b.bytes }

// Build derives the continuation counts and discounts. Every lower-order n-gram of the text
// is the suffix of a 5-gram (documents are padded), so the continuation counts of order k
// follow from the distinct (k+1)-grams.
func (b *KNBuilder) Build() (*KNModel, error) {
	if len(b.top) == 0 {
		return nil, fmt.Errorf("%w: the perplexity filter's reference has no text", ErrConfig)
	}
	m := &KNModel{Bytes: b.bytes}
	m.counts[knOrder-1] = b.top
	for k := knOrder - 1; k >= 1; k-- {
		cont := map[uint64]uint32{}
		mask := uint64(1)<<(8*k) - 1
		for g := range m.counts[k] { // the (k+1)-grams
			cont[g&mask|uint64(k)<<56]++
		}
		m.counts[k-1] = cont
	}
	for k := 1; k <= knOrder; k++ {
		ctx := map[uint64]knContext{}
		var n1, n2 float64
		for g, c := range m.counts[k-1] {
			h := (g&(uint64(1)<<56-1))>>8 | uint64(k-1)<<56
			s := ctx[h]
			s.total += c
			s.distinct++
			ctx[h] = s
			switch c {
			case 1:
				n1++
			case 2:
				n2++
			}
		}
		m.ctx[k-1] = ctx
		m.discount[k-1] = 0.5
		if n1 > 0 {
			m.discount[k-1] = n1 / (n1 + 2*n2)
		}
	}
	return m, nil
}

// prob returns P(s[i] | the 4 bytes before it), s padded.
func (m *KNModel) prob(s []byte, i int) float64 {
	p := 1.0 / 256 // order 0: uniform
	for k := 1; k <= knOrder; k++ {
		h := gram(s, i-1, k-1) // the k-1 bytes before s[i]
		ctx, ok := m.ctx[k-1][h]
		if !ok {
			// An unseen context: the lower order stands, and for the higher orders too,
			// whose contexts end with this one and so were not seen either.
			break
		}
		d := m.discount[k-1]
		c := float64(m.counts[k-1][gram(s, i, k)])
		p = (math.Max(c-d, 0) + d*float64(ctx.distinct)*p) / float64(ctx.total)
	}
	return p
}

// BitsPerByte returns the model's cross-entropy on doc, in bits per byte: the log of its
// perplexity. It is 0 for an empty document.
func (m *KNModel) BitsPerByte(doc []byte) float64 {
	if len(doc) == 0 {
		return 0
	}
	p := padded(doc)
	var bits float64
	for i := knOrder - 1; i < len(p); i++ {
		bits -= math.Log2(m.prob(p, i))
	}
	return bits / float64(len(doc))
}
