//go:build cuda

package cuda

import (
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/herd-llm/herd/kernels/cuda/src"
)

// Attention runs the attention kernels for one head dimension.
//
// attention.cu is compiled once per head dimension (it is a compile-time constant there, which
// sizes the register tiles), so a model holds one Attention per head size it uses. The launch
// geometry is read from the compiled module itself (its attention_geometry array), so the
// launcher cannot disagree with the kernels about rows and threads per block.
type Attention struct {
	d     *Device
	hd    int
	scale float32
	// tensor is true when the module uses the tensor-core path (hd % 16 == 0), whose tile copies
	// need 16-byte aligned tensors.
	tensor bool
	mod    *Module
	geom   attentionGeometry

	fwd, delta, dkdv, dq, cached *Function
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

// LoadAttention compiles attention.cu for head dim hd with nv for arch (e.g. "compute_90"; the
// caller passes what it uses for every other kernel) and loads it on d.
func LoadAttention(d *Device, nv *NVRTC, arch string, hd int) (*Attention, error) {
	if hd < 1 || hd > 256 {
		return nil, fmt.Errorf("cuda: attention: head dim %d out of range 1..256", hd)
	}
	source, ok := src.Files()["attention.cu"]
	if !ok {
		return nil, errors.New("cuda: attention: attention.cu missing from the embedded sources")
	}
	// The source uses C++11 constexpr and alignas; NVRTC 11's default dialect predates them.
	opts := []string{"-DHERD_HD=" + strconv.Itoa(hd), "--std=c++17"}
	ptx, err := nv.Compile(source, "attention.cu", arch, opts)
	if err != nil {
		return nil, fmt.Errorf("cuda: attention: head dim %d: %w", hd, err)
	}
	mod, err := d.LoadModule(ptx)
	if err != nil {
		return nil, fmt.Errorf("cuda: attention: head dim %d: %w", hd, err)
	}
	a := &Attention{d: d, hd: hd, scale: float32(1 / math.Sqrt(float64(hd))), tensor: hd%16 == 0, mod: mod}
	if err := a.init(); err != nil {
		return nil, errors.Join(err, mod.Unload())
	}
	return a, nil
}

// init looks up the kernels and reads the module's launch geometry.
func (a *Attention) init() error {
	for _, f := range []struct {
		dst  **Function
		name string
	}{
		{&a.fwd, "attention_fwd_bf16"},
		{&a.delta, "attention_bwd_delta_bf16"},
		{&a.dkdv, "attention_bwd_dkdv_bf16"},
		{&a.dq, "attention_bwd_dq_bf16"},
		{&a.cached, "attention_cached_bf16"},
	} {
		fn, err := a.mod.Function(f.name)
		if err != nil {
			return err
		}
		*f.dst = fn
	}
	var ptr DevicePtr
	var size int64
	err := a.d.Do(func() error {
		var err error
		ptr, size, err = a.mod.m.Global("attention_geometry")
		return err
	})
	if err != nil {
		return fmt.Errorf("cuda: attention: geometry: %w", err)
	}
	var g [8]int32
	if size != int64(4*len(g)) {
		return fmt.Errorf("cuda: attention: geometry is %d bytes, want %d", size, 4*len(g))
	}
	if err := Download(a.d, g[:], ptr); err != nil {
		return fmt.Errorf("cuda: attention: geometry: %w", err)
	}
	for i := 0; i < len(g); i += 2 {
		if g[i] <= 0 || g[i+1] <= 0 || g[i+1] > 1024 || g[i+1]%32 != 0 {
			return fmt.Errorf("cuda: attention: implausible geometry %v", g)
		}
	}
	a.geom = attentionGeometry{
		fwdRows: int(g[0]), fwdThreads: int(g[1]),
		bwdRows: int(g[2]), bwdThreads: int(g[3]),
		deltaRows: int(g[4]), deltaThreads: int(g[5]),
		cachedRows: int(g[6]), cachedThreads: int(g[7]),
	}
	return nil
}

// HeadDim returns the head dimension the kernels were compiled for.
func (a *Attention) HeadDim() int { return a.hd }

// Close unloads the module; the Attention must not be used afterwards.
func (a *Attention) Close() error { return a.mod.Unload() }

// Forward computes causal softmax(q k^T / sqrt(D)) v and the per-row logsumexp. out, q, k, v are
// bf16 [B,T,H,D]; lse is fp32 [B,H,T]. out and lse must not overlap the inputs.
func (a *Attention) Forward(s Stream, out, lse, q, k, v DevicePtr, b, t, h int) error {
	if err := a.checkShape("Forward", b, t, h); err != nil {
		return err
	}
	if err := a.checkAligned("Forward", []DevicePtr{out, q, k, v}, []string{"out", "q", "k", "v"}); err != nil {
		return err
	}
	grid, err := attnBlocks("Forward", attnCeilDiv(t, a.geom.fwdRows), b*h)
	if err != nil {
		return err
	}
	return a.d.Launch(a.fwd, [3]int{grid, 1, 1}, [3]int{a.geom.fwdThreads, 1, 1}, 0, s,
		KernelArgs(out, lse, q, k, v, b, t, h, a.scale)...)
}

// Backward overwrites dq, dk, dv from dout and the forward's out and lse. delta is caller-provided
// fp32 scratch of b*h*t elements. The three kernels run in order on s: delta = rowsum(dout*out),
// then dk and dv (one block per key tile), then dq (one block per query tile); no atomics, so
// the result is bitwise reproducible. The gradients must not overlap the inputs or each other.
func (a *Attention) Backward(s Stream, dq, dk, dv, dout, out, lse, q, k, v, delta DevicePtr, b, t, h int) error {
	if err := a.checkShape("Backward", b, t, h); err != nil {
		return err
	}
	err := a.checkAligned("Backward", []DevicePtr{dq, dk, dv, dout, out, q, k, v},
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
	err = a.d.Launch(a.delta, [3]int{int(deltaGrid), 1, 1}, [3]int{a.geom.deltaThreads, 1, 1}, 0, s,
		KernelArgs(delta, dout, out, b, t, h)...)
	if err != nil {
		return err
	}
	block := [3]int{a.geom.bwdThreads, 1, 1}
	err = a.d.Launch(a.dkdv, [3]int{grid, 1, 1}, block, 0, s,
		KernelArgs(dk, dv, dout, lse, delta, q, k, v, b, t, h, a.scale)...)
	if err != nil {
		return err
	}
	return a.d.Launch(a.dq, [3]int{grid, 1, 1}, block, 0, s,
		KernelArgs(dq, dout, lse, delta, q, k, v, b, t, h, a.scale)...)
}

// Cached is causal attention for generation with a KV cache, batch 1: the tq queries q [tq,H,D]
// at positions tk-tq .. tk-1 attend to the first tk rows of k, v [>=tk,H,D]; out is [tq,H,D].
func (a *Attention) Cached(s Stream, out, q, k, v DevicePtr, tq, tk, h int) error {
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
	return a.d.Launch(a.cached, [3]int{int(grid), 1, 1}, [3]int{a.geom.cachedThreads, 1, 1}, 0, s,
		KernelArgs(out, q, k, v, tq, tk, h, a.scale)...)
}

// checkShape rejects sizes the kernels cannot take: each must be positive and fit the int32
// kernel parameters.
func (a *Attention) checkShape(op string, b, t, h int) error {
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
func (a *Attention) checkAligned(op string, ptrs []DevicePtr, names []string) error {
	if !a.tensor {
		return nil
	}
	for i, p := range ptrs {
		if p%16 != 0 {
			return fmt.Errorf("cuda: attention %s: %s = %#x is not 16-byte aligned (head dim %d)", op, names[i], uintptr(p), a.hd)
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
