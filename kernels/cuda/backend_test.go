//go:build cuda

package cuda_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"gorgonia.org/cu"

	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/kernels/cpu"
	"github.com/herd-llm/herd/kernels/cuda"
	"github.com/herd-llm/herd/kernels/kernelstest"
	"github.com/herd-llm/herd/model"
)

// newBackend opens the backend on device 0 with the default code kind (HERD_CUDA_CODE, else a
// cubin with a fallback to PTX), or skips when the driver lists no device (fails under
// HERD_REQUIRE_GPU=1).
func newBackend(tb testing.TB) *cuda.Backend { return newBackendCode(tb, cuda.CodeAuto) }

// newBackendCode is newBackend with the kernels compiled to the given kind of code.
func newBackendCode(tb testing.TB, code cuda.Code) *cuda.Backend {
	tb.Helper()
	if n, err := cu.NumDevices(); err != nil || n == 0 {
		if os.Getenv("HERD_REQUIRE_GPU") == "1" {
			tb.Fatalf("HERD_REQUIRE_GPU=1 but no CUDA device (count %d, err %v)", n, err)
		}
		tb.Skipf("no CUDA device (count %d, err %v)", n, err)
	}
	be, err := cuda.New(cuda.Options{Code: code, Logf: tb.Logf})
	if err != nil {
		tb.Fatalf("cuda.New: %v", err)
	}
	if code != cuda.CodeAuto && be.Code() != code {
		tb.Fatalf("asked for %s, the backend loaded %s", code, be.Code())
	}
	tb.Cleanup(func() {
		if err := be.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	tb.Logf("backend %s, peak %.0f TFLOP/s", be.Name(), be.PeakFLOPS()/1e12)
	return be
}

// Every op of the backend against the float64 CPU reference, on fresh random inputs with
// poisoned outputs, at sizes that are not multiples of the tiles, within kernelstest.BFloat16.
// It runs twice: with the kernels loaded as cubins (the default) and as PTX (the fallback).
func TestBackendConformance(t *testing.T) {
	for _, code := range []cuda.Code{cuda.CodeCubin, cuda.CodePTX} {
		t.Run(string(code), func(t *testing.T) {
			kernelstest.RunAll(t, newBackendCode(t, code), kernelstest.BFloat16)
		})
	}
}

// Attention at the model's head dimensions, where the tensor-core path runs, and at lengths
// that are not multiples of the tiles; kernelstest covers small head dimensions.
func TestBackendAttentionHeadDims(t *testing.T) {
	be := newBackend(t)
	ref := cpu.New[float64](cpu.Options{})
	rng := rand.New(rand.NewPCG(5, 6))
	for _, sh := range [][4]int{{2, 129, 3, 64}, {1, 300, 2, 128}, {1, 1, 1, 128}} {
		b, tt, h, d := sh[0], sh[1], sh[2], sh[3]
		n := b * tt * h * d
		bufs := map[string][2]kernels.Buffer{}
		for _, name := range []string{"q", "k", "v", "dout"} {
			v := make([]float64, n)
			for i := range v {
				v[i] = rng.NormFloat64()
			}
			g := be.Alloc(n)
			be.Write(g, v)
			be.Read(v, g) // the reference sees the bf16-rounded values
			w := ref.Alloc(n)
			ref.Write(w, v)
			bufs[name] = [2]kernels.Buffer{g, w}
		}
		out, lse := [2]kernels.Buffer{be.Alloc(n), ref.Alloc(n)}, [2]kernels.Buffer{be.AllocMaster(b * h * tt), ref.Alloc(b * h * tt)}
		be.Attention(out[0], lse[0], bufs["q"][0], bufs["k"][0], bufs["v"][0], b, tt, h, d)
		ref.Attention(out[1], lse[1], bufs["q"][1], bufs["k"][1], bufs["v"][1], b, tt, h, d)
		grads := [3][2]kernels.Buffer{}
		for i := range grads {
			grads[i] = [2]kernels.Buffer{be.Alloc(n), ref.Alloc(n)}
		}
		be.AttentionBackward(grads[0][0], grads[1][0], grads[2][0], bufs["dout"][0], out[0], lse[0], bufs["q"][0], bufs["k"][0], bufs["v"][0], b, tt, h, d)
		ref.AttentionBackward(grads[0][1], grads[1][1], grads[2][1], bufs["dout"][1], out[1], lse[1], bufs["q"][1], bufs["k"][1], bufs["v"][1], b, tt, h, d)
		// dq and dk cancel where a row attends to few keys (with T = 1 exactly: the softmax of
		// one score has zero gradient), leaving rounding alone; their error is measured against
		// the size of dv = P^T dout, the same products without the cancellation.
		dv := make([]float64, n)
		ref.Read(dv, grads[2][1])
		dvScale := maxAbs(dv)
		for _, c := range []struct {
			name  string
			pair  [2]kernels.Buffer
			tol   float64
			floor float64
		}{{"out", out, 2e-2, 0}, {"lse", lse, 1e-3, 0}, {"dq", grads[0], 2e-2, dvScale}, {"dk", grads[1], 2e-2, dvScale}, {"dv", grads[2], 2e-2, 0}} {
			got, want := make([]float64, c.pair[0].Len()), make([]float64, c.pair[1].Len())
			be.Read(got, c.pair[0])
			ref.Read(want, c.pair[1])
			if e := normErr(got, want, c.floor); !(e <= c.tol) {
				t.Errorf("b=%d t=%d h=%d d=%d %s: normalized error %.3g > %.3g", b, tt, h, d, c.name, e, c.tol)
			}
		}
	}
}

// normErr is max|got - want| / max(max|want|, floor); NaN in got counts as the largest error.
func normErr(got, want []float64, floor float64) float64 {
	maxRef, maxErr := floor, 0.0
	for i := range want {
		maxRef = math.Max(maxRef, math.Abs(want[i]))
		if d := math.Abs(got[i] - want[i]); d > maxErr || math.IsNaN(d) {
			maxErr = d
		}
	}
	return maxErr / math.Max(maxRef, 1e-30)
}

func maxAbs(v []float64) float64 {
	m := 0.0
	for _, e := range v {
		m = math.Max(m, math.Abs(e))
	}
	return m
}

// One training step of the tiny and 125m presets on the GPU against the float32 CPU backend
// from the same weights and batch: the loss within 1% relative and every gradient tensor with
// cosine similarity above 0.999.
func TestTrainStepMatchesCPU(t *testing.T) {
	be := newBackend(t)
	for _, tc := range []struct {
		preset string
		b, t   int
	}{{"tiny", 4, 67}, {"125m", 2, 256}} {
		t.Run(tc.preset, func(t *testing.T) {
			c, err := model.Preset(tc.preset)
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(11, 12))
			tokens, targets := make([]int32, tc.b*tc.t), make([]int32, tc.b*tc.t)
			for i := range tokens {
				tokens[i] = int32(rng.IntN(c.Vocab))
			}
			copy(targets, tokens[1:])
			targets[len(targets)-1] = int32(rng.IntN(c.Vocab))
			lossG, gradG := stepGrads(t, c, be, tokens, targets, tc.b, tc.t)
			lossC, gradC := stepGrads(t, c, cpu.New[float32](cpu.Options{}), tokens, targets, tc.b, tc.t)
			if rel := math.Abs(lossG-lossC) / math.Abs(lossC); !(rel <= 0.01) {
				t.Errorf("loss %.6f on the GPU, %.6f on the CPU: %.3g relative", lossG, lossC, rel)
			}
			worst, worstName := 1.0, ""
			for _, s := range model.NewLayout(c).Specs {
				cos := cosine(gradG[s.Offset:s.Offset+s.Size], gradC[s.Offset:s.Offset+s.Size])
				if cos < worst {
					worst, worstName = cos, s.Name
				}
				if !(cos > 0.999) {
					t.Errorf("%s: gradient cosine similarity %.6f", s.Name, cos)
				}
			}
			t.Logf("%s: loss GPU %.6f CPU %.6f; lowest gradient cosine %.6f (%s)", tc.preset, lossG, lossC, worst, worstName)
		})
	}
}

func stepGrads(t *testing.T, c model.Config, be kernels.Backend, tokens, targets []int32, b, seq int) (float64, []float32) {
	t.Helper()
	m, err := model.New(c, be)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	m.Init(7)
	m.ZeroGrad()
	loss, err := m.Forward(tokens, targets, b, seq)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Backward(); err != nil {
		t.Fatal(err)
	}
	g := make([]float32, m.Layout.Size)
	be.Read32(g, m.Grads())
	return loss, g
}

func cosine(a, b []float32) float64 {
	var ab, aa, bb float64
	for i := range a {
		ab += float64(a[i]) * float64(b[i])
		aa += float64(a[i]) * float64(a[i])
		bb += float64(b[i]) * float64(b[i])
	}
	if aa == 0 && bb == 0 {
		return 1
	}
	return ab / math.Sqrt(aa*bb)
}

// BenchmarkTrainStep times full training steps (forward, backward, clipped AdamW) at T=2048
// on the presets and batch sizes of the PyTorch anchor, and reports tokens/s, MFU against the
// device's dense bf16 peak (model.FLOPsPerToken, the anchor's formula), and the peak device
// memory of the step: the high-water mark of live buffers, and what the caching allocator
// holds from the driver.
//
//	kernels-cuda.test -test.run '^$' -test.bench TrainStep -test.benchtime 5x
func BenchmarkTrainStep(b *testing.B) {
	for _, bc := range []struct {
		preset string
		batch  int
		remat  model.Remat
	}{
		{"125m", 16, model.RematHybrid},
		{"1b", 8, model.RematNone},
		{"1b", 8, model.RematHybrid},
		{"1b", 8, model.RematFull},
	} {
		b.Run(fmt.Sprintf("%s/B%d/%s", bc.preset, bc.batch, bc.remat), func(b *testing.B) {
			be := newBackend(b)
			c, _ := model.Preset(bc.preset)
			c.Remat = bc.remat
			const seq = 2048
			m, err := model.New(c, be)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			m.Init(1)
			opt, err := model.NewOptimizer(m, model.DefaultOptim())
			if err != nil {
				b.Fatal(err)
			}
			defer opt.Close()
			rng := rand.New(rand.NewPCG(1, 2))
			tokens, targets := make([]int32, bc.batch*seq), make([]int32, bc.batch*seq)
			for i := range tokens {
				tokens[i], targets[i] = int32(rng.IntN(c.Vocab)), int32(rng.IntN(c.Vocab))
			}
			step := func() {
				m.ZeroGrad()
				if _, err := m.Forward(tokens, targets, bc.batch, seq); err != nil {
					b.Fatal(err)
				}
				if err := m.Backward(); err != nil {
					b.Fatal(err)
				}
				opt.Step(1e-4, 1) // reads the gradient norm: the step ends on the host
			}
			step() // warm-up: kernels, cuBLASLt plans, allocator cache
			be.Synchronize()
			be.ResetPeak()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				step()
			}
			be.Synchronize()
			sec := time.Since(start).Seconds()
			tokS := float64(b.N*bc.batch*seq) / sec
			b.ReportMetric(tokS, "tokens/s")
			if peak := be.PeakFLOPS(); peak > 0 {
				b.ReportMetric(100*tokS*model.FLOPsPerToken(c, seq)/peak, "MFU%")
			}
			b.ReportMetric(float64(be.PeakBytes())/(1<<30), "peakGiB")
			b.ReportMetric(float64(be.DeviceBytes())/(1<<30), "heldGiB")
		})
	}
}

