//go:build !purego

// Matrix multiply micro-kernels for x86-64 with AVX2 and FMA, or AVX-512, for package gemm.
// Each computes one block of C from a strip of packed A and a strip of packed B (gemm's
// pack.go has the layout: A(i, p) at a[p*mr+i], B(p, j) at b[p*nr+j]):
//
//	C[mr x nr] = alpha * (A strip · B strip) + beta * C   (C is not read when beta == 0)
//
// The whole block of C is held in vector registers for the k loop, as accumulators that start
// at zero. One step of the loop loads the step's row of the B strip (nr contiguous elements)
// into one or two registers, broadcasts each of the mr elements of the step's column of the A
// strip into a register in turn, and multiplies it into the accumulators of that row of C with
// fused multiply-adds. After the loop the accumulators are scaled by alpha, beta*C is added
// when beta != 0 (read with an unaligned load), and each row is stored to C with row stride ldc.
//
// Sgemm4x24AVX2 (float32, AVX2 + FMA, 16 YMM registers of 8 floats):
//
//	Y0  Y1  Y2      B(p, 0:8)  B(p, 8:16)  B(p, 16:24)
//	Y3              A(i, p) broadcast (register renaming lets the next row's broadcast
//	                start before this row's multiplies have read it)
//	Y4  Y5  Y6      C(0, 0:8)  C(0, 8:16)  C(0, 16:24)
//	Y7  Y8  Y9      C(1, ...)
//	Y10 Y11 Y12     C(2, ...)
//	Y13 Y14 Y15     C(3, ...)
//
// 12 multiply-adds per step against 3 loads and 4 broadcasts: all 16 registers are in use. A
// step reads 16 bytes of A and 96 of B. The shape was chosen over 6 x 16 (the same register
// count) because strips of 4 rows and 24 columns are packed with 4- and 8-row transposes.
//
// Dgemm6x8AVX2 (float64, AVX2 + FMA, YMM registers of 4 doubles): Y0 Y1 hold B(p, 0:8), Y2
// and Y3 the broadcasts of A (alternating rows), Y4..Y15 C(0..5, 0:8) two registers a row.
//
// Sgemm12x32AVX512 (float32, AVX-512F, 32 ZMM registers of 16 floats):
//
//	Z0  Z1          B(p, 0:16)  B(p, 16:32)
//	Z2  Z3          A(i, p) broadcast, alternating rows
//	Z8  Z9          C(0, 0:16)  C(0, 16:32)
//	...
//	Z30 Z31         C(11, 0:16) C(11, 16:32)
//
// 24 multiply-adds per step against 2 loads and 12 broadcasts; Z4..Z7 hold alpha and beta in
// the epilogue. A step reads 48 bytes of A and 128 of B.
//
// The k loop is unrolled four times, with a one-step loop for the remainder. depth may be 0,
// which stores beta*C (or zeros). Every routine here ends with VZEROUPPER so that SSE code
// after it pays no transition penalty.
//
// The file ends with the float32 packing routines (AVX): Transpose8 and Transpose4 turn 8 or 4
// rows into the interleaved order of a packed strip, 8 columns at a time, and CopyRows copies
// rows of a multiple of 4 elements between two strides.

#include "textflag.h"

// ---- float32, AVX2: 4 x 24 ----

// S24ROW multiplies the broadcast of A(row, p), at aoff(SI), into one row of accumulators.
#define S24ROW(aoff, c0, c1, c2) \
	VBROADCASTSS aoff(SI), Y3; \
	VFMADD231PS  Y0, Y3, c0;   \
	VFMADD231PS  Y1, Y3, c1;   \
	VFMADD231PS  Y2, Y3, c2

