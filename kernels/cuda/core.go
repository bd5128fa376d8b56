package cuda

import (
	"fmt"
	"math"
	"sync"
	"unsafe"

	"github.com/herd-llm/herd/kernels"
)

// device is what the backend's ops need from a GPU: memory, copies, kernel launches by name
// and matrix multiplication, all ordered as issued (one stream). The CUDA device (build tag
// cuda) implements it with the driver, NVRTC and cuBLASLt; the emulator of kernels/cuda/emu
// implements it by running the same CUDA C kernels, compiled as C++, on the CPU, so that the
// ops below are tested without a GPU exactly as they launch on one.
type device interface {
	// Alloc returns size bytes of device memory, contents undefined, at least 256-byte aligned.
	Alloc(size int64) (uintptr, error)
	// Free returns memory from Alloc.
	Free(p uintptr) error
	// Upload copies src to dst once the work before it is done, and returns after the copy.
	Upload(dst uintptr, src []byte) error
	// Download copies len(dst) bytes from src once the work before it is done.
	Download(dst []byte, src uintptr) error
	// Zero sets size bytes at dst to zero, in order with the launches.
	Zero(dst uintptr, size int64) error
	// CopyDevice copies size bytes from src to dst, in order with the launches.
	CopyDevice(dst, src uintptr, size int64) error
	// Launch runs the kernel of kernels/cuda/src named kernel on a 1-D grid of grid blocks of
	// block threads. Each of args is a uintptr (a device address), int (passed as a C int),
	// int64, float32 or float64.
	Launch(kernel string, grid, block int, args ...any) error
	// Attention returns the kernels of attention.cu compiled for head dimension hd, and the
	// module's attention_geometry array.
	Attention(hd int) (launcher, [8]int32, error)
	// Gemm is BLASLt.Gemm: C = op(A) op(B) + beta*C, row-major, bf16 A and B, C of type cType,
	// fp32 accumulation.
	Gemm(transA, transB bool, m, n, k int, a, b, c uintptr, cType kernels.DType, beta float32) error
	// SMs returns the number of multiprocessors, which caps grid-stride launches.
	SMs() int
	// Synchronize waits for every launch and copy issued so far.
	Synchronize() error
}

// launcher runs kernels of one compiled module by name (see device.Launch). It is an alias of
// an unnamed interface so that a device outside this package can return it.
type launcher = interface {
	Launch(kernel string, grid, block int, args ...any) error
}

// core implements every op of kernels.Backend and kernels.Mixed on a device: argument checks,
// buffer types, launch geometry and kernel arguments. Backend (build tag cuda) is core on a
// CUDA device.
type core struct {
	dev device

	mu         sync.Mutex
	attn       map[int]attnModule // per head dimension, compiled on first use
	live, peak int64              // bytes of live buffers as requested, and their high-water mark
}

type attnModule struct {
	k *attnKernels
	l launcher
}

func newCore(dev device) *core { return &core{dev: dev, attn: map[int]attnModule{}} }

// DType implements kernels.Backend: activations are bfloat16.
func (be *core) DType() kernels.DType { return kernels.BFloat16 }

// hostBytes views a slice of fixed-size numbers as its bytes, for copies to and from the device.
func hostBytes[T int32 | float32 | float64 | uint16](v []T) []byte {
	if len(v) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), len(v)*int(unsafe.Sizeof(v[0])))
}

// buffer is device memory of one element type. A view shares its parent's memory.
type buffer struct {
	ptr  uintptr
	n    int
	dt   kernels.DType
	view bool
}

func (b *buffer) Len() int { return b.n }

func (b *buffer) bytes() int64 { return int64(b.n) * int64(b.dt.Size()) }

// at returns the address of element i.
func (b *buffer) at(i int) uintptr { return b.ptr + uintptr(int64(i)*int64(b.dt.Size())) }

func (be *core) buf(op, arg string, x kernels.Buffer) *buffer {
	b, ok := x.(*buffer)
	if !ok {
		panic(fmt.Sprintf("cuda: %s: %s is a %T, not a buffer of the CUDA backend", op, arg, x))
	}
	return b
}

