//go:build !purego

// Vector e^x for float32 with AVX2 and FMA, eight lanes at a time, and the loops of the CPU
// backend built on it: the softmax of the cross-entropy loss (Max, SumExp, ExpScale) and the
// SwiGLU activation (SwiGLU, SwiGLUBackward). n must be a multiple of 8.
//
// EXP8 follows Cephes' expf, the scalar attn.expf: x = n ln2 + r with n = round(x log2e) and
// |r| <= ln2/2 (ln2 split in two parts so that n*ln2 is exact), e^r by a degree-7 polynomial
// in Horner form with fused multiply-adds, then scaled by 2^n. 2^n is applied as 2^h * 2^(n-h)
// with h = n>>1, so that n = 128 (x up to ln(MaxFloat32)) needs no special case: both factors
// are normal floats. x is clamped to [minX, maxX] before the reduction, so that the integer
// conversion stays in range, and afterwards lanes with x < minX (results that would be
// subnormal) are set to 0, lanes with x > maxX to +Inf and NaN lanes to x. The error is within
// 2 ulp of the rounded result.
//
// Registers of EXP8: in Y0 (x), out Y3; Y1 and Y2 are clobbered. Constants are read from
// expconst, 32-byte vectors of eight copies each. In order, EXP8 clamps x (a NaN lane becomes
// maxX), computes n = round(x log2e) and r = x - n ln2Hi - n ln2Lo, evaluates e^r = p r^2 + r
// + 1, multiplies by 2^h and 2^(n-h), then patches the lanes with x < minX, x > maxX or NaN.

#include "textflag.h"

#define VEC8(off, bits) \
	DATA expconst<>+(off+0)(SB)/4, $bits;  \
	DATA expconst<>+(off+4)(SB)/4, $bits;  \
	DATA expconst<>+(off+8)(SB)/4, $bits;  \
	DATA expconst<>+(off+12)(SB)/4, $bits; \
	DATA expconst<>+(off+16)(SB)/4, $bits; \
	DATA expconst<>+(off+20)(SB)/4, $bits; \
	DATA expconst<>+(off+24)(SB)/4, $bits; \
	DATA expconst<>+(off+28)(SB)/4, $bits

VEC8(0, 0x42b17218)   // maxX   88.72283905206835 = ln(MaxFloat32)
VEC8(32, 0xc2aeac50)  // minX  -87.33654475 = ln(smallest normal float32)
VEC8(64, 0x3fb8aa3b)  // log2e  1.44269504088896341
VEC8(96, 0x3f318000)  // ln2Hi  0.693359375
VEC8(128, 0xb95e8083) // ln2Lo -2.12194440e-4
VEC8(160, 0x39506967) // p0     1.9875691500e-4
VEC8(192, 0x3ab743ce) // p1     1.3981999507e-3
VEC8(224, 0x3c088908) // p2     8.3334519073e-3
VEC8(256, 0x3d2aa9c1) // p3     4.1665795894e-2
VEC8(288, 0x3e2aaaaa) // p4     1.6666665459e-1
VEC8(320, 0x3f000000) // p5     5.0000001201e-1
VEC8(352, 0x3f800000) // 1
VEC8(384, 0x0000007f) // 127, the exponent bias, as an integer
VEC8(416, 0x7f800000) // +Inf
GLOBL expconst<>(SB), RODATA|NOPTR, $448

#define EXPMAXX expconst<>+0(SB)
#define EXPMINX expconst<>+32(SB)
#define EXPLOG2E expconst<>+64(SB)
#define EXPLN2HI expconst<>+96(SB)
#define EXPLN2LO expconst<>+128(SB)
#define EXPP0 expconst<>+160(SB)
#define EXPP1 expconst<>+192(SB)
#define EXPP2 expconst<>+224(SB)
#define EXPP3 expconst<>+256(SB)
#define EXPP4 expconst<>+288(SB)
#define EXPP5 expconst<>+320(SB)
#define EXPONE expconst<>+352(SB)
#define EXPBIAS expconst<>+384(SB)
#define EXPINF expconst<>+416(SB)

