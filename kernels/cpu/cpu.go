// Package cpu is herd's reference backend: every op of kernels.Backend in plain Go, generic
// over float32 (training) and float64 (gradient checks against finite differences), spread
// across the cores with goroutines. Matrix multiplies go through a CBLAS library loaded with
// dlopen at run time when one is present (OpenBLAS), and through a blocked pure-Go kernel
// otherwise, so the backend builds and runs everywhere. On x86-64 CPUs with AVX2 and FMA the
// hot loops that a CPU profile of a small model's step puts on top run on Go assembly for
// float32 (internal/asm): the matmul micro-kernels, the cross-entropy softmax and SwiGLU. The
// Go loops stay as the path for float64 and for every other CPU.
//
// Every op that reduces (norms, sums, attention) fixes its summation order independently of
// the number of cores, so recomputing an activation yields the same bits as computing it the
// first time; the rematerialization policies of model/ rely on that.
package cpu

import (
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/kernels/cpu/internal/gemm"
)

// Float is the element type of the CPU backend.
type Float interface{ ~float32 | ~float64 }

// Options configures a CPU backend.
type Options struct {
	// PureGo disables the BLAS path: every matmul runs the blocked pure-Go kernel.
	PureGo bool
	// BLASLib names the CBLAS shared library to load. Empty means the HERD_BLAS_LIB
	// environment variable, then the usual names (libopenblas.so.0, libblas.so.3).
	// HERD_BLAS=off in the environment has the effect of PureGo.
	BLASLib string
}

// Backend is the CPU implementation of kernels.Backend with elements of type T.
type Backend[T Float] struct {
	lib    *gemm.Lib // nil: pure Go matmul
	blaErr error     // why no BLAS library is in use, when lib is nil

	live atomic.Int64
	peak atomic.Int64 // the high-water mark of live since the last ResetPeak

	mu   sync.Mutex
	free map[int][]*buf[T] // released buffers by length, reused by Alloc

	ropeMu sync.Mutex
	rope   map[ropeKey]*ropeTable
}

var (
	_ kernels.Backend = (*Backend[float32])(nil)
	_ kernels.Backend = (*Backend[float64])(nil)
)

// New returns a CPU backend. It never fails: without a usable BLAS library it falls back to
// the pure-Go matmul, and BLAS reports why.
func New[T Float](opts Options) *Backend[T] {
	be := &Backend[T]{free: map[int][]*buf[T]{}, rope: map[ropeKey]*ropeTable{}}
	switch {
	case opts.PureGo:
		be.blaErr = fmt.Errorf("cpu: pure-Go matmul requested")
	case opts.BLASLib != "":
		be.lib, be.blaErr = gemm.Load(opts.BLASLib)
	default:
		be.lib, be.blaErr = gemm.Default()
	}
	if be.lib == nil && be.blaErr == nil {
		be.blaErr = fmt.Errorf("cpu: BLAS disabled by HERD_BLAS=off")
	}
	return be
}

// BLAS returns the path of the CBLAS library in use, or "" and the reason none is used.
func (be *Backend[T]) BLAS() (string, error) {
	if be.lib == nil {
		return "", be.blaErr
	}
	return be.lib.Path(), nil
}

// Name implements kernels.Backend.
func (be *Backend[T]) Name() string {
	if be.lib == nil {
		return "cpu-" + be.DType().String() + "-purego"
	}
	return "cpu-" + be.DType().String() + "-blas"
}

// DType implements kernels.Backend.
func (be *Backend[T]) DType() kernels.DType {
	var z T
	if unsafe.Sizeof(z) == 4 {
		return kernels.Float32
	}
	return kernels.Float64
}

// buf is a CPU buffer: a slice of T that the backend owns, or a view into one.
type buf[T Float] struct {
	data  []T
	owned bool
}

func (b *buf[T]) Len() int { return len(b.data) }

// Data returns the elements of a buffer allocated by a CPU backend of element type T.
// Tests and host-side tools use it to avoid copies.
func Data[T Float](b kernels.Buffer) []T { return b.(*buf[T]).data }

