// Package gemm is the matrix multiply of herd's CPU backend: C = alpha*op(A)*op(B) + beta*C on
// row-major float32 or float64 matrices.
//
// Two paths compute it. A CBLAS library (OpenBLAS, or any libblas that exports cblas_sgemm and
// cblas_dgemm), opened at run time with dlopen, is the fast one; Default finds it. The pure Go
// path is always present: it runs when no library is found, when herd is built without cgo, or
// when HERD_BLAS=off. Both paths pass the same tests against a naive float64 triple loop.
//
// The pure Go path follows the GotoBLAS layout. C is cut into tiles of up to mc x nc elements
// that the cores share out through par.For. For each tile, op(A) and op(B) are copied (packed) kc
// deep into strips of mr rows and nr columns, which turns all four transpose combinations into
// one memory layout, so a single micro-kernel (kernel.go) does all the arithmetic with an
// mr x nr block of C held in registers.
package gemm

import (
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/herd-llm/herd/kernels/cpu/internal/par"
)

// Float is the element type.
type Float interface{ ~float32 | ~float64 }

// Gemm computes C = alpha*op(A)*op(B) + beta*C. All matrices are row-major. C is m x n with
// leading dimension ldc. op(A) is m x k: A is stored m x k, or k x m when transA, with leading
// dimension lda. op(B) is k x n: B is stored k x n, or n x k when transB, with leading
// dimension ldb. C must not overlap A or B.
//
// With lib != nil it calls cblas_sgemm or cblas_dgemm (T's underlying type decides); with a nil
// lib it runs the pure Go path. As in BLAS, beta == 0 overwrites C without reading it (NaN in C
// does not survive), and alpha == 0 or k == 0 leaves A and B unread.
//
// Gemm panics if a dimension is negative, a leading dimension is smaller than its row width, or
// a slice is too short for the dimensions given.
func Gemm[T Float](lib *Lib, transA, transB bool, m, n, k int, alpha T, a []T, lda int, b []T, ldb int, beta T, c []T, ldc int) {
	checkArgs(transA, transB, m, n, k, len(a), lda, len(b), ldb, len(c), ldc)
	if lib != nil && lib.sgemm == nil {
		panic("gemm: *Lib was not returned by Load")
	}
	q := problem[T]{transA, transB, m, n, k, alpha, beta, a, lda, b, ldb, c, ldc}
	q.solve(lib, defaultBlocking())
}

// solve computes the product of checked operands, on lib if it is not nil.
func (q *problem[T]) solve(lib *Lib, bl blocking) {
	switch {
	case q.m == 0 || q.n == 0:
	case q.k == 0 || q.alpha == 0:
		scale(q.m, q.n, q.beta, q.c, q.ldc)
	case lib != nil && fitsInt32(q.m, q.n, q.k, q.lda, q.ldb, q.ldc):
		blasGemm(lib, q)
	default:
		q.run(bl)
	}
}

// checkArgs panics unless the dimensions, leading dimensions and slice lengths of a Gemm call
// agree.
func checkArgs(transA, transB bool, m, n, k, lenA, lda, lenB, ldb, lenC, ldc int) {
	if m < 0 || n < 0 || k < 0 {
		panic(fmt.Sprintf("gemm: negative dimension: m=%d n=%d k=%d", m, n, k))
	}
	rowsA, colsA := m, k
	if transA {
		rowsA, colsA = k, m
	}
	rowsB, colsB := k, n
	if transB {
		rowsB, colsB = n, k
	}
	checkMatrix("a", rowsA, colsA, lenA, lda)
	checkMatrix("b", rowsB, colsB, lenB, ldb)
	checkMatrix("c", m, n, lenC, ldc)
}

// checkMatrix panics unless a stored rows x cols matrix with leading dimension ld fits in a
// slice of the given length.
func checkMatrix(name string, rows, cols, length, ld int) {
	if ld < max(1, cols) {
		panic(fmt.Sprintf("gemm: ld%s=%d, want >= max(1, %d)", name, ld, cols))
	}
	if rows == 0 || cols == 0 {
		return
	}
	if need := (rows-1)*ld + cols; length < need {
		panic(fmt.Sprintf("gemm: len(%s)=%d, want >= %d for a %dx%d matrix with ld%s=%d",
			name, length, need, rows, cols, name, ld))
	}
}

// fitsInt32 reports whether every value fits the 32-bit int of the CBLAS interface (LP64
// libraries such as libopenblas.so.0).
func fitsInt32(v ...int) bool {
	for _, x := range v {
		if x > math.MaxInt32 {
			return false
		}
	}
	return true
}

// scale sets the rows x cols matrix c to beta*c, writing zeros when beta == 0.
func scale[T Float](rows, cols int, beta T, c []T, ldc int) {
	if beta == 1 {
		return
	}
	for i := range rows {
		row := c[i*ldc : i*ldc+cols]
		if beta == 0 {
			clear(row)
			continue
		}
		for j := range row {
			row[j] *= beta
		}
	}
}