// must panics with a kernels.DeviceError naming the op when a CUDA call failed.
func must(op string, err error) {
	if err != nil {
		panic(&kernels.DeviceError{Op: "cuda: " + op, Err: err})
	}
}

func (be *core) alloc(n int, dt kernels.DType) *buffer {
	b := be.allocRaw(n, dt)
	if n > 0 {
		must("Alloc: zero", be.dev.Zero(b.ptr, b.bytes()))
	}
	return b
}

// allocRaw is alloc without zeroing, for temporaries the op overwrites whole.
func (be *core) allocRaw(n int, dt kernels.DType) *buffer {
	if n < 0 {
		panic(fmt.Sprintf("cuda: Alloc(%d): negative length", n))
	}
	b := &buffer{n: n, dt: dt}
	if n == 0 {
		return b
	}
	p, err := be.dev.Alloc(b.bytes())
	must(fmt.Sprintf("Alloc(%d %v)", n, dt), err)
	b.ptr = p
	be.mu.Lock()
	be.live += b.bytes()
	be.peak = max(be.peak, be.live)
	be.mu.Unlock()
	return b
}

// Alloc implements kernels.Backend: a zeroed bf16 activation buffer.
func (be *core) Alloc(n int) kernels.Buffer { return be.alloc(n, kernels.BFloat16) }

// AllocMaster implements kernels.Mixed: a zeroed float32 buffer.
func (be *core) AllocMaster(n int) kernels.Buffer { return be.alloc(n, kernels.Float32) }

// Free implements kernels.Backend. The block returns to the caching allocator; work already
// enqueued that uses it runs before any later use, since everything shares one stream.
func (be *core) Free(x kernels.Buffer) {
	b := be.buf("Free", "buffer", x)
	if b.view {
		panic("cuda: Free of a view made by Slice")
	}
	if b.n == 0 {
		return
	}
	must("Free", be.dev.Free(b.ptr))
	be.mu.Lock()
	be.live -= b.bytes()
	be.mu.Unlock()
	b.ptr, b.n = 0, 0
}

// Slice implements kernels.Backend.
func (be *core) Slice(x kernels.Buffer, off, n int) kernels.Buffer {
	b := be.buf("Slice", "buffer", x)
	if off < 0 || n < 0 || off+n > b.n {
		panic(fmt.Sprintf("cuda: Slice(off=%d, n=%d) of a buffer of %d elements", off, n, b.n))
	}
	return &buffer{ptr: b.at(off), n: n, dt: b.dt, view: true}
}

// LiveBytes implements kernels.Backend: bytes of live buffers, as requested.
func (be *core) LiveBytes() int64 {
	be.mu.Lock()
	defer be.mu.Unlock()
	return be.live
}

// PeakBytes returns the high-water mark of LiveBytes since the last ResetPeak.
func (be *core) PeakBytes() int64 {
	be.mu.Lock()
	defer be.mu.Unlock()
	return be.peak
}

// ResetPeak starts a new high-water mark at the current LiveBytes.
func (be *core) ResetPeak() {
	be.mu.Lock()
	be.peak = be.live
	be.mu.Unlock()
}

// Synchronize waits until every enqueued op has finished (for timing).
func (be *core) Synchronize() { must("Synchronize", be.dev.Synchronize()) }

// ---- host transfers -------------------------------------------------------------------

func checkHostLen(op string, host, dev int) {
	if host != dev {
		panic(fmt.Sprintf("cuda: %s: host slice has %d elements, buffer %d", op, host, dev))
	}
}

// Write implements kernels.Backend. Values go through float32 on the host; for a bf16 buffer
// that is a double rounding, which differs from rounding float64 directly only for values
// within 2^-24 relative of a bf16 rounding boundary.
func (be *core) Write(dst kernels.Buffer, v []float64) {
	f := make([]float32, len(v))
	for i, x := range v {
		f[i] = float32(x)
	}
	be.Write32(dst, f)
}

// Read implements kernels.Backend.
func (be *core) Read(dst []float64, x kernels.Buffer) {
	f := make([]float32, len(dst))
	be.Read32(f, x)
	for i, v := range f {
		dst[i] = float64(v)
	}
}

