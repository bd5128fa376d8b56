package model_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/kernels/cpu"
	"github.com/herd-llm/herd/model"
)

// checkedMixed is the float32 CPU backend presented as a mixed-precision one: master buffers
// are ordinary float32 buffers, but the backend remembers which buffers (and views) came from
// AllocMaster and fails the test when an op receives an activation buffer where the
// kernels.Mixed contract says a master (float32) buffer goes, or the reverse. This is the
// contract the CUDA backend relies on to pick its bf16 or fp32 kernels.
type checkedMixed struct {
	*cpu.Backend[float32]
	t      testing.TB
	master map[kernels.Buffer]bool
	casts  int
}

func newCheckedMixed(t testing.TB) *checkedMixed {
	return &checkedMixed{Backend: cpu.New[float32](cpu.Options{}), t: t, master: map[kernels.Buffer]bool{}}
}

var _ kernels.Mixed = (*checkedMixed)(nil)

func (c *checkedMixed) AllocMaster(n int) kernels.Buffer {
	b := c.Backend.Alloc(n)
	c.master[b] = true
	return b
}

func (c *checkedMixed) Slice(b kernels.Buffer, off, n int) kernels.Buffer {
	v := c.Backend.Slice(b, off, n)
	if c.master[b] {
		c.master[v] = true
	}
	return v
}

func (c *checkedMixed) Free(b kernels.Buffer) {
	delete(c.master, b)
	c.Backend.Free(b)
}

// want fails the test unless each named buffer is a master buffer (m) or an activation (!m).
func (c *checkedMixed) want(op string, m bool, named ...any) {
	c.t.Helper()
	for i := 0; i+1 < len(named); i += 2 {
		if b := named[i+1].(kernels.Buffer); c.master[b] != m {
			kind := "an activation"
			if m {
				kind = "a float32 master"
			}
			c.t.Fatalf("%s: %s must be %s buffer", op, named[i], kind)
		}
	}
}

func (c *checkedMixed) Cast(dst, src kernels.Buffer) {
	c.casts++
	c.Backend.Copy(dst, src)
}

func (c *checkedMixed) AdamWUpdateCast(w, p, g, m, v kernels.Buffer, hp kernels.AdamW) {
	c.want("AdamWUpdateCast", true, "p", p, "g", g, "m", m, "v", v)
	c.want("AdamWUpdateCast", false, "w", w)
	c.Backend.AdamWUpdate(p, g, m, v, hp)
	c.Backend.Copy(w, p)
}

func (c *checkedMixed) AdamWUpdate(p, g, m, v kernels.Buffer, hp kernels.AdamW) {
	c.t.Fatal("AdamWUpdate called on a mixed backend; the optimizer must use AdamWUpdateCast")
}

func (c *checkedMixed) RMSNorm(out, rstd, x, gain kernels.Buffer, rows, dim int, eps float64) {
	c.want("RMSNorm", true, "rstd", rstd, "gain", gain, "x (the residual stream)", x)
	c.want("RMSNorm", false, "out", out)
	c.Backend.RMSNorm(out, rstd, x, gain, rows, dim, eps)
}

func (c *checkedMixed) RMSNormBackward(dx, dgain, dout, x, gain, rstd kernels.Buffer, rows, dim int) {
	c.want("RMSNormBackward", true, "dgain", dgain, "rstd", rstd, "gain", gain, "dx", dx, "x", x)
	c.want("RMSNormBackward", false, "dout", dout)
	c.Backend.RMSNormBackward(dx, dgain, dout, x, gain, rstd, rows, dim)
}

func (c *checkedMixed) Embedding(out, table kernels.Buffer, tokens []int32, dim int) {
	c.want("Embedding", true, "table", table, "out (the residual stream)", out)
	c.Backend.Embedding(out, table, tokens, dim)
}

func (c *checkedMixed) EmbeddingBackward(dtable, dout kernels.Buffer, tokens []int32, dim int) {
	c.want("EmbeddingBackward", true, "dtable", dtable, "dout (the residual stream's gradient)", dout)
	c.Backend.EmbeddingBackward(dtable, dout, tokens, dim)
}

// MatMul: the inputs are always activations or working weights. C is a master buffer when it
// accumulates a weight gradient, dW += dY^T X (the model's only use of transA), when it adds
// into the residual stream (beta = 1 onto the stream's copy) and when it holds the logits; an
// activation otherwise.
func (c *checkedMixed) MatMul(cb, a, b kernels.Buffer, m, n, k int, transA, transB bool, beta float64) {
	c.want("MatMul", false, "A", a, "B", b)
	if transA {
		c.want(fmt.Sprintf("MatMul transA=%v beta=%g", transA, beta), true, "C", cb)
	}
	c.Backend.MatMul(cb, a, b, m, n, k, transA, transB, beta)
}

