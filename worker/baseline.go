package worker

import "math"

// Trigram is a byte-level order-2 Markov model with Witten-Bell interpolated smoothing: the
// baseline a language model must beat on held-out bits per byte. Counts are dense arrays
// (2^24 trigram counters), which is fast and small enough for any training text.
type Trigram struct {
	c3             []uint32 // [a<<16 | b<<8 | c]
	c2             []uint32 // [b<<8 | c]
	c1             [256]uint32
	ctx2, ctx1     []uint32 // totals per context: ctx2[a<<8|b], ctx1[b]
	types2, types1 []uint32 // distinct continuations per context
	total          uint64
}

// NewTrigram returns an empty model.
func NewTrigram() *Trigram {
	return &Trigram{c3: make([]uint32, 1<<24), c2: make([]uint32, 1<<16), ctx2: make([]uint32, 1<<16),
		ctx1: make([]uint32, 256), types2: make([]uint32, 1<<16), types1: make([]uint32, 256)}
}

// Fit counts the bytes of one document; contexts do not cross documents.
func (m *Trigram) Fit(doc []byte) {
	for i, c := range doc {
		m.c1[c]++
		m.total++
		if i >= 1 {
			b := doc[i-1]
			k := int(b)<<8 | int(c)
			if m.c2[k] == 0 {
				m.types1[b]++
			}
			m.c2[k]++
			m.ctx1[b]++
		}
		if i >= 2 {
			a, b := doc[i-2], doc[i-1]
			k := int(a)<<16 | int(b)<<8 | int(c)
			if m.c3[k] == 0 {
				m.types2[int(a)<<8|int(b)]++
			}
			m.c3[k]++
			m.ctx2[int(a)<<8|int(b)]++
		}
	}
}

// Prob returns P(c | the up to two bytes before it in ctx).
func (m *Trigram) Prob(ctx []byte, c byte) float64 {
	p := (float64(m.c1[c]) + 1) / (float64(m.total) + 256) // add-one unigram
	if len(ctx) >= 1 {
		b := ctx[len(ctx)-1]
		if n, t := float64(m.ctx1[b]), float64(m.types1[b]); n > 0 {
			p = (float64(m.c2[int(b)<<8|int(c)]) + t*p) / (n + t)
		}
	}
	if len(ctx) >= 2 {
		a, b := ctx[len(ctx)-2], ctx[len(ctx)-1]
		k := int(a)<<8 | int(b)
		if n, t := float64(m.ctx2[k]), float64(m.types2[k]); n > 0 {
			p = (float64(m.c3[k<<8|int(c)]) + t*p) / (n + t)
		}
	}
	return p
}

// Score returns the total bits of text[from:], each byte predicted from the bytes before it
// in text.
func (m *Trigram) Score(text []byte, from int) float64 {
	var bits float64
	for i := from; i < len(text); i++ {
		bits -= math.Log2(m.Prob(text[max(0, i-2):i], text[i]))
	}
	return bits
}