// Write32 implements kernels.Backend. Values bound for a bf16 buffer are uploaded as float32
// and rounded on the device by the same cast kernel the ops use.
func (be *core) Write32(dst kernels.Buffer, v []float32) {
	b := be.buf("Write32", "dst", dst)
	checkHostLen("Write32", len(v), b.n)
	if b.n == 0 {
		return
	}
	if b.dt == kernels.Float32 {
		must("Write32", be.dev.Upload(b.ptr, hostBytes(v)))
		return
	}
	tmp := be.allocRaw(b.n, kernels.Float32)
	defer be.Free(tmp)
	must("Write32", be.dev.Upload(tmp.ptr, hostBytes(v)))
	be.Cast(b, tmp)
}

// Read32 implements kernels.Backend. It waits for the work enqueued before it.
func (be *core) Read32(dst []float32, x kernels.Buffer) {
	b := be.buf("Read32", "src", x)
	checkHostLen("Read32", len(dst), b.n)
	if b.n == 0 {
		return
	}
	if b.dt == kernels.Float32 {
		must("Read32", be.dev.Download(hostBytes(dst), b.ptr))
		return
	}
	tmp := be.allocRaw(b.n, kernels.Float32)
	defer be.Free(tmp)
	be.Cast(tmp, b)
	must("Read32", be.dev.Download(hostBytes(dst), tmp.ptr))
}

// uploadInts copies host int32 values into a new device buffer the caller frees.
func (be *core) uploadInts(op string, v []int32) *buffer {
	b := be.allocRaw(len(v), kernels.Float32) // 4-byte elements
	if len(v) > 0 {
		must(op, be.dev.Upload(b.ptr, hostBytes(v)))
	}
	return b
}

// ---- launching ------------------------------------------------------------------------

// launch runs kernel name with a grid of gx blocks of bx threads.
func (be *core) launch(name string, gx, bx int, args ...any) {
	must(name, be.dev.Launch(name, gx, bx, args...))
}

// launch1D runs a grid-stride kernel over n items: 256 threads per block and at most 32
// blocks per SM, as the kernel files' headers recommend.
func (be *core) launch1D(name string, n int64, args ...any) {
	if n == 0 {
		return
	}
	blocks := min((n+255)/256, int64(32*be.dev.SMs()))
	be.launch(name, int(blocks), 256, args...)
}

// variant returns name_f32 or name_bf16 for a buffer type.
func variant(name string, dt kernels.DType) string {
	if dt == kernels.Float32 {
		return name + "_f32"
	}
	return name + "_bf16"
}

// sameType panics unless every buffer has the type of the first and the length n (n < 0: any).
func sameType(op string, n int, bufs ...*buffer) kernels.DType {
	for i, b := range bufs {
		if b.dt != bufs[0].dt {
			panic(fmt.Sprintf("cuda: %s: argument %d is %v, argument 0 is %v", op, i, b.dt, bufs[0].dt))
		}
		if n >= 0 && b.n != n {
			panic(fmt.Sprintf("cuda: %s: argument %d has %d elements, want %d", op, i, b.n, n))
		}
	}
	return bufs[0].dt
}

// want panics unless b has type dt and at least n elements.
func want(op, arg string, b *buffer, dt kernels.DType, n int) {
	if b.dt != dt {
		panic(fmt.Sprintf("cuda: %s: %s must be %v, is %v", op, arg, dt, b.dt))
	}
	if b.n < n {
		panic(fmt.Sprintf("cuda: %s: %s has %d elements, needs %d", op, arg, b.n, n))
	}
}

// ---- elementwise ----------------------------------------------------------------------

// Zero implements kernels.Backend.
func (be *core) Zero(x kernels.Buffer) {
	b := be.buf("Zero", "x", x)
	be.launch1D(variant("zero", b.dt), int64(b.n), b.ptr, int64(b.n))
}