func (c *checkedMixed) Attention(out, lse, q, k, v kernels.Buffer, b, t, h, d int) {
	c.want("Attention", true, "lse", lse)
	c.want("Attention", false, "out", out, "q", q, "k", k, "v", v)
	c.Backend.Attention(out, lse, q, k, v, b, t, h, d)
}

func (c *checkedMixed) AttentionBackward(dq, dk, dv, dout, out, lse, q, k, v kernels.Buffer, b, t, h, d int) {
	c.want("AttentionBackward", true, "lse", lse)
	c.want("AttentionBackward", false, "dq", dq, "dk", dk, "dv", dv, "dout", dout, "out", out, "q", q, "k", k, "v", v)
	c.Backend.AttentionBackward(dq, dk, dv, dout, out, lse, q, k, v, b, t, h, d)
}

func (c *checkedMixed) CrossEntropy(losses, lse, logits kernels.Buffer, targets []int32, rows, vocab int) {
	c.want("CrossEntropy", true, "losses", losses, "lse", lse, "logits", logits)
	c.Backend.CrossEntropy(losses, lse, logits, targets, rows, vocab)
}

func (c *checkedMixed) CrossEntropyBackward(dlogits, logits, lse kernels.Buffer, targets []int32, rows, vocab int, scale float64) {
	c.want("CrossEntropyBackward", true, "lse", lse, "dlogits", dlogits, "logits", logits)
	c.Backend.CrossEntropyBackward(dlogits, logits, lse, targets, rows, vocab, scale)
}

func (c *checkedMixed) SumSquares(x kernels.Buffer) float64 {
	c.want("SumSquares", true, "x", x)
	return c.Backend.SumSquares(x)
}

// TestMixedPrecisionWiring trains the tiny preset for a few steps, under every remat policy,
// on a backend that checks the kernels.Mixed contract op by op, and requires the losses and
// final master weights to equal bit for bit those of the plain float32 backend (the checked
// backend computes in float32 too). A working copy the optimizer forgot to refresh, or a
// checkpoint load that skipped ParamsUpdated, would make the runs differ.
func TestMixedPrecisionWiring(t *testing.T) {
	for _, p := range []model.Remat{model.RematNone, model.RematHybrid, model.RematFull} {
		t.Run(string(p), func(t *testing.T) {
			c := model.Default()
			c.Remat = p
			plain := cpu.New[float32](cpu.Options{})
			mixed := newCheckedMixed(t)
			lossP, paramsP := trainSteps(t, c, plain, 4)
			lossM, paramsM := trainSteps(t, c, mixed, 4)
			for i := range lossP {
				if lossP[i] != lossM[i] {
					t.Fatalf("step %d: loss %v on the mixed backend, %v on the plain one", i, lossM[i], lossP[i])
				}
			}
			for i := range paramsP {
				if paramsP[i] != paramsM[i] {
					t.Fatalf("master weight %d: %v on the mixed backend, %v on the plain one", i, paramsM[i], paramsP[i])
				}
			}
			if mixed.casts == 0 {
				t.Fatal("Init never refreshed the working copy through Cast")
			}
		})
	}
}

// trainSteps runs n AdamW steps of c on be from a fixed init and batch stream and returns the
// losses and the final parameters. Halfway it reloads the parameters through Params and
// ParamsUpdated, as a checkpoint resume does.
func trainSteps(t *testing.T, c model.Config, be kernels.Backend, n int) ([]float64, []float32) {
	t.Helper()
	m := newModel(t, c, be, 5)
	defer m.Close()
	opt, err := model.NewOptimizer(m, model.DefaultOptim())
	if err != nil {
		t.Fatal(err)
	}
	defer opt.Close()
	rng := rand.New(rand.NewPCG(3, 4))
	const b, seq = 2, 19
	var losses []float64
	host := make([]float32, m.Layout.Size)
	for step := 0; step < n; step++ {
		if step == n/2 {
			be.Read32(host, m.Params())
			m.ParamsUpdated()
			be.Write32(m.Params(), host)
			m.ParamsUpdated()
		}
		tokens := randomTokens(rng, b*seq, c.Vocab)
		targets := randomTokens(rng, b*seq, c.Vocab)
		m.ZeroGrad()
		loss, err := m.Forward(tokens, targets, b, seq)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Backward(); err != nil {
			t.Fatal(err)
		}
		opt.Step(1e-3, 1)
		losses = append(losses, loss)
	}
	be.Read32(host, m.Params())
	return losses, host
}
