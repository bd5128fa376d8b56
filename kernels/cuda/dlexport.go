//go:build cuda

package cuda

import "unsafe"

// Library is a shared library opened with dlopen, for packages outside this one that load a
// CUDA-related library (collective/nccl loads libnccl) the same way this package loads NVRTC
// and cuBLASLt. It is never closed: function pointers taken from it live as long as the
// process.
type Library struct {
	l *library
}

// OpenLibrary loads the first of sonames found: the file named by the environment variable env
// (a path or a soname), then each soname in the directories searched for NVRTC and cuBLASLt
// (CUDA_HOME/lib64, /usr/local/cuda/lib64, /usr/local/cuda/targets/x86_64-linux/lib,
// /usr/lib/x86_64-linux-gnu), then each bare soname through the dynamic loader's own search.
// The error wraps ErrLibraryNotFound and lists every place tried.
func OpenLibrary(env string, sonames []string) (*Library, error) {
	l, err := openLibrary(env, sonames)
	if err != nil {
		return nil, err
	}
	return &Library{l: l}, nil
}

// Path returns the path (or soname) the library was loaded from.
func (l *Library) Path() string { return l.l.path }

// Sym returns the address of the named symbol.
func (l *Library) Sym(name string) (unsafe.Pointer, error) { return l.l.sym(name) }
