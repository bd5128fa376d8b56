package shard

import (
	"fmt"
	"math/rand/v2"
	"runtime"
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
			q := Quality{LineDedup: true}
			return func(doc []byte) { d.apply(doc, analyzeEarly(q, doc).lines) }
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

// BenchmarkPrepareEarlyFilters measures Prepare on a source with the early filters (code
// heuristics and line dedup) with one worker and with every core, in MB/s of input, with the
// byte encoder (next to free) so that the filters dominate: the early filters' analysis runs
// on the workers, only line dedup's set lookups in reading order.
//
//	go test ./shard -run '^$' -bench PrepareEarlyFilters -benchtime 3x
func BenchmarkPrepareEarlyFilters(b *testing.B) {
	docs := benchCorpus(4000)
	dir := b.TempDir()
	var jsonl strings.Builder
	for _, d := range docs {
		fmt.Fprintf(&jsonl, "{\"text\": %q}\n", d)
	}
	writeFile(b, dir+"/c.jsonl", []byte(jsonl.String()))
	size := corpusBytes(docs)
	code := DefaultCodeFilter()
	for _, workers := range []int{1, runtime.GOMAXPROCS(0)} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				cfg := DefaultPrepareConfig()
				cfg.Out, cfg.Encoder, cfg.Workers = b.TempDir(), byteEncoder{}, workers
				cfg.Sources = []SourceSpec{{Name: "c", Path: dir + "/c.jsonl", Weight: 1, Quality: Quality{Code: &code, LineDedup: true}}}
				if _, err := Prepare(b.Context(), cfg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