// Copy implements kernels.Backend; between buffers of different types it converts.
func (be *core) Copy(dst, src kernels.Buffer) {
	d, s := be.buf("Copy", "dst", dst), be.buf("Copy", "src", src)
	if d.n != s.n {
		panic(fmt.Sprintf("cuda: Copy: dst has %d elements, src %d", d.n, s.n))
	}
	if d.dt != s.dt {
		be.Cast(d, s)
		return
	}
	if d.n > 0 {
		must("Copy", be.dev.CopyDevice(d.ptr, s.ptr, d.bytes()))
	}
}

// Cast implements kernels.Mixed.
func (be *core) Cast(dst, src kernels.Buffer) {
	d, s := be.buf("Cast", "dst", dst), be.buf("Cast", "src", src)
	if d.n != s.n {
		panic(fmt.Sprintf("cuda: Cast: dst has %d elements, src %d", d.n, s.n))
	}
	switch {
	case d.dt == s.dt:
		be.Copy(d, s)
	case d.dt == kernels.BFloat16:
		be.launch1D("cast_f32_to_bf16", int64(d.n), d.ptr, s.ptr, int64(d.n))
	default:
		be.launch1D("cast_bf16_to_f32", int64(d.n), d.ptr, s.ptr, int64(d.n))
	}
}

// Add implements kernels.Backend.
func (be *core) Add(out, a, b kernels.Buffer) {
	o, x, y := be.buf("Add", "out", out), be.buf("Add", "a", a), be.buf("Add", "b", b)
	dt := sameType("Add", o.n, o, x, y)
	be.launch1D(variant("add", dt), int64(o.n), o.ptr, x.ptr, y.ptr, int64(o.n))
}

// Scale implements kernels.Backend.
func (be *core) Scale(x kernels.Buffer, s float64) {
	b := be.buf("Scale", "x", x)
	be.launch1D(variant("scale", b.dt), int64(b.n), b.ptr, float32(s), int64(b.n))
}

// sumsqChunk is the elements per partial sum; fixed, so the norm is the same on every GPU.
const sumsqChunk = 65536

// SumSquares implements kernels.Backend, in float64, in a fixed order.
func (be *core) SumSquares(x kernels.Buffer) float64 {
	b := be.buf("SumSquares", "x", x)
	if b.n == 0 {
		return 0
	}
	nparts := (b.n + sumsqChunk - 1) / sumsqChunk
	part := be.allocRaw(2*nparts+2, kernels.Float32) // nparts doubles, then one for the total
	defer be.Free(part)
	total := part.at(2 * nparts)
	be.launch(variant("sumsq_partial", b.dt), nparts, 256, part.ptr, b.ptr, int64(b.n), int64(sumsqChunk))
	be.launch("sumsq_final_f64", 1, 1024, total, part.ptr, nparts)
	out := make([]float64, 1)
	must("SumSquares", be.dev.Download(hostBytes(out), total))
	return out[0]
}

// SwiGLU implements kernels.Backend.
func (be *core) SwiGLU(out, a, b kernels.Buffer) {
	o, x, y := be.buf("SwiGLU", "out", out), be.buf("SwiGLU", "a", a), be.buf("SwiGLU", "b", b)
	dt := sameType("SwiGLU", o.n, o, x, y)
	be.launch1D(variant("swiglu_fwd", dt), int64(o.n), o.ptr, x.ptr, y.ptr, int64(o.n))
}

// SwiGLUBackward implements kernels.Backend.
func (be *core) SwiGLUBackward(da, db, dout, a, b kernels.Buffer) {
	bufs := []*buffer{be.buf("SwiGLUBackward", "da", da), be.buf("SwiGLUBackward", "db", db),
		be.buf("SwiGLUBackward", "dout", dout), be.buf("SwiGLUBackward", "a", a), be.buf("SwiGLUBackward", "b", b)}
	n := bufs[0].n
	dt := sameType("SwiGLUBackward", n, bufs...)
	be.launch1D(variant("swiglu_bwd", dt), int64(n), bufs[0].ptr, bufs[1].ptr, bufs[2].ptr, bufs[3].ptr, bufs[4].ptr, int64(n))
}

// ---- matrix multiplication ------------------------------------------------------------

