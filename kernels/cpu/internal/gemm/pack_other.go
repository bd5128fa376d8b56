//go:build !amd64 || purego

package gemm

// Without the assembly routines, packing runs the Go loops of pack.go alone; no kernel sets
// vecPack on these builds.

func transposeVec[T Float](strip, src []T, off, ld, depth, w, width int) int { return 0 }

func copyStripsVec[T Float](dst, src []T, off, ld, depth, strips, width int) bool { return false }
