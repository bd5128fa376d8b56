//go:build !purego

package attn

import (
	"unsafe"

	"golang.org/x/sys/cpu"

	"github.com/herd-llm/herd/kernels/cpu/internal/asm"
)

// The row loops of package asm: AVX2 and FMA, float32 rows whose length D is a multiple of 8.
// Their results differ from the Go loops' in rounding (eight lanes, fused multiply-adds), but
// like those they depend on the shapes alone, never on the number of cores.

var haveAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// vectorRows reports whether rows of D elements of T take the vector loops.
func vectorRows[T Float](D int) bool {
	return useVector && haveAVX2 && unsafe.Sizeof(T(0)) == 4 && D%8 == 0
}

// dotsVec sets dst[c] = scale * x . rows[c*stride:][:len(x)] for c below the largest multiple
// of 8 that fits dst, and returns that count.
func dotsVec[T Float](dst, x, rows []T, stride int, scale T) int {
	n := len(dst) &^ 7
	if n == 0 {
		return 0
	}
	d := len(x)
	_ = rows[(n-1)*stride+d-1]
	asm.DotRows(f32(dst), f32(x), f32(rows), stride, n, d, float32(scale))
	return n
}

// mulAddVec adds sum_n w[n*ws] * rows[n*stride:][:len(y)] to y for n < count, and reports
// that it did.
func mulAddVec[T Float](y, w []T, ws int, rows []T, stride, count int) bool {
	if count > 0 {
		_, _ = w[(count-1)*ws], rows[(count-1)*stride+len(y)-1]
		asm.MulAddRows(f32(y), f32(w), ws, f32(rows), stride, count, len(y))
	}
	return true
}

// expShiftVec sets p[c] = exp(p[c] - shift) for c below the largest multiple of 8 that fits p,
// and returns that count.
func expShiftVec[T Float](p []T, shift T) int {
	n := len(p) &^ 7
	if n > 0 {
		asm.ExpScale(f32(p), f32(p), n, float32(shift), 1)
	}
	return n
}

func f32[T Float](s []T) *float32 { return (*float32)(unsafe.Pointer(unsafe.SliceData(s))) }
