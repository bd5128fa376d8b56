//go:build !cuda

package cuda

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/kernels/cpu"
	"github.com/herd-llm/herd/kernels/cuda/emu"
	"github.com/herd-llm/herd/kernels/cuda/src"
	"github.com/herd-llm/herd/kernels/kernelstest"
	"github.com/herd-llm/herd/model"
)

// The tests in this file run the CUDA backend's ops (core: argument checks, launch grids,
// kernel arguments) on the emulator of kernels/cuda/emu, which compiles the real kernel sources
// with g++ and runs every GPU thread as a fiber on the CPU. They need a C++ compiler: without
// one they skip, unless HERD_REQUIRE_CXX=1, which makes that a failure. The cuda-tagged build
// runs the same ops on a GPU instead (backend_test.go); this file is left out of it.

var _ device = (*emu.Device)(nil)

// emuBackend is the CUDA backend's core on the emulated device.
type emuBackend struct{ *core }

func (emuBackend) Name() string { return "cuda-emu (kernels/cuda/src on the CPU)" }

var (
	_ kernels.Backend = emuBackend{}
	_ kernels.Mixed   = emuBackend{}
)

// startEmu builds and starts an emulated device for the test, or skips without a compiler.
func startEmu(t testing.TB, opts emu.Options) *emu.Device {
	t.Helper()
	if _, err := emu.LookCXX(opts.CXX); err != nil {
		if os.Getenv("HERD_REQUIRE_CXX") == "1" {
			t.Fatalf("HERD_REQUIRE_CXX=1: %v", err)
		}
		t.Skipf("no C++ compiler, so the CUDA kernels cannot be emulated (HERD_REQUIRE_CXX=1 makes this a failure): %v", err)
	}
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	d, err := emu.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

var shared struct {
	once sync.Once
	dev  *emu.Device
	dir  string
	err  error
}

// sharedEmu returns one emulated device for the package's tests (building it takes a few
// seconds), started by the first test that asks.
func sharedEmu(t *testing.T) emuBackend {
	t.Helper()
	if _, err := emu.LookCXX(""); err != nil {
		startEmu(t, emu.Options{}) // skips or fails with the message
	}
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "herd-emu-")
		if shared.err == nil {
			shared.dev, shared.err = emu.Start(emu.Options{Dir: shared.dir, Seed: 1})
		}
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return emuBackend{newCore(shared.dev)}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.dev != nil {
		shared.dev.Close()
	}
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// Every op of the backend against the float64 CPU reference, as TestBackendConformance does on
// a GPU: fresh random inputs, outputs poisoned with NaN, sizes that are not multiples of the
// tiles, within kernelstest.BFloat16 (4e-3 elementwise, 2e-2 for reductions; float32 outputs
// such as the AdamW state within kernelstest.Float32).
func TestEmuConformance(t *testing.T) {
	kernelstest.RunAll(t, sharedEmu(t), kernelstest.BFloat16)
}

// Attention at the model's head dimensions (tensor-core path: 64, 128; scalar path: 40) and at
// lengths that are not multiples of the tiles, against the float64 reference, forward and
// backward, with the tolerances of TestBackendAttentionHeadDims.
func TestEmuAttentionHeadDims(t *testing.T) {
	be := sharedEmu(t)
	for _, sh := range [][4]int{{2, 129, 3, 64}, {1, 150, 2, 128}, {1, 1, 1, 128}, {1, 77, 2, 40}} {
		t.Run(fmt.Sprintf("B%d_T%d_H%d_D%d", sh[0], sh[1], sh[2], sh[3]), func(t *testing.T) {
			for name, e := range attentionErrors(be, sh[0], sh[1], sh[2], sh[3], 5) {
				tol := 2e-2
				if name == "lse" {
					tol = 1e-3
				}
				if !(e <= tol) {
					t.Errorf("%s: normalized error %.3g > %.3g", name, e, tol)
				}
			}
		})
	}
}

// attentionErrors runs attention forward and backward on be and on the float64 reference from
// the same bf16 inputs and returns the normalized error of out, lse, dq, dk and dv.
func attentionErrors(be kernels.Backend, b, tt, h, d int, seed uint64) map[string]float64 {
	ref := cpu.New[float64](cpu.Options{})
	rng := rand.New(rand.NewPCG(seed, uint64(d)))
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
	mixed := be.(kernels.Mixed)
	out, lse := [2]kernels.Buffer{be.Alloc(n), ref.Alloc(n)}, [2]kernels.Buffer{mixed.AllocMaster(b * h * tt), ref.Alloc(b * h * tt)}
	be.Attention(out[0], lse[0], bufs["q"][0], bufs["k"][0], bufs["v"][0], b, tt, h, d)
	ref.Attention(out[1], lse[1], bufs["q"][1], bufs["k"][1], bufs["v"][1], b, tt, h, d)
	var grads [3][2]kernels.Buffer
	for i := range grads {
		grads[i] = [2]kernels.Buffer{be.Alloc(n), ref.Alloc(n)}
	}
	be.AttentionBackward(grads[0][0], grads[1][0], grads[2][0], bufs["dout"][0], out[0], lse[0], bufs["q"][0], bufs["k"][0], bufs["v"][0], b, tt, h, d)
	ref.AttentionBackward(grads[0][1], grads[1][1], grads[2][1], bufs["dout"][1], out[1], lse[1], bufs["q"][1], bufs["k"][1], bufs["v"][1], b, tt, h, d)
	// dq and dk are sums of scale*dS*k and scale*dS*q terms with dS = P (dP - delta), which
	// cancel where a row attends to few keys (with T = 1, exactly: the softmax of one score has
	// zero gradient), leaving rounding alone; their errors are measured against the size of
	// dv = P^T dout, the same products without the cancellation.
	dvScale := maxAbs(ref, grads[2][1])
	errs := map[string]float64{}
	for _, c := range []struct {
		name  string
		pair  [2]kernels.Buffer
		floor float64
	}{{"out", out, 0}, {"lse", lse, 0}, {"dq", grads[0], dvScale}, {"dk", grads[1], dvScale}, {"dv", grads[2], 0}} {
		got, want := make([]float64, c.pair[0].Len()), make([]float64, c.pair[1].Len())
		be.Read(got, c.pair[0])
		ref.Read(want, c.pair[1])
		errs[c.name] = normalizedError(got, want, c.floor)
		be.Free(c.pair[0])
	}
	for _, p := range bufs {
		be.Free(p[0])
	}
	return errs
}

// normalizedError is max|got - want| / max(max|want|, floor), NaN when got holds a NaN.
func normalizedError(got, want []float64, floor float64) float64 {
	maxRef, maxErr := floor, 0.0
	for i := range want {
		maxRef = math.Max(maxRef, math.Abs(want[i]))
		if d := math.Abs(got[i] - want[i]); d > maxErr || math.IsNaN(d) {
			maxErr = d
		}
	}
	return maxErr / math.Max(maxRef, 1e-30)
}

func maxAbs(be kernels.Backend, x kernels.Buffer) float64 {
	v := make([]float64, x.Len())
	be.Read(v, x)
	m := 0.0
	for _, e := range v {
		m = math.Max(m, math.Abs(e))
	}
	return m
}

// One training step of the tiny preset through the CUDA kernels against the float32 CPU
// backend from the same weights and batch, as TestTrainStepMatchesCPU does on a GPU: the loss
// within 1% relative and every gradient tensor with cosine similarity above 0.999. This checks
// the model's use of the mixed-precision contract (which buffers are float32) on real kernels.
func TestEmuTrainStepMatchesCPU(t *testing.T) {
	be := sharedEmu(t)
	for _, remat := range []model.Remat{model.RematHybrid, model.RematFull} {
		t.Run(string(remat), func(t *testing.T) {
			c, err := model.Preset("tiny")
			if err != nil {
				t.Fatal(err)
			}
			c.Remat = remat
			const b, seq = 2, 37
			rng := rand.New(rand.NewPCG(11, 12))
			tokens, targets := make([]int32, b*seq), make([]int32, b*seq)
			for i := range tokens {
				tokens[i] = int32(rng.IntN(c.Vocab))
			}
			copy(targets, tokens[1:])
			targets[len(targets)-1] = -1
			lossG, gradG := emuStepGrads(t, c, be, tokens, targets, b, seq)
			lossC, gradC := emuStepGrads(t, c, cpu.New[float32](cpu.Options{}), tokens, targets, b, seq)
			if rel := math.Abs(lossG-lossC) / math.Abs(lossC); !(rel <= 0.01) {
				t.Errorf("loss %.6f emulated, %.6f on the CPU: %.3g relative", lossG, lossC, rel)
			}
			worst, worstName := 1.0, ""
			for _, s := range model.NewLayout(c).Specs {
				cos := cosine32(gradG[s.Offset:s.Offset+s.Size], gradC[s.Offset:s.Offset+s.Size])
				if cos < worst {
					worst, worstName = cos, s.Name
				}
				if !(cos > 0.999) {
					t.Errorf("%s: gradient cosine similarity %.6f", s.Name, cos)
				}
			}
			t.Logf("loss emulated %.6f CPU %.6f; lowest gradient cosine %.6f (%s)", lossG, lossC, worst, worstName)
		})
	}
}

func emuStepGrads(t *testing.T, c model.Config, be kernels.Backend, tokens, targets []int32, b, seq int) (float64, []float32) {
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

func cosine32(a, b []float32) float64 {
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

// mutate returns the sources with one change to one file, failing the test when the text to
// change is not found exactly once (so that a later edit of the kernel cannot make the check
// pass vacuously).
func mutate(t *testing.T, file, old, new string) map[string]string {
	t.Helper()
	code := src.Files()[file]
	if n := strings.Count(code, old); n != 1 {
		t.Fatalf("%s: %q occurs %d times, want once", file, old, n)
	}
	return map[string]string{file: strings.Replace(code, old, new, 1)}
}

// deviceError runs op and returns the *kernels.DeviceError it panics with, or nil.
func deviceError(op func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			var de *kernels.DeviceError
			if e, ok := r.(error); ok && errors.As(e, &de) {
				err = de
				return
			}
			panic(r)
		}
	}()
	op()
	return nil
}

// TestEmuCatchesBrokenKernels shows that the emulator finds the bugs it exists to find: each
// case is a copy of a real kernel with one injected mistake, which the emulated run must
// reject, where the unchanged kernel passes the same check (TestEmuConformance).
func TestEmuCatchesBrokenKernels(t *testing.T) {
	t.Run("off-by-one store past each row (rmsnorm.cu)", func(t *testing.T) {
		// j <= dim writes one element past every row; past the last row it leaves the buffer.
		d := startEmu(t, emu.Options{Files: []string{"rmsnorm.cu", "cast.cu", "add.cu"}, Sources: mutate(t, "rmsnorm.cu",
			"for (int j = threadIdx.x; j < dim; j += blockDim.x) st(orow, j,",
			"for (int j = threadIdx.x; j <= dim; j += blockDim.x) st(orow, j,")})
		be := emuBackend{newCore(d)}
		const rows, dim = 7, 130
		x, gain, out, rstd := be.Alloc(rows*dim), be.AllocMaster(dim), be.Alloc(rows*dim), be.AllocMaster(rows)
		be.Write(x, ones(rows*dim))
		be.Write(gain, ones(dim))
		err := deviceError(func() { be.RMSNorm(out, rstd, x, gain, rows, dim, 1e-6) })
		if err == nil || !strings.Contains(err.Error(), "past the end") {
			t.Fatalf("the broken kernel ran without an error naming the overrun: %v", err)
		}
		t.Logf("caught: %v", err)
	})
	t.Run("mma fragment registers swapped (attention.cu)", func(t *testing.T) {
		// The A fragment built from accumulators with its 2nd and 3rd registers exchanged: the
		// rows g+8 and columns 2c+8 of P trade places in P V.
		d := startEmu(t, emu.Options{Files: []string{"cast.cu", "add.cu"}, Sources: mutate(t, "attention.cu",
			"a[1] = pack2(c0[2], c0[3]);\n    a[2] = pack2(c1[0], c1[1]);",
			"a[1] = pack2(c1[0], c1[1]);\n    a[2] = pack2(c0[2], c0[3]);")})
		errs := attentionErrors(emuBackend{newCore(d)}, 1, 70, 2, 64, 3)
		if !(errs["out"] > 2e-2) {
			t.Fatalf("the broken kernel's output is within tolerance: normalized error %.3g", errs["out"])
		}
		t.Logf("caught: attention output normalized error %.3g > 2e-2", errs["out"])
	})
	t.Run("shuffle skipped by exited lanes (crossentropy.cu)", func(t *testing.T) {
		// Warps other than the first leave before the second reduction, then lane 0 of each
		// would take part in it: a shuffle whose mask names lanes that have exited.
		d := startEmu(t, emu.Options{Files: []string{"crossentropy.cu", "add.cu"}, Sources: mutate(t, "crossentropy.cu",
			"    if (warp != 0) return;\n",
			"    if (warp != 0 && lane != 0) return;\n")})
		be := emuBackend{newCore(d)}
		const rows, vocab = 3, 1000
		logits, losses, lse := be.Alloc(rows*vocab), be.AllocMaster(rows), be.AllocMaster(rows)
		err := deviceError(func() { be.CrossEntropy(losses, lse, logits, []int32{1, 2, 3}, rows, vocab) })
		if err == nil || !strings.Contains(err.Error(), "exited") {
			t.Fatalf("the broken kernel ran without an error naming the divergent shuffle: %v", err)
		}
		t.Logf("caught: %v", err)
	})
}

func ones(n int) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = 1
	}
	return v
}
