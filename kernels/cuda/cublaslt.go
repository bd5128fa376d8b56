//go:build cuda

package cuda

/*
#include <stdint.h>
#include <stddef.h>

// cuBLASLt declared by hand from the CUDA 11.8 cublasLt.h, so that no cuBLAS headers are needed
// and libcublasLt is loaded with dlopen. Handles and descriptors are opaque pointers; enums are
// int. The heuristic result mirrors cublasLtMatmulHeuristicResult_t (96 bytes): a 64-byte algo,
// size_t workspaceSize, cublasStatus_t state, float wavesCount, int reserved[4].
typedef struct { uint64_t data[8]; } herd_ltAlgo;
typedef struct {
	herd_ltAlgo algo;
	size_t workspaceSize;
	int state;
	float wavesCount;
	int reserved[4];
} herd_ltHeuristicResult;
_Static_assert(sizeof(herd_ltHeuristicResult) == 96, "cublasLtMatmulHeuristicResult_t is 96 bytes");

typedef int (*herd_ltCreate_t)(void**);
typedef int (*herd_ltDestroy_t)(void*);
typedef int (*herd_ltDescCreate_t)(void**, int, int);
typedef int (*herd_ltSetAttr_t)(void*, int, const void*, size_t);
typedef int (*herd_ltLayoutCreate_t)(void**, int, uint64_t, uint64_t, int64_t);
typedef int (*herd_ltPrefCreate_t)(void**);
typedef int (*herd_ltHeuristic_t)(void*, void*, void*, void*, void*, void*, void*, int, herd_ltHeuristicResult*, int*);
typedef int (*herd_ltMatmul_t)(void*, void*, const void*, const void*, void*, const void*, void*,
                               const void*, const void*, void*, void*, void*, const herd_ltAlgo*,
                               void*, size_t, void*);

static int herd_ltCreate(void* f, void** h) { return ((herd_ltCreate_t)f)(h); }
static int herd_ltDestroy(void* f, void* obj) { return ((herd_ltDestroy_t)f)(obj); }
static int herd_ltDescCreate(void* f, void** d, int compute, int scale) {
	return ((herd_ltDescCreate_t)f)(d, compute, scale);
}
static int herd_ltSetInt32(void* f, void* obj, int attr, int32_t v) {
	return ((herd_ltSetAttr_t)f)(obj, attr, &v, sizeof v);
}
static int herd_ltSetUint32(void* f, void* obj, int attr, uint32_t v) {
	return ((herd_ltSetAttr_t)f)(obj, attr, &v, sizeof v);
}
static int herd_ltSetUint64(void* f, void* obj, int attr, uint64_t v) {
	return ((herd_ltSetAttr_t)f)(obj, attr, &v, sizeof v);
}
static int herd_ltLayoutCreate(void* f, void** l, int type, uint64_t rows, uint64_t cols, int64_t ld) {
	return ((herd_ltLayoutCreate_t)f)(l, type, rows, cols, ld);
}
static int herd_ltPrefCreate(void* f, void** p) { return ((herd_ltPrefCreate_t)f)(p); }
static int herd_ltGetHeuristic(void* f, void* h, void* desc, void* a, void* b, void* c, void* pref,
                            herd_ltHeuristicResult* out, int* n) {
	return ((herd_ltHeuristic_t)f)(h, desc, a, b, c, c, pref, 1, out, n);
}
// Device pointers travel as uintptr_t so that Go never holds them as unsafe.Pointer.
static int herd_ltMatmul(void* f, void* h, void* desc, float alpha, uintptr_t a, void* adesc,
                         uintptr_t b, void* bdesc, float beta, uintptr_t c, void* cdesc,
                         const herd_ltAlgo* algo, uintptr_t ws, size_t wsSize, void* stream) {
	return ((herd_ltMatmul_t)f)(h, desc, &alpha, (const void*)a, adesc, (const void*)b, bdesc, &beta,
	                            (const void*)c, cdesc, (void*)c, cdesc, algo, (void*)ws, wsSize, stream);
}
*/
import "C"

import (
	"fmt"
	"unsafe"

	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/kernels/cuda/cudalib"
)

