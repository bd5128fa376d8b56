//go:build !purego

// Row loops of the CPU attention (package attn) for float32 with AVX2 and FMA. Rows of q, k,
// v and their gradients are d contiguous floats (d a multiple of 8) at a stride of stride
// floats, as in the [B, T, H, D] layout.
//
// DotRows computes up to 64 scores of one query at a time, eight keys per pass:
//
//	Y0              eight elements of x (the query)
//	Y8 .. Y15       per-key accumulators, lane j summing elements t = 8u+j of the key's
//	                row x·k, for the eight keys of the pass
//
// and then reduces the eight accumulators to one register holding the eight dot products:
// VHADDPS pairs keys (0,1), (2,3), then (01,23), leaving per-128-bit-lane partial sums that
// VPERM2F128 and one add combine. The order of the additions depends on d only.
//
// MulAddRows accumulates y += sum_n w[n*ws] * row n, keeping a block of y in registers while
// the rows stream past: four registers (32 floats) per pass, then one (8 floats). Each
// element of y adds its terms in row order, one fused multiply-add per row.

#include "textflag.h"

// func DotRows(dst, x, rows *float32, stride, n, d int, scale float32)
TEXT ·DotRows(SB), NOSPLIT, $0-52
	MOVQ         dst+0(FP), DI
	MOVQ         x+8(FP), DX
	MOVQ         rows+16(FP), SI
	MOVQ         stride+24(FP), R8
	SHLQ         $2, R8
	MOVQ         n+32(FP), CX
	SHRQ         $3, CX
	JZ           drdone
	MOVQ         d+40(FP), R9
	SHRQ         $3, R9
	VBROADCASTSS scale+48(FP), Y7
	LEAQ         (R8)(R8*2), R10 // 3*stride

drgroup:
	VXORPS Y8, Y8, Y8
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11
	VXORPS Y12, Y12, Y12
	VXORPS Y13, Y13, Y13
	VXORPS Y14, Y14, Y14
	VXORPS Y15, Y15, Y15
	MOVQ   SI, R11               // row 0 of the group, advancing along d
	LEAQ   (SI)(R8*4), R12       // row 4
	XORQ   R13, R13              // byte offset into x
	MOVQ   R9, BX

drstep:
	VMOVUPS     (DX)(R13*1), Y0
	VFMADD231PS (R11), Y0, Y8
	VFMADD231PS (R11)(R8*1), Y0, Y9
	VFMADD231PS (R11)(R8*2), Y0, Y10
	VFMADD231PS (R11)(R10*1), Y0, Y11
	VFMADD231PS (R12), Y0, Y12
	VFMADD231PS (R12)(R8*1), Y0, Y13
	VFMADD231PS (R12)(R8*2), Y0, Y14
	VFMADD231PS (R12)(R10*1), Y0, Y15
	ADDQ        $32, R11
	ADDQ        $32, R12
	ADDQ        $32, R13
	DECQ        BX
	JNZ         drstep

	VHADDPS    Y9, Y8, Y0
	VHADDPS    Y11, Y10, Y1
	VHADDPS    Y1, Y0, Y0        // keys 0..3: low-lane sums | high-lane sums
	VHADDPS    Y13, Y12, Y2
	VHADDPS    Y15, Y14, Y3
	VHADDPS    Y3, Y2, Y2        // keys 4..7
	VPERM2F128 $0x20, Y2, Y0, Y1
	VPERM2F128 $0x31, Y2, Y0, Y3
	VADDPS     Y3, Y1, Y1
	VMULPS     Y7, Y1, Y1
	VMOVUPS    Y1, (DI)

	ADDQ $32, DI
	LEAQ (SI)(R8*8), SI
	DECQ CX
	JNZ  drgroup

drdone:
	VZEROUPPER
	RET

// func MulAddRows(y, w *float32, ws int, rows *float32, stride, count, d int)
TEXT ·MulAddRows(SB), NOSPLIT, $0-56
	MOVQ y+0(FP), DI
	MOVQ w+8(FP), DX
	MOVQ ws+16(FP), R9
	SHLQ $2, R9
	MOVQ rows+24(FP), SI
	MOVQ stride+32(FP), R8
	SHLQ $2, R8
	MOVQ count+40(FP), CX
	MOVQ d+48(FP), BX
	TESTQ CX, CX
	JZ    madone

ma32:
	CMPQ BX, $32
	JLT  ma8
	VMOVUPS (DI), Y4
	VMOVUPS 32(DI), Y5
	VMOVUPS 64(DI), Y6
	VMOVUPS 96(DI), Y7
	MOVQ    SI, R11
	MOVQ    DX, R12
	MOVQ    CX, R13

ma32row:
	VBROADCASTSS (R12), Y0
	VFMADD231PS  (R11), Y0, Y4
	VFMADD231PS  32(R11), Y0, Y5
	VFMADD231PS  64(R11), Y0, Y6
	VFMADD231PS  96(R11), Y0, Y7
	ADDQ         R9, R12
	ADDQ         R8, R11
	DECQ         R13
	JNZ          ma32row

	VMOVUPS Y4, (DI)
	VMOVUPS Y5, 32(DI)
	VMOVUPS Y6, 64(DI)
	VMOVUPS Y7, 96(DI)
	ADDQ    $128, DI
	ADDQ    $128, SI
	SUBQ    $32, BX
	JMP     ma32

ma8:
	TESTQ BX, BX
	JZ    madone
	VMOVUPS (DI), Y4
	MOVQ    SI, R11
	MOVQ    DX, R12
	MOVQ    CX, R13

ma8row:
	VBROADCASTSS (R12), Y0
	VFMADD231PS  (R11), Y0, Y4
	ADDQ         R9, R12
	ADDQ         R8, R11
	DECQ         R13
	JNZ          ma8row

	VMOVUPS Y4, (DI)
	ADDQ    $32, DI
	ADDQ    $32, SI
	SUBQ    $8, BX
	JMP     ma8

madone:
	VZEROUPPER
	RET
