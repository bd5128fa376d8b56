//go:build !purego

package asm

// Matrix multiply micro-kernels (gemm_amd64.s). Each sets the mr x nr block of C at c, with
// row stride ldc elements, to alpha*(A·B) + beta*C, where A is an mr-row strip of packed A
// and B an nr-column strip of packed B, depth steps deep: A(i, p) at a[p*mr+i] and B(p, j)
// at b[p*nr+j]. C is not read when beta is +0 or -0. The strips must hold mr*depth and
// nr*depth elements, and C (mr-1)*ldc + nr.

// Sgemm4x24AVX2 is the float32 4 x 24 kernel. It needs AVX2 and FMA.
//
//go:noescape
func Sgemm4x24AVX2(depth int, a, b, c *float32, ldc int, alpha, beta float32)

// Dgemm6x8AVX2 is the float64 6 x 8 kernel. It needs AVX2 and FMA.
//
//go:noescape
func Dgemm6x8AVX2(depth int, a, b, c *float64, ldc int, alpha, beta float64)

// Sgemm12x32AVX512 is the float32 12 x 32 kernel. It needs AVX-512F.
//
//go:noescape
func Sgemm12x32AVX512(depth int, a, b, c *float32, ldc int, alpha, beta float32)

// Packing routines for float32 strips. They need AVX.

// Transpose8 sets dst[p*ldd+i] = src[i*lds+p] for i < 8 and p < cols; cols must be a multiple
// of 8.
//
//go:noescape
func Transpose8(dst *float32, ldd int, src *float32, lds int, cols int)

// Transpose4 sets dst[p*ldd+i] = src[i*lds+p] for i < 4 and p < cols; cols must be a multiple
// of 8.
//
//go:noescape
func Transpose4(dst *float32, ldd int, src *float32, lds int, cols int)

// CopyRows sets dst[r*ldd+j] = src[r*lds+j] for r < rows and j < cols; cols must be a
// multiple of 4.
//
//go:noescape
func CopyRows(dst *float32, ldd int, src *float32, lds int, rows, cols int)
