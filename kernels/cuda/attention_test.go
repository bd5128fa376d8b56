//go:build cuda

package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// attnShape is one test case of the attention kernels: batch, sequence, heads, head size.
type attnShape struct{ b, t, h, d int }

// TestAttentionKernels checks Forward, Backward and Cached, compiled as a cubin and as PTX,
// against float64 references on shapes that cover both code paths (D = 8 and 40 scalar; 16, 64, 128 tensor cores), a single
// position, sequence lengths that are not multiples of any tile, and several (batch, head)
// pairs.
//
// Inputs are bf16 values (q scaled by 3 so that the softmax is far from uniform), and the
// references see exactly those values. Outputs are poisoned with NaN before each run, so a row
// a kernel fails to write fails the test. Tolerances: out, dq, dk, dv are rounded to bf16 once
// (2^-9 relative) and the tensor-core path also rounds P and dS to bf16 before its products,
// so 2e-2 of the largest reference magnitude leaves room for that and still catches any
// indexing or masking error (errors of order 1); lse is fp32 throughout, hence 1e-3.
func TestAttentionKernels(t *testing.T) {
	d := openDevice(t)
	nv := loadNVRTC(t)
	major, minor := d.ComputeCapability()
	if major < 8 {
		t.Skipf("sm_%d%d: the attention kernels need sm_80 or newer", major, minor)
	}
	for _, code := range []Code{CodeCubin, CodePTX} {
		arch := code.Arch(major, minor)
		for _, s := range []attnShape{{1, 1, 1, 8}, {2, 67, 3, 16}, {1, 130, 2, 64}, {2, 257, 2, 128}, {1, 77, 1, 40}} {
			t.Run(fmt.Sprintf("%s/B%d_T%d_H%d_D%d", code, s.b, s.t, s.h, s.d), func(t *testing.T) {
				a, err := LoadAttention(d, nv, arch, s.d)
				if err != nil {
					t.Fatal(err)
				}
				defer func() { mustDo(t, a.Close()) }()
				if a.HeadDim() != s.d {
					t.Fatalf("HeadDim() = %d, want %d", a.HeadDim(), s.d)
				}
				checkAttention(t, d, a, s)
				checkAttentionCached(t, d, a, s)
			})
		}
	}
}

func checkAttention(t *testing.T, d *Device, a *Attention, s attnShape) {
	rng := rand.New(rand.NewPCG(uint64(s.t), uint64(s.d)))
	n := s.b * s.t * s.h * s.d
	nl := s.b * s.h * s.t
	qh, qf := randBF16Scaled(rng, n, 3)
	kh, kf := randBF16Scaled(rng, n, 1)
	vh, vf := randBF16Scaled(rng, n, 1)
	doh, dof := randBF16Scaled(rng, n, 1)
	mem := d.Allocator()
	bf := func() DevicePtr { return mustAlloc(t, mem, int64(2*n)) }
	pq, pk, pv, pout, pdout, pdq, pdk, pdv := bf(), bf(), bf(), bf(), bf(), bf(), bf(), bf()
	plse, pdelta := mustAlloc(t, mem, int64(4*nl)), mustAlloc(t, mem, int64(4*nl))
	defer func() {
		for _, p := range []DevicePtr{pq, pk, pv, pout, pdout, pdq, pdk, pdv, plse, pdelta} {
			mustDo(t, mem.Free(p))
		}
	}()
	mustDo(t, Upload(d, pq, qh), Upload(d, pk, kh), Upload(d, pv, vh), Upload(d, pdout, doh))
	poison := func(ps ...DevicePtr) {
		for _, p := range ps {
			size := int64(2 * n)
			if p == plse || p == pdelta {
				size = int64(4 * nl)
			}
			mustDo(t, d.Memset(p, 0xff, size)) // bf16 0xffff and fp32 0xffffffff are NaN
		}
	}

	poison(pout, plse)
	mustDo(t, a.Forward(Stream{}, pout, plse, pq, pk, pv, s.b, s.t, s.h), d.Synchronize())
	outH := make([]uint16, n)
	lse := make([]float32, nl)
	mustDo(t, Download(d, outH, pout), Download(d, lse, plse))
	wantOut, wantLse := refAttention(qf, kf, vf, s)
	checkClose(t, "out", widenBF16(outH), wantOut, 2e-2)
	lse64 := make([]float64, nl)
	for i, x := range lse {
		lse64[i] = float64(x)
	}
	checkClose(t, "lse", lse64, wantLse, 1e-3)

	grads := func() [3][]uint16 {
		poison(pdq, pdk, pdv, pdelta)
		mustDo(t, a.Backward(Stream{}, pdq, pdk, pdv, pdout, pout, plse, pq, pk, pv, pdelta, s.b, s.t, s.h), d.Synchronize())
		var g [3][]uint16
		for i, p := range []DevicePtr{pdq, pdk, pdv} {
			g[i] = make([]uint16, n)
			mustDo(t, Download(d, g[i], p))
		}
		return g
	}
	got := grads()
	wantDq, wantDk, wantDv := refAttentionBackward(qf, kf, vf, dof, s)
	checkClose(t, "dq", widenBF16(got[0]), wantDq, 2e-2)
	checkClose(t, "dk", widenBF16(got[1]), wantDk, 2e-2)
	checkClose(t, "dv", widenBF16(got[2]), wantDv, 2e-2)
	again := grads()
	for i, name := range []string{"dq", "dk", "dv"} {
		for j := range got[i] {
			if got[i][j] != again[i][j] {
				t.Fatalf("%s[%d]: %#04x on the first run, %#04x on the second: not reproducible", name, j, got[i][j], again[i][j])
			}
		}
	}
}

