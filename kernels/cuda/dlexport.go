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

// OpenLibrary loads the first of sonames found by package cudalib's search: the file named by
// the environment variable env (a path or a soname) alone when it is set; otherwise each
// soname in $HERD_CUDA_LIBDIR, $CUDA_HOME, the CUDA toolkits, the system's library directories
// and the nvidia packages of Python environments, then through the dynamic loader's own
// search. The error wraps ErrLibraryNotFound and lists every place tried.
func OpenLibrary(env string, sonames []string) (*Library, error) {
	l, err := openLibrary(env, sonames)
	if err != nil {
		return nil, err
	}
	return &Library{l: l}, nil
}

// Path returns the file the library was loaded from.
func (l *Library) Path() string { return l.l.path }

// Sym returns the address of the named symbol.
func (l *Library) Sym(name string) (unsafe.Pointer, error) { return l.l.sym(name) }