#define EXP8 \
	VMINPS       EXPMAXX, Y0, Y1; \
	VMAXPS       EXPMINX, Y1, Y1;     \
	VMULPS       EXPLOG2E, Y1, Y2;    \
	VROUNDPS     $0, Y2, Y2; \
	VFNMADD231PS EXPLN2HI, Y2, Y1; \
	VFNMADD231PS EXPLN2LO, Y2, Y1;    \
	VMOVUPS      EXPP0, Y3;           \
	VFMADD213PS  EXPP1, Y1, Y3;       \
	VFMADD213PS  EXPP2, Y1, Y3;       \
	VFMADD213PS  EXPP3, Y1, Y3;       \
	VFMADD213PS  EXPP4, Y1, Y3;       \
	VFMADD213PS  EXPP5, Y1, Y3;       \
	VMULPS       Y1, Y3, Y3; \
	VFMADD213PS  Y1, Y1, Y3;          \
	VADDPS       EXPONE, Y3, Y3;      \
	VCVTPS2DQ    Y2, Y2; \
	VPSRAD       $1, Y2, Y1; \
	VPSUBD       Y1, Y2, Y2; \
	VPADDD       EXPBIAS, Y1, Y1;     \
	VPSLLD       $23, Y1, Y1; \
	VPADDD       EXPBIAS, Y2, Y2;     \
	VPSLLD       $23, Y2, Y2; \
	VMULPS       Y1, Y3, Y3;          \
	VMULPS       Y2, Y3, Y3;          \
	VCMPPS       $0x11, EXPMINX, Y0, Y1; \
	VANDNPS      Y3, Y1, Y3;          \
	VCMPPS       $0x1e, EXPMAXX, Y0, Y1; \
	VBLENDVPS    Y1, EXPINF, Y3, Y3;  \
	VCMPPS       $3, Y0, Y0, Y1; \
	VBLENDVPS    Y1, Y0, Y3, Y3