// S24STEP is one step of the k loop on A at aoff(SI) and B at boff(DI).
#define S24STEP(aoff, boff) \
	VMOVUPS boff(DI), Y0;             \
	VMOVUPS boff+32(DI), Y1;          \
	VMOVUPS boff+64(DI), Y2;          \
	S24ROW(aoff, Y4, Y5, Y6);         \
	S24ROW(aoff+4, Y7, Y8, Y9);       \
	S24ROW(aoff+8, Y10, Y11, Y12);    \
	S24ROW(aoff+12, Y13, Y14, Y15)

#define S24SCALE(c0, c1, c2) \
	VMULPS Y0, c0, c0; \
	VMULPS Y0, c1, c1; \
	VMULPS Y0, c2, c2

// S24ROWBETA adds beta*C to one row and stores it; S24ROWSTORE only stores. Both then advance
// DX to the next row of C.
#define S24ROWBETA(c0, c1, c2) \
	VFMADD231PS (DX), Y1, c0;   \
	VFMADD231PS 32(DX), Y1, c1; \
	VFMADD231PS 64(DX), Y1, c2; \
	VMOVUPS     c0, (DX);       \
	VMOVUPS     c1, 32(DX);     \
	VMOVUPS     c2, 64(DX);     \
	ADDQ        R8, DX

#define S24ROWSTORE(c0, c1, c2) \
	VMOVUPS c0, (DX);   \
	VMOVUPS c1, 32(DX); \
	VMOVUPS c2, 64(DX); \
	ADDQ    R8, DX

// PREFETCHROW96 asks for the (up to three) cache lines of a 96-byte row of C at R9 and moves
// R9 to the next row.
#define PREFETCHROW96 \
	PREFETCHT0 (R9);   \
	PREFETCHT0 64(R9); \
	PREFETCHT0 92(R9); \
	ADDQ       R8, R9

// func Sgemm4x24AVX2(depth int, a, b, c *float32, ldc int, alpha, beta float32)
TEXT ·Sgemm4x24AVX2(SB), NOSPLIT, $0-48
	MOVQ depth+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DI
	MOVQ c+24(FP), DX
	MOVQ ldc+32(FP), R8
	SHLQ $2, R8

	// Ask for the rows of C now, so that they arrive while the loop runs.
	MOVQ DX, R9
	PREFETCHROW96
	PREFETCHROW96
	PREFETCHROW96
	PREFETCHROW96

	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	VXORPS Y8, Y8, Y8
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11
	VXORPS Y12, Y12, Y12
	VXORPS Y13, Y13, Y13
	VXORPS Y14, Y14, Y14
	VXORPS Y15, Y15, Y15

	MOVQ CX, R10
	SHRQ $2, R10
	JZ   s24tail

s24loop4:
	S24STEP(0, 0)
	S24STEP(16, 96)
	S24STEP(32, 192)
	S24STEP(48, 288)
	ADDQ $64, SI
	ADDQ $384, DI
	DECQ R10
	JNZ  s24loop4

s24tail:
	ANDQ $3, CX
	JZ   s24done

s24loop1:
	S24STEP(0, 0)
	ADDQ $16, SI
	ADDQ $96, DI
	DECQ CX
	JNZ  s24loop1

s24done:
	VBROADCASTSS alpha+40(FP), Y0
	S24SCALE(Y4, Y5, Y6)
	S24SCALE(Y7, Y8, Y9)
	S24SCALE(Y10, Y11, Y12)
	S24SCALE(Y13, Y14, Y15)

	// beta == +0 or -0: overwrite C without reading it.
	MOVL beta+44(FP), AX
	ANDL $0x7fffffff, AX
	JZ   s24store
	VBROADCASTSS beta+44(FP), Y1
	S24ROWBETA(Y4, Y5, Y6)
	S24ROWBETA(Y7, Y8, Y9)
	S24ROWBETA(Y10, Y11, Y12)
	S24ROWBETA(Y13, Y14, Y15)
	VZEROUPPER
	RET

s24store:
	S24ROWSTORE(Y4, Y5, Y6)
	S24ROWSTORE(Y7, Y8, Y9)
	S24ROWSTORE(Y10, Y11, Y12)
	S24ROWSTORE(Y13, Y14, Y15)
	VZEROUPPER
	RET

