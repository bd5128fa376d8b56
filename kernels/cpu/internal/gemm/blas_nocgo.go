//go:build !cgo

package gemm

import "errors"

// Without cgo herd cannot dlopen a BLAS library: Load fails with ErrUnavailable and Gemm runs
// the pure Go path. See blas_cgo.go for the binding.

const haveCgo = false

func open(path string) (*Lib, error) {
	return nil, errors.New("herd was built without cgo")
}

// blasGemm is never reached: without cgo no *Lib comes out of Load, and Gemm rejects others.
func blasGemm[T Float](l *Lib, q *problem[T]) {
	panic("gemm: BLAS call in a build without cgo")
}