// BenchmarkAttention times causal attention forward and backward at T=2048, head dimension
// 128, B=8, H=16, the anchor's shape, in TFLOP/s on the causal FLOPs: forward 2*B*H*T*T*D
// (half of the 4*B*H*T*T*D of full attention), backward 2.5 times that.
func BenchmarkAttention(b *testing.B) {
	const bsz, t, h, d = 8, 2048, 16, 128
	be := newBackend(b)
	n := bsz * t * h * d
	q, k, v, out, dout := be.Alloc(n), be.Alloc(n), be.Alloc(n), be.Alloc(n), be.Alloc(n)
	dq, dk, dv := be.Alloc(n), be.Alloc(n), be.Alloc(n)
	lse := be.AllocMaster(bsz * h * t)
	rng := rand.New(rand.NewPCG(3, 3))
	host := make([]float32, n)
	for _, x := range []kernels.Buffer{q, k, v, dout} {
		for i := range host {
			host[i] = float32(rng.NormFloat64())
		}
		be.Write32(x, host)
	}
	fwdFLOPs := 2.0 * bsz * h * float64(t) * t * d
	for _, pass := range []string{"fwd", "bwd"} {
		b.Run(pass, func(b *testing.B) {
			run := func() {
				if pass == "fwd" {
					be.Attention(out, lse, q, k, v, bsz, t, h, d)
				} else {
					be.AttentionBackward(dq, dk, dv, dout, out, lse, q, k, v, bsz, t, h, d)
				}
			}
			be.Attention(out, lse, q, k, v, bsz, t, h, d)
			run()
			be.Synchronize()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				run()
			}
			be.Synchronize()
			flops := fwdFLOPs
			if pass == "bwd" {
				flops *= 2.5
			}
			b.ReportMetric(flops*float64(b.N)/time.Since(start).Seconds()/1e12, "TFLOP/s")
		})
	}
}