// ---- float64, AVX2: 6 x 8 ----

// D8ROWBETA adds beta*C to one row of two registers and stores it; D8ROWSTORE only stores.
// Both then advance DX to the next row of C.
#define D8ROWBETA(c0, c1) \
	VFMADD231PD (DX), Y1, c0;   \
	VFMADD231PD 32(DX), Y1, c1; \
	VMOVUPD     c0, (DX);       \
	VMOVUPD     c1, 32(DX);     \
	ADDQ        R8, DX

#define D8ROWSTORE(c0, c1) \
	VMOVUPD c0, (DX);   \
	VMOVUPD c1, 32(DX); \
	ADDQ    R8, DX

#define PREFETCHROW64 \
	PREFETCHT0 (R9);   \
	PREFETCHT0 60(R9); \
	ADDQ       R8, R9

#define D8ROW(aoff, bc, c0, c1) \
	VBROADCASTSD aoff(SI), bc; \
	VFMADD231PD  Y0, bc, c0;   \
	VFMADD231PD  Y1, bc, c1

#define D8STEP(aoff, boff) \
	VMOVUPD boff(DI), Y0;              \
	VMOVUPD boff+32(DI), Y1;           \
	D8ROW(aoff, Y2, Y4, Y5);           \
	D8ROW(aoff+8, Y3, Y6, Y7);         \
	D8ROW(aoff+16, Y2, Y8, Y9);        \
	D8ROW(aoff+24, Y3, Y10, Y11);      \
	D8ROW(aoff+32, Y2, Y12, Y13);      \
	D8ROW(aoff+40, Y3, Y14, Y15)

// func Dgemm6x8AVX2(depth int, a, b, c *float64, ldc int, alpha, beta float64)
TEXT ·Dgemm6x8AVX2(SB), NOSPLIT, $0-56
	MOVQ depth+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DI
	MOVQ c+24(FP), DX
	MOVQ ldc+32(FP), R8
	SHLQ $3, R8

	MOVQ DX, R9
	PREFETCHROW64
	PREFETCHROW64
	PREFETCHROW64
	PREFETCHROW64
	PREFETCHROW64
	PREFETCHROW64

	VXORPD Y4, Y4, Y4
	VXORPD Y5, Y5, Y5
	VXORPD Y6, Y6, Y6
	VXORPD Y7, Y7, Y7
	VXORPD Y8, Y8, Y8
	VXORPD Y9, Y9, Y9
	VXORPD Y10, Y10, Y10
	VXORPD Y11, Y11, Y11
	VXORPD Y12, Y12, Y12
	VXORPD Y13, Y13, Y13
	VXORPD Y14, Y14, Y14
	VXORPD Y15, Y15, Y15

	MOVQ CX, R10
	SHRQ $2, R10
	JZ   d8tail

d8loop4:
	D8STEP(0, 0)
	D8STEP(48, 64)
	D8STEP(96, 128)
	D8STEP(144, 192)
	ADDQ $192, SI
	ADDQ $256, DI
	DECQ R10
	JNZ  d8loop4

d8tail:
	ANDQ $3, CX
	JZ   d8done

d8loop1:
	D8STEP(0, 0)
	ADDQ $48, SI
	ADDQ $64, DI
	DECQ CX
	JNZ  d8loop1