// checkAttentionCached runs the cached step for the last tq = min(T, 5) positions of a cache of
// tk = T keys. The cache has two more rows, poisoned with NaN: reading past tk fails the test.
func checkAttentionCached(t *testing.T, d *Device, a *Attention, s attnShape) {
	rng := rand.New(rand.NewPCG(uint64(s.t)+1, uint64(s.d)))
	tk, tq := s.t, min(s.t, 5)
	row := s.h * s.d
	qh, qf := randBF16Scaled(rng, tq*row, 3)
	kh, kf := randBF16Scaled(rng, tk*row, 1)
	vh, vf := randBF16Scaled(rng, tk*row, 1)
	for range 2 * row {
		kh = append(kh, 0xffff)
		vh = append(vh, 0xffff)
	}
	mem := d.Allocator()
	pq, pout := mustAlloc(t, mem, int64(2*tq*row)), mustAlloc(t, mem, int64(2*tq*row))
	pk, pv := mustAlloc(t, mem, int64(2*len(kh))), mustAlloc(t, mem, int64(2*len(vh)))
	defer func() { mustDo(t, mem.Free(pq), mem.Free(pout), mem.Free(pk), mem.Free(pv)) }()
	mustDo(t, Upload(d, pq, qh), Upload(d, pk, kh), Upload(d, pv, vh), d.Memset(pout, 0xff, int64(2*tq*row)))
	mustDo(t, a.Cached(Stream{}, pout, pq, pk, pv, tq, tk, s.h), d.Synchronize())
	outH := make([]uint16, tq*row)
	mustDo(t, Download(d, outH, pout))
	checkClose(t, "cached out", widenBF16(outH), refAttentionCached(qf, kf, vf, tq, tk, s.h, s.d), 2e-2)

	if err := a.Cached(Stream{}, pout, pq, pk, pv, tk+1, tk, s.h); err == nil {
		t.Errorf("Cached with tq = %d > tk = %d succeeded", tk+1, tk)
	}
	if err := a.Forward(Stream{}, pout, pout, pq, pk, pv, 1, 0, s.h); err == nil {
		t.Error("Forward with t = 0 succeeded")
	}
}

// randBF16Scaled returns n random bf16 values uniform in [-scale, scale) and their exact
// float64 values.
func randBF16Scaled(rng *rand.Rand, n int, scale float32) ([]uint16, []float64) {
	h, f := make([]uint16, n), make([]float64, n)
	for i := range h {
		h[i] = bf16(scale * (rng.Float32()*2 - 1))
		f[i] = bf16ToFloat(h[i])
	}
	return h, f
}

func widenBF16(h []uint16) []float64 {
	f := make([]float64, len(h))
	for i, x := range h {
		f[i] = bf16ToFloat(x)
	}
	return f
}

// checkClose fails when max|got - want| / max|want| exceeds tol, or when got holds a NaN.
// An all-zero reference (dq and dk at T = 1) is compared in absolute terms.
func checkClose(t *testing.T, name string, got, want []float64, tol float64) {
	t.Helper()
	var maxErr, maxWant float64
	worst := 0
	for i := range want {
		e := math.Abs(got[i] - want[i])
		if math.IsNaN(got[i]) {
			t.Errorf("%s[%d] = NaN (want %g): not written or not finite", name, i, want[i])
			return
		}
		if e > maxErr {
			maxErr, worst = e, i
		}
		maxWant = max(maxWant, math.Abs(want[i]))
	}
	den := maxWant
	if den == 0 {
		den = 1
	}
	if err := maxErr / den; err > tol {
		t.Errorf("%s: normalized max error %.3g > %g (at %d: got %g, want %g; max |want| %g)",
			name, err, tol, worst, got[worst], want[worst], maxWant)
	} else {
		t.Logf("%s: normalized max error %.3g", name, err)
	}
}

