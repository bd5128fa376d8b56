package attn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
)

// refForward is the naive causal attention in float64: it materializes each head's full
// T x T softmax. It returns out [B, T, H, D], lse [B, H, T] and the probabilities, [B*H][T*T].
func refForward(q, k, v []float64, B, Tn, H, D int) (out, lse []float64, probs [][]float64) {
	out, lse = make([]float64, B*Tn*H*D), make([]float64, B*H*Tn)
	scale := 1 / math.Sqrt(float64(D))
	at := func(b, t, h int) int { return ((b*Tn+t)*H + h) * D }
	for b := range B {
		for h := range H {
			p := make([]float64, Tn*Tn)
			for i := range Tn {
				mx := math.Inf(-1)
				for j := 0; j <= i; j++ {
					var s float64
					for d := range D {
						s += q[at(b, i, h)+d] * k[at(b, j, h)+d]
					}
					p[i*Tn+j] = s * scale
					mx = math.Max(mx, p[i*Tn+j])
				}
				var sum float64
				for j := 0; j <= i; j++ {
					p[i*Tn+j] = math.Exp(p[i*Tn+j] - mx)
					sum += p[i*Tn+j]
				}
				for j := 0; j <= i; j++ {
					p[i*Tn+j] /= sum
					for d := range D {
						out[at(b, i, h)+d] += p[i*Tn+j] * v[at(b, j, h)+d]
					}
				}
				lse[(b*H+h)*Tn+i] = mx + math.Log(sum)
			}
			probs = append(probs, p)
		}
	}
	return out, lse, probs
}

// refBackward is the textbook backward of refForward: dV = P^T dO, dP = dO V^T,
// dS = P * (dP - rowsum(P * dP)), dQ = scale dS K, dK = scale dS^T Q.
func refBackward(dout, q, k, v []float64, probs [][]float64, B, Tn, H, D int) (dq, dk, dv []float64) {
	n := B * Tn * H * D
	dq, dk, dv = make([]float64, n), make([]float64, n), make([]float64, n)
	scale := 1 / math.Sqrt(float64(D))
	at := func(b, t, h int) int { return ((b*Tn+t)*H + h) * D }
	for b := range B {
		for h := range H {
			p := probs[b*H+h]
			ds := make([]float64, Tn*Tn)
			for i := range Tn {
				var rowsum float64
				for j := 0; j <= i; j++ {
					var dp float64
					for d := range D {
						dp += dout[at(b, i, h)+d] * v[at(b, j, h)+d]
						dv[at(b, j, h)+d] += p[i*Tn+j] * dout[at(b, i, h)+d]
					}
					ds[i*Tn+j] = dp
					rowsum += p[i*Tn+j] * dp
				}
				for j := 0; j <= i; j++ {
					ds[i*Tn+j] = p[i*Tn+j] * (ds[i*Tn+j] - rowsum) * scale
					for d := range D {
						dq[at(b, i, h)+d] += ds[i*Tn+j] * k[at(b, j, h)+d]
						dk[at(b, j, h)+d] += ds[i*Tn+j] * q[at(b, i, h)+d]
					}
				}
			}
		}
	}
	return dq, dk, dv
}

func randn(rng *rand.Rand, n int) []float64 {
	x := make([]float64, n)
	for i := range x {
		x[i] = rng.NormFloat64()
	}
	return x
}

// convert returns x as a []T (float32 rounds each element).
func convert[T Float](x []float64) []T {
	y := make([]T, len(x))
	for i, e := range x {
		y[i] = T(e)
	}
	return y
}

func widen[T Float](x []T) []float64 {
	y := make([]float64, len(x))
	for i, e := range x {
		y[i] = float64(e)
	}
	return y
}

// relMaxErr is max|got - want| / max(1, max|want|).
func relMaxErr[T Float](got []T, want []float64) float64 {
	var e, m float64
	for i, w := range want {
		e = math.Max(e, math.Abs(float64(got[i])-w))
		m = math.Max(m, math.Abs(w))
	}
	return e / math.Max(1, m)
}

func bitsEqual[T Float](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float64bits(float64(a[i])) != math.Float64bits(float64(b[i])) {
			return false
		}
	}
	return true
}

// problem is one attention case: random inputs and the float64 reference results.
type problem struct {
	B, T, H, D           int
	q, k, v, dout        []float64
	out, lse, dq, dk, dv []float64
}