// func Exp(dst, x *float32, n int)
TEXT ·Exp(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ n+16(FP), CX
	SHRQ $3, CX
	JZ   expdone

exploop:
	VMOVUPS (SI), Y0
	EXP8
	VMOVUPS Y3, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DI
	DECQ    CX
	JNZ     exploop

expdone:
	VZEROUPPER
	RET

// func Max(x *float32, n int) float32
//
// The largest of x[0:n], n >= 8. Where x holds a NaN the result is some element of x (the
// comparison drops NaN); callers that need NaN to propagate get it from SumExp.
TEXT ·Max(SB), NOSPLIT, $0-20
	MOVQ    x+0(FP), SI
	MOVQ    n+8(FP), CX
	SHRQ    $3, CX
	VMOVUPS (SI), Y4
	VMOVAPS Y4, Y5

maxloop:
	VMAXPS (SI), Y4, Y4
	ADDQ   $32, SI
	DECQ   CX
	JZ     maxreduce
	VMAXPS (SI), Y5, Y5
	ADDQ   $32, SI
	DECQ   CX
	JNZ    maxloop

maxreduce:
	VMAXPS       Y5, Y4, Y4
	VEXTRACTF128 $1, Y4, X5
	VMAXPS       X5, X4, X4
	VPERMILPS    $0x4e, X4, X5
	VMAXPS       X5, X4, X4
	VPERMILPS    $0xb1, X4, X5
	VMAXPS       X5, X4, X4
	VMOVSS       X4, ret+16(FP)
	VZEROUPPER
	RET

// func SumExp(x *float32, n int, shift float32) float64
//
// The sum of e^(x[i]-shift) over x[0:n], each term computed in float32 and added in float64:
// lane j of Y5 (Y6) sums the terms i = 8q+j (8q+4+j), and the lanes are added in a fixed order
// at the end.
TEXT ·SumExp(SB), NOSPLIT, $0-32
	MOVQ         x+0(FP), SI
	MOVQ         n+8(FP), CX
	VBROADCASTSS shift+16(FP), Y7
	VXORPD       Y5, Y5, Y5
	VXORPD       Y6, Y6, Y6
	SHRQ         $3, CX
	JZ           sumreduce

sumloop:
	VMOVUPS      (SI), Y0
	VSUBPS       Y7, Y0, Y0
	EXP8
	VCVTPS2PD    X3, Y1
	VEXTRACTF128 $1, Y3, X2
	VCVTPS2PD    X2, Y2
	VADDPD       Y1, Y5, Y5
	VADDPD       Y2, Y6, Y6
	ADDQ         $32, SI
	DECQ         CX
	JNZ          sumloop

sumreduce:
	VADDPD       Y6, Y5, Y5
	VEXTRACTF128 $1, Y5, X6
	VADDPD       X6, X5, X5
	VPERMILPD    $1, X5, X6
	VADDSD       X6, X5, X5
	VMOVSD       X5, ret+24(FP)
	VZEROUPPER
	RET

// func ExpScale(dst, x *float32, n int, shift, scale float32)
//
// dst[i] = scale * e^(x[i]-shift) for i < n. dst may be x.
TEXT ·ExpScale(SB), NOSPLIT, $0-32
	MOVQ         dst+0(FP), DI
	MOVQ         x+8(FP), SI
	MOVQ         n+16(FP), CX
	VBROADCASTSS shift+24(FP), Y7
	VBROADCASTSS scale+28(FP), Y6
	SHRQ         $3, CX
	JZ           esdone

esloop:
	VMOVUPS (SI), Y0
	VSUBPS  Y7, Y0, Y0
	EXP8
	VMULPS  Y6, Y3, Y3
	VMOVUPS Y3, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DI
	DECQ    CX
	JNZ     esloop

esdone:
	VZEROUPPER
	RET

// SIGMOID8 sets Y5 = 1/(1+e^-x) for x in Y4 (Y0..Y3 are clobbered by EXP8).
#define SIGMOID8 \
	VXORPS  Y0, Y0, Y0; \
	VSUBPS  Y4, Y0, Y0; \
	EXP8;               \
	VADDPS  EXPONE, Y3, Y3; \
	VMOVUPS EXPONE, Y5; \
	VDIVPS  Y3, Y5, Y5

// func SwiGLU(out, a, b *float32, n int)
//
// out[i] = silu(a[i]) * b[i], silu(x) = x/(1+e^-x), for i < n.
TEXT ·SwiGLU(SB), NOSPLIT, $0-32
	MOVQ out+0(FP), DI
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DX
	MOVQ n+24(FP), CX
	SHRQ $3, CX
	JZ   swdone

swloop:
	VMOVUPS (SI), Y4
	SIGMOID8
	VMULPS  Y5, Y4, Y5
	VMULPS  (DX), Y5, Y5
	VMOVUPS Y5, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DX
	ADDQ    $32, DI
	DECQ    CX
	JNZ     swloop

swdone:
	VZEROUPPER
	RET

// func SwiGLUBackward(da, db, dout, a, b *float32, n int)
//
// With s = 1/(1+e^-a[i]) and silu = a[i]*s: da[i] = dout[i]*b[i]*(s + silu*(1-s)) and
// db[i] = dout[i]*silu, for i < n.
TEXT ·SwiGLUBackward(SB), NOSPLIT, $0-48
	MOVQ da+0(FP), DI
	MOVQ db+8(FP), R8
	MOVQ dout+16(FP), R9
	MOVQ a+24(FP), SI
	MOVQ b+32(FP), DX
	MOVQ n+40(FP), CX
	SHRQ $3, CX
	JZ   swbdone

swbloop:
	VMOVUPS     (SI), Y4
	SIGMOID8
	VMULPS      Y5, Y4, Y6     // silu
	VMOVUPS     (R9), Y7       // dout
	VMULPS      Y6, Y7, Y1
	VMOVUPS     Y1, (R8)       // db
	VMOVUPS     EXPONE, Y2
	VSUBPS      Y5, Y2, Y2     // 1 - s
	VFMADD213PS Y5, Y6, Y2     // s + silu*(1-s)
	VMULPS      (DX), Y7, Y1   // dout*b
	VMULPS      Y2, Y1, Y1
	VMOVUPS     Y1, (DI)       // da
	ADDQ        $32, SI
	ADDQ        $32, DX
	ADDQ        $32, DI
	ADDQ        $32, R8
	ADDQ        $32, R9
	DECQ        CX
	JNZ         swbloop

swbdone:
	VZEROUPPER
	RET
