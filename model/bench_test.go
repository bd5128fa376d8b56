package model_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/herd-llm/herd/kernels/cpu"
	"github.com/herd-llm/herd/model"
)

// BenchmarkTrainStep times one full training step (forward, backward, AdamW) on the float32
// CPU backend with LLaMA's hybrid rematerialization, through the BLAS matmul and through the
// pure-Go one: 15m and 125m at B=4, T=64, and the quickstart's run (herd train with its
// defaults: the tiny preset with the built-in corpus's 4096-token vocabulary, B=16, T=128). It
// reports tokens/s and achieved GFLOP/s with the model-FLOPs formula 6*(N - N_emb) + 12*L*T*d
// per token.
//
//	go test ./model -run '^$' -bench TrainStep -benchtime 5x
func BenchmarkTrainStep(b *testing.B) {
	runs := []struct {
		name, preset string
		vocab        int // 0: the preset's
		batch, seq   int
	}{
		{"15m", "15m", 0, 4, 64},
		{"125m", "125m", 0, 4, 64},
		{"quickstart", "tiny", 4096, 16, 128},
	}
	for _, r := range runs {
		for _, path := range []string{"blas", "purego"} {
			b.Run(fmt.Sprintf("%s/%s", r.name, path), func(b *testing.B) {
				be := cpu.New[float32](cpu.Options{PureGo: path == "purego"})
				if lib, err := be.BLAS(); path == "blas" && lib == "" {
					b.Skipf("no BLAS library: %v", err)
				}
				c, _ := model.Preset(r.preset)
				if r.vocab != 0 {
					c.Vocab = r.vocab
				}
				batch, seq := r.batch, r.seq
				m := newModel(b, c, be, 1)
				defer m.Close()
				opt, err := model.NewOptimizer(m, model.DefaultOptim())
				if err != nil {
					b.Fatal(err)
				}
				defer opt.Close()
				rng := rand.New(rand.NewPCG(1, 2))
				tokens := randomTokens(rng, batch*seq, c.Vocab)
				targets := randomTokens(rng, batch*seq, c.Vocab)
				step := func() {
					m.ZeroGrad()
					if _, err := m.Forward(tokens, targets, batch, seq); err != nil {
						b.Fatal(err)
					}
					if err := m.Backward(); err != nil {
						b.Fatal(err)
					}
					opt.Step(1e-4, 1)
				}
				step() // warm-up: workspace, buffer reuse, BLAS threads
				b.ResetTimer()
				start := time.Now()
				for i := 0; i < b.N; i++ {
					step()
				}
				sec := time.Since(start).Seconds()
				tokS := float64(b.N*batch*seq) / sec
				b.ReportMetric(tokS, "tokens/s")
				b.ReportMetric(tokS*model.FLOPsPerToken(c, seq)/1e9, "GFLOP/s")
			})
		}
	}
}

// BenchmarkInitParams times drawing the initial weights of a preset in host memory, which
// Model.Init then copies to the backend once. The buffer is written once before the clock
// starts, so the figure is the draws, not the kernel's first-touch page faults.
//
//	go test ./model -run '^$' -bench InitParams -benchtime 2x
func BenchmarkInitParams(b *testing.B) {
	for _, preset := range []string{"125m", "1b"} {
		b.Run(preset, func(b *testing.B) {
			c, _ := model.Preset(preset)
			l := model.NewLayout(c)
			dst := make([]float32, l.Size)
			model.InitParams(c, l, 1, dst)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				model.InitParams(c, l, 1, dst)
			}
			b.ReportMetric(float64(l.Size)*float64(b.N)/b.Elapsed().Seconds()/1e6, "Mparams/s")
		})
	}
}