// newProblem draws inputs, rounds them to T's precision (so the reference sees exactly
// what the kernel sees) and computes the reference.
func newProblem[T Float](seed uint64, B, Tn, H, D int) *problem {
	rng := rand.New(rand.NewPCG(seed, 7))
	n := B * Tn * H * D
	round := func(x []float64) []float64 { return widen(convert[T](x)) }
	p := &problem{B: B, T: Tn, H: H, D: D,
		q: round(randn(rng, n)), k: round(randn(rng, n)), v: round(randn(rng, n)), dout: round(randn(rng, n))}
	var probs [][]float64
	p.out, p.lse, probs = refForward(p.q, p.k, p.v, B, Tn, H, D)
	p.dq, p.dk, p.dv = refBackward(p.dout, p.q, p.k, p.v, probs, B, Tn, H, D)
	return p
}

// result is what the kernels produce for a problem.
type result[T Float] struct{ out, lse, dq, dk, dv []T }

// run runs Forward and then the backward pass with the given schedule on p's inputs.
func run[T Float](p *problem, split bool) result[T] {
	n := p.B * p.T * p.H * p.D
	q, k, v, dout := convert[T](p.q), convert[T](p.k), convert[T](p.v), convert[T](p.dout)
	r := result[T]{out: make([]T, n), lse: make([]T, p.B*p.H*p.T), dq: make([]T, n), dk: make([]T, n), dv: make([]T, n)}
	forward(r.out, r.lse, q, k, v, p.B, p.T, p.H, p.D, nil)
	for _, g := range [][]T{r.dq, r.dk, r.dv} { // Backward overwrites: start from garbage
		for i := range g {
			g[i] = 1e3
		}
	}
	backward(r.dq, r.dk, r.dv, dout, r.out, r.lse, q, k, v, p.B, p.T, p.H, p.D, split, nil)
	return r
}

// Tolerances, as max|got - ref| / max(1, max|ref|) per tensor. The reference sums in float64
// in another order, so the kernel's own rounding is what is measured. float64 lands at a few
// times its epsilon (2.2e-16; observed up to 3e-15), so 1e-12 is loose. float32 rounds every
// product, exp and partial sum to 24 bits (epsilon 6e-8) over sums of up to T = 200 keys
// and D = 64 lanes; observed errors reach 9e-7, and 5e-6 keeps a margin while a real
// mistake (a missed rescale, a wrong mask) shows up as 1e-3 and above.
const (
	tol64 = 1e-12
	tol32 = 5e-6
)

// checkAgainstReference runs B = 2, H = 2 over every T and D listed. Under the race detector,
// which slows the arithmetic about fifteenfold, it leaves out D = 64: the schedule and hence
// what runs concurrently depend on T, not on D. D = 12 keeps float32 on the Go loops even
// where the vector loops run (they need D to be a multiple of 8).
func checkAgainstReference[T Float](t *testing.T, tol float64) {
	headSizes := []int{8, 12, 16, 64}
	if raceEnabled {
		headSizes = headSizes[:3]
	}
	var worst [5]float64 // out, lse, dq, dk, dv
	defer func() {
		t.Logf("%T: largest errors out %.1e, lse %.1e, dq %.1e, dk %.1e, dv %.1e (tolerance %.0e)",
			T(0), worst[0], worst[1], worst[2], worst[3], worst[4], tol)
	}()
	for _, Tn := range []int{1, 2, 5, 63, 64, 65, 130, 200} {
		for _, D := range headSizes {
			p := newProblem[T](uint64(Tn*1000+D), 2, Tn, 2, D)
			fused := run[T](p, false)
			split := run[T](p, true)
			name := fmt.Sprintf("B=2 T=%d H=2 D=%d", Tn, D)
			for x, c := range []struct {
				name string
				got  []T
				want []float64
			}{{"out", fused.out, p.out}, {"lse", fused.lse, p.lse}, {"dq", fused.dq, p.dq}, {"dk", fused.dk, p.dk}, {"dv", fused.dv, p.dv}} {
				e := relMaxErr(c.got, c.want)
				worst[x] = math.Max(worst[x], e)
				if e > tol || math.IsNaN(e) {
					t.Errorf("%s: %s error %.3g, want <= %.3g", name, c.name, e, tol)
				}
			}
			if !bitsEqual(fused.dq, split.dq) || !bitsEqual(fused.dk, split.dk) || !bitsEqual(fused.dv, split.dv) {
				t.Errorf("%s: the fused and the split backward schedules differ in bits", name)
			}
		}
	}
}

func TestMatchesReferenceFloat64(t *testing.T) { checkAgainstReference[float64](t, tol64) }

// TestMatchesReferenceFloat32 checks float32 twice: with the vector row loops where this CPU
// has them, and with the Go loops alone.
func TestMatchesReferenceFloat32(t *testing.T) {
	t.Run("vector", func(t *testing.T) {
		if !vectorRows[float32](16) {
			t.Skip("no vector row loops on this CPU or build")
		}
		checkAgainstReference[float32](t, tol32)
	})
	t.Run("go", func(t *testing.T) {
		defer func() { useVector = true }()
		useVector = false
		checkAgainstReference[float32](t, tol32)
	})
}

