//go:build !purego

package gemm

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/cpu"

	"github.com/herd-llm/herd/kernels/cpu/internal/asm"
)

// archKernels returns the assembly kernels of package asm for T that this CPU runs, fastest first. The
// feature flags of golang.org/x/sys/cpu are set only when the operating system also saves the
// registers the instructions use (YMM for AVX2, ZMM and the mask registers for AVX-512).
//
// The float32 kernels pack with the AVX routines of package asm (vecPack).
//
// Tile sizes: kc x nr of packed B (24 KiB for float32 at kc = 256 and nr = 24) stays in the
// 32 KiB L1 data cache while the kernel walks down the mc x kc block of packed A, which stays
// in L2 (240 KiB for 240 x 256 float32). nc is large because the packed B block only has to
// stream through L2 one strip at a time; a larger nc means op(A) is packed fewer times.
func archKernels[T Float]() []microKernel[T] {
	var ks []microKernel[T]
	avx2 := cpu.X86.HasAVX2 && cpu.X86.HasFMA
	if unsafe.Sizeof(T(0)) == 4 {
		if cpu.X86.HasAVX512F {
			ks = append(ks, microKernel[T]{name: "avx512", mr: 12, nr: 32, vecPack: true,
				bl: blocking{mc: 240, nc: 1024, kc: 256}, run: sgemmAVX512[T]})
		}
		if avx2 {
			ks = append(ks, microKernel[T]{name: "avx2", mr: 4, nr: 24, vecPack: true,
				bl: blocking{mc: 240, nc: 1032, kc: 256}, run: sgemmAVX2[T]})
		}
		return ks
	}
	if avx2 {
		ks = append(ks, microKernel[T]{name: "avx2", mr: 6, nr: 8,
			bl: blocking{mc: 120, nc: 512, kc: 256}, run: dgemmAVX2[T]})
	}
	return ks
}

func sgemmAVX2[T Float](depth int, a, b, c []T, ldc int, alpha, beta T) {
	checkBlock(depth, 4, 24, len(a), len(b), len(c), ldc)
	asm.Sgemm4x24AVX2(depth, (*float32)(unsafe.Pointer(&a[0])), (*float32)(unsafe.Pointer(&b[0])),
		(*float32)(unsafe.Pointer(&c[0])), ldc, float32(alpha), float32(beta))
}

func sgemmAVX512[T Float](depth int, a, b, c []T, ldc int, alpha, beta T) {
	checkBlock(depth, 12, 32, len(a), len(b), len(c), ldc)
	asm.Sgemm12x32AVX512(depth, (*float32)(unsafe.Pointer(&a[0])), (*float32)(unsafe.Pointer(&b[0])),
		(*float32)(unsafe.Pointer(&c[0])), ldc, float32(alpha), float32(beta))
}

func dgemmAVX2[T Float](depth int, a, b, c []T, ldc int, alpha, beta T) {
	checkBlock(depth, 6, 8, len(a), len(b), len(c), ldc)
	asm.Dgemm6x8AVX2(depth, (*float64)(unsafe.Pointer(&a[0])), (*float64)(unsafe.Pointer(&b[0])),
		(*float64)(unsafe.Pointer(&c[0])), ldc, float64(alpha), float64(beta))
}

// checkBlock panics unless the strips hold depth steps of an mr x nr kernel and c holds an
// mr x nr block with row stride ldc >= nr. The assembly reads and writes exactly that much.
func checkBlock(depth, mr, nr, lenA, lenB, lenC, ldc int) {
	if depth < 1 || lenA < mr*depth || lenB < nr*depth || ldc < nr || lenC < (mr-1)*ldc+nr {
		panic(fmt.Sprintf("gemm: %dx%d kernel on depth %d, strips of %d and %d, C of %d with ldc %d",
			mr, nr, depth, lenA, lenB, lenC, ldc))
	}
}
