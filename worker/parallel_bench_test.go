package worker

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/herd-llm/herd/collective"
	"github.com/herd-llm/herd/collective/collectivetest"
	"github.com/herd-llm/herd/kernels/cpu"
	"github.com/herd-llm/herd/model"
)

// BenchmarkDataParallelOverlap measures how much of the gradient all-reduce hides behind the
// backward pass: two ranks on a loopback TCP ring each train the 15m preset (B=4, T=64); per
// step it times backward alone, the all-reduce of the whole gradient alone, and backward with
// per-block buckets reduced while it runs. overlapped/sum < 1 is the saving.
//
//	go test ./worker -run '^$' -bench DataParallelOverlap -benchtime 5x
func BenchmarkDataParallelOverlap(b *testing.B) {
	const ranks, batch, seq = 2, 4, 64
	c, _ := model.Preset("15m")
	rings := collectivetest.StartRing(b, ranks, nil)
	type times struct{ bwd, ar, overlapped time.Duration }
	res := make([]times, ranks)
	var wg sync.WaitGroup
	b.ResetTimer()
	for r := 0; r < ranks; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			be := cpu.New[float32](cpu.Options{})
			m, _ := model.New(c, be)
			defer m.Close()
			m.Init(1)
			rng := rand.New(rand.NewPCG(uint64(r), 1))
			tokens, targets := make([]int32, batch*seq), make([]int32, batch*seq)
			for i := range tokens {
				tokens[i], targets[i] = int32(rng.IntN(c.Vocab)), int32(rng.IntN(c.Vocab))
			}
			dp := newDataParallel(ctx, rings[r], nil, m)
			grads := cpu.Data[float32](m.Grads())
			for i := 0; i < b.N; i++ {
				m.ZeroGrad()
				m.Forward(tokens, targets, batch, seq)
				t0 := time.Now()
				m.Backward()
				t1 := time.Now()
				if err := rings[r].AllReduce(ctx, grads, collective.Sum); err != nil {
					b.Error(err)
					return
				}
				t2 := time.Now()
				m.ZeroGrad()
				m.Forward(tokens, targets, batch, seq)
				t3 := time.Now()
				dp.startBuckets()
				m.Backward()
				if _, err := dp.finish(0); err != nil {
					b.Error(err)
					return
				}
				t4 := time.Now()
				res[r].bwd += t1.Sub(t0)
				res[r].ar += t2.Sub(t1)
				res[r].overlapped += t4.Sub(t3)
			}
		}()
	}
	wg.Wait()
	n := float64(b.N)
	bwd, ar, ov := res[0].bwd.Seconds()/n, res[0].ar.Seconds()/n, res[0].overlapped.Seconds()/n
	b.ReportMetric(bwd*1e3, "backward_ms")
	b.ReportMetric(ar*1e3, "allreduce_ms")
	b.ReportMetric(ov*1e3, "overlapped_ms")
	b.ReportMetric(ov/(bwd+ar), "overlapped/sum")
}