// MatMul implements kernels.Backend through cuBLASLt: A and B must be bf16 (activations or
// the working copy of weights); C is bf16, or float32 when it accumulates a weight gradient.
func (be *core) MatMul(c, a, b kernels.Buffer, m, n, k int, transA, transB bool, beta float64) {
	cb, ab, bb := be.buf("MatMul", "C", c), be.buf("MatMul", "A", a), be.buf("MatMul", "B", b)
	want("MatMul", "A", ab, kernels.BFloat16, m*k)
	want("MatMul", "B", bb, kernels.BFloat16, k*n)
	if cb.n < m*n {
		panic(fmt.Sprintf("cuda: MatMul: C has %d elements, needs %d", cb.n, m*n))
	}
	switch {
	case m == 0 || n == 0:
		return
	case k == 0: // an empty sum: C = beta*C
		cv := be.Slice(cb, 0, m*n)
		if beta == 0 {
			be.Zero(cv)
		} else {
			be.Scale(cv, beta)
		}
		return
	}
	must("MatMul", be.dev.Gemm(transA, transB, m, n, k, ab.ptr, bb.ptr, cb.ptr, cb.dt, float32(beta)))
}

// ---- embedding ------------------------------------------------------------------------

func checkTokens(op string, tokens []int32, rows int) {
	for i, t := range tokens {
		if t < 0 || int(t) >= rows {
			panic(fmt.Sprintf("cuda: %s: token %d at position %d is outside the table's %d rows", op, t, i, rows))
		}
	}
}

// Embedding implements kernels.Backend; the table is a float32 master.
func (be *core) Embedding(out, table kernels.Buffer, tokens []int32, dim int) {
	o, tb := be.buf("Embedding", "out", out), be.buf("Embedding", "table", table)
	want("Embedding", "table", tb, kernels.Float32, 0)
	if dim <= 0 || tb.n%dim != 0 || o.n < len(tokens)*dim {
		panic(fmt.Sprintf("cuda: Embedding: dim %d, table %d elements, out %d for %d tokens", dim, tb.n, o.n, len(tokens)))
	}
	rows := tb.n / dim
	checkTokens("Embedding", tokens, rows)
	if len(tokens) == 0 {
		return
	}
	tok := be.uploadInts("Embedding", tokens)
	defer be.Free(tok)
	be.launch(variant("embedding_fwd", o.dt), len(tokens), 256, o.ptr, tb.ptr, tok.ptr, len(tokens), dim, rows, uintptr(0))
}

// EmbeddingBackward implements kernels.Backend. The positions are sorted by token on the host
// (stable, so each row sums its positions in ascending order, as the CPU reference does) and
// one block owns one distinct token's row: deterministic, without atomics.
func (be *core) EmbeddingBackward(dtable, dout kernels.Buffer, tokens []int32, dim int) {
	dt, do := be.buf("EmbeddingBackward", "dtable", dtable), be.buf("EmbeddingBackward", "dout", dout)
	want("EmbeddingBackward", "dtable", dt, kernels.Float32, 0)
	if dim <= 0 || dt.n%dim != 0 || do.n < len(tokens)*dim {
		panic(fmt.Sprintf("cuda: EmbeddingBackward: dim %d, dtable %d elements, dout %d for %d tokens", dim, dt.n, do.n, len(tokens)))
	}
	checkTokens("EmbeddingBackward", tokens, dt.n/dim)
	if len(tokens) == 0 {
		return
	}
	order, segStart, segTok := embeddingSegments(tokens)
	ob, sb, tb := be.uploadInts("EmbeddingBackward", order), be.uploadInts("EmbeddingBackward", segStart), be.uploadInts("EmbeddingBackward", segTok)
	defer func() { be.Free(ob); be.Free(sb); be.Free(tb) }()
	be.launch(variant("embedding_bwd", do.dt), len(segTok), 256, dt.ptr, do.ptr, ob.ptr, sb.ptr, tb.ptr, len(segTok), dim)
}

// ---- RMSNorm --------------------------------------------------------------------------

// rmsnormVariant returns the kernel suffix for a norm whose input (and, backward, input
// gradient) has type x and whose output (and output gradient) has type out: both the same, or
// the float32 residual stream in and a bf16 activation out.
func rmsnormVariant(op string, x, out kernels.DType) string {
	switch {
	case x == out:
		return variant("", x)
	case x == kernels.Float32 && out == kernels.BFloat16:
		return "_f32_bf16"
	}
	panic(fmt.Sprintf("cuda: %s: x is %v and out %v; want the same type, or float32 x and bfloat16 out", op, x, out))
}

