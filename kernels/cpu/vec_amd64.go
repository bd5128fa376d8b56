//go:build !purego

package cpu

import (
	"unsafe"

	"golang.org/x/sys/cpu"

	"github.com/herd-llm/herd/kernels/cpu/internal/asm"
)

// The softmax of the cross-entropy loss and the SwiGLU activation on float32 run on the AVX2
// routines of package asm, eight elements at a time, on CPUs with AVX2 and FMA. Each function
// takes the longest prefix of its slices that is a multiple of 8 and returns its length; the
// caller's Go loop does the rest (and everything for float64, where the length is 0).

var haveAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// vecLen is the length of the prefix of n elements of T that the vector routines take.
func vecLen[T Float](n int) int {
	if !haveAVX2 || unsafe.Sizeof(T(0)) != 4 || n < 8 {
		return 0
	}
	return n &^ 7
}

func maxVec[T Float](z []T) (float64, int) {
	n := vecLen[T](len(z))
	if n == 0 {
		return 0, 0
	}
	return float64(asm.Max(f32(z), n)), n
}

func sumExpVec[T Float](z []T, shift float64) (float64, int) {
	n := vecLen[T](len(z))
	if n == 0 {
		return 0, 0
	}
	return asm.SumExp(f32(z), n, float32(shift)), n
}

func expScaleVec[T Float](dst, z []T, shift, scale float64) int {
	n := vecLen[T](len(z))
	if n == 0 {
		return 0
	}
	_ = dst[n-1]
	asm.ExpScale(f32(dst), f32(z), n, float32(shift), float32(scale))
	return n
}

func swigluVec[T Float](out, a, b []T) int {
	n := vecLen[T](len(out))
	if n == 0 {
		return 0
	}
	_, _ = a[n-1], b[n-1]
	asm.SwiGLU(f32(out), f32(a), f32(b), n)
	return n
}

func swigluBackwardVec[T Float](da, db, dout, a, b []T) int {
	n := vecLen[T](len(dout))
	if n == 0 {
		return 0
	}
	_, _, _, _ = da[n-1], db[n-1], a[n-1], b[n-1]
	asm.SwiGLUBackward(f32(da), f32(db), f32(dout), f32(a), f32(b), n)
	return n
}

// f32 returns a pointer to the first element of s, whose element type is a float32 type.
func f32[T Float](s []T) *float32 { return (*float32)(unsafe.Pointer(unsafe.SliceData(s))) }