// Enum values from the CUDA 11.8 headers (cublas_api.h, library_types.h, cublasLt.h); they are
// part of the ABI and unchanged in CUDA 12 and 13.
const (
	cublasStatusSuccess = 0  // CUBLAS_STATUS_SUCCESS
	cublasCompute32F    = 68 // CUBLAS_COMPUTE_32F
	cudaR32F            = 0  // CUDA_R_32F
	cudaR16BF           = 14 // CUDA_R_16BF
	cublasOpN           = 0  // CUBLAS_OP_N
	cublasOpT           = 1  // CUBLAS_OP_T

	ltDescTransA           = 3 // CUBLASLT_MATMUL_DESC_TRANSA (int32 cublasOperation_t)
	ltDescTransB           = 4 // CUBLASLT_MATMUL_DESC_TRANSB
	ltPrefMaxWorkspaceSize = 1 // CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES (uint64)
	ltPrefMinAlignA        = 5 // CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES (uint32); B, C, D follow
)

var cublasStatusNames = map[int]string{
	1: "CUBLAS_STATUS_NOT_INITIALIZED", 3: "CUBLAS_STATUS_ALLOC_FAILED", 7: "CUBLAS_STATUS_INVALID_VALUE",
	8: "CUBLAS_STATUS_ARCH_MISMATCH", 11: "CUBLAS_STATUS_MAPPING_ERROR", 13: "CUBLAS_STATUS_EXECUTION_FAILED",
	14: "CUBLAS_STATUS_INTERNAL_ERROR", 15: "CUBLAS_STATUS_NOT_SUPPORTED", 16: "CUBLAS_STATUS_LICENSE_ERROR",
}

func cublasCheck(what string, status C.int) error {
	if status == cublasStatusSuccess {
		return nil
	}
	name, ok := cublasStatusNames[int(status)]
	if !ok {
		name = "unknown cuBLAS status"
	}
	return fmt.Errorf("cuda: %s: %s (%d)", what, name, int(status))
}

// BLASLt runs matrix multiplications on one device through cuBLASLt, loaded with dlopen.
// Descriptors and the chosen algorithm are cached per problem shape. All its cuBLASLt calls run
// on the device thread, so it is safe for concurrent use.
type BLASLt struct {
	d      *Device
	lib    *library
	handle unsafe.Pointer
	plans  map[gemmKey]*gemmPlan // touched only on the device thread

	create, destroy, descCreate, descSetAttr, descDestroy unsafe.Pointer
	layoutCreate, layoutDestroy, prefCreate, prefSetAttr  unsafe.Pointer
	prefDestroy, heuristic, matmul                        unsafe.Pointer
}

// OpenBLASLt loads libcublasLt as package cudalib finds it ($HERD_CUBLASLT alone when set,
// else libcublasLt.so.13, .12 or .11 from the places listed at LoadNVRTC) and creates a handle
// for the device.
func (d *Device) OpenBLASLt() (*BLASLt, error) {
	lib, err := openLibrary(cudalib.CublasLt.Env, cudalib.CublasLt.Sonames)
	if err != nil {
		return nil, err
	}
	b := &BLASLt{d: d, lib: lib, plans: map[gemmKey]*gemmPlan{}}
	err = lib.syms(map[string]*unsafe.Pointer{
		"cublasLtCreate":                       &b.create,
		"cublasLtDestroy":                      &b.destroy,
		"cublasLtMatmulDescCreate":             &b.descCreate,
		"cublasLtMatmulDescSetAttribute":       &b.descSetAttr,
		"cublasLtMatmulDescDestroy":            &b.descDestroy,
		"cublasLtMatrixLayoutCreate":           &b.layoutCreate,
		"cublasLtMatrixLayoutDestroy":          &b.layoutDestroy,
		"cublasLtMatmulPreferenceCreate":       &b.prefCreate,
		"cublasLtMatmulPreferenceSetAttribute": &b.prefSetAttr,
		"cublasLtMatmulPreferenceDestroy":      &b.prefDestroy,
		"cublasLtMatmulAlgoGetHeuristic":       &b.heuristic,
		"cublasLtMatmul":                       &b.matmul,
	})
	if err != nil {
		return nil, err
	}
	err = d.Do(func() error { return cublasCheck("cublasLtCreate", C.herd_ltCreate(b.create, &b.handle)) })
	if err != nil {
		return nil, err
	}
	return b, nil
}

// Path returns the file libcublasLt was loaded from.
func (b *BLASLt) Path() string { return b.lib.path }

