package model_test

import (
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"

	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/kernels/cpu"
	"github.com/herd-llm/herd/model"
)

func randomTokens(rng *rand.Rand, n, vocab int) []int32 {
	t := make([]int32, n)
	for i := range t {
		t[i] = int32(rng.IntN(vocab))
	}
	return t
}

func newModel(t testing.TB, c model.Config, be kernels.Backend, seed uint64) *model.Model {
	t.Helper()
	m, err := model.New(c, be)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(seed)
	return m
}

// perturbedInit randomizes gains too, so gradient checks see every term of RMSNorm.
func perturbedInit(m *model.Model, rng *rand.Rand) {
	be := m.Backend()
	host := make([]float64, m.Layout.Size)
	be.Read(host, m.Params())
	for _, s := range m.Layout.Specs {
		scale := 0.1 // larger than the 0.02 init so that no layer is close to the identity
		if len(s.Shape) == 1 {
			scale = 0.3
		}
		for i := s.Offset; i < s.Offset+s.Size; i++ {
			if len(s.Shape) == 1 {
				host[i] = 1 + rng.NormFloat64()*scale
			} else {
				host[i] = rng.NormFloat64() * scale
			}
		}
	}
	be.Write(m.Params(), host)
}

// The whole model's gradient against central finite differences in float64, for sampled
// coordinates of every tensor, on the tiny preset with T not a multiple of the attention tile.
// The step h = 1e-4 balances truncation (O(h^2)) against the rounding of the mean loss
// (O(eps*L/h)): measured worst errors were 4e-8 at h=1e-4, 1e-7 at 1e-5 and 9e-7 at 1e-6,
// falling with larger h, so what remains is rounding, not a wrong gradient term.
func TestModelGradientFiniteDifferences(t *testing.T) {
	const h, bound, perTensor = 1e-4, 1e-6, 6
	for _, seed := range []uint64{1, 2, 3} {
		be := cpu.New[float64](cpu.Options{})
		c := model.Default()
		c.Remat = model.RematHybrid
		m := newModel(t, c, be, seed)
		rng := rand.New(rand.NewPCG(seed, 99))
		perturbedInit(m, rng)
		b, tt := 2, 67
		tokens := randomTokens(rng, b*tt, c.Vocab)
		targets := randomTokens(rng, b*tt, c.Vocab)
		targets[5] = -1
		m.ZeroGrad()
		if _, err := m.Forward(tokens, targets, b, tt); err != nil {
			t.Fatal(err)
		}
		if err := m.Backward(); err != nil {
			t.Fatal(err)
		}
		grads := make([]float64, m.Layout.Size)
		be.Read(grads, m.Grads())
		params := make([]float64, m.Layout.Size)
		be.Read(params, m.Params())
		set := func(i int, v float64) { be.Write(be.Slice(m.Params(), i, 1), []float64{v}) }
		loss := func() float64 {
			l, err := m.Forward(tokens, targets, b, tt)
			if err != nil {
				t.Fatal(err)
			}
			return l
		}
		worst := 0.0
		for _, s := range m.Layout.Specs {
			idx := make([]int, perTensor)
			if s.Name == "tok_embeddings.weight" {
				// Only rows of tokens that occur have a gradient; sample those.
				for j := range idx {
					tok := int(tokens[rng.IntN(len(tokens))])
					idx[j] = s.Offset + tok*c.Dim + rng.IntN(c.Dim)
				}
			} else {
				for j := range idx {
					idx[j] = s.Offset + rng.IntN(s.Size)
				}
			}
			var num, den float64
			for _, i := range idx {
				set(i, params[i]+h)
				lp := loss()
				set(i, params[i]-h)
				lm := loss()
				set(i, params[i])
				fd := (lp - lm) / (2 * h)
				num += (fd - grads[i]) * (fd - grads[i])
				den += fd * fd
			}
			rel := math.Sqrt(num / den)
			worst = math.Max(worst, rel)
			if !(rel < bound) {
				t.Errorf("seed %d, %s: relative gradient error %.3g (bound %g)", seed, s.Name, rel, bound)
			}
		}
		t.Logf("seed %d: worst relative gradient error over %d tensors: %.2g", seed, len(m.Layout.Specs), worst)
	}
}

func stepGrads(t *testing.T, c model.Config, be kernels.Backend, tokens, targets []int32, b, tt int) ([]float64, float64, model.Kept) {
	t.Helper()
	m := newModel(t, c, be, 7)
	defer m.Close()
	loss, err := m.Forward(tokens, targets, b, tt)
	if err != nil {
		t.Fatal(err)
	}
	kept := m.LastKept()
	if err := m.Backward(); err != nil {
		t.Fatal(err)
	}
	g := make([]float64, m.Layout.Size)
	be.Read(g, m.Grads())
	return g, loss, kept
}

