//go:build cuda

package cuda

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>

static void* herd_dlopen(const char* path) { return dlopen(path, RTLD_NOW | RTLD_LOCAL); }
static const char* herd_dlerror(void) { const char* e = dlerror(); return e ? e : "unknown dlopen error"; }
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unsafe"
)

// ErrLibraryNotFound is returned when a CUDA library cannot be loaded from any place searched.
var ErrLibraryNotFound = errors.New("cuda: library not found")

// libDirs are searched in order, after the path named by the library's environment variable.
// CUDA_HOME/lib64 is added at run time; a bare soname last lets the dynamic loader use
// LD_LIBRARY_PATH and its cache.
var libDirs = []string{
	"/usr/local/cuda/lib64",
	"/usr/local/cuda/targets/x86_64-linux/lib",
	"/usr/lib/x86_64-linux-gnu",
}

// library is a shared library opened with dlopen. It is never closed: function pointers taken
// from it live as long as the process.
type library struct {
	path   string
	handle unsafe.Pointer
}

// openLibrary loads the first of sonames found: first the file named by the environment
// variable env (a path or a soname), then each soname in each of libDirs and CUDA_HOME/lib64,
// then each bare soname through the loader's own search.
func openLibrary(env string, sonames []string) (*library, error) {
	var candidates []string
	if p := os.Getenv(env); p != "" {
		candidates = append(candidates, p)
	}
	dirs := libDirs
	if home := os.Getenv("CUDA_HOME"); home != "" {
		dirs = append([]string{filepath.Join(home, "lib64")}, dirs...)
	}
	for _, name := range sonames {
		for _, dir := range dirs {
			candidates = append(candidates, filepath.Join(dir, name))
		}
	}
	candidates = append(candidates, sonames...)
	var tried []string
	for _, path := range candidates {
		if strings.Contains(path, "/") {
			if _, err := os.Stat(path); err != nil {
				continue
			}
		}
		h, err := dlopen(path)
		if err == nil {
			return &library{path: path, handle: h}, nil
		}
		tried = append(tried, err.Error())
	}
	return nil, fmt.Errorf("%w: %s (set %s to its path); tried %s; errors: %s",
		ErrLibraryNotFound, sonames[0], env, strings.Join(candidates, ", "), strings.Join(tried, "; "))
}

func dlopen(path string) (unsafe.Pointer, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	h := C.herd_dlopen(cpath)
	if h == nil {
		return nil, fmt.Errorf("dlopen %s: %s", path, C.GoString(C.herd_dlerror()))
	}
	return h, nil
}

// sym returns the address of the named function.
func (l *library) sym(name string) (unsafe.Pointer, error) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	C.dlerror()
	p := C.dlsym(l.handle, cname)
	if p == nil {
		return nil, fmt.Errorf("cuda: %s: symbol %s: %s", l.path, name, C.GoString(C.herd_dlerror()))
	}
	return p, nil
}

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