// RMSNorm implements kernels.Backend; gain and rstd are float32. x is an activation like out,
// or the float32 residual stream with a bf16 out.
func (be *core) RMSNorm(out, rstd, x, gain kernels.Buffer, rows, dim int, eps float64) {
	o, r, xb, g := be.buf("RMSNorm", "out", out), be.buf("RMSNorm", "rstd", rstd), be.buf("RMSNorm", "x", x), be.buf("RMSNorm", "gain", gain)
	v := rmsnormVariant("RMSNorm", xb.dt, o.dt)
	want("RMSNorm", "out", o, o.dt, rows*dim)
	want("RMSNorm", "x", xb, xb.dt, rows*dim)
	want("RMSNorm", "rstd", r, kernels.Float32, rows)
	want("RMSNorm", "gain", g, kernels.Float32, dim)
	if rows == 0 {
		return
	}
	be.launch("rmsnorm_fwd"+v, rows, 256, o.ptr, r.ptr, xb.ptr, g.ptr, rows, dim, float32(eps))
}

// RMSNormBackward implements kernels.Backend; dgain is reduced in two deterministic passes.
// dx and x have one type; dout has it too, or is bf16 with float32 dx and x (the residual
// stream's gradient accumulating the gradient of a bf16 activation).
func (be *core) RMSNormBackward(dx, dgain, dout, x, gain, rstd kernels.Buffer, rows, dim int) {
	op := "RMSNormBackward"
	dxb, dg, do, xb := be.buf(op, "dx", dx), be.buf(op, "dgain", dgain), be.buf(op, "dout", dout), be.buf(op, "x", x)
	g, r := be.buf(op, "gain", gain), be.buf(op, "rstd", rstd)
	dt := sameType(op, -1, dxb, xb)
	v := rmsnormVariant(op, dt, do.dt)
	for _, a := range []struct {
		name string
		b    *buffer
	}{{"dx", dxb}, {"dout", do}, {"x", xb}} {
		want(op, a.name, a.b, a.b.dt, rows*dim)
	}
	want(op, "dgain", dg, kernels.Float32, dim)
	want(op, "gain", g, kernels.Float32, dim)
	want(op, "rstd", r, kernels.Float32, rows)
	if rows == 0 || dim == 0 {
		return
	}
	rpb := rmsRowsPerBlock(rows)
	nblocks := (rows + rpb - 1) / rpb
	part := be.allocRaw(nblocks*dim, kernels.Float32)
	defer be.Free(part)
	be.launch("rmsnorm_bwd"+v, nblocks, 256, dxb.ptr, part.ptr, do.ptr, xb.ptr, g.ptr, r.ptr, rows, dim, rpb)
	be.launch("rmsnorm_bwd_dgain_f32", (dim+255)/256, 256, dg.ptr, part.ptr, nblocks, dim)
}

// ---- RoPE -----------------------------------------------------------------------------

func (be *core) rope(op, kernel string, out, x kernels.Buffer, b, t, h, d, pos0 int, theta float64) {
	o, xb := be.buf(op, "out", out), be.buf(op, "x", x)
	n := b * t * h * d
	dt := sameType(op, -1, o, xb)
	want(op, "out", o, dt, n)
	want(op, "x", xb, dt, n)
	if d%2 != 0 {
		panic(fmt.Sprintf("cuda: %s: head dimension %d is odd", op, d))
	}
	be.launch1D(variant(kernel, dt), int64(b)*int64(t)*int64(d/2), o.ptr, xb.ptr, b, t, h, d, pos0, theta)
}

// RoPE implements kernels.Backend.
func (be *core) RoPE(out, x kernels.Buffer, b, t, h, d, pos0 int, theta float64) {
	be.rope("RoPE", "rope_fwd", out, x, b, t, h, d, pos0, theta)
}