// TestGradientFiniteDifferences checks every element of dq, dk and dv against central
// differences of L = sum(out * W), whose gradient with respect to out is W. An element of
// head (b, h) moves only that head's outputs, so each difference is taken on the loss of its
// own head, run as a B = H = 1 problem: the same numbers at a quarter of the cost. Under the
// race detector, which slows the arithmetic about fifteenfold, it checks every fifth element.
func TestGradientFiniteDifferences(t *testing.T) {
	every := 1
	if raceEnabled {
		every = 5
	}
	const B, Tn, H, D = 2, 70, 2, 8
	const step = 1e-5
	rng := rand.New(rand.NewPCG(1, 2))
	n := B * Tn * H * D
	q, k, v, w := randn(rng, n), randn(rng, n), randn(rng, n), randn(rng, n)
	out, lse := make([]float64, n), make([]float64, B*H*Tn)
	Forward(out, lse, q, k, v, B, Tn, H, D)
	dq, dk, dv := make([]float64, n), make([]float64, n), make([]float64, n)
	Backward(dq, dk, dv, w, out, lse, q, k, v, B, Tn, H, D)

	headOut, headLSE := make([]float64, Tn*D), make([]float64, Tn)
	var diff, norm [3]float64 // per tensor: dq, dk, dv
	for b := range B {
		for h := range H {
			// index[t*D+d] is where element (b, t, h, d) lives in the [B, T, H, D] tensors.
			index := make([]int, Tn*D)
			for i := range index {
				index[i] = ((b*Tn+i/D)*H+h)*D + i%D
			}
			pick := func(x []float64) []float64 {
				y := make([]float64, len(index))
				for i, at := range index {
					y[i] = x[at]
				}
				return y
			}
			hq, hk, hv, hw := pick(q), pick(k), pick(v), pick(w)
			loss := func() float64 {
				Forward(headOut, headLSE, hq, hk, hv, 1, Tn, 1, D)
				var l float64
				for i, o := range headOut {
					l += o * hw[i]
				}
				return l
			}
			for x, c := range [][2][]float64{{hq, dq}, {hk, dk}, {hv, dv}} {
				for i, at := range index {
					if (i+b+h+x)%every != 0 {
						continue
					}
					orig := c[0][i]
					c[0][i] = orig + step
					lp := loss()
					c[0][i] = orig - step
					lm := loss()
					c[0][i] = orig
					fd := (lp - lm) / (2 * step)
					diff[x] += (fd - c[1][at]) * (fd - c[1][at])
					norm[x] += fd * fd
				}
			}
		}
	}
	for x, name := range []string{"dq", "dk", "dv"} {
		rel := math.Sqrt(diff[x] / norm[x])
		t.Logf("%s: ||fd - g|| / ||fd|| = %.2e", name, rel)
		if rel > 1e-6 || math.IsNaN(rel) {
			t.Errorf("%s: ||fd - g|| / ||fd|| = %.3g, want < 1e-6", name, rel)
		}
	}
}

// TestDeterministicAcrossProcs runs the public entry points with 1, 2 and 8 cores (8 > B*H
// picks the split backward schedule) and requires the same bits.
func TestDeterministicAcrossProcs(t *testing.T) {
	testDeterministic[float32](t)
	testDeterministic[float64](t)
}

func testDeterministic[T Float](t *testing.T) {
	const B, Tn, H, D = 2, 200, 3, 16
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	rng := rand.New(rand.NewPCG(3, 4))
	n := B * Tn * H * D
	q, k, v, dout := convert[T](randn(rng, n)), convert[T](randn(rng, n)), convert[T](randn(rng, n)), convert[T](randn(rng, n))
	var first []T
	for _, procs := range []int{1, 2, 8} {
		runtime.GOMAXPROCS(procs)
		out, lse := make([]T, n), make([]T, B*H*Tn)
		dq, dk, dv := make([]T, n), make([]T, n), make([]T, n)
		Forward(out, lse, q, k, v, B, Tn, H, D)
		Backward(dq, dk, dv, dout, out, lse, q, k, v, B, Tn, H, D)
		all := append(append(append(append(out, lse...), dq...), dk...), dv...)
		if first == nil {
			first = all
		} else if !bitsEqual(first, all) {
			t.Errorf("%T: GOMAXPROCS=%d gives other bits than GOMAXPROCS=1", T(0), procs)
		}
	}
}

