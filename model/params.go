package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
)

// ParamSpec describes one tensor of the flat parameter buffer. Gradients and optimizer
// moments use the same layout, so a byte range of one is the same tensors in all of them.
type ParamSpec struct {
	Name   string `json:"name"`   // Meta's checkpoint name, e.g. "layers.0.attention.wq.weight"
	Shape  []int  `json:"shape"`  // row-major; linear weights are [out, in]
	Offset int    `json:"offset"` // first element in the flat buffer
	Size   int    `json:"size"`   // number of elements
	Layer  int    `json:"layer"`  // block index, or -1 for embeddings, final norm and head
	Decay  bool   `json:"decay"`  // weight decay applies (matrices only)
}

// gemmOperand reports whether the tensor is a linear layer's weight, an operand of a matrix
// multiplication. On a mixed-precision backend the passes read those from the working copy in
// the activation type and everything else (norm gains, the embedding table) from the float32
// masters.
func (s ParamSpec) gemmOperand() bool { return len(s.Shape) == 2 && s.Name != "tok_embeddings.weight" }

// Layout is the spec table of a model's parameters.
type Layout struct {
	Specs []ParamSpec
	Size  int // total elements
	// Parts, on a tensor-parallel rank's share of the network (NewShardLayout), says which
	// part of the whole tensor each spec holds; nil on the whole network's layout.
	Parts []Part
	index map[string]int
	whole *Layout // the whole network's layout, on a share
}

// tensor kinds within one block, in layout order.
const (
	pAttnNorm = iota
	pWq
	pWk
	pWv
	pWo
	pFFNNorm
	pW1
	pW3
	pW2
	perLayer
)

// NewLayout builds the spec table for c: the token embedding, then each block's tensors, then
// the final norm and the output head. Shapes come from here and nowhere else.
func NewLayout(c Config) Layout {
	d, f, v := c.Dim, c.FFNHidden, c.Vocab
	var l Layout
	l.index = map[string]int{}
	add := func(name string, layer int, shape ...int) {
		n := 1
		for _, s := range shape {
			n *= s
		}
		l.index[name] = len(l.Specs)
		l.Specs = append(l.Specs, ParamSpec{Name: name, Shape: shape, Offset: l.Size, Size: n, Layer: layer, Decay: len(shape) > 1})
		l.Size += n
	}
	add("tok_embeddings.weight", -1, v, d)
	for i := 0; i < c.Layers; i++ {
		p := fmt.Sprintf("layers.%d.", i)
		add(p+"attention_norm.weight", i, d)
		add(p+"attention.wq.weight", i, d, d)
		add(p+"attention.wk.weight", i, d, d)
		add(p+"attention.wv.weight", i, d, d)
		add(p+"attention.wo.weight", i, d, d)
		add(p+"ffn_norm.weight", i, d)
		add(p+"feed_forward.w1.weight", i, f, d)
		add(p+"feed_forward.w3.weight", i, f, d)
		add(p+"feed_forward.w2.weight", i, d, f)
	}
	add("norm.weight", -1, d)
	add("output.weight", -1, v, d)
	return l
}

// Lookup returns the spec with the given name.
func (l Layout) Lookup(name string) (ParamSpec, bool) {
	i, ok := l.index[name]
	if !ok {
		return ParamSpec{}, false
	}
	return l.Specs[i], true
}

// layerSpec returns tensor kind k of block i.
func (l Layout) layerSpec(i, k int) ParamSpec { return l.Specs[1+i*perLayer+k] }

// NumParams returns the exact parameter count of c.
func NumParams(c Config) int { return NewLayout(c).Size }

// NumEmbeddingParams returns the parameters of the input embedding, which do no arithmetic
// and are left out of FLOP counts (PaLM's convention).
func NumEmbeddingParams(c Config) int { return c.Vocab * c.Dim }

// FLOPsPerToken returns the model FLOPs of one training token (forward and backward):
// 6*(N - N_embedding) + 12*L*T*d, the convention used for MFU throughout herd.
func FLOPsPerToken(c Config, t int) float64 {
	return 6*float64(NumParams(c)-NumEmbeddingParams(c)) + 12*float64(c.Layers*t*c.Dim)
}

// InitParams fills host memory laid out by l with the initial weights: normal(0, 0.02) for
// matrices, with the projections that write into the residual stream (wo, w2) scaled by
// 1/sqrt(2L), and gains of 1. The same seed gives the same weights on every rank.
//
// Every tensor is drawn in chunks of initChunk elements, each from a generator of its own
// seeded by (seed, tensor, chunk), and the chunks are spread over the cores: the weights are
// the same whatever the number of cores, and the 1b preset's 1.3 billion draws take about a
// second on a 16-core machine instead of tens of seconds on one.
func InitParams(c Config, l Layout, seed uint64, dst []float32) {
	initParams(c, l, seed, dst, runtime.GOMAXPROCS(0))
}

// initChunk is the number of elements drawn from one generator.
const initChunk = 1 << 16

func initParams(c Config, l Layout, seed uint64, dst []float32, workers int) {
	if len(dst) != l.Size {
		panic(fmt.Sprintf("model: InitParams into %d values, layout has %d", len(dst), l.Size))
	}
	resid := 0.02 / math.Sqrt(2*float64(c.Layers))
	type chunk struct {
		spec, index int
		scale       float64 // 0: a gain, set to 1
	}
	var chunks []chunk
	for i, s := range l.Specs {
		scale := 0.02
		switch {
		case len(s.Shape) == 1:
			scale = 0
		case s.Layer >= 0 && ((i-1)%perLayer == pWo || (i-1)%perLayer == pW2):
			scale = resid
		}
		for k := 0; k*initChunk < s.Size; k++ {
			chunks = append(chunks, chunk{spec: i, index: k, scale: scale})
		}
	}
	fill := func(ch chunk) {
		s := l.Specs[ch.spec]
		lo := s.Offset + ch.index*initChunk
		w := dst[lo : lo+min(initChunk, s.Size-ch.index*initChunk)]
		if ch.scale == 0 {
			for j := range w {
				w[j] = 1
			}
			return
		}
		rng := rand.New(rand.NewPCG(seed, 0x6865726421<<24^uint64(ch.spec)<<32^uint64(ch.index)))
		for j := range w {
			w[j] = float32(rng.NormFloat64() * ch.scale)
		}
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range max(1, min(workers, len(chunks))) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := next.Add(1) - 1; k < int64(len(chunks)); k = next.Add(1) - 1 {
				fill(chunks[k])
			}
		}()
	}
	wg.Wait()
}
