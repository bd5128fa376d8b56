package worker

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/herd-llm/herd/kernels/cpu"
	"github.com/herd-llm/herd/model"
	"github.com/herd-llm/herd/tokenizer"
)

func TestTrigramIsADistribution(t *testing.T) {
	m := NewTrigram()
	m.Fit([]byte("the theory of the thing that thaws"))
	m.Fit([]byte("abcabcabc"))
	for _, ctx := range []string{"", "t", "th", "zq", "ab"} {
		var sum float64
		for c := 0; c < 256; c++ {
			p := m.Prob([]byte(ctx), byte(c))
			if !(p > 0) {
				t.Fatalf("P(%d | %q) = %v", c, ctx, p)
			}
			sum += p
		}
		if math.Abs(sum-1) > 1e-9 {
			t.Errorf("probabilities after %q sum to %v", ctx, sum)
		}
	}
	// Seen continuations are far more likely than unseen ones.
	if m.Prob([]byte("ab"), 'c') < 0.5 || m.Prob([]byte("th"), 'z') > 0.05 {
		t.Errorf("P(c|ab) = %v, P(z|th) = %v", m.Prob([]byte("ab"), 'c'), m.Prob([]byte("th"), 'z'))
	}
}

func TestEvalSetBytesAndPadding(t *testing.T) {
	tok, err := tokenizer.TrainDocs([][]byte{[]byte("hello hello world, hello there world")}, 262, tokenizer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ids := tok.Encode([]byte("hello world"))
	stream := append(append([]int32{}, ids...), tok.EOS())
	es := NewEvalSet([][]int32{stream}, 64, 10, tok)
	if len(es.Inputs) != 1 {
		t.Fatalf("%d sequences, want 1", len(es.Inputs))
	}
	// Targets are everything after the first token; EOS carries loss but no bytes.
	want := int64(len("hello world") - len(tok.TokenBytes(ids[0])))
	if es.Bytes != want {
		t.Errorf("Bytes = %d, want %d", es.Bytes, want)
	}
	if es.Targets[0][len(stream)-1] != -1 || es.Targets[0][len(stream)-2] != tok.EOS() {
		t.Errorf("targets not padded after the stream: %v", es.Targets[0][:len(stream)+1])
	}
}

func TestWeightsRoundTrip(t *testing.T) {
	be := cpu.New[float32](cpu.Options{})
	c := model.Default()
	a, _ := model.New(c, be)
	a.Init(4)
	path := filepath.Join(t.TempDir(), WeightsName)
	if err := SaveWeights(a, path); err != nil {
		t.Fatal(err)
	}
	b, _ := model.New(c, be)
	if err := LoadWeights(b, path); err != nil {
		t.Fatal(err)
	}
	x, y := make([]float32, a.Layout.Size), make([]float32, a.Layout.Size)
	be.Read32(x, a.Params())
	be.Read32(y, b.Params())
	for i := range x {
		if x[i] != y[i] {
			t.Fatalf("parameter %d: %v after the round trip, want %v", i, y[i], x[i])
		}
	}
	c.Dim = 32
	other, _ := model.New(c, be)
	if err := LoadWeights(other, path); err == nil {
		t.Error("weights of another shape loaded")
	}
}
