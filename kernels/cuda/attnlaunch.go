package cuda

import (
	"fmt"
	"math"
)

// attnKernels launches the kernels of attention.cu compiled for one head dimension: the
// argument checks and the grids, from the geometry the module itself declares
// (attention_geometry), so the launcher cannot disagree with the kernels about rows and
// threads per block. Both the CUDA device and the emulator launch through it.
type attnKernels struct {
	hd    int
	scale float32
	// tensor is true when the module uses the tensor-core path (hd % 16 == 0), whose tile copies
	// need 16-byte aligned tensors.
	tensor bool
	geom   attentionGeometry
}

// attentionGeometry mirrors attention_geometry in attention.cu: rows of work per block and
// threads per block of each kernel family.
type attentionGeometry struct {
	fwdRows, fwdThreads       int // attention_fwd_bf16: queries per block
	bwdRows, bwdThreads       int // attention_bwd_dkdv_bf16 (keys) and attention_bwd_dq_bf16 (queries)
	deltaRows, deltaThreads   int // attention_bwd_delta_bf16: rows of the [B*T*H, D] view per block
	cachedRows, cachedThreads int // attention_cached_bf16: (query row, head) pairs per block
}

// attnMaxGrid is the largest grid.x a launch may use (2^31 - 1).
const attnMaxGrid = math.MaxInt32

// newAttnKernels checks the module's geometry g (pairs of rows and threads per block) and
// returns the launcher for head dimension hd.
func newAttnKernels(hd int, g [8]int32) (*attnKernels, error) {
	if hd < 1 || hd > 256 {
		return nil, fmt.Errorf("cuda: attention: head dim %d out of range 1..256", hd)
	}
	for i := 0; i < len(g); i += 2 {
		if g[i] <= 0 || g[i+1] <= 0 || g[i+1] > 1024 || g[i+1]%32 != 0 {
			return nil, fmt.Errorf("cuda: attention: implausible geometry %v", g)
		}
	}
	return &attnKernels{hd: hd, scale: float32(1 / math.Sqrt(float64(hd))), tensor: hd%16 == 0,
		geom: attentionGeometry{
			fwdRows: int(g[0]), fwdThreads: int(g[1]),
			bwdRows: int(g[2]), bwdThreads: int(g[3]),
			deltaRows: int(g[4]), deltaThreads: int(g[5]),
			cachedRows: int(g[6]), cachedThreads: int(g[7]),
		}}, nil
}

// forward computes causal softmax(q k^T / sqrt(D)) v and the per-row logsumexp. out, q, k, v
// are bf16 [B,T,H,D]; lse is fp32 [B,H,T]. out and lse must not overlap the inputs.
func (a *attnKernels) forward(l launcher, out, lse, q, k, v uintptr, b, t, h int) error {
	if err := a.checkShape("Forward", b, t, h); err != nil {
		return err
	}
	if err := a.checkAligned("Forward", []uintptr{out, q, k, v}, []string{"out", "q", "k", "v"}); err != nil {
		return err
	}
	grid, err := attnBlocks("Forward", attnCeilDiv(t, a.geom.fwdRows), b*h)
	if err != nil {
		return err
	}
	return l.Launch("attention_fwd_bf16", grid, a.geom.fwdThreads, out, lse, q, k, v, b, t, h, a.scale)
}

