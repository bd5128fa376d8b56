package gemm

import (
	"sync"
	"unsafe"
)

// microKernel is one implementation of the innermost product of the pure Go path. It computes
// a whole mr x nr block of C from an mr-row strip of packed A and an nr-column strip of packed B
// (pack.go), and brings the tile sizes that suit it.
type microKernel[T Float] struct {
	name   string
	mr, nr int
	bl     blocking
	// vecPack says that packing uses the vector routines of pack_amd64.go (float32 strips
	// whose width is a multiple of 4) rather than the Go loops alone.
	vecPack bool
	// run sets the mr x nr block of C that starts at c[0], with row stride ldc, to
	// alpha*(a·b) + beta*C; with beta == 0 it does not read C. a is an mr-row strip and b an
	// nr-column strip, depth >= 1 deep: a[p*mr+i] is A(i, p) and b[p*nr+j] is B(p, j).
	run func(depth int, a, b, c []T, ldc int, alpha, beta T)
}

// kernels holds, per element type, the micro-kernels that run on this CPU, fastest first. The
// portable kernel is always last. archKernels (kernel_amd64.go, kernel_other.go) adds the
// assembly ones that the CPU supports, as detected when the list is first built.
var kernels sync.Map

type kernelsKey[T Float] struct{}

// kernelsFor returns the micro-kernels for T that run on this CPU, fastest first.
func kernelsFor[T Float]() []microKernel[T] {
	if ks, ok := kernels.Load(kernelsKey[T]{}); ok {
		return ks.([]microKernel[T])
	}
	ks := append(archKernels[T](), portableKernel[T]())
	v, _ := kernels.LoadOrStore(kernelsKey[T]{}, ks)
	return v.([]microKernel[T])
}

// bestKernel returns the fastest micro-kernel for T on this CPU.
func bestKernel[T Float]() microKernel[T] { return kernelsFor[T]()[0] }

// kernelNamed returns the micro-kernel of that name, if it runs on this CPU.
func kernelNamed[T Float](name string) (microKernel[T], bool) {
	for _, k := range kernelsFor[T]() {
		if k.name == name {
			return k, true
		}
	}
	return microKernel[T]{}, false
}

// The portable kernel's shape. Go's amd64 compiler does not vectorise and, at the default
// GOAMD64=v1, does not fuse multiply-add, so the kernel is scalar: every multiply and add is one
// instruction on one of 15 usable XMM registers. 4x3 keeps 12 accumulators, an element of A and
// a product live at once and measured fastest of the shapes from 2x4 to 4x4 (about 9.7
// GFLOP/s on one core of a 2.6 GHz Xeon for float32 and float64 alike; 4x4 spills and runs at
// 7.6).
const (
	portableMR = 4
	portableNR = 3
)

func portableKernel[T Float]() microKernel[T] {
	return microKernel[T]{name: "portable", mr: portableMR, nr: portableNR,
		bl: blocking{mc: 128, nc: 384, kc: 256}, run: portable[T]}
}

// portable is the micro-kernel written in Go, for every CPU; see microKernel.run.
//
// The k loop reads the strips through unsafe pointers after one bounds check of each strip
// here. That keeps the loop body a single basic block, and only then does Go's instruction
// scheduler keep each multiply next to its add (in a loop with a separate header block it
// issues all twelve multiplies first, needing twelve more registers and spilling). The
// difference is about 1.3x.
func portable[T Float](depth int, a, b []T, c []T, ldc int, alpha, beta T) {
	const mr, nr = portableMR, portableNR
	_, _ = a[mr*depth-1], b[nr*depth-1]
	pa, pb := unsafe.Pointer(unsafe.SliceData(a)), unsafe.Pointer(unsafe.SliceData(b))
	size := unsafe.Sizeof(a[0])
	var c00, c01, c02, c10, c11, c12, c20, c21, c22, c30, c31, c32 T
	for p := 0; ; {
		x := (*[mr]T)(unsafe.Add(pa, uintptr(p)*mr*size))
		y := (*[nr]T)(unsafe.Add(pb, uintptr(p)*nr*size))
		a0 := x[0]
		c00 += a0 * y[0]
		c01 += a0 * y[1]
		c02 += a0 * y[2]
		a1 := x[1]
		c10 += a1 * y[0]
		c11 += a1 * y[1]
		c12 += a1 * y[2]
		a2 := x[2]
		c20 += a2 * y[0]
		c21 += a2 * y[1]
		c22 += a2 * y[2]
		a3 := x[3]
		c30 += a3 * y[0]
		c31 += a3 * y[1]
		c32 += a3 * y[2]
		p++
		if p == depth {
			break
		}
	}
	r0, r1, r2, r3 := c[0:nr], c[ldc:ldc+nr], c[2*ldc:2*ldc+nr], c[3*ldc:3*ldc+nr]
	if beta == 0 {
		r0[0], r0[1], r0[2] = alpha*c00, alpha*c01, alpha*c02
		r1[0], r1[1], r1[2] = alpha*c10, alpha*c11, alpha*c12
		r2[0], r2[1], r2[2] = alpha*c20, alpha*c21, alpha*c22
		r3[0], r3[1], r3[2] = alpha*c30, alpha*c31, alpha*c32
		return
	}
	r0[0], r0[1], r0[2] = beta*r0[0]+alpha*c00, beta*r0[1]+alpha*c01, beta*r0[2]+alpha*c02
	r1[0], r1[1], r1[2] = beta*r1[0]+alpha*c10, beta*r1[1]+alpha*c11, beta*r1[2]+alpha*c12
	r2[0], r2[1], r2[2] = beta*r2[0]+alpha*c20, beta*r2[1]+alpha*c21, beta*r2[2]+alpha*c22
	r3[0], r3[1], r3[2] = beta*r3[0]+alpha*c30, beta*r3[1]+alpha*c31, beta*r3[2]+alpha*c32
}