d8done:
	VBROADCASTSD alpha+40(FP), Y0
	VMULPD       Y0, Y4, Y4
	VMULPD       Y0, Y5, Y5
	VMULPD       Y0, Y6, Y6
	VMULPD       Y0, Y7, Y7
	VMULPD       Y0, Y8, Y8
	VMULPD       Y0, Y9, Y9
	VMULPD       Y0, Y10, Y10
	VMULPD       Y0, Y11, Y11
	VMULPD       Y0, Y12, Y12
	VMULPD       Y0, Y13, Y13
	VMULPD       Y0, Y14, Y14
	VMULPD       Y0, Y15, Y15

	MOVQ  beta+48(FP), AX
	SHLQ  $1, AX // drop the sign bit: zero for +0 and -0
	JZ    d8store
	VBROADCASTSD beta+48(FP), Y1
	D8ROWBETA(Y4, Y5)
	D8ROWBETA(Y6, Y7)
	D8ROWBETA(Y8, Y9)
	D8ROWBETA(Y10, Y11)
	D8ROWBETA(Y12, Y13)
	D8ROWBETA(Y14, Y15)
	VZEROUPPER
	RET

d8store:
	D8ROWSTORE(Y4, Y5)
	D8ROWSTORE(Y6, Y7)
	D8ROWSTORE(Y8, Y9)
	D8ROWSTORE(Y10, Y11)
	D8ROWSTORE(Y12, Y13)
	D8ROWSTORE(Y14, Y15)
	VZEROUPPER
	RET

// ---- float32, AVX-512: 12 x 32 ----

#define S32ROW(aoff, bc, c0, c1) \
	VBROADCASTSS aoff(SI), bc; \
	VFMADD231PS  Z0, bc, c0;   \
	VFMADD231PS  Z1, bc, c1

#define S32STEP(aoff, boff) \
	VMOVUPS boff(DI), Z0;              \
	VMOVUPS boff+64(DI), Z1;           \
	S32ROW(aoff, Z2, Z8, Z9);          \
	S32ROW(aoff+4, Z3, Z10, Z11);      \
	S32ROW(aoff+8, Z2, Z12, Z13);      \
	S32ROW(aoff+12, Z3, Z14, Z15);     \
	S32ROW(aoff+16, Z2, Z16, Z17);     \
	S32ROW(aoff+20, Z3, Z18, Z19);     \
	S32ROW(aoff+24, Z2, Z20, Z21);     \
	S32ROW(aoff+28, Z3, Z22, Z23);     \
	S32ROW(aoff+32, Z2, Z24, Z25);     \
	S32ROW(aoff+36, Z3, Z26, Z27);     \
	S32ROW(aoff+40, Z2, Z28, Z29);     \
	S32ROW(aoff+44, Z3, Z30, Z31)

#define ZSCALE(c0, c1) \
	VMULPS Z4, c0, c0; \
	VMULPS Z4, c1, c1

#define ZROWBETA(c0, c1) \
	VFMADD231PS (DX), Z5, c0;   \
	VFMADD231PS 64(DX), Z5, c1; \
	VMOVUPS     c0, (DX);       \
	VMOVUPS     c1, 64(DX);     \
	ADDQ        R8, DX

#define ZROWSTORE(c0, c1) \
	VMOVUPS c0, (DX);   \
	VMOVUPS c1, 64(DX); \
	ADDQ    R8, DX

#define ZPREFETCHROW \
	PREFETCHT0 (R9);    \
	PREFETCHT0 64(R9);  \
	PREFETCHT0 124(R9); \
	ADDQ       R8, R9

