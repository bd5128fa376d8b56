//go:build cuda

package cuda

/*
#include <stdlib.h>
#include <stddef.h>

// NVRTC declared by hand from nvrtc.h so that no NVRTC headers are needed: nvrtcResult is an
// enum (int), nvrtcProgram an opaque pointer. The functions are called through pointers
// obtained with dlsym.
typedef int herd_nvrtcResult;
typedef void* herd_nvrtcProgram;

typedef herd_nvrtcResult (*herd_nvrtcVersion_t)(int*, int*);
typedef herd_nvrtcResult (*herd_nvrtcCreateProgram_t)(herd_nvrtcProgram*, const char*, const char*, int,
                                                      const char* const*, const char* const*);
typedef herd_nvrtcResult (*herd_nvrtcCompileProgram_t)(herd_nvrtcProgram, int, const char* const*);
typedef herd_nvrtcResult (*herd_nvrtcGetSize_t)(herd_nvrtcProgram, size_t*);
typedef herd_nvrtcResult (*herd_nvrtcGetText_t)(herd_nvrtcProgram, char*);
typedef herd_nvrtcResult (*herd_nvrtcDestroyProgram_t)(herd_nvrtcProgram*);
typedef const char* (*herd_nvrtcGetErrorString_t)(herd_nvrtcResult);

static int herd_nvrtcVersion(void* f, int* major, int* minor) {
	return ((herd_nvrtcVersion_t)f)(major, minor);
}
static int herd_nvrtcCreateProgram(void* f, herd_nvrtcProgram* prog, const char* src, const char* name) {
	return ((herd_nvrtcCreateProgram_t)f)(prog, src, name, 0, NULL, NULL);
}
static int herd_nvrtcCompileProgram(void* f, herd_nvrtcProgram prog, int n, char** opts) {
	return ((herd_nvrtcCompileProgram_t)f)(prog, n, (const char* const*)opts);
}
static int herd_nvrtcGetSize(void* f, herd_nvrtcProgram prog, size_t* size) {
	return ((herd_nvrtcGetSize_t)f)(prog, size);
}
static int herd_nvrtcGetText(void* f, herd_nvrtcProgram prog, char* out) {
	return ((herd_nvrtcGetText_t)f)(prog, out);
}
static int herd_nvrtcDestroyProgram(void* f, herd_nvrtcProgram* prog) {
	return ((herd_nvrtcDestroyProgram_t)f)(prog);
}
static const char* herd_nvrtcGetErrorString(void* f, int r) {
	return f ? ((herd_nvrtcGetErrorString_t)f)(r) : "unknown NVRTC error";
}
*/
import "C"

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unsafe"
)

// ErrCompile is wrapped by every error of NVRTC.Compile that comes from NVRTC itself.
var ErrCompile = errors.New("cuda: nvrtc compile failed")

// nvrtcSonames are tried in order: the newest NVRTC first.
var nvrtcSonames = []string{"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so"}

// NVRTC compiles CUDA C++ to PTX at run time. libnvrtc is loaded with dlopen (see LoadNVRTC),
// so the binary does not depend on its soname. Compiled PTX is cached on disk. An NVRTC is safe
// for concurrent use; it needs no device.
type NVRTC struct {
	lib          *library
	major, minor int

	// CacheDir holds compiled PTX, one file per sha256(source, arch, options, NVRTC version).
	// LoadNVRTC sets it to $XDG_CACHE_HOME/herd/ptx (os.UserCacheDir); empty disables the cache.
	CacheDir string

	version, create, compile, ptxSize, ptx, logSize, log, destroy unsafe.Pointer
	errorString                                                   unsafe.Pointer // optional
}

// LoadNVRTC loads libnvrtc: the path in $HERD_NVRTC, else libnvrtc.so.13, .12, .11.2 or .so
// from /usr/local/cuda/lib64, /usr/local/cuda/targets/x86_64-linux/lib, /usr/lib/x86_64-linux-gnu,
// $CUDA_HOME/lib64 or the loader's search path.
func LoadNVRTC() (*NVRTC, error) {
	lib, err := openLibrary("HERD_NVRTC", nvrtcSonames)
	if err != nil {
		return nil, err
	}
	n := &NVRTC{lib: lib}
	err = lib.syms(map[string]*unsafe.Pointer{
		"nvrtcVersion":           &n.version,
		"nvrtcCreateProgram":     &n.create,
		"nvrtcCompileProgram":    &n.compile,
		"nvrtcGetPTXSize":        &n.ptxSize,
		"nvrtcGetPTX":            &n.ptx,
		"nvrtcGetProgramLogSize": &n.logSize,
		"nvrtcGetProgramLog":     &n.log,
		"nvrtcDestroyProgram":    &n.destroy,
	})
	if err != nil {
		return nil, err
	}
	n.errorString, _ = lib.sym("nvrtcGetErrorString")
	var major, minor C.int
	if err := n.check("nvrtcVersion", C.herd_nvrtcVersion(n.version, &major, &minor)); err != nil {
		return nil, err
	}
	n.major, n.minor = int(major), int(minor)
	if dir, err := os.UserCacheDir(); err == nil {
		n.CacheDir = filepath.Join(dir, "herd", "ptx")
	}
	return n, nil
}

// Version returns NVRTC's version, e.g. 13 and 0.
func (n *NVRTC) Version() (major, minor int) { return n.major, n.minor }

// Path returns the file libnvrtc was loaded from.
func (n *NVRTC) Path() string { return n.lib.path }

