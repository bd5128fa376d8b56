// Package cuda is the CUDA runtime layer of herd: one goroutine per device that owns the CUDA
// context, a caching device allocator, run-time kernel compilation through NVRTC, and row-major
// GEMM through cuBLASLt. What touches CUDA sits behind the build tag cuda, so the default build
// needs neither cgo nor CUDA; the pure-Go parts are untagged and tested everywhere: the
// backend's ops over a device interface (core.go, attnlaunch.go), code kinds and the cache key
// (code.go), size classes and the allocator's block cache.
//
// # Building
//
// The driver API comes from gorgonia.org/cu, which must be compiled against CUDA 11.8 to 12.x
// headers (it does not compile against CUDA 13 headers, where cuda.h maps cuCtxCreate to
// cuCtxCreate_v4); the resulting binary runs on newer drivers (verified on a CUDA 13 driver).
// On Debian 12 the packages nvidia-cuda-dev and nvidia-cuda-toolkit (non-free) provide the
// headers in /usr/include and, through Debian's driver packages, libcuda.so in
// /usr/lib/x86_64-linux-gnu, which is on gorgonia.org/cu's default link path, so no extra flags
// are needed:
//
//	go build -tags cuda ./kernels/cuda/...
//	go test -c -tags cuda -o .dev/kernels-cuda.test ./kernels/cuda
//
// Where no libcuda.so is on the link path, link against the stub that nvidia-cuda-dev installs;
// the GPU machine's own libcuda.so.1 is used at run time:
//
//	CGO_LDFLAGS=-L/usr/lib/x86_64-linux-gnu/stubs go build -tags cuda ./kernels/cuda/...
//
// NVRTC and cuBLASLt are not linked: they are loaded with dlopen at run time, as package
// cudalib finds them (HERD_NVRTC and HERD_CUBLASLT name them explicitly; HERD_CUDA_LIBDIR adds
// directories; the nvidia packages of Python environments are searched too), so one binary
// serves CUDA 11, 12 and 13 installations. Kernels are compiled to cubins for the device's
// architecture, or to PTX (HERD_CUDA_CODE).
//
// # Testing without a GPU
//
// The ops of the backend live in core.go, untagged, over a device interface. The tests of
// emu_test.go run them on kernels/cuda/emu, which compiles the kernel sources with g++ and runs
// them on the CPU, so that `go test ./kernels/cuda` checks every kernel's indexing, barriers and
// tensor-core fragments against the float64 reference on any machine with g++.
//
// Importing gorgonia.org/cu runs cuInit at program start and exits the process (status 1,
// "NoDevice") when it fails, so a cuda-tagged binary, tests included, cannot start on a machine
// without a CUDA driver or without a device; the tests' skip covers only a driver that
// initializes but lists no device.
package cuda
