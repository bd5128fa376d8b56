//go:build !amd64 || purego

package cpu

// Without the assembly routines the softmax and SwiGLU run their Go loops alone: each vector
// function takes an empty prefix.

func maxVec[T Float](z []T) (float64, int) { return 0, 0 }

func sumExpVec[T Float](z []T, shift float64) (float64, int) { return 0, 0 }

func expScaleVec[T Float](dst, z []T, shift, scale float64) int { return 0 }

func swigluVec[T Float](out, a, b []T) int { return 0 }

func swigluBackwardVec[T Float](da, db, dout, a, b []T) int { return 0 }
