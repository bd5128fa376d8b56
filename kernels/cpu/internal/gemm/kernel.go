package gemm

import "unsafe"

// The micro-kernel shape. Go's amd64 compiler does not vectorise and, at the default GOAMD64=v1,
// does not fuse multiply-add, so the kernel is scalar: every multiply and add is one
// instruction on one of 15 usable XMM registers. 4x3 keeps 12 accumulators, an element of A and
// a product live at once and measured fastest of the shapes from 2x4 to 4x4 (about 9.7
// GFLOP/s on one core of a 2.6 GHz Xeon for float32 and float64 alike; 4x4 spills and runs at
// 7.6).
const (
	mr = 4 // rows of C per kernel call
	nr = 3 // columns of C per kernel call
)

// kernel adds alpha*(a·b) to the rows x cols top-left corner of the mr x nr block of C that
// starts at c[0], with row stride ldc. a is an mr-row strip and b an nr-column strip of a
// packed block, depth deep: a[p*mr+i] is A(i, p) and b[p*nr+j] is B(p, j).
//
// The k loop reads the strips through unsafe pointers after one bounds check of each strip
// here. That keeps the loop body a single basic block, and only then does Go's instruction
// scheduler keep each multiply next to its add (in a loop with a separate header block it
// issues all twelve multiplies first, needing twelve more registers and spilling). The
// difference is about 1.3x.
func kernel[T Float](depth int, a, b []T, c []T, ldc, rows, cols int, alpha T) {
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
	if rows < mr || cols < nr {
		acc := [mr * nr]T{c00, c01, c02, c10, c11, c12, c20, c21, c22, c30, c31, c32}
		for i := range rows {
			for j := range cols {
				c[i*ldc+j] += alpha * acc[i*nr+j]
			}
		}
		return
	}
	r0, r1, r2, r3 := c[0:nr], c[ldc:ldc+nr], c[2*ldc:2*ldc+nr], c[3*ldc:3*ldc+nr]
	r0[0], r0[1], r0[2] = r0[0]+alpha*c00, r0[1]+alpha*c01, r0[2]+alpha*c02
	r1[0], r1[1], r1[2] = r1[0]+alpha*c10, r1[1]+alpha*c11, r1[2]+alpha*c12
	r2[0], r2[1], r2[2] = r2[0]+alpha*c20, r2[1]+alpha*c21, r2[2]+alpha*c22
	r3[0], r3[1], r3[2] = r3[0]+alpha*c30, r3[1]+alpha*c31, r3[2]+alpha*c32
}