// The three policies compute the same gradients to the last bit; they differ only in what
// they keep, and what they keep is exactly what the plan reports.
func TestRematPolicies(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	c := model.Default()
	b, tt := 3, 41
	tokens := randomTokens(rng, b*tt, c.Vocab)
	targets := randomTokens(rng, b*tt, c.Vocab)
	be := cpu.New[float32](cpu.Options{})
	var ref []float64
	var refLoss float64
	perLayer := map[model.Remat]int64{}
	for _, p := range model.RematPolicies() {
		c.Remat = p
		live := be.LiveBytes()
		g, loss, kept := stepGrads(t, c, be, tokens, targets, b, tt)
		if be.LiveBytes() != live {
			t.Errorf("%s: %d bytes still allocated after Close", p, be.LiveBytes()-live)
		}
		if ref == nil {
			ref, refLoss = g, loss
		} else {
			if loss != refLoss {
				t.Errorf("%s: loss %v, want %v bitwise", p, loss, refLoss)
			}
			for i := range g {
				if g[i] != ref[i] {
					t.Fatalf("%s: gradient element %d = %v, want %v bitwise", p, i, g[i], ref[i])
				}
			}
		}
		n := b * tt
		wantLayer := model.ActivationBytesPerTokenPerLayer(c, p, kernels.Float32) * int64(n)
		for i, got := range kept.PerLayer {
			if got != wantLayer {
				t.Errorf("%s: block %d kept %d bytes, plan says %d", p, i, got, wantLayer)
			}
		}
		if want := model.ActivationBytes(c, p, kernels.Float32, n); kept.Total != want {
			t.Errorf("%s: forward kept %d bytes in all, plan says %d", p, kept.Total, want)
		}
		perLayer[p] = kept.PerLayer[0]
		t.Logf("%s: %d bytes per block (%d per token), %d in all", p, kept.PerLayer[0], kept.PerLayer[0]/int64(n), kept.Total)
	}
	if !(perLayer[model.RematFull] < perLayer[model.RematHybrid] && perLayer[model.RematHybrid] < perLayer[model.RematNone]) {
		t.Errorf("kept bytes per block not ordered full < hybrid < none: %v", perLayer)
	}
	// LLaMA's policy saves about a third of the per-block activations at the 125m shape.
	c125, _ := model.Preset("125m")
	none := model.ActivationBytesPerTokenPerLayer(c125, model.RematNone, kernels.Float32)
	hybrid := model.ActivationBytesPerTokenPerLayer(c125, model.RematHybrid, kernels.Float32)
	if saving := 1 - float64(hybrid)/float64(none); saving < 0.25 {
		t.Errorf("hybrid keeps %d bytes/token/block against none's %d: saving %.2f, want >= 0.25", hybrid, none, saving)
	}
}

// Attention at T=4096 never allocates anything like a T x T matrix: after a warm-up step, a
// full forward and backward allocate less than one head's T x T float32 scores would take.
func TestLongSequenceMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("long sequence in -short mode")
	}
	c := model.Default()
	const tt = 4096
	be := cpu.New[float32](cpu.Options{})
	m := newModel(t, c, be, 1)
	defer m.Close()
	rng := rand.New(rand.NewPCG(1, 1))
	tokens, targets := randomTokens(rng, tt, c.Vocab), randomTokens(rng, tt, c.Vocab)
	step := func() {
		if _, err := m.Forward(tokens, targets, 1, tt); err != nil {
			t.Fatal(err)
		}
		if err := m.Backward(); err != nil {
			t.Fatal(err)
		}
	}
	step()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	step()
	runtime.ReadMemStats(&after)
	alloc := after.TotalAlloc - before.TotalAlloc
	scores := uint64(tt) * tt * 4
	t.Logf("T=%d: forward+backward allocated %d bytes; one head's T x T scores would be %d", tt, alloc, scores)
	if alloc > scores/8 {
		t.Errorf("allocated %d bytes in a step at T=%d, more than 1/8 of a T x T matrix (%d)", alloc, tt, scores)
	}
}