func (be *Backend[T]) elemSize() int64 { var z T; return int64(unsafe.Sizeof(z)) }

// Alloc implements kernels.Backend. Released buffers of the same length are reused, so a
// training loop that allocates the same activations every step does not churn the heap.
func (be *Backend[T]) Alloc(n int) kernels.Buffer {
	if n < 0 {
		panic(fmt.Sprintf("cpu: Alloc of %d elements", n))
	}
	live := be.live.Add(int64(n) * be.elemSize())
	for peak := be.peak.Load(); live > peak && !be.peak.CompareAndSwap(peak, live); peak = be.peak.Load() {
	}
	be.mu.Lock()
	if l := be.free[n]; len(l) > 0 {
		b := l[len(l)-1]
		be.free[n] = l[:len(l)-1]
		be.mu.Unlock()
		clear(b.data)
		b.owned = true
		return b
	}
	be.mu.Unlock()
	return &buf[T]{data: make([]T, n), owned: true}
}

// Free implements kernels.Backend.
func (be *Backend[T]) Free(x kernels.Buffer) {
	b := x.(*buf[T])
	if !b.owned {
		panic("cpu: Free of a view or of a buffer already freed")
	}
	b.owned = false
	be.live.Add(-int64(len(b.data)) * be.elemSize())
	be.mu.Lock()
	be.free[len(b.data)] = append(be.free[len(b.data)], b)
	be.mu.Unlock()
}

// Release drops the buffers kept for reuse, returning their memory to the Go heap.
func (be *Backend[T]) Release() {
	be.mu.Lock()
	clear(be.free)
	be.mu.Unlock()
}

// Slice implements kernels.Backend.
func (be *Backend[T]) Slice(x kernels.Buffer, off, n int) kernels.Buffer {
	b := x.(*buf[T])
	if off < 0 || n < 0 || off+n > len(b.data) {
		panic(fmt.Sprintf("cpu: Slice [%d:%d] of a buffer of %d", off, off+n, len(b.data)))
	}
	return &buf[T]{data: b.data[off : off+n : off+n]}
}

// LiveBytes implements kernels.Backend.
func (be *Backend[T]) LiveBytes() int64 { return be.live.Load() }

// PeakBytes returns the high-water mark of LiveBytes since the backend was made or since
// the last ResetPeak.
func (be *Backend[T]) PeakBytes() int64 { return be.peak.Load() }

// ResetPeak starts a new high-water mark at the current LiveBytes.
func (be *Backend[T]) ResetPeak() { be.peak.Store(be.live.Load()) }

func (be *Backend[T]) data(x kernels.Buffer) []T { return x.(*buf[T]).data }

func checkLen(op string, want int, bufs ...kernels.Buffer) {
	for _, b := range bufs {
		if b.Len() < want {
			panic(fmt.Sprintf("cpu: %s needs %d elements, buffer has %d", op, want, b.Len()))
		}
	}
}

// Write implements kernels.Backend.
func (be *Backend[T]) Write(dst kernels.Buffer, src []float64) { convert("Write", be.data(dst), src) }

// Read implements kernels.Backend.
func (be *Backend[T]) Read(dst []float64, src kernels.Buffer) { convert("Read", dst, be.data(src)) }

// Write32 implements kernels.Backend.
func (be *Backend[T]) Write32(dst kernels.Buffer, src []float32) {
	convert("Write32", be.data(dst), src)
}

// Read32 implements kernels.Backend.
func (be *Backend[T]) Read32(dst []float32, src kernels.Buffer) { convert("Read32", dst, be.data(src)) }

// convert copies src into dst, converting the element type; the lengths must match.
func convert[D, S Float](op string, dst []D, src []S) {
	if len(dst) != len(src) {
		panic(fmt.Sprintf("cpu: %s of %d values into %d", op, len(src), len(dst)))
	}
	for i, v := range src {
		dst[i] = D(v)
	}
}