// backward overwrites dq, dk, dv from dout and the forward's out and lse. delta is
// caller-provided fp32 scratch of b*h*t elements. The three kernels run in order:
// delta = rowsum(dout*out), then dk and dv (one block per key tile), then dq (one block per
// query tile); no atomics, so the result is bitwise reproducible. The gradients must not
// overlap the inputs or each other.
func (a *attnKernels) backward(l launcher, dq, dk, dv, dout, out, lse, q, k, v, delta uintptr, b, t, h int) error {
	if err := a.checkShape("Backward", b, t, h); err != nil {
		return err
	}
	err := a.checkAligned("Backward", []uintptr{dq, dk, dv, dout, out, q, k, v},
		[]string{"dq", "dk", "dv", "dout", "out", "q", "k", "v"})
	if err != nil {
		return err
	}
	rows := int64(b) * int64(t) * int64(h)
	deltaGrid := (rows + int64(a.geom.deltaRows) - 1) / int64(a.geom.deltaRows)
	if deltaGrid > attnMaxGrid {
		return fmt.Errorf("cuda: attention Backward: b*t*h = %d rows need %d blocks, more than %d", rows, deltaGrid, attnMaxGrid)
	}
	grid, err := attnBlocks("Backward", attnCeilDiv(t, a.geom.bwdRows), b*h)
	if err != nil {
		return err
	}
	if err := l.Launch("attention_bwd_delta_bf16", int(deltaGrid), a.geom.deltaThreads, delta, dout, out, b, t, h); err != nil {
		return err
	}
	if err := l.Launch("attention_bwd_dkdv_bf16", grid, a.geom.bwdThreads, dk, dv, dout, lse, delta, q, k, v, b, t, h, a.scale); err != nil {
		return err
	}
	return l.Launch("attention_bwd_dq_bf16", grid, a.geom.bwdThreads, dq, dout, lse, delta, q, k, v, b, t, h, a.scale)
}

// cached is causal attention for generation with a KV cache, batch 1: the tq queries q
// [tq,H,D] at positions tk-tq .. tk-1 attend to the first tk rows of k, v [>=tk,H,D]; out is
// [tq,H,D].
func (a *attnKernels) cached(l launcher, out, q, k, v uintptr, tq, tk, h int) error {
	switch {
	case tq <= 0 || tq > math.MaxInt32:
		return fmt.Errorf("cuda: attention Cached: tq = %d, want 1..%d", tq, math.MaxInt32)
	case tk <= 0 || tk > math.MaxInt32:
		return fmt.Errorf("cuda: attention Cached: tk = %d, want 1..%d", tk, math.MaxInt32)
	case tq > tk:
		return fmt.Errorf("cuda: attention Cached: tq = %d exceeds tk = %d", tq, tk)
	case h <= 0 || h > math.MaxInt32:
		return fmt.Errorf("cuda: attention Cached: h = %d, want 1..%d", h, math.MaxInt32)
	}
	pairs := int64(tq) * int64(h)
	grid := (pairs + int64(a.geom.cachedRows) - 1) / int64(a.geom.cachedRows)
	if grid > attnMaxGrid {
		return fmt.Errorf("cuda: attention Cached: tq*h = %d (query, head) pairs need %d blocks, more than %d", pairs, grid, attnMaxGrid)
	}
	return l.Launch("attention_cached_bf16", int(grid), a.geom.cachedThreads, out, q, k, v, tq, tk, h, a.scale)
}

// checkShape rejects sizes the kernels cannot take: each must be positive and fit the int32
// kernel parameters.
func (a *attnKernels) checkShape(op string, b, t, h int) error {
	for _, p := range []struct {
		name string
		v    int
	}{{"b", b}, {"t", t}, {"h", h}} {
		if p.v <= 0 || p.v > math.MaxInt32 {
			return fmt.Errorf("cuda: attention %s: %s = %d, want 1..%d", op, p.name, p.v, math.MaxInt32)
		}
	}
	return nil
}

// checkAligned enforces the tensor-core path's 16-byte alignment of the bf16 tensors (tiles are
// copied 16 bytes at a time; D % 16 == 0 keeps every row 32-byte aligned relative to the base).
func (a *attnKernels) checkAligned(op string, ptrs []uintptr, names []string) error {
	if !a.tensor {
		return nil
	}
	for i, p := range ptrs {
		if p%16 != 0 {
			return fmt.Errorf("cuda: attention %s: %s = %#x is not 16-byte aligned (head dim %d)", op, names[i], p, a.hd)
		}
	}
	return nil
}

// attnBlocks returns tiles*bh, the grid of a kernel with one block per (tile, batch*head), or an
// error when it exceeds the grid limit.
func attnBlocks(op string, tiles, bh int) (int, error) {
	n := int64(tiles) * int64(bh)
	if n > attnMaxGrid {
		return 0, fmt.Errorf("cuda: attention %s: %d tiles x %d (batch, head) pairs = %d blocks, more than %d", op, tiles, bh, n, attnMaxGrid)
	}
	return int(n), nil
}

func attnCeilDiv(a, b int) int { return (a + b - 1) / b }
