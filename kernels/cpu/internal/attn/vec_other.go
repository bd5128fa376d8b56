//go:build !amd64 || purego

package attn

// Without the assembly row loops every row takes the Go loops: vectorRows is false, and each
// vector function does nothing and says so.

func vectorRows[T Float](D int) bool { return false }

func dotsVec[T Float](dst, x, rows []T, stride int, scale T) int { return 0 }

func mulAddVec[T Float](y, w []T, ws int, rows []T, stride, count int) bool { return false }

func expShiftVec[T Float](p []T, shift T) int { return 0 }
