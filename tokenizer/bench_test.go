package tokenizer

import (
	"sync"
	"testing"
	"time"
)

var (
	benchOnce sync.Once
	benchTok  *Tokenizer
	benchText []byte
)

// benchSetup trains an 8192-token tokenizer on 4 MB of GOROOT text and keeps another
// 4 MB to encode.
func benchSetup(b *testing.B) (*Tokenizer, []byte) {
	text := gorootText(b, 8<<20)
	benchOnce.Do(func() {
		half := len(text) / 2
		start := time.Now()
		tok, err := Train(bytesReader(text[:half]), 8192, Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("trained vocab 8192 on %.1f MB in %v", float64(half)/1e6, time.Since(start))
		benchTok, benchText = tok, text[half:]
	})
	if benchTok == nil {
		b.Fatal("setup failed")
	}
	return benchTok, benchText
}

func BenchmarkEncode(b *testing.B) {
	tok, text := benchSetup(b)
	b.SetBytes(int64(len(text)))
	var ids []int32
	b.ResetTimer()
	for b.Loop() {
		ids = tok.EncodeTo(ids[:0], text)
	}
	b.ReportMetric(float64(len(text))/float64(len(ids)), "bytes/token")
}

func BenchmarkEncodeParallel(b *testing.B) {
	tok, text := benchSetup(b)
	b.SetBytes(int64(len(text)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var ids []int32
		for pb.Next() {
			ids = tok.EncodeTo(ids[:0], text)
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	tok, text := benchSetup(b)
	ids := tok.Encode(text)
	b.SetBytes(int64(len(text)))
	var out []byte
	for b.Loop() {
		out = tok.DecodeTo(out[:0], ids)
	}
}

// BenchmarkTrain trains vocab 8192 on 4 MB of GOROOT text per iteration.
func BenchmarkTrain(b *testing.B) {
	text := gorootText(b, 4<<20)
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		if _, err := Train(bytesReader(text), 8192, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}