// TestCausalSkip counts the (query tile, key tile) pairs computed at T = 4096: only the
// tiles that hold a key at or before one of their queries, about half of the full grid.
// Under the race detector, which slows the arithmetic about tenfold, it uses T = 1024.
func TestCausalSkip(t *testing.T) {
	Tn := 4096
	if raceEnabled {
		Tn = 1024
	}
	nq, nk := ceilDiv(Tn, tileQ), ceilDiv(Tn, tileK)
	want := 0
	for it := range nq {
		for jt := range nk {
			if jt*tileK <= min((it+1)*tileQ, Tn)-1 { // key tile jt holds a key j <= some query i
				want++
			}
		}
	}
	frac := float64(want) / float64(nq*nk)
	if frac > 0.55 {
		t.Fatalf("tiles on or below the diagonal are %.3f of the grid, want about half", frac)
	}
	x := make([]float32, Tn) // B = H = D = 1: the count does not depend on the values
	out, lse := make([]float32, Tn), make([]float32, Tn)
	dq, dk, dv := make([]float32, Tn), make([]float32, Tn), make([]float32, Tn)
	for _, split := range []bool{false, true} {
		var fwd, bwd atomic.Int64
		forward(out, lse, x, x, x, 1, Tn, 1, 1, &fwd)
		backward(dq, dk, dv, x, out, lse, x, x, x, 1, Tn, 1, 1, split, &bwd)
		passes := int64(1)
		if split {
			passes = 2 // the dK/dV pass and the dQ pass each visit every tile once
		}
		t.Logf("T=%d split=%v: forward visited %d, backward %d, of a %d-tile grid (%.1f%%)",
			Tn, split, fwd.Load(), bwd.Load(), nq*nk, 100*frac)
		if fwd.Load() != int64(want) || bwd.Load() != passes*int64(want) {
			t.Errorf("split=%v: visited %d forward and %d backward tiles, want %d and %d",
				split, fwd.Load(), bwd.Load(), want, passes*int64(want))
		}
	}
}

// TestMemory runs the tiny model's shape and requires the allocations of forward + backward
// to be far below one T x T float32 matrix (64 MiB).
func TestMemory(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's instrumentation makes this shape slow and its allocations unrepresentative")
	}
	const B, Tn, H, D = 1, 4096, 4, 16
	rng := rand.New(rand.NewPCG(5, 6))
	n := B * Tn * H * D
	q, k, v, dout := convert[float32](randn(rng, n)), convert[float32](randn(rng, n)), convert[float32](randn(rng, n)), convert[float32](randn(rng, n))
	out, lse := make([]float32, n), make([]float32, B*H*Tn)
	dq, dk, dv := make([]float32, n), make([]float32, n), make([]float32, n)
	step := func() {
		Forward(out, lse, q, k, v, B, Tn, H, D)
		Backward(dq, dk, dv, dout, out, lse, q, k, v, B, Tn, H, D)
	}
	step() // warm-up: fills the scratch pools
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	step()
	runtime.ReadMemStats(&after)
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("forward + backward at B=%d T=%d H=%d D=%d allocated %d bytes (one T x T float32 matrix is %d)", B, Tn, H, D, alloc, Tn*Tn*4)
	if alloc > 4<<20 {
		t.Errorf("forward + backward allocated %d bytes, want under 4 MiB", alloc)
	}
}

func TestPanicsOnShortSlices(t *testing.T) {
	const B, Tn, H, D = 1, 3, 2, 4
	n := B * Tn * H * D
	full := func() []float32 { return make([]float32, n) }
	mustPanic := func(what, want string, f func()) {
		t.Helper()
		defer func() {
			r := recover()
			if msg, _ := r.(string); !strings.Contains(msg, want) {
				t.Errorf("%s: panic %v, want a message containing %q", what, r, want)
			}
		}()
		f()
	}
	mustPanic("short v", "attn.Forward: len(v) = 23, want >= B*T*H*D = 24 (B=1 T=3 H=2 D=4)", func() {
		Forward(full(), make([]float32, B*H*Tn), full(), full(), make([]float32, n-1), B, Tn, H, D)
	})
	mustPanic("short lse", "attn.Backward: len(lse) = 5, want >= B*H*T = 6", func() {
		Backward(full(), full(), full(), full(), full(), make([]float32, 5), full(), full(), full(), B, Tn, H, D)
	})
	mustPanic("short dk", "len(dk) = 0", func() {
		Backward(full(), nil, full(), full(), full(), make([]float32, 6), full(), full(), full(), B, Tn, H, D)
	})
	mustPanic("zero D", "want every dimension >= 1", func() {
		Forward(full(), full(), full(), full(), full(), B, Tn, H, 0)
	})
}