// RoPEBackward implements kernels.Backend.
func (be *core) RoPEBackward(dx, dout kernels.Buffer, b, t, h, d, pos0 int, theta float64) {
	be.rope("RoPEBackward", "rope_bwd", dx, dout, b, t, h, d, pos0, theta)
}

// ---- attention ------------------------------------------------------------------------

// attention returns the attention kernels for head dimension d, compiling them on first use.
func (be *core) attention(d int) (*attnKernels, launcher) {
	be.mu.Lock()
	defer be.mu.Unlock()
	if a, ok := be.attn[d]; ok {
		return a.k, a.l
	}
	l, geom, err := be.dev.Attention(d)
	if err == nil {
		var k *attnKernels
		if k, err = newAttnKernels(d, geom); err == nil {
			be.attn[d] = attnModule{k: k, l: l}
			return k, l
		}
	}
	must(fmt.Sprintf("attention for head dimension %d", d), err)
	return nil, nil
}

func (be *core) attnArgs(op string, n int, named ...any) []uintptr {
	ptrs := make([]uintptr, 0, len(named)/2)
	for i := 0; i+1 < len(named); i += 2 {
		b := be.buf(op, named[i].(string), named[i+1].(kernels.Buffer))
		want(op, named[i].(string), b, kernels.BFloat16, n)
		ptrs = append(ptrs, b.ptr)
	}
	return ptrs
}

// Attention implements kernels.Backend: causal flash attention on bf16 q, k, v with a
// float32 logsumexp.
func (be *core) Attention(out, lse, q, k, v kernels.Buffer, b, t, h, d int) {
	n := b * t * h * d
	p := be.attnArgs("Attention", n, "out", out, "q", q, "k", k, "v", v)
	l := be.buf("Attention", "lse", lse)
	want("Attention", "lse", l, kernels.Float32, b*h*t)
	if n == 0 {
		return
	}
	ak, ln := be.attention(d)
	must("Attention", ak.forward(ln, p[0], l.ptr, p[1], p[2], p[3], b, t, h))
}

// AttentionBackward implements kernels.Backend.
func (be *core) AttentionBackward(dq, dk, dv, dout, out, lse, q, k, v kernels.Buffer, b, t, h, d int) {
	n := b * t * h * d
	p := be.attnArgs("AttentionBackward", n, "dq", dq, "dk", dk, "dv", dv, "dout", dout, "out", out, "q", q, "k", k, "v", v)
	l := be.buf("AttentionBackward", "lse", lse)
	want("AttentionBackward", "lse", l, kernels.Float32, b*h*t)
	if n == 0 {
		return
	}
	delta := be.allocRaw(b*h*t, kernels.Float32)
	defer be.Free(delta)
	ak, ln := be.attention(d)
	must("AttentionBackward", ak.backward(ln, p[0], p[1], p[2], p[3], p[4], l.ptr, p[5], p[6], p[7], delta.ptr, b, t, h))
}

// AttentionCached implements kernels.Backend.
func (be *core) AttentionCached(out, q, k, v kernels.Buffer, tq, tk, h, d int) {
	if tq > tk {
		panic(fmt.Sprintf("cuda: AttentionCached: %d queries but only %d cached keys", tq, tk))
	}
	pq := be.attnArgs("AttentionCached", tq*h*d, "out", out, "q", q)
	pk := be.attnArgs("AttentionCached", tk*h*d, "k", k, "v", v)
	if tq*h*d == 0 {
		return
	}
	ak, ln := be.attention(d)
	must("AttentionCached", ak.cached(ln, pq[0], pq[1], pk[0], pk[1], tq, tk, h))
}

// ---- cross-entropy --------------------------------------------------------------------

func checkTargets(op string, targets []int32, rows, vocab int) {
	if len(targets) < rows {
		panic(fmt.Sprintf("cuda: %s: %d targets for %d rows", op, len(targets), rows))
	}
	for i, t := range targets[:rows] {
		if int(t) >= vocab {
			panic(fmt.Sprintf("cuda: %s: target %d at row %d is outside the vocabulary of %d", op, t, i, vocab))
		}
	}
}

