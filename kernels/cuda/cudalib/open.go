package cudalib

import (
	"errors"
	"fmt"
	"strings"
	"unsafe"
)

// ErrNotFound is returned when a library cannot be loaded from any place searched.
var ErrNotFound = errors.New("cuda: library not found")

// Library is a shared library opened with dlopen. It is never closed: function pointers taken
// from it live as long as the process.
type Library struct {
	path   string
	handle unsafe.Pointer
}

// Path returns the path (or soname) the library was opened by.
func (l *Library) Path() string { return l.path }

// RealPath returns the file the dynamic loader mapped for the library (symbolic links resolved
// by the loader's own record), or Path when the loader does not say.
func (l *Library) RealPath() string {
	if p := loadedPath(l.handle); p != "" {
		return p
	}
	return l.path
}

// Open loads the first of Candidates(envVar, sonames) that dlopen accepts. The error wraps
// ErrNotFound and lists every place tried with dlopen's reason.
func (e Env) Open(envVar string, sonames []string) (*Library, error) {
	cands := e.Candidates(envVar, sonames)
	var tried []string
	for _, p := range cands {
		h, err := dlopen(p, false)
		if err == nil {
			return &Library{path: p, handle: h}, nil
		}
		tried = append(tried, err.Error())
	}
	hint := fmt.Sprintf("set %s to its path, or HERD_CUDA_LIBDIR to its directory", envVar)
	return nil, fmt.Errorf("%w: %s (%s); tried: %s", ErrNotFound, sonames[0], hint, strings.Join(tried, "; "))
}

// Open is Env{}.Open: the search over the real environment.
func Open(envVar string, sonames []string) (*Library, error) { return Env{}.Open(envVar, sonames) }

// Sym returns the address of the named symbol.
func (l *Library) Sym(name string) (unsafe.Pointer, error) {
	p, err := dlsym(l.handle, name)
	if err != nil {
		return nil, fmt.Errorf("cuda: %s: symbol %s: %w", l.path, name, err)
	}
	return p, nil
}