func (n *NVRTC) check(what string, r C.int) error {
	if r == 0 {
		return nil
	}
	return fmt.Errorf("cuda: %s: %s (%d)", what, C.GoString(C.herd_nvrtcGetErrorString(n.errorString, r)), int(r))
}

// Compile compiles the CUDA C++ source src (name is used in diagnostics) for the virtual or
// real architecture arch, e.g. "compute_90" or "sm_90a", with the extra NVRTC options opts, and
// returns the PTX without its terminating NUL. A failed compilation returns an error that wraps
// ErrCompile and holds NVRTC's log. Kernels meant to be found by name should be extern "C".
func (n *NVRTC) Compile(src, name, arch string, opts []string) ([]byte, error) {
	key := n.cacheKey(src, arch, opts)
	if ptx, ok := n.cached(key); ok {
		return ptx, nil
	}
	ptx, err := n.compileUncached(src, name, arch, opts)
	if err != nil {
		return nil, err
	}
	n.store(key, ptx) // a failed write only costs a recompilation next time
	return ptx, nil
}

func (n *NVRTC) compileUncached(src, name, arch string, opts []string) ([]byte, error) {
	csrc, cname := C.CString(src), C.CString(name)
	defer C.free(unsafe.Pointer(csrc))
	defer C.free(unsafe.Pointer(cname))
	var prog C.herd_nvrtcProgram
	if err := n.check("nvrtcCreateProgram", C.herd_nvrtcCreateProgram(n.create, &prog, csrc, cname)); err != nil {
		return nil, err
	}
	defer C.herd_nvrtcDestroyProgram(n.destroy, &prog)

	all := append([]string{"--gpu-architecture=" + arch}, opts...)
	copts := cStrings(all)
	defer freeCStrings(copts, len(all))
	r := C.herd_nvrtcCompileProgram(n.compile, prog, C.int(len(all)), copts)
	if r != 0 {
		return nil, fmt.Errorf("%w: %s for %s with %q: %s\n%s", ErrCompile, name, arch, opts,
			C.GoString(C.herd_nvrtcGetErrorString(n.errorString, r)), n.programText(prog, n.logSize, n.log))
	}
	var size C.size_t
	if err := n.check("nvrtcGetPTXSize", C.herd_nvrtcGetSize(n.ptxSize, prog, &size)); err != nil {
		return nil, err
	}
	buf := C.malloc(size + 1)
	defer C.free(buf)
	if err := n.check("nvrtcGetPTX", C.herd_nvrtcGetText(n.ptx, prog, (*C.char)(buf))); err != nil {
		return nil, err
	}
	return bytes.TrimRight(C.GoBytes(buf, C.int(size)), "\x00"), nil
}

// programText reads the program's log (or another NUL-terminated text with the same getters).
func (n *NVRTC) programText(prog C.herd_nvrtcProgram, sizeFn, textFn unsafe.Pointer) string {
	var size C.size_t
	if C.herd_nvrtcGetSize(sizeFn, prog, &size) != 0 || size == 0 {
		return "(no log)"
	}
	buf := C.malloc(size + 1)
	defer C.free(buf)
	if C.herd_nvrtcGetText(textFn, prog, (*C.char)(buf)) != 0 {
		return "(log unavailable)"
	}
	return strings.TrimRight(C.GoString((*C.char)(buf)), "\x00\n")
}

// cStrings copies ss into a C array of C strings, which freeCStrings releases.
func cStrings(ss []string) **C.char {
	arr := (**C.char)(C.malloc(C.size_t(len(ss)) * C.size_t(unsafe.Sizeof((*C.char)(nil)))))
	view := unsafe.Slice(arr, len(ss))
	for i, s := range ss {
		view[i] = C.CString(s)
	}
	return arr
}

func freeCStrings(arr **C.char, n int) {
	for _, p := range unsafe.Slice(arr, n) {
		C.free(unsafe.Pointer(p))
	}
	C.free(unsafe.Pointer(arr))
}

// cacheKey hashes everything that determines the PTX. Fields are length-prefixed so that no two
// different inputs produce the same byte stream.
func (n *NVRTC) cacheKey(src, arch string, opts []string) string {
	h := sha256.New()
	field := func(s string) { fmt.Fprintf(h, "%d:%s;", len(s), s) }
	field(fmt.Sprintf("nvrtc %d.%d", n.major, n.minor))
	field(arch)
	for _, o := range opts {
		field(o)
	}
	field(src)
	return hex.EncodeToString(h.Sum(nil))
}

func (n *NVRTC) cached(key string) ([]byte, bool) {
	if n.CacheDir == "" {
		return nil, false
	}
	ptx, err := os.ReadFile(filepath.Join(n.CacheDir, key+".ptx"))
	return ptx, err == nil && len(ptx) > 0
}

// store writes the PTX atomically: a temporary file in the same directory, renamed into place,
// so a concurrent reader sees either nothing or the whole file.
func (n *NVRTC) store(key string, ptx []byte) error {
	if n.CacheDir == "" {
		return nil
	}
	if err := os.MkdirAll(n.CacheDir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(n.CacheDir, key+".*.tmp")
	if err != nil {
		return err
	}
	_, werr := f.Write(ptx)
	cerr := f.Close()
	if err = errors.Join(werr, cerr); err == nil {
		err = os.Rename(f.Name(), filepath.Join(n.CacheDir, key+".ptx"))
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}