// CrossEntropy implements kernels.Backend, fused over the vocabulary: no softmax is stored.
// losses and lse are float32.
func (be *core) CrossEntropy(losses, lse, logits kernels.Buffer, targets []int32, rows, vocab int) {
	op := "CrossEntropy"
	lo, ls, lg := be.buf(op, "losses", losses), be.buf(op, "lse", lse), be.buf(op, "logits", logits)
	want(op, "losses", lo, kernels.Float32, rows)
	want(op, "lse", ls, kernels.Float32, rows)
	if lg.n < rows*vocab {
		panic(fmt.Sprintf("cuda: %s: logits has %d elements, needs %d", op, lg.n, rows*vocab))
	}
	checkTargets(op, targets, rows, vocab)
	if rows == 0 {
		return
	}
	tg := be.uploadInts(op, targets[:rows])
	defer be.Free(tg)
	be.launch(variant("crossentropy_fwd", lg.dt), rows, 256, lo.ptr, ls.ptr, lg.ptr, tg.ptr, rows, vocab, uintptr(0))
}

// CrossEntropyBackward implements kernels.Backend.
func (be *core) CrossEntropyBackward(dlogits, logits, lse kernels.Buffer, targets []int32, rows, vocab int, scale float64) {
	op := "CrossEntropyBackward"
	dl, lg, ls := be.buf(op, "dlogits", dlogits), be.buf(op, "logits", logits), be.buf(op, "lse", lse)
	dt := sameType(op, -1, dl, lg)
	want(op, "dlogits", dl, dt, rows*vocab)
	want(op, "logits", lg, dt, rows*vocab)
	want(op, "lse", ls, kernels.Float32, rows)
	checkTargets(op, targets, rows, vocab)
	if rows == 0 {
		return
	}
	tg := be.uploadInts(op, targets[:rows])
	defer be.Free(tg)
	be.launch(variant("crossentropy_bwd", dt), rows, 256, dl.ptr, lg.ptr, ls.ptr, tg.ptr, rows, vocab, float32(scale))
}

// ---- optimizer ------------------------------------------------------------------------

// adamwArgs folds the per-step constants in float64, as the CPU reference does.
func adamwArgs(hp kernels.AdamW) []any {
	c1 := 1 - math.Pow(hp.Beta1, float64(hp.Step))
	c2 := 1 - math.Pow(hp.Beta2, float64(hp.Step))
	return []any{float32(hp.Beta1), float32(hp.Beta2), float32(hp.LR / c1), float32(1 / math.Sqrt(c2)),
		float32(hp.Eps), float32(1 - hp.LR*hp.WeightDecay), float32(hp.GradScale)}
}

func (be *core) adamwBufs(op string, p, g, m, v kernels.Buffer) []*buffer {
	bufs := []*buffer{be.buf(op, "p", p), be.buf(op, "g", g), be.buf(op, "m", m), be.buf(op, "v", v)}
	sameType(op, bufs[0].n, bufs...)
	want(op, "p", bufs[0], kernels.Float32, 0)
	return bufs
}

// AdamWUpdate implements kernels.Backend on float32 buffers.
func (be *core) AdamWUpdate(p, g, m, v kernels.Buffer, hp kernels.AdamW) {
	b := be.adamwBufs("AdamWUpdate", p, g, m, v)
	n := int64(b[0].n)
	be.launch1D("adamw_f32", n, append([]any{b[0].ptr, b[1].ptr, b[2].ptr, b[3].ptr, n}, adamwArgs(hp)...)...)
}

// AdamWUpdateCast implements kernels.Mixed: one pass updates the float32 masters and writes
// the bf16 working copy w.
func (be *core) AdamWUpdateCast(w, p, g, m, v kernels.Buffer, hp kernels.AdamW) {
	b := be.adamwBufs("AdamWUpdateCast", p, g, m, v)
	wb := be.buf("AdamWUpdateCast", "w", w)
	want("AdamWUpdateCast", "w", wb, kernels.BFloat16, b[0].n)
	n := int64(b[0].n)
	be.launch1D("adamw_bf16", n, append([]any{b[0].ptr, b[1].ptr, b[2].ptr, b[3].ptr, wb.ptr, n}, adamwArgs(hp)...)...)
}
