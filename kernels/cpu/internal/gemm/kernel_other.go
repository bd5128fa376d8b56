//go:build !amd64 || purego

package gemm

// archKernels returns no kernels: this architecture, or a build with the purego tag, runs the
// portable kernel only.
func archKernels[T Float]() []microKernel[T] { return nil }
