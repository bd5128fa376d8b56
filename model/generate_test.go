package model_test

import (
	"math/rand/v2"
	"testing"

	"github.com/herd-llm/herd/kernels/cpu"
	"github.com/herd-llm/herd/model"
)

// Greedy decoding through the KV cache must equal argmax decoding that reruns the whole
// sequence through Logits at every step, and must be deterministic.
func TestGenerateMatchesFullForward(t *testing.T) {
	c := model.Default()
	be := cpu.New[float32](cpu.Options{})
	m := newModel(t, c, be, 11)
	defer m.Close()
	perturbedInit(m, rand.New(rand.NewPCG(11, 0)))
	prompt := []int32{5, 17, 200, 3, 3, 90}
	const steps = 20
	greedy := func() []int32 {
		g, err := m.NewGenerator(64)
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		logits, err := g.Feed(prompt)
		if err != nil {
			t.Fatal(err)
		}
		var out []int32
		for i := 0; i < steps; i++ {
			tok := model.SampleToken(logits, 0, 1, nil)
			out = append(out, tok)
			if logits, err = g.Feed([]int32{tok}); err != nil {
				t.Fatal(err)
			}
		}
		return out
	}
	a, b := greedy(), greedy()
	seq := append([]int32(nil), prompt...)
	for i := 0; i < steps; i++ {
		logits, err := m.Logits(seq, 1, len(seq))
		if err != nil {
			t.Fatal(err)
		}
		last := logits[(len(seq)-1)*c.Vocab:]
		want := model.SampleToken(last, 0, 1, nil)
		if a[i] != want || b[i] != want {
			t.Fatalf("step %d: cached decoding gave %d and %d, full forward argmax %d", i, a[i], b[i], want)
		}
		seq = append(seq, want)
	}
	t.Logf("greedy continuation: %v", a)
}

func TestSampleToken(t *testing.T) {
	logits := []float32{0, 3, 1, 3, -2}
	if got := model.SampleToken(logits, 0, 1, nil); got != 1 {
		t.Errorf("argmax = %d, want 1 (first of equal maxima)", got)
	}
	rng := rand.New(rand.NewPCG(1, 1))
	counts := make([]int, len(logits))
	for i := 0; i < 2000; i++ {
		counts[model.SampleToken(logits, 1, 0.5, rng)]++
	}
	// With top-p 0.5 only the two largest (ids 1 and 3, 0.42 each) survive.
	if counts[0]+counts[2]+counts[4] != 0 || counts[1] < 800 || counts[3] < 800 {
		t.Errorf("top-p 0.5 counts %v", counts)
	}
}
