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
// deep into strips of mr rows and nr columns (pack.go), which turns all four transpose
// combinations into one memory layout, so a single micro-kernel does all the arithmetic with an
// mr x nr block of C held in registers. The micro-kernel is chosen at run time from the CPU's
// features (kernel.go): on x86-64, assembly kernels for AVX-512 (float32, 12 x 32) or AVX2 and
// FMA (float32 4 x 24, float64 6 x 8), with vector routines that pack float32; everywhere else,
// and in builds with the purego tag, a portable kernel written in Go. "Pure Go" means no cgo
// and no library: the assembly is Go assembly, built by the Go toolchain.
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
	kern := bestKernel[T]()
	q.solve(lib, kern, kern.bl)
}

// solve computes the product of checked operands, on lib if it is not nil, otherwise with
// the micro-kernel kern and tiles of at most bl.
func (q *problem[T]) solve(lib *Lib, kern microKernel[T], bl blocking) {
	switch {
	case q.m == 0 || q.n == 0:
	case q.k == 0 || q.alpha == 0:
		scale(q.m, q.n, q.beta, q.c, q.ldc)
	case lib != nil && fitsInt32(q.m, q.n, q.k, q.lda, q.ldb, q.ldc):
		blasGemm(lib, q)
	default:
		q.run(kern, bl)
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

// blocking holds the tile sizes of the pure Go path, in elements. mc is a multiple of the
// micro-kernel's mr and nc a multiple of its nr.
type blocking struct {
	mc int // rows of C per tile; the packed mc x kc block of A stays in L2
	nc int // columns of C per tile; the packed kc x nc block of B streams through L2
	kc int // depth of one packing pass; a kc x nr strip of B stays in L1
}

const (
	// minStripsM and minStripsN bound split: tiles of fewer strips would spend more on
	// packing than they gain in balance.
	minStripsM = 8
	minStripsN = 4

	// serialWork is the m*n*k below which a call runs on the calling goroutine alone:
	// about 50µs of arithmetic on the portable kernel, where starting goroutines stops paying
	// for itself.
	serialWork = 1 << 18
)

// split chooses the tiles of an m x n product: no larger than bl, as even as the kernel's
// mr x nr block allows, and, with more than one worker, about four per worker, so that the
// workers finish close together. Every tile packs its rows of op(A) and its columns of op(B),
// so op(A) is packed once per column of tiles and op(B) once per row of tiles, k*(m*tilesN +
// n*tilesM) elements in all: to reach the tile count, split adds a column of tiles (packing m
// more elements per step of k) when m <= n and a row of tiles otherwise, down to tiles of
// minStripsM x minStripsN strips.
func (bl blocking) split(m, n, workers, mr, nr int) blocking {
	tilesM, tilesN := ceilDiv(m, bl.mc), ceilDiv(n, bl.nc)
	mostM, mostN := m/(minStripsM*mr), n/(minStripsN*nr)
	for workers > 1 && tilesM*tilesN < 4*workers {
		canM, canN := tilesM < mostM, tilesN < mostN
		if canN && (m <= n || !canM) {
			tilesN++
		} else if canM {
			tilesM++
		} else {
			break
		}
	}
	return blocking{mc: roundUp(ceilDiv(m, tilesM), mr), nc: roundUp(ceilDiv(n, tilesN), nr), kc: bl.kc}
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
// is busy with other work holds up no more than the tile it is on. Tiles are numbered down
// the columns of tiles, so that a worker's next tile usually shares its block of B, which the
// worker then does not pack again (see workspace.packB).
func (q *problem[T]) run(kern microKernel[T], bl blocking) {
	workers := runtime.GOMAXPROCS(0)
	if q.m*q.n*q.k < serialWork {
		workers = 1
	}
	bl = bl.split(q.m, q.n, workers, kern.mr, kern.nr)
	tilesM := ceilDiv(q.m, bl.mc)
	tiles := tilesM * ceilDiv(q.n, bl.nc)
	pool := workspacePool[T]()
	var next atomic.Int64
	work := func(int, int) {
		ws := pool.Get().(*workspace[T])
		ws.fit(kern, bl)
		for t := int(next.Add(1) - 1); t < tiles; t = int(next.Add(1) - 1) {
			q.tile(ws, kern, bl, t%tilesM*bl.mc, t/tilesM*bl.nc)
		}
		pool.Put(ws)
	}
	if workers == 1 {
		work(0, 1)
		return
	}
	par.For(min(workers, tiles), 1, work)
}

// tile computes the tile of C whose top-left element is (i0, j0). The first pass over k
// applies beta (the kernel does not read C when beta == 0), the later ones add to C. Blocks at
// the right and bottom edges of C that are smaller than the kernel's are computed into
// ws.edge and added from there.
func (q *problem[T]) tile(ws *workspace[T], kern microKernel[T], bl blocking, i0, j0 int) {
	mr, nr := kern.mr, kern.nr
	rows, cols := min(bl.mc, q.m-i0), min(bl.nc, q.n-j0)
	beta := q.beta
	for p0 := 0; p0 < q.k; p0 += bl.kc {
		depth := min(bl.kc, q.k-p0)
		pa := q.packA(ws.a, kern, i0, rows, p0, depth)
		pb := ws.packB(q, kern, j0, cols, p0, depth)
		for j := 0; j < cols; j += nr {
			strip := pb[j*depth : (j+nr)*depth]
			w := min(nr, cols-j)
			for i := 0; i < rows; i += mr {
				a := pa[i*depth : (i+mr)*depth]
				c := q.c[(i0+i)*q.ldc+j0+j:]
				if h := min(mr, rows-i); h < mr || w < nr {
					kern.run(depth, a, strip, ws.edge, nr, q.alpha, 0)
					addEdge(c, q.ldc, ws.edge, nr, h, w, beta)
					continue
				}
				kern.run(depth, a, strip, c, q.ldc, q.alpha, beta)
			}
		}
		beta = 1
	}
}

// addEdge sets the rows x cols top-left corner of C to e + beta*C, where e is a block with
// row stride lde; with beta == 0 it does not read C.
func addEdge[T Float](c []T, ldc int, e []T, lde, rows, cols int, beta T) {
	for i := range rows {
		dst, src := c[i*ldc:i*ldc+cols], e[i*lde:i*lde+cols]
		if beta == 0 {
			copy(dst, src)
			continue
		}
		for j, v := range src {
			dst[j] = v + beta*dst[j]
		}
	}
}

// workspace holds one worker's packed blocks of A and B and the block that edge kernels write.
type workspace[T Float] struct {
	a, b, edge []T
	// packedB says which block of op(B) b holds: packB skips packing the same block again
	// for the next tile down the same column. It is reset by fit, at the start of each product.
	packedB packedKey
}

// packedKey names a packed block of op(B) within one product: its first row and column and
// its size. valid is false when b holds nothing reusable.
type packedKey struct {
	valid               bool
	p0, j0, depth, cols int
}

// fit sizes the buffers for kern and bl, reusing their memory when it is large enough, and
// forgets any packed block of an earlier product.
func (ws *workspace[T]) fit(kern microKernel[T], bl blocking) {
	ws.a = grow(ws.a, roundUp(bl.mc, kern.mr)*bl.kc)
	ws.b = grow(ws.b, roundUp(bl.nc, kern.nr)*bl.kc)
	ws.edge = grow(ws.edge, kern.mr*kern.nr)
	ws.packedB = packedKey{}
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
