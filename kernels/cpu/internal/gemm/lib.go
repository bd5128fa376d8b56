package gemm

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"unsafe"
)

// ErrUnavailable reports that no usable CBLAS library could be opened. Errors from Load and
// Default wrap it.
var ErrUnavailable = errors.New("gemm: BLAS library unavailable")

// defaultNames are the libraries Load("") tries, in order: OpenBLAS first, then whatever the
// system's libblas alternative points at.
var defaultNames = []string{"libopenblas.so.0", "libopenblas.so", "libblas.so.3", "libcblas.so.3"}

// Lib is a CBLAS library opened at run time. A nil *Lib tells Gemm to use the pure Go path.
// A Lib is safe for concurrent use if the library is (OpenBLAS is).
type Lib struct {
	path  string
	sgemm unsafe.Pointer // cblas_sgemm, as resolved by dlsym
	dgemm unsafe.Pointer // cblas_dgemm
}

// Path returns the file the library was opened from, as the dynamic loader names it.
func (l *Lib) Path() string { return l.path }

// libs caches what Load found for each path. A dlopen'd library lives for the whole process, so
// each path is opened at most once, whatever the number of Load calls.
var libs = struct {
	sync.Mutex
	byPath map[string]loaded
}{byPath: map[string]loaded{}}

type loaded struct {
	lib *Lib
	err error
}

// Load opens the CBLAS library at path (a file name the dynamic loader searches for, or a path)
// and checks that it exports cblas_sgemm and cblas_dgemm. With path "" it tries
// libopenblas.so.0, libopenblas.so, libblas.so.3 and libcblas.so.3 in turn and returns the first
// that works. The result, success or failure, is cached per path.
func Load(path string) (*Lib, error) {
	if !haveCgo {
		return nil, fmt.Errorf("%w: herd was built without cgo, so it cannot dlopen a library", ErrUnavailable)
	}
	if path != "" {
		return loadCached(path)
	}
	var tried []string
	for _, name := range defaultNames {
		l, err := loadCached(name)
		if err == nil {
			return l, nil
		}
		tried = append(tried, strings.TrimPrefix(err.Error(), ErrUnavailable.Error()+": "))
	}
	return nil, fmt.Errorf("%w: none of the default libraries opened: %s", ErrUnavailable, strings.Join(tried, "; "))
}

func loadCached(path string) (*Lib, error) {
	libs.Lock()
	defer libs.Unlock()
	r, ok := libs.byPath[path]
	if !ok {
		quietThreads()
		r.lib, r.err = open(path)
		if r.err != nil {
			r.err = fmt.Errorf("%w: %s", ErrUnavailable, r.err)
		}
		libs.byPath[path] = r
	}
	return r.lib, r.err
}

// Default returns the library herd uses unless told otherwise, as set by the environment:
//
//	HERD_BLAS=off        no library: (nil, nil), Gemm runs the pure Go path
//	HERD_BLAS_LIB=/path  exactly that library; an error if it cannot be used
//	neither              Load(""); (nil, err) when none of the default names opens
//
// Callers that prefer the pure Go path to failing may log the error and go on with the nil Lib.
func Default() (*Lib, error) {
	switch v := os.Getenv("HERD_BLAS"); v {
	case "off":
		return nil, nil
	case "", "on":
	default:
		return nil, fmt.Errorf("gemm: HERD_BLAS=%q, want \"on\", \"off\" or unset", v)
	}
	return Load(os.Getenv("HERD_BLAS_LIB"))
}

// threadTimeout is what quietThreads sets OPENBLAS_THREAD_TIMEOUT to: OpenBLAS worker threads
// spin for 2^4 cycles after a multiply instead of the default 2^28 before they sleep. The
// step loop runs Go ops between matmuls, and spinning threads would take those cores from
// them; measured on the 125m training step (2-core x86 VM): 118 GFLOP/s with the default,
// 125 with this setting.
const threadTimeout = "4"

// quietThreads sets OPENBLAS_THREAD_TIMEOUT before the library is opened (OpenBLAS reads it
// once, at load time), unless the environment already sets it.
func quietThreads() {
	if _, ok := os.LookupEnv("OPENBLAS_THREAD_TIMEOUT"); !ok {
		os.Setenv("OPENBLAS_THREAD_TIMEOUT", threadTimeout)
	}
}
