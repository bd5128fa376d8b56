package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"

	"github.com/herd-llm/herd/kernels"
)

// Logits runs the network on tokens [b, t] and returns the logits [b*t, V] in host memory.
// It runs the training Forward (so its peak memory is a training forward's) and releases the
// kept activations before returning.
func (m *Model) Logits(tokens []int32, b, t int) ([]float32, error) {
	if m.tp != nil {
		return nil, ErrTensorParallel
	}
	targets := make([]int32, len(tokens))
	for i := range targets {
		targets[i] = -1
	}
	if _, err := m.Forward(tokens, targets, b, t); err != nil {
		return nil, err
	}
	defer m.dropPass()
	out := make([]float32, b*t*m.Cfg.Vocab)
	m.be.Read32(out, m.pass.head[hLogits])
	return out, nil
}

// Generator produces text token by token with a key/value cache, so generating n tokens costs
// O(n) block evaluations instead of O(n^2).
type Generator struct {
	m      *Model
	maxLen int
	pos    int
	k, v   []kernels.Buffer // per block, [maxLen, d] rotated keys and values
	rows   int              // capacity of the scratch below, in rows
	s      genScratch
}

type genScratch struct {
	x, xn, q, kk, vv, att, h, a, b, g, rstd, logits kernels.Buffer
}

// NewGenerator returns a generator whose context holds up to maxLen tokens (at most MaxSeq).
func (m *Model) NewGenerator(maxLen int) (*Generator, error) {
	if m.tp != nil {
		return nil, ErrTensorParallel
	}
	if err := m.Cfg.CheckSeq(maxLen); err != nil {
		return nil, err
	}
	g := &Generator{m: m, maxLen: maxLen}
	for i := 0; i < m.Cfg.Layers; i++ {
		g.k = append(g.k, m.be.Alloc(maxLen*m.Cfg.Dim))
		g.v = append(g.v, m.be.Alloc(maxLen*m.Cfg.Dim))
	}
	return g, nil
}

// Len returns the number of tokens in the context.
func (g *Generator) Len() int { return g.pos }

// Reset empties the context.
func (g *Generator) Reset() { g.pos = 0 }

// Close frees the cache.
func (g *Generator) Close() {
	for i := range g.k {
		g.m.be.Free(g.k[i])
		g.m.be.Free(g.v[i])
	}
	g.freeScratch()
}

func (g *Generator) freeScratch() {
	if g.rows == 0 {
		return
	}
	for _, b := range []kernels.Buffer{g.s.x, g.s.xn, g.s.q, g.s.kk, g.s.vv, g.s.att, g.s.h, g.s.a, g.s.b, g.s.g, g.s.rstd, g.s.logits} {
		g.m.be.Free(b)
	}
	g.rows = 0
}

func (g *Generator) ensure(n int) {
	if n <= g.rows {
		return
	}
	g.freeScratch()
	c, be := g.m.Cfg, g.m.be
	d, f := c.Dim, c.FFNHidden
	// The residual stream (x, h) and the logits have the types training gives them, so that
	// generation computes what Forward computes.
	g.s = genScratch{
		x: g.m.allocAct(n*d, headActs[hX0].f32), xn: be.Alloc(n * d), q: be.Alloc(n * d), kk: be.Alloc(n * d), vv: be.Alloc(n * d),
		att: be.Alloc(n * d), h: g.m.allocAct(n*d, layerActs[aH].f32), a: be.Alloc(n * f), b: be.Alloc(n * f), g: be.Alloc(n * f),
		rstd: g.m.allocMaster(n), logits: g.m.allocAct(c.Vocab, headActs[hLogits].f32),
	}
	g.rows = n
}