// func Sgemm12x32AVX512(depth int, a, b, c *float32, ldc int, alpha, beta float32)
TEXT ·Sgemm12x32AVX512(SB), NOSPLIT, $0-48
	MOVQ depth+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DI
	MOVQ c+24(FP), DX
	MOVQ ldc+32(FP), R8
	SHLQ $2, R8

	MOVQ DX, R9
	ZPREFETCHROW
	ZPREFETCHROW
	ZPREFETCHROW
	ZPREFETCHROW
	ZPREFETCHROW
	ZPREFETCHROW
	ZPREFETCHROW
	ZPREFETCHROW
	ZPREFETCHROW
	ZPREFETCHROW
	ZPREFETCHROW
	ZPREFETCHROW

	VPXORD Z8, Z8, Z8
	VPXORD Z9, Z9, Z9
	VPXORD Z10, Z10, Z10
	VPXORD Z11, Z11, Z11
	VPXORD Z12, Z12, Z12
	VPXORD Z13, Z13, Z13
	VPXORD Z14, Z14, Z14
	VPXORD Z15, Z15, Z15
	VPXORD Z16, Z16, Z16
	VPXORD Z17, Z17, Z17
	VPXORD Z18, Z18, Z18
	VPXORD Z19, Z19, Z19
	VPXORD Z20, Z20, Z20
	VPXORD Z21, Z21, Z21
	VPXORD Z22, Z22, Z22
	VPXORD Z23, Z23, Z23
	VPXORD Z24, Z24, Z24
	VPXORD Z25, Z25, Z25
	VPXORD Z26, Z26, Z26
	VPXORD Z27, Z27, Z27
	VPXORD Z28, Z28, Z28
	VPXORD Z29, Z29, Z29
	VPXORD Z30, Z30, Z30
	VPXORD Z31, Z31, Z31

	MOVQ CX, R10
	SHRQ $2, R10
	JZ   s32tail

s32loop4:
	S32STEP(0, 0)
	S32STEP(48, 128)
	S32STEP(96, 256)
	S32STEP(144, 384)
	ADDQ $192, SI
	ADDQ $512, DI
	DECQ R10
	JNZ  s32loop4

s32tail:
	ANDQ $3, CX
	JZ   s32done

s32loop1:
	S32STEP(0, 0)
	ADDQ $48, SI
	ADDQ $128, DI
	DECQ CX
	JNZ  s32loop1

s32done:
	VBROADCASTSS alpha+40(FP), Z4
	ZSCALE(Z8, Z9)
	ZSCALE(Z10, Z11)
	ZSCALE(Z12, Z13)
	ZSCALE(Z14, Z15)
	ZSCALE(Z16, Z17)
	ZSCALE(Z18, Z19)
	ZSCALE(Z20, Z21)
	ZSCALE(Z22, Z23)
	ZSCALE(Z24, Z25)
	ZSCALE(Z26, Z27)
	ZSCALE(Z28, Z29)
	ZSCALE(Z30, Z31)

	MOVL  beta+44(FP), AX
	ANDL  $0x7fffffff, AX
	JZ    s32store
	VBROADCASTSS beta+44(FP), Z5
	ZROWBETA(Z8, Z9)
	ZROWBETA(Z10, Z11)
	ZROWBETA(Z12, Z13)
	ZROWBETA(Z14, Z15)
	ZROWBETA(Z16, Z17)
	ZROWBETA(Z18, Z19)
	ZROWBETA(Z20, Z21)
	ZROWBETA(Z22, Z23)
	ZROWBETA(Z24, Z25)
	ZROWBETA(Z26, Z27)
	ZROWBETA(Z28, Z29)
	ZROWBETA(Z30, Z31)
	VZEROUPPER
	RET

s32store:
	ZROWSTORE(Z8, Z9)
	ZROWSTORE(Z10, Z11)
	ZROWSTORE(Z12, Z13)
	ZROWSTORE(Z14, Z15)
	ZROWSTORE(Z16, Z17)
	ZROWSTORE(Z18, Z19)
	ZROWSTORE(Z20, Z21)
	ZROWSTORE(Z22, Z23)
	ZROWSTORE(Z24, Z25)
	ZROWSTORE(Z26, Z27)
	ZROWSTORE(Z28, Z29)
	ZROWSTORE(Z30, Z31)
	VZEROUPPER
	RET

// ---- float32 packing, AVX ----