func TestForwardInputErrors(t *testing.T) {
	c := model.Default()
	m := newModel(t, c, cpu.New[float32](cpu.Options{}), 1)
	defer m.Close()
	cases := []struct {
		tokens, targets []int32
		b, t            int
		want            string
	}{
		{[]int32{1, 2}, []int32{1, 2}, 1, 3, "2 tokens for batch 1 x seq 3"},
		{[]int32{1, 512}, []int32{1, 2}, 1, 2, "token 512 at position 1 is outside the vocabulary [0, 512)"},
		{[]int32{1, 2}, []int32{1, 600}, 1, 2, "target 600 at position 1"},
		{make([]int32, 4097), make([]int32, 4097), 1, 4097, "seq = 4097, must be in [1, max_seq = 4096]"},
		{nil, nil, 0, 2, "batch = 0"},
	}
	for _, tc := range cases {
		_, err := m.Forward(tc.tokens, tc.targets, tc.b, tc.t)
		if err == nil || !contains(err.Error(), tc.want) {
			t.Errorf("Forward(b=%d, t=%d) = %v, want error containing %q", tc.b, tc.t, err, tc.want)
		}
	}
	if err := m.Backward(); err == nil {
		t.Error("Backward without Forward succeeded")
	}
}

func contains(s, sub string) bool {
	return strings.Contains(s, sub)
}

// A few AdamW steps on one repeated batch must drive the loss well down: the whole
// forward/backward/optimizer loop learns.
func TestTrainingReducesLoss(t *testing.T) {
	c := model.Default()
	be := cpu.New[float32](cpu.Options{})
	m := newModel(t, c, be, 3)
	defer m.Close()
	opt, err := model.NewOptimizer(m, model.DefaultOptim())
	if err != nil {
		t.Fatal(err)
	}
	defer opt.Close()
	rng := rand.New(rand.NewPCG(3, 3))
	b, tt := 4, 32
	seq := randomTokens(rng, b*(tt+1), 50)
	var tokens, targets []int32
	for i := 0; i < b; i++ {
		row := seq[i*(tt+1) : (i+1)*(tt+1)]
		tokens = append(tokens, row[:tt]...)
		targets = append(targets, row[1:]...)
	}
	sched := model.Schedule{PeakLR: 3e-3, WarmupSteps: 5, TotalSteps: 60, MinRatio: 0.1}
	var first, last float64
	for step := 0; step < 60; step++ {
		m.ZeroGrad()
		loss, err := m.Forward(tokens, targets, b, tt)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Backward(); err != nil {
			t.Fatal(err)
		}
		opt.Step(sched.LR(step), 1)
		if step == 0 {
			first = loss
		}
		last = loss
	}
	t.Logf("loss %.3f -> %.3f (ln %d = %.3f)", first, last, c.Vocab, math.Log(float64(c.Vocab)))
	if math.Abs(first-math.Log(float64(c.Vocab))) > 0.5 {
		t.Errorf("initial loss %.3f, want about ln(V) = %.3f", first, math.Log(float64(c.Vocab)))
	}
	if last > first/3 {
		t.Errorf("loss fell only from %.3f to %.3f in 60 steps on one memorizable batch", first, last)
	}
}

// The ranges OnGradReady reports cover the whole gradient buffer exactly once, in the order
// backward finishes them, and each range is final when reported.
func TestGradReadyRanges(t *testing.T) {
	c := model.Default()
	be := cpu.New[float32](cpu.Options{})
	m := newModel(t, c, be, 2)
	defer m.Close()
	rng := rand.New(rand.NewPCG(2, 2))
	tokens, targets := randomTokens(rng, 2*16, c.Vocab), randomTokens(rng, 2*16, c.Vocab)
	type rg struct{ off, n int }
	var got []rg
	var snap [][]float32
	m.OnGradReady(func(off, n int) {
		got = append(got, rg{off, n})
		v := make([]float32, n)
		copy(v, cpu.Data[float32](m.Grads())[off:off+n])
		snap = append(snap, v)
	})
	if _, err := m.Forward(tokens, targets, 2, 16); err != nil {
		t.Fatal(err)
	}
	if err := m.Backward(); err != nil {
		t.Fatal(err)
	}
	covered := make([]int, m.Layout.Size)
	for _, r := range got {
		for i := r.off; i < r.off+r.n; i++ {
			covered[i]++
		}
	}
	for i, n := range covered {
		if n != 1 {
			t.Fatalf("gradient element %d reported %d times", i, n)
		}
	}
	if len(got) != c.Layers+2 || got[0].off+got[0].n != m.Layout.Size || got[len(got)-1].off != 0 {
		t.Errorf("ranges %v: want head first, blocks last to first, embedding last", got)
	}
	final := cpu.Data[float32](m.Grads())
	for k, r := range got {
		for i := range snap[k] {
			if snap[k][i] != final[r.off+i] {
				t.Fatalf("range %d changed after it was reported ready", k)
			}
		}
	}
}