// attnIndex returns the offset of element (b, t, h, d) of a [B, T, H, D] tensor.
func attnIndex(s attnShape, b, t, h, d int) int { return ((b*s.t+t)*s.h+h)*s.d + d }

// attnProbs returns the causal softmax weights P[i][j] (j <= i) of one (batch, head) and the
// per-row logsumexp of the scaled scores.
func attnProbs(q, k []float64, s attnShape, b, h int) ([][]float64, []float64) {
	scale := 1 / math.Sqrt(float64(s.d))
	p, lse := make([][]float64, s.t), make([]float64, s.t)
	for i := range s.t {
		row := make([]float64, i+1)
		m := math.Inf(-1)
		for j := range row {
			var dot float64
			for x := range s.d {
				dot += q[attnIndex(s, b, i, h, x)] * k[attnIndex(s, b, j, h, x)]
			}
			row[j] = scale * dot
			m = max(m, row[j])
		}
		var l float64
		for j := range row {
			row[j] = math.Exp(row[j] - m)
			l += row[j]
		}
		for j := range row {
			row[j] /= l
		}
		p[i], lse[i] = row, m+math.Log(l)
	}
	return p, lse
}

// refAttention is the float64 reference of the forward: out [B,T,H,D] and lse [B,H,T].
func refAttention(q, k, v []float64, s attnShape) (out, lse []float64) {
	out, lse = make([]float64, len(q)), make([]float64, s.b*s.h*s.t)
	for b := range s.b {
		for h := range s.h {
			p, l := attnProbs(q, k, s, b, h)
			copy(lse[(b*s.h+h)*s.t:], l)
			for i := range s.t {
				for j, pij := range p[i] {
					for x := range s.d {
						out[attnIndex(s, b, i, h, x)] += pij * v[attnIndex(s, b, j, h, x)]
					}
				}
			}
		}
	}
	return out, lse
}

// refAttentionBackward is the float64 reference of the gradients, from the exact softmax:
// dP = dout v^T, dS = P (dP - rowsum(P dP)), dq = scale dS k, dk = scale dS^T q, dv = P^T dout.
func refAttentionBackward(q, k, v, dout []float64, s attnShape) (dq, dk, dv []float64) {
	scale := 1 / math.Sqrt(float64(s.d))
	dq, dk, dv = make([]float64, len(q)), make([]float64, len(q)), make([]float64, len(q))
	for b := range s.b {
		for h := range s.h {
			p, _ := attnProbs(q, k, s, b, h)
			for i := range s.t {
				dp := make([]float64, i+1)
				var delta float64
				for j := range dp {
					for x := range s.d {
						dp[j] += dout[attnIndex(s, b, i, h, x)] * v[attnIndex(s, b, j, h, x)]
					}
					delta += p[i][j] * dp[j]
				}
				for j, pij := range p[i] {
					ds := scale * pij * (dp[j] - delta)
					for x := range s.d {
						qi, kj := attnIndex(s, b, i, h, x), attnIndex(s, b, j, h, x)
						dv[kj] += pij * dout[qi]
						dq[qi] += ds * k[kj]
						dk[kj] += ds * q[qi]
					}
				}
			}
		}
	}
	return dq, dk, dv
}

// refAttentionCached is the float64 reference of the cached step: q [tq,H,D] at positions
// tk-tq .. tk-1 over k, v [tk,H,D].
func refAttentionCached(q, k, v []float64, tq, tk, nh, d int) []float64 {
	scale := 1 / math.Sqrt(float64(d))
	out := make([]float64, tq*nh*d)
	for i := range tq {
		for h := range nh {
			last := tk - tq + i
			s := make([]float64, last+1)
			m := math.Inf(-1)
			for j := range s {
				var dot float64
				for x := range d {
					dot += q[(i*nh+h)*d+x] * k[(j*nh+h)*d+x]
				}
				s[j] = scale * dot
				m = max(m, s[j])
			}
			var l float64
			for j := range s {
				s[j] = math.Exp(s[j] - m)
				l += s[j]
			}
			for j := range s {
				for x := range d {
					out[(i*nh+h)*d+x] += s[j] / l * v[(j*nh+h)*d+x]
				}
			}
		}
	}
	return out
}
