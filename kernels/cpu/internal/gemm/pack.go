package gemm

// Packing copies a block of op(A) or op(B) into the order the micro-kernel reads it, so that
// the kernel walks both operands with unit stride whatever the transposes are.
//
// A block of op(A) of rows x depth is stored as strips of mr rows; strip s holds element (i, p)
// of the strip at s*mr*depth + p*mr + i. A block of op(B) of depth x cols is stored as strips
// of nr columns; strip t holds element (p, j) of the strip at t*nr*depth + p*nr + j. The kernel
// always runs on full strips and drops the results that fall outside C, so rows and columns past
// the edge of the block only need harmless values: they are zeroed rather than left holding
// whatever an earlier block put there.

// packA packs rows x depth of op(A), starting at (i0, p0), into dst and returns the used part.
func (q *problem[T]) packA(dst []T, i0, rows, p0, depth int) []T {
	strips := ceilDiv(rows, mr)
	dst = dst[:strips*mr*depth]
	for s := range strips {
		strip := dst[s*mr*depth : (s+1)*mr*depth]
		h := min(mr, rows-s*mr)
		if h < mr {
			clear(strip)
		}
		if q.transA {
			packRows(strip, q.a, p0*q.lda+i0+s*mr, q.lda, depth, h, mr)
		} else {
			packCols(strip, q.a, (i0+s*mr)*q.lda+p0, q.lda, depth, h, mr)
		}
	}
	return dst
}

// packB packs depth x cols of op(B), starting at (p0, j0), into dst and returns the used part.
func (q *problem[T]) packB(dst []T, j0, cols, p0, depth int) []T {
	strips := ceilDiv(cols, nr)
	dst = dst[:strips*nr*depth]
	for t := range strips {
		strip := dst[t*nr*depth : (t+1)*nr*depth]
		w := min(nr, cols-t*nr)
		if w < nr {
			clear(strip)
		}
		if q.transB {
			packCols(strip, q.b, (j0+t*nr)*q.ldb+p0, q.ldb, depth, w, nr)
		} else {
			packRows(strip, q.b, p0*q.ldb+j0+t*nr, q.ldb, depth, w, nr)
		}
	}
	return dst
}

// packRows fills a strip of the given width from depth stored rows of w contiguous elements,
// src[off+p*ld : off+p*ld+w]: the case where the strip runs along the stored rows (op(A) with
// transA, op(B) without transB).
func packRows[T Float](strip, src []T, off, ld, depth, w, width int) {
	if w == width && width == mr {
		for p := range depth {
			*(*[mr]T)(strip[p*mr:]) = [mr]T(src[off+p*ld:])
		}
		return
	}
	if w == width && width == nr {
		for p := range depth {
			*(*[nr]T)(strip[p*nr:]) = [nr]T(src[off+p*ld:])
		}
		return
	}
	for p := range depth {
		copy(strip[p*width:p*width+w], src[off+p*ld:off+p*ld+w])
	}
}

// packCols fills a strip of the given width from w stored rows of depth contiguous elements,
// src[off+i*ld : off+i*ld+depth]: the case where the strip runs across the stored rows (op(A)
// without transA, op(B) with transB). Full strips read their rows side by side, so that the
// strip is written in order.
func packCols[T Float](strip, src []T, off, ld, depth, w, width int) {
	row := func(i int) []T { return src[off+i*ld : off+i*ld+depth] }
	switch {
	case w == width && width == mr:
		r0, r1, r2, r3 := row(0), row(1), row(2), row(3)
		for p := range r0 {
			*(*[mr]T)(strip[p*mr:]) = [mr]T{r0[p], r1[p], r2[p], r3[p]}
		}
	case w == width && width == nr:
		r0, r1, r2 := row(0), row(1), row(2)
		for p := range r0 {
			*(*[nr]T)(strip[p*nr:]) = [nr]T{r0[p], r1[p], r2[p]}
		}
	default:
		for i := range w {
			for p, v := range row(i) {
				strip[p*width+i] = v
			}
		}
	}
}
