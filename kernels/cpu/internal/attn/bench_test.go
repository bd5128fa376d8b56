package attn

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// BenchmarkAttention times float32 Forward alone and Forward + Backward on the 125m preset at
// T = 64, a 12-head T = 1024 shape, the tiny preset at T = 4096 and the quickstart's batch
// (the tiny preset, 16 sequences of 128). GFLOP/s counts only the
// causal half of the matrix products: 2*2*B*H*T*T*D/2 for the forward pass (q k^T and P v)
// and 2.5 times that for the backward pass.
func BenchmarkAttention(b *testing.B) {
	for _, s := range []struct{ B, T, H, D int }{
		{4, 64, 12, 64},
		{1, 1024, 12, 64},
		{1, 4096, 4, 16},
		{16, 128, 4, 16},
	} {
		rng := rand.New(rand.NewPCG(1, 1))
		n := s.B * s.T * s.H * s.D
		q, k, v, dout := convert[float32](randn(rng, n)), convert[float32](randn(rng, n)), convert[float32](randn(rng, n)), convert[float32](randn(rng, n))
		out, lse := make([]float32, n), make([]float32, s.B*s.H*s.T)
		dq, dk, dv := make([]float32, n), make([]float32, n), make([]float32, n)
		fwdFlops := 2 * 2 * float64(s.B*s.H) * float64(s.T) * float64(s.T) * float64(s.D) / 2
		name := fmt.Sprintf("B=%d,T=%d,H=%d,D=%d", s.B, s.T, s.H, s.D)
		report := func(b *testing.B, flops float64, start time.Time) {
			b.ReportMetric(flops*float64(b.N)/time.Since(start).Seconds()/1e9, "GFLOP/s")
		}
		b.Run(name+"/forward", func(b *testing.B) {
			start := time.Now()
			for b.Loop() {
				Forward(out, lse, q, k, v, s.B, s.T, s.H, s.D)
			}
			report(b, fwdFlops, start)
		})
		b.Run(name+"/forward+backward", func(b *testing.B) {
			start := time.Now()
			for b.Loop() {
				Forward(out, lse, q, k, v, s.B, s.T, s.H, s.D)
				Backward(dq, dk, dv, dout, out, lse, q, k, v, s.B, s.T, s.H, s.D)
			}
			report(b, 3.5*fwdFlops, start)
		})
	}
}
