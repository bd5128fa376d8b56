package shard

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// benchCorpus makes n documents of about 4 KiB: lines of random words, one line in ten
// shared by every document (boilerplate), one document in ten a near-copy of the one before.
func benchCorpus(n int) [][]byte {
	rng := rand.New(rand.NewPCG(1, 1))
	vocab := make([]string, 5000)
	for i := range vocab {
		vocab[i] = fmt.Sprintf("word%d", rng.IntN(1<<20))
	}
	var docs [][]byte
	for d := range n {
		var sb strings.Builder
		for l := range 50 {
			if l%10 == 0 {
				sb.WriteString("Share this page on social media | Privacy policy\n")
				continue
			}
			for w := range 12 {
				if w > 0 {
					sb.WriteByte(' ')
				}
				sb.WriteString(vocab[rng.IntN(len(vocab))])
			}
			sb.WriteString(".\n")
		}
		doc := []byte(sb.String())
		if d%10 == 9 {
			doc = append([]byte(nil), docs[d-1]...)
			doc[len(doc)/2] = 'X'
		}
		docs = append(docs, doc)
	}
	return docs
}

func corpusBytes(docs [][]byte) int64 {
	var n int64
	for _, d := range docs {
		n += int64(len(d))
	}
	return n
}

// BenchmarkQualityFilters measures each filter's throughput on one core against the Cleaner
// that every preparation runs (length, non-text share, exact dedup), in MB/s of input.
//
//	go test ./shard -run '^$' -bench QualityFilters -benchtime 3x
func BenchmarkQualityFilters(b *testing.B) {
	docs := benchCorpus(2000)
	size := corpusBytes(docs)
	run := func(b *testing.B, newCheck func() func([]byte)) {
		b.SetBytes(size)
		for b.Loop() {
			check := newCheck()
			for _, d := range docs {
				check(d)
			}
		}
	}
	b.Run("cleaner", func(b *testing.B) {
		run(b, func() func([]byte) {
			c := NewCleaner(DefaultFilter())
			return func(d []byte) { c.Check(d) }
		})
	})
	b.Run("code", func(b *testing.B) {
		run(b, func() func([]byte) {
			c := DefaultCodeFilter()
			return func(d []byte) { c.check(d) }
		})
	})
	b.Run("lines", func(b *testing.B) {
		run(b, func() func([]byte) {
			d := newLineDeduper()
			return func(doc []byte) { d.apply(doc) }
		})
	})
	b.Run("near-dup", func(b *testing.B) {
		run(b, func() func([]byte) {
			x := newNearDupIndex(DefaultNearDup())
			return func(doc []byte) { x.check(doc) }
		})
	})
	b.Run("lang", func(b *testing.B) {
		f, err := ParseLangFilter("en", DefaultLangConfidence)
		if err != nil {
			b.Skip(err)
		}
		warmLangID() // loads the models once, outside the timing
		run(b, func() func([]byte) { return func(d []byte) { f.check(d) } })
	})
	b.Run("perplexity", func(b *testing.B) {
		kb := NewKNBuilder()
		for _, d := range docs[:500] {
			kb.Add(d)
		}
		m, _ := kb.Build()
		run(b, func() func([]byte) { return func(d []byte) { m.BitsPerByte(d) } })
	})
	b.Run("classifier", func(b *testing.B) {
		m := TrainClassifier(docs[:200], docs[200:400])
		run(b, func() func([]byte) { return func(d []byte) { m.Score(d) } })
	})
	b.Run("all", func(b *testing.B) {
		q, _ := ParseFilters("lines,near-dup,code", DefaultNearDup(), DefaultCodeFilter())
		run(b, func() func([]byte) {
			c, qf := NewCleaner(DefaultFilter()), NewQualityFilters(DefaultFilter())
			var r FilterReport
			return func(d []byte) {
				if v, _ := c.Check(d); v == Keep {
					qf.Check(q, d, &r)
				}
			}
		})
	})
}
