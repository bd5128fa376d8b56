//go:build !purego

package gemm

import (
	"unsafe"

	"github.com/herd-llm/herd/kernels/cpu/internal/asm"
)

// The vector packing routines of package asm, for float32 strips whose width is a multiple of
// 4. They need AVX, which every CPU with the kernels that set vecPack has.

// transposeVec packs the leading rows of a strip for packAcross: strip[p*width+i] =
// src[off+i*ld+p] for p < depth. It uses asm.Transpose8 and asm.Transpose4 for 8 columns at a
// time, and Go for the columns past the last multiple of 8. It returns how many rows it packed:
// a multiple of 4, or 0 when it does not apply.
func transposeVec[T Float](strip, src []T, off, ld, depth, w, width int) int {
	if unsafe.Sizeof(T(0)) != 4 || width%4 != 0 || w < 4 || depth < 8 {
		return 0
	}
	rows := w &^ 3
	// Every element the routines touch lies within these two, which the compiler checks.
	_, _ = src[off+(rows-1)*ld+depth-1], strip[(depth-1)*width+rows-1]
	cols := depth &^ 7
	i := 0
	for ; i+8 <= rows; i += 8 {
		asm.Transpose8(f32(&strip[i]), width, f32(&src[off+i*ld]), ld, cols)
	}
	if i < rows {
		asm.Transpose4(f32(&strip[i]), width, f32(&src[off+i*ld]), ld, cols)
	}
	for r := range rows {
		row := src[off+r*ld : off+r*ld+depth]
		for p := cols; p < depth; p++ {
			strip[p*width+r] = row[p]
		}
	}
	return rows
}

// copyStripsVec packs the first strips full strips for packAlong, dst[(s*depth+p)*width+j] =
// src[off+p*ld+s*width+j], with one asm.CopyRows call per step p: the call reads the step's
// row contiguously and writes a piece to each strip. It reports whether it applies (width a
// multiple of 4).
func copyStripsVec[T Float](dst, src []T, off, ld, depth, strips, width int) bool {
	if unsafe.Sizeof(T(0)) != 4 || width%4 != 0 {
		return false
	}
	if strips == 0 {
		return true
	}
	_, _ = src[off+(depth-1)*ld+strips*width-1], dst[strips*depth*width-1]
	for p := range depth {
		asm.CopyRows(f32(&dst[p*width]), depth*width, f32(&src[off+p*ld]), width, strips, width)
	}
	return true
}

// f32 converts a pointer to an element of a float32 type.
func f32[T Float](p *T) *float32 { return (*float32)(unsafe.Pointer(p)) }
