package worker

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/herd-llm/herd/checkpoint"
	"github.com/herd-llm/herd/kernels/cpu"
	"github.com/herd-llm/herd/model"
)

// BenchmarkAsyncSaveStall trains the 125m preset on the CPU (B=4, T=64) and checkpoints its
// full state (1.6 GB) to a directory every third step the way Train does: Save before the next
// step, WaitSnapshot just before the optimizer step. It reports how long the step loop was held
// per save against the time a synchronous save of the same state takes, and the mean step time
// with and without saving, all measured in the same run.
//
//	go test ./worker -run '^$' -bench AsyncSaveStall -benchtime 1x
func BenchmarkAsyncSaveStall(b *testing.B) {
	const batch, seq, every, saves = 4, 64, 3, 2
	c, _ := model.Preset("125m")
	be := cpu.New[float32](cpu.Options{})
	m, _ := model.New(c, be)
	defer m.Close()
	m.Init(1)
	opt, _ := model.NewOptimizer(m, model.DefaultOptim())
	defer opt.Close()
	mb, vb := opt.Moments()
	sb := newStateBuffers(m, mb, vb)
	store, err := checkpoint.NewDirStore(filepath.Join(b.TempDir(), "ckpt"))
	if err != nil {
		b.Fatal(err)
	}
	saver := checkpoint.NewSaver(checkpoint.Location{Store: store}, checkpoint.SaverOptions{KeepLast: 1})
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 1))
	tokens, targets := make([]int32, batch*seq), make([]int32, batch*seq)
	for i := range tokens {
		tokens[i], targets[i] = int32(rng.IntN(c.Vocab)), int32(rng.IntN(c.Vocab))
	}
	req := func(step int) checkpoint.SaveRequest {
		return checkpoint.SaveRequest{Step: step, Rank: 0, World: 1, State: sb.pull(), Cursor: checkpoint.Cursor{Step: step},
			Config: []byte(`{}`), Layout: layoutRanges(m.Layout)}
	}
	// The synchronous save of the same state, for the ratio (its first run allocates staging).
	var syncT time.Duration
	for i := 0; i < 2; i++ {
		t0 := time.Now()
		if _, err := saver.Save(ctx, req(i+1)); err != nil {
			b.Fatal(err)
		}
		if err := saver.Wait(); err != nil {
			b.Fatal(err)
		}
		syncT = time.Since(t0)
	}
	var stall, stepT, baseT time.Duration
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		for step := 1; step <= every*saves; step++ { // the same steps without saving
			t0 := time.Now()
			m.ZeroGrad()
			if _, err := m.Forward(tokens, targets, batch, seq); err != nil {
				b.Fatal(err)
			}
			if err := m.Backward(); err != nil {
				b.Fatal(err)
			}
			opt.Step(1e-4, 1)
			baseT += time.Since(t0)
		}
		for step := 1; step <= every*saves; step++ {
			t0 := time.Now()
			m.ZeroGrad()
			if _, err := m.Forward(tokens, targets, batch, seq); err != nil {
				b.Fatal(err)
			}
			if err := m.Backward(); err != nil {
				b.Fatal(err)
			}
			stall += saver.WaitSnapshot()
			opt.Step(1e-4, 1)
			if step%every == 0 {
				held, err := saver.Save(ctx, req(100+step))
				if err != nil {
					b.Fatal(err)
				}
				stall += held
			}
			stepT += time.Since(t0)
		}
		if err := saver.Wait(); err != nil {
			b.Fatal(err)
		}
	}
	n := float64(b.N * saves)
	b.ReportMetric(syncT.Seconds()*1e3, "sync_save_ms")
	b.ReportMetric(stall.Seconds()/n*1e3, "stall_per_save_ms")
	b.ReportMetric(stall.Seconds()/n/syncT.Seconds(), "stall/sync")
	b.ReportMetric(stepT.Seconds()/float64(b.N*every*saves)*1e3, "step_ms_saving")
	b.ReportMetric(baseT.Seconds()/float64(b.N*every*saves)*1e3, "step_ms_no_save")
}
