package gemm

// Packing copies a block of op(A) or op(B) into the order the micro-kernel reads it, so that
// the kernel walks both operands with unit stride whatever the transposes are.
//
// A block of op(A) of rows x depth is stored as strips of mr rows; strip s holds element (i, p)
// of the strip at s*mr*depth + p*mr + i. A block of op(B) of depth x cols is stored as strips
// of nr columns; strip t holds element (p, j) of the strip at t*nr*depth + p*nr + j. mr and nr
// are the micro-kernel's. The kernel always runs on full strips, and the driver drops the
// results that fall outside C, so rows and columns past the edge of the block only need
// harmless values: they are zeroed rather than left holding whatever an earlier block put
// there.
//
// Both operands pack the same way: n elements across (rows of op(A), columns of op(B)) by
// depth, in strips of a given width. Only the stored orientation differs. Either the strips
// run along the stored rows (op(A) with transA, op(B) without transB: packAlong copies
// pieces of rows), or across them (op(A) without transA, op(B) with transB: packAcross
// transposes).

// packA packs rows x depth of op(A), starting at (i0, p0), into strips of kern.mr rows in dst
// and returns the used part.
func (q *problem[T]) packA(dst []T, kern microKernel[T], i0, rows, p0, depth int) []T {
	dst = dst[:roundUp(rows, kern.mr)*depth]
	if q.transA {
		packAlong(dst, q.a, p0*q.lda+i0, q.lda, depth, rows, kern.mr, kern.vecPack)
	} else {
		packAcross(dst, q.a, i0*q.lda+p0, q.lda, depth, rows, kern.mr, kern.vecPack)
	}
	return dst
}

// packB packs depth x cols of op(B), starting at (p0, j0), into strips of kern.nr columns in
// dst and returns the used part.
func (q *problem[T]) packB(dst []T, kern microKernel[T], j0, cols, p0, depth int) []T {
	dst = dst[:roundUp(cols, kern.nr)*depth]
	if q.transB {
		packAcross(dst, q.b, j0*q.ldb+p0, q.ldb, depth, cols, kern.nr, kern.vecPack)
	} else {
		packAlong(dst, q.b, p0*q.ldb+j0, q.ldb, depth, cols, kern.nr, kern.vecPack)
	}
	return dst
}

// packB returns the block of op(B) at (p0, j0), packed into ws.b: packed now, or left from the
// worker's previous tile when that tile used the same block.
func (ws *workspace[T]) packB(q *problem[T], kern microKernel[T], j0, cols, p0, depth int) []T {
	key := packedKey{valid: true, p0: p0, j0: j0, depth: depth, cols: cols}
	if ws.packedB == key {
		return ws.b[:roundUp(cols, kern.nr)*depth]
	}
	ws.packedB = key
	return q.packB(ws.b, kern, j0, cols, p0, depth)
}

// packAlong packs n x depth elements whose strips run along the stored rows: step p of the
// block is src[off+p*ld : off+p*ld+n], and strip s takes width elements of it. It walks the
// source row by row, so that reads are contiguous, and writes each piece to its strip. With vec
// a vector routine copies the full strips where one applies.
func packAlong[T Float](dst, src []T, off, ld, depth, n, width int, vec bool) {
	full := n / width
	if !(vec && copyStripsVec(dst, src, off, ld, depth, full, width)) {
		for p := range depth {
			row := src[off+p*ld : off+p*ld+full*width]
			for s := range full {
				copy(dst[(s*depth+p)*width:][:width], row[s*width:(s+1)*width])
			}
		}
	}
	if w := n - full*width; w > 0 {
		strip := dst[full*width*depth : (full+1)*width*depth]
		clear(strip)
		for p := range depth {
			copy(strip[p*width:p*width+w], src[off+p*ld+full*width:][:w])
		}
	}
}

// packAcross packs n x depth elements whose strips run across the stored rows: element i of
// step p is src[off+i*ld+p], and strip s takes elements s*width to (s+1)*width. A strip is
// a transpose of width stored rows; with vec a vector routine transposes them where one
// applies, and the loop below packs the rest. Its stores are strided, but a strip is small
// enough to stay in L1.
func packAcross[T Float](dst, src []T, off, ld, depth, n, width int, vec bool) {
	for s := range ceilDiv(n, width) {
		strip := dst[s*width*depth : (s+1)*width*depth]
		w := min(width, n-s*width)
		if w < width {
			clear(strip)
		}
		first := off + s*width*ld
		i := 0
		if vec {
			i = transposeVec(strip, src, first, ld, depth, w, width)
		}
		for ; i < w; i++ {
			for p, v := range src[first+i*ld : first+i*ld+depth] {
				strip[p*width+i] = v
			}
		}
	}
}