// Feed appends tokens to the context and returns the logits that predict the next token.
func (g *Generator) Feed(tokens []int32) ([]float32, error) {
	c, be, m := g.m.Cfg, g.m.be, g.m
	n := len(tokens)
	if n == 0 {
		return nil, fmt.Errorf("%w: Feed of no tokens", ErrInput)
	}
	if g.pos+n > g.maxLen {
		return nil, fmt.Errorf("%w: context of %d tokens would exceed the generator's %d", ErrInput, g.pos+n, g.maxLen)
	}
	for i, tok := range tokens {
		if tok < 0 || int(tok) >= c.Vocab {
			return nil, fmt.Errorf("%w: token %d at position %d is outside the vocabulary [0, %d)", ErrInput, tok, i, c.Vocab)
		}
	}
	g.ensure(n)
	d, f := c.Dim, c.FFNHidden
	sl := func(b kernels.Buffer, w int) kernels.Buffer { return be.Slice(b, 0, n*w) }
	x, xn, q, kk, vv, att, h := sl(g.s.x, d), sl(g.s.xn, d), sl(g.s.q, d), sl(g.s.kk, d), sl(g.s.vv, d), sl(g.s.att, d), sl(g.s.h, d)
	a, b, gg, rstd := sl(g.s.a, f), sl(g.s.b, f), sl(g.s.g, f), sl(g.s.rstd, 1)
	m.useParams(m.embUnit(), m.blockUnit(0))
	emb, _ := m.headParam("tok_embeddings.weight")
	be.Embedding(x, emb, tokens, d)
	m.doneParams(m.embUnit())
	tk := g.pos + n
	for i := 0; i < c.Layers; i++ {
		m.useParams(m.blockUnit(i), m.blockUnit(i+1))
		w := func(k int) kernels.Buffer { p, _ := m.layerParam(i, k); return p }
		be.RMSNorm(xn, rstd, x, w(pAttnNorm), n, d, c.NormEps)
		m.linear(q, xn, w(pWq), n, d, d)
		m.linear(kk, xn, w(pWk), n, d, d)
		m.linear(vv, xn, w(pWv), n, d, d)
		be.RoPE(q, q, 1, n, c.Heads, c.HeadDim(), g.pos, c.RopeTheta)
		be.RoPE(kk, kk, 1, n, c.Heads, c.HeadDim(), g.pos, c.RopeTheta)
		be.Copy(be.Slice(g.k[i], g.pos*d, n*d), kk)
		be.Copy(be.Slice(g.v[i], g.pos*d, n*d), vv)
		be.AttentionCached(att, q, g.k[i], g.v[i], n, tk, c.Heads, c.HeadDim())
		m.residual(h, x, att, w(pWo), n, d, d)
		be.RMSNorm(xn, rstd, h, w(pFFNNorm), n, d, c.NormEps)
		m.linear(a, xn, w(pW1), n, f, d)
		m.linear(b, xn, w(pW3), n, f, d)
		be.SwiGLU(gg, a, b)
		m.residual(x, h, gg, w(pW2), n, d, f)
		m.doneParams(m.blockUnit(i))
	}
	m.useParams(m.headUnit(), -1)
	defer m.doneParams(m.headUnit())
	norm, _ := m.headParam("norm.weight")
	out, _ := m.headParam("output.weight")
	last := be.Slice(x, (n-1)*d, d)
	be.RMSNorm(be.Slice(xn, 0, d), be.Slice(rstd, 0, 1), last, norm, 1, d, c.NormEps)
	m.linear(g.s.logits, be.Slice(xn, 0, d), out, 1, c.Vocab, d)
	logits := make([]float32, c.Vocab)
	be.Read32(logits, g.s.logits)
	g.pos = tk
	return logits, nil
}

// SampleToken draws a token from logits with the given temperature and nucleus (top-p)
// threshold. Temperature 0 returns the argmax (the lowest id among equal maxima).
func SampleToken(logits []float32, temperature, topP float64, rng *rand.Rand) int32 {
	if temperature <= 0 {
		best := 0
		for i, v := range logits {
			if v > logits[best] {
				best = i
			}
		}
		return int32(best)
	}
	type cand struct {
		id int
		p  float64
	}
	mx := math.Inf(-1)
	for _, v := range logits {
		mx = math.Max(mx, float64(v))
	}
	cands := make([]cand, len(logits))
	var sum float64
	for i, v := range logits {
		p := math.Exp((float64(v) - mx) / temperature)
		cands[i] = cand{i, p}
		sum += p
	}
	sort.Slice(cands, func(i, j int) bool {
		if cands[i].p != cands[j].p {
			return cands[i].p > cands[j].p
		}
		return cands[i].id < cands[j].id
	})
	if topP <= 0 || topP > 1 {
		topP = 1
	}
	keep, acc := 0, 0.0
	for keep < len(cands) {
		acc += cands[keep].p / sum
		keep++
		if acc >= topP {
			break
		}
	}
	r := rng.Float64() * acc
	for _, c := range cands[:keep] {
		r -= c.p / sum
		if r <= 0 {
			return int32(c.id)
		}
	}
	return int32(cands[keep-1].id)
}