// TSTORE8 stores the eight transposed columns Y8..Y15 at DI, DI+ldd, ..., DI+7*ldd (R8 is
// ldd in bytes, R12 = 3*ldd, R13 = DI+4*ldd) and moves DI and R13 eight rows of dst on.
#define TSTORE8 \
	VMOVUPS Y8, (DI);           \
	VMOVUPS Y9, (DI)(R8*1);     \
	VMOVUPS Y10, (DI)(R8*2);    \
	VMOVUPS Y11, (DI)(R12*1);   \
	VMOVUPS Y12, (R13);         \
	VMOVUPS Y13, (R13)(R8*1);   \
	VMOVUPS Y14, (R13)(R8*2);   \
	VMOVUPS Y15, (R13)(R12*1);  \
	LEAQ    (DI)(R8*8), DI;     \
	LEAQ    (R13)(R8*8), R13

// func Transpose8(dst *float32, ldd int, src *float32, lds int, cols int)
//
// dst[p*ldd+i] = src[i*lds+p] for i < 8 and p < cols, cols a multiple of 8: eight rows of src
// become eight columns of dst. Each 8 x 8 block is loaded as rows Y0..Y7, interleaved in pairs
// (VUNPCKLPS, VUNPCKHPS), in fours (VSHUFPS), then its 128-bit halves are exchanged
// (VPERM2F128), leaving column p of the block in one register.
TEXT ·Transpose8(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ ldd+8(FP), R8
	SHLQ $2, R8
	MOVQ src+16(FP), SI
	MOVQ lds+24(FP), R9
	SHLQ $2, R9
	MOVQ cols+32(FP), CX
	SHRQ $3, CX
	JZ   t8done
	LEAQ (R9)(R9*2), R10 // 3*lds
	LEAQ (SI)(R9*4), R11 // row 4 of src
	LEAQ (R8)(R8*2), R12 // 3*ldd
	LEAQ (DI)(R8*4), R13 // row 4 of dst

t8loop:
	VMOVUPS (SI), Y0
	VMOVUPS (SI)(R9*1), Y1
	VMOVUPS (SI)(R9*2), Y2
	VMOVUPS (SI)(R10*1), Y3
	VMOVUPS (R11), Y4
	VMOVUPS (R11)(R9*1), Y5
	VMOVUPS (R11)(R9*2), Y6
	VMOVUPS (R11)(R10*1), Y7

	// Y8 = r0p0 r1p0 r0p1 r1p1 | r0p4 r1p4 r0p5 r1p5, Y9 the same for p2 p3 | p6 p7, ...
	VUNPCKLPS Y1, Y0, Y8
	VUNPCKHPS Y1, Y0, Y9
	VUNPCKLPS Y3, Y2, Y10
	VUNPCKHPS Y3, Y2, Y11
	VUNPCKLPS Y5, Y4, Y12
	VUNPCKHPS Y5, Y4, Y13
	VUNPCKLPS Y7, Y6, Y14
	VUNPCKHPS Y7, Y6, Y15

	// Y0 = r0..r3 at p0 | r0..r3 at p4, Y1 at p1 | p5, ...; Y4..Y7 the same for rows 4..7.
	VSHUFPS $0x44, Y10, Y8, Y0
	VSHUFPS $0xEE, Y10, Y8, Y1
	VSHUFPS $0x44, Y11, Y9, Y2
	VSHUFPS $0xEE, Y11, Y9, Y3
	VSHUFPS $0x44, Y14, Y12, Y4
	VSHUFPS $0xEE, Y14, Y12, Y5
	VSHUFPS $0x44, Y15, Y13, Y6
	VSHUFPS $0xEE, Y15, Y13, Y7

	// Y8 = r0..r7 at p0, Y9 at p1, ..., Y15 at p7.
	VPERM2F128 $0x20, Y4, Y0, Y8
	VPERM2F128 $0x20, Y5, Y1, Y9
	VPERM2F128 $0x20, Y6, Y2, Y10
	VPERM2F128 $0x20, Y7, Y3, Y11
	VPERM2F128 $0x31, Y4, Y0, Y12
	VPERM2F128 $0x31, Y5, Y1, Y13
	VPERM2F128 $0x31, Y6, Y2, Y14
	VPERM2F128 $0x31, Y7, Y3, Y15
	TSTORE8

	ADDQ $32, SI
	ADDQ $32, R11
	DECQ CX
	JNZ  t8loop

t8done:
	VZEROUPPER
	RET

// func Transpose4(dst *float32, ldd int, src *float32, lds int, cols int)
//
// dst[p*ldd+i] = src[i*lds+p] for i < 4 and p < cols, cols a multiple of 8: Transpose8 for
// four rows, each column of a block landing in one 128-bit half.
TEXT ·Transpose4(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ ldd+8(FP), R8
	SHLQ $2, R8
	MOVQ src+16(FP), SI
	MOVQ lds+24(FP), R9
	SHLQ $2, R9
	MOVQ cols+32(FP), CX
	SHRQ $3, CX
	JZ   t4done
	LEAQ (R9)(R9*2), R10 // 3*lds
	LEAQ (R8)(R8*2), R12 // 3*ldd
	LEAQ (DI)(R8*4), R13 // row 4 of dst

t4loop:
	VMOVUPS (SI), Y0
	VMOVUPS (SI)(R9*1), Y1
	VMOVUPS (SI)(R9*2), Y2
	VMOVUPS (SI)(R10*1), Y3

	VUNPCKLPS Y1, Y0, Y4
	VUNPCKHPS Y1, Y0, Y5
	VUNPCKLPS Y3, Y2, Y6
	VUNPCKHPS Y3, Y2, Y7

	// Y0 = column p0 | column p4, Y1 = p1 | p5, Y2 = p2 | p6, Y3 = p3 | p7.
	VSHUFPS $0x44, Y6, Y4, Y0
	VSHUFPS $0xEE, Y6, Y4, Y1
	VSHUFPS $0x44, Y7, Y5, Y2
	VSHUFPS $0xEE, Y7, Y5, Y3

	VMOVUPS      X0, (DI)
	VMOVUPS      X1, (DI)(R8*1)
	VMOVUPS      X2, (DI)(R8*2)
	VMOVUPS      X3, (DI)(R12*1)
	VEXTRACTF128 $1, Y0, (R13)
	VEXTRACTF128 $1, Y1, (R13)(R8*1)
	VEXTRACTF128 $1, Y2, (R13)(R8*2)
	VEXTRACTF128 $1, Y3, (R13)(R12*1)
	LEAQ         (DI)(R8*8), DI
	LEAQ         (R13)(R8*8), R13

	ADDQ $32, SI
	DECQ CX
	JNZ  t4loop

t4done:
	VZEROUPPER
	RET

// func CopyRows(dst *float32, ldd int, src *float32, lds int, rows, cols int)
//
// dst[r*ldd+j] = src[r*lds+j] for r < rows and j < cols, cols a multiple of 4: 32 bytes at a
// time, then 16.
TEXT ·CopyRows(SB), NOSPLIT, $0-48
	MOVQ dst+0(FP), DI
	MOVQ ldd+8(FP), R8
	SHLQ $2, R8
	MOVQ src+16(FP), SI
	MOVQ lds+24(FP), R9
	SHLQ $2, R9
	MOVQ rows+32(FP), CX
	MOVQ cols+40(FP), DX
	TESTQ CX, CX
	JZ    crdone

crrow:
	MOVQ  DX, R10
	SHRQ  $3, R10
	XORQ  R11, R11
	TESTQ R10, R10
	JZ    crhalf

cr8:
	VMOVUPS (SI)(R11*1), Y0
	VMOVUPS Y0, (DI)(R11*1)
	ADDQ    $32, R11
	DECQ    R10
	JNZ     cr8

crhalf:
	TESTQ $4, DX
	JZ    crnext
	VMOVUPS (SI)(R11*1), X0
	VMOVUPS X0, (DI)(R11*1)

crnext:
	ADDQ R9, SI
	ADDQ R8, DI
	DECQ CX
	JNZ  crrow

crdone:
	VZEROUPPER
	RET