// Version returns cublasLtGetVersion(): major*10000 + minor*100 + patch.
func (b *BLASLt) Version() (int, error) { return cudalib.CublasLtVersion(b.lib.lib) }

// Close destroys the cached plans and the handle.
func (b *BLASLt) Close() error {
	return b.d.Do(func() error {
		for k, p := range b.plans {
			b.destroyPlan(p)
			delete(b.plans, k)
		}
		return cublasCheck("cublasLtDestroy", C.herd_ltDestroy(b.destroy, b.handle))
	})
}

// Workspace is device memory cuBLASLt may use as scratch; 32 MiB suits Hopper. Zero Bytes
// restricts cuBLASLt to algorithms that need none.
type Workspace struct {
	Ptr   DevicePtr
	Bytes int64
}

// Gemm sets C = op(A) op(B) + beta*C for ROW-MAJOR, densely packed matrices, with the meaning of
// kernels.Backend.MatMul: C is [m, n]; op(A) is [m, k], so A is stored [m, k], or [k, m] when
// transA; op(B) is [k, n], so B is stored [k, n], or [n, k] when transB. A and B are bfloat16;
// C is float32 or bfloat16 as cType says. Products accumulate in float32; alpha is 1.
// The work is enqueued on stream; Gemm does not wait for it.
//
// cuBLASLt is column-major. A row-major [r, c] matrix with leading dimension c is, read
// column-major, its transpose: a [c, r] matrix with leading dimension c. So Gemm asks cuBLASLt
// for C^T = op(B)^T op(A)^T, a column-major [n, m] product, which is the row-major C:
//
//	cuBLASLt   row-major buffer      column-major layout (rows, cols, ld)   op
//	"A"        B                     transB ? (k, n, k) : (n, k, n)         transB ? T : N
//	"B"        A                     transA ? (m, k, m) : (k, m, k)         transA ? T : N
//	"C", "D"   C                     (n, m, n)                              -
//	sizes      m' = n, n' = m, k' = k
//
// Check of the first row: without transB, B is row-major [k, n], read column-major as
// B^T [n, k] = op(B)^T, so no op is needed; with transB, B is stored row-major [n, k], read
// column-major as a [k, n] matrix that is B_stored^T, and op(B)^T = B_stored, so op T undoes it.
// The second row is the same argument for A, with m in place of n.
func (b *BLASLt) Gemm(stream Stream, transA, transB bool, m, n, k int, a, bm, c DevicePtr,
	cType kernels.DType, beta float32, ws Workspace) error {
	if m <= 0 || n <= 0 || k <= 0 {
		return fmt.Errorf("cuda: gemm: sizes m=%d n=%d k=%d must be positive", m, n, k)
	}
	var ct C.int
	switch cType {
	case kernels.Float32:
		ct = cudaR32F
	case kernels.BFloat16:
		ct = cudaR16BF
	default:
		return fmt.Errorf("cuda: gemm: C dtype %v not supported (float32 or bfloat16)", cType)
	}
	// cuBLASLt's "A" is our B and its "B" our A (see above); C and D are both our C.
	key := gemmKey{transA: transA, transB: transB, m: m, n: n, k: k, cType: ct, wsBytes: ws.Bytes,
		align: [4]int{alignment(uint64(bm)), alignment(uint64(a)), alignment(uint64(c)), alignment(uint64(c))}}
	cstream := unsafe.Pointer(stream.C())
	return b.d.Do(func() error {
		p, err := b.plan(key)
		if err != nil {
			return err
		}
		status := C.herd_ltMatmul(b.matmul, b.handle, p.desc, 1, C.uintptr_t(bm), p.first,
			C.uintptr_t(a), p.second, C.float(beta), C.uintptr_t(c), p.out,
			&p.algo, C.uintptr_t(ws.Ptr), C.size_t(ws.Bytes), cstream)
		return cublasCheck(fmt.Sprintf("cublasLtMatmul m=%d n=%d k=%d transA=%v transB=%v", m, n, k, transA, transB), status)
	})
}

// gemmKey identifies a row-major problem; gemmPlan holds its cuBLASLt descriptors.
type gemmKey struct {
	transA, transB bool
	m, n, k        int
	cType          C.int
	wsBytes        int64
	align          [4]int // bytes: cuBLASLt's A, B, C, D (our B, A, C, C)
}

type gemmPlan struct {
	desc, first, second, out unsafe.Pointer // first holds B, second A (see Gemm)
	algo                     C.herd_ltAlgo
}