// blocking holds the tile sizes of the pure Go path, in elements. mc is a multiple of mr and nc
// a multiple of nr.
type blocking struct {
	mc int // rows of C per tile; a packed mc x kc block of A (128 KiB of float32) stays in L2
	nc int // columns of C per tile; a packed kc x nc block of B stays in L2
	kc int // depth of one packing pass; an mr x kc strip of A and a kc x nr strip of B fit in L1
}

func defaultBlocking() blocking { return blocking{mc: 128, nc: 384, kc: 256} }

const (
	// minMC and minNC bound split: smaller tiles would spend more on packing than they gain
	// in balance.
	minMC = 8 * mr
	minNC = 16 * nr

	// serialWork is the m*n*k below which a call runs on the calling goroutine alone:
	// about 50µs of arithmetic, where starting goroutines stops paying for itself.
	serialWork = 1 << 18
)

// split shrinks the tiles until an m x n product has about four per worker, so that the
// workers finish close together even when the tiles at the edges are smaller.
func (bl blocking) split(m, n, workers int) blocking {
	if workers <= 1 {
		return bl
	}
	for ceilDiv(m, bl.mc)*ceilDiv(n, bl.nc) < 4*workers {
		switch {
		case bl.nc > minNC && (bl.nc >= bl.mc || bl.mc <= minMC):
			bl.nc = max(minNC, roundUp(bl.nc/2, nr))
		case bl.mc > minMC:
			bl.mc = max(minMC, roundUp(bl.mc/2, mr))
		default:
			return bl
		}
	}
	return bl
}

// problem holds the operands of one Gemm call.
type problem[T Float] struct {
	transA, transB bool
	m, n, k        int
	alpha, beta    T
	a              []T
	lda            int
	b              []T
	ldb            int
	c              []T
	ldc            int
}

// run computes the product tile by tile. par.For starts one worker per core, and the workers
// take tiles in order from a shared counter rather than in fixed chunks, so a worker whose core
// is busy with other work holds up no more than the tile it is on.
func (q *problem[T]) run(bl blocking) {
	workers := runtime.GOMAXPROCS(0)
	if q.m*q.n*q.k < serialWork {
		workers = 1
	}
	bl = bl.split(q.m, q.n, workers)
	tilesN := ceilDiv(q.n, bl.nc)
	tiles := ceilDiv(q.m, bl.mc) * tilesN
	pool := workspacePool[T]()
	var next atomic.Int64
	work := func(int, int) {
		ws := pool.Get().(*workspace[T])
		ws.fit(bl)
		for t := int(next.Add(1) - 1); t < tiles; t = int(next.Add(1) - 1) {
			q.tile(ws, bl, t/tilesN*bl.mc, t%tilesN*bl.nc)
		}
		pool.Put(ws)
	}
	if workers == 1 {
		work(0, 1)
		return
	}
	par.For(min(workers, tiles), 1, work)
}

// tile computes the tile of C whose top-left element is (i0, j0).
func (q *problem[T]) tile(ws *workspace[T], bl blocking, i0, j0 int) {
	rows, cols := min(bl.mc, q.m-i0), min(bl.nc, q.n-j0)
	scale(rows, cols, q.beta, q.c[i0*q.ldc+j0:], q.ldc)
	for p0 := 0; p0 < q.k; p0 += bl.kc {
		depth := min(bl.kc, q.k-p0)
		pa := q.packA(ws.a, i0, rows, p0, depth)
		pb := q.packB(ws.b, j0, cols, p0, depth)
		for j := 0; j < cols; j += nr {
			strip := pb[j*depth : (j+nr)*depth]
			for i := 0; i < rows; i += mr {
				c := q.c[(i0+i)*q.ldc+j0+j:]
				kernel(depth, pa[i*depth:(i+mr)*depth], strip, c, q.ldc, min(mr, rows-i), min(nr, cols-j), q.alpha)
			}
		}
	}
}

// workspace holds one worker's packed blocks of A and B.
type workspace[T Float] struct{ a, b []T }

// fit sizes the buffers for bl, reusing their memory when it is large enough.
func (ws *workspace[T]) fit(bl blocking) {
	ws.a = grow(ws.a, roundUp(bl.mc, mr)*bl.kc)
	ws.b = grow(ws.b, roundUp(bl.nc, nr)*bl.kc)
}

func grow[T Float](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// workspaces holds one sync.Pool of *workspace[T] per element type, keyed by poolKey[T]. It is
// package state because the buffers are a process-wide cache that no caller should manage.
var workspaces sync.Map

type poolKey[T Float] struct{}

func workspacePool[T Float]() *sync.Pool {
	if p, ok := workspaces.Load(poolKey[T]{}); ok {
		return p.(*sync.Pool)
	}
	p, _ := workspaces.LoadOrStore(poolKey[T]{}, &sync.Pool{New: func() any { return new(workspace[T]) }})
	return p.(*sync.Pool)
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

func roundUp(a, b int) int { return ceilDiv(a, b) * b }
