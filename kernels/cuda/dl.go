//go:build cuda

package cuda

import (
	"unsafe"

	"github.com/herd-llm/herd/kernels/cuda/cudalib"
)

// ErrLibraryNotFound is returned when a CUDA library cannot be loaded from any place searched.
var ErrLibraryNotFound = cudalib.ErrNotFound

// library is a shared library opened with dlopen (see package cudalib for where it is looked
// for). It is never closed: function pointers taken from it live as long as the process.
type library struct {
	path string // the file the loader mapped
	lib  *cudalib.Library
}

// openLibrary loads the first of sonames that cudalib's search finds: the file named by the
// environment variable env alone when it is set; otherwise $HERD_CUDA_LIBDIR, $CUDA_HOME, the
// CUDA toolkits under /usr/local, the system's library directories and the nvidia packages of
// Python environments, then the loader's own search.
func openLibrary(env string, sonames []string) (*library, error) {
	l, err := cudalib.Open(env, sonames)
	if err != nil {
		return nil, err
	}
	return &library{path: l.RealPath(), lib: l}, nil
}

// sym returns the address of the named function.
func (l *library) sym(name string) (unsafe.Pointer, error) { return l.lib.Sym(name) }

// syms resolves each name into the pointer it maps to and stops at the first missing one.
func (l *library) syms(table map[string]*unsafe.Pointer) error {
	for name, dst := range table {
		p, err := l.sym(name)
		if err != nil {
			return err
		}
		*dst = p
	}
	return nil
}