// plan returns the cached plan of key or builds it. It runs on the device thread.
func (b *BLASLt) plan(key gemmKey) (*gemmPlan, error) {
	if p, ok := b.plans[key]; ok {
		return p, nil
	}
	p := &gemmPlan{}
	if err := b.buildPlan(p, key); err != nil {
		b.destroyPlan(p)
		return nil, err
	}
	b.plans[key] = p
	return p, nil
}

func (b *BLASLt) buildPlan(p *gemmPlan, key gemmKey) error {
	m, n, k := uint64(key.m), uint64(key.n), uint64(key.k)
	if err := cublasCheck("cublasLtMatmulDescCreate", C.herd_ltDescCreate(b.descCreate, &p.desc, cublasCompute32F, cudaR32F)); err != nil {
		return err
	}
	opFirst, opSecond := C.int32_t(cublasOpN), C.int32_t(cublasOpN)
	firstRows, firstCols, firstLd := n, k, n
	if key.transB {
		opFirst, firstRows, firstCols, firstLd = cublasOpT, k, n, k
	}
	secondRows, secondCols, secondLd := k, m, k
	if key.transA {
		opSecond, secondRows, secondCols, secondLd = cublasOpT, m, k, m
	}
	steps := []struct {
		what   string
		status C.int
	}{
		{"set TRANSA", C.herd_ltSetInt32(b.descSetAttr, p.desc, ltDescTransA, opFirst)},
		{"set TRANSB", C.herd_ltSetInt32(b.descSetAttr, p.desc, ltDescTransB, opSecond)},
		{"layout of B", b.layout(&p.first, cudaR16BF, firstRows, firstCols, firstLd)},
		{"layout of A", b.layout(&p.second, cudaR16BF, secondRows, secondCols, secondLd)},
		{"layout of C", b.layout(&p.out, key.cType, n, m, n)},
	}
	for _, s := range steps {
		if err := cublasCheck(s.what, s.status); err != nil {
			return err
		}
	}
	return b.chooseAlgo(p, key)
}

func (b *BLASLt) layout(dst *unsafe.Pointer, dtype C.int, rows, cols, ld uint64) C.int {
	return C.herd_ltLayoutCreate(b.layoutCreate, dst, dtype, C.uint64_t(rows), C.uint64_t(cols), C.int64_t(ld))
}

// chooseAlgo takes cuBLASLt's first heuristic choice within the workspace limit.
func (b *BLASLt) chooseAlgo(p *gemmPlan, key gemmKey) error {
	var pref unsafe.Pointer
	if err := cublasCheck("cublasLtMatmulPreferenceCreate", C.herd_ltPrefCreate(b.prefCreate, &pref)); err != nil {
		return err
	}
	defer C.herd_ltDestroy(b.prefDestroy, pref)
	status := C.herd_ltSetUint64(b.prefSetAttr, pref, ltPrefMaxWorkspaceSize, C.uint64_t(key.wsBytes))
	if err := cublasCheck("set MAX_WORKSPACE_BYTES", status); err != nil {
		return err
	}
	for i, a := range key.align {
		status = C.herd_ltSetUint32(b.prefSetAttr, pref, C.int(ltPrefMinAlignA+i), C.uint32_t(a))
		if err := cublasCheck(fmt.Sprintf("set MIN_ALIGNMENT_%c_BYTES", "ABCD"[i]), status); err != nil {
			return err
		}
	}
	var res C.herd_ltHeuristicResult
	var found C.int
	status = C.herd_ltGetHeuristic(b.heuristic, b.handle, p.desc, p.first, p.second, p.out, pref, &res, &found)
	if err := cublasCheck("cublasLtMatmulAlgoGetHeuristic", status); err != nil {
		return err
	}
	if found == 0 || res.state != cublasStatusSuccess {
		return fmt.Errorf("cuda: gemm %+v: cuBLASLt found no algorithm (state %d)", key, int(res.state))
	}
	p.algo = res.algo
	return nil
}

func (b *BLASLt) destroyPlan(p *gemmPlan) {
	for _, l := range []unsafe.Pointer{p.first, p.second, p.out} {
		if l != nil {
			C.herd_ltDestroy(b.layoutDestroy, l)
		}
	}
	if p.desc != nil {
		C.herd_ltDestroy(b.descDestroy, p.desc)
	}
}
