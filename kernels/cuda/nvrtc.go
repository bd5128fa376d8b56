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
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"github.com/herd-llm/herd/kernels/cuda/cudalib"
)

// ErrCompile is wrapped by every error of NVRTC.Compile that comes from NVRTC itself.
var ErrCompile = errors.New("cuda: nvrtc compile failed")

// nvrtcBuiltinFailure is NVRTC_ERROR_BUILTIN_OPERATION_FAILURE, what every compilation returns
// when NVRTC cannot open its libnvrtc-builtins.
const nvrtcBuiltinFailure = 7

// NVRTC compiles CUDA C++ at run time, to a cubin for a real architecture (sm_XY) or to PTX
// for a virtual one (compute_XY). libnvrtc is loaded with dlopen (see LoadNVRTC), so the binary
// does not depend on its soname. Compiled code is cached on disk. An NVRTC is safe for
// concurrent use; it needs no device.
type NVRTC struct {
	lib          *library
	major, minor int
	builtins     cudalib.Builtins

	// CacheDir holds compiled code, one file per sha256(source, code kind, arch, options, NVRTC
	// version), named with the kind as extension (.cubin, .ptx). LoadNVRTC sets it to
	// $XDG_CACHE_HOME/herd/nvrtc (os.UserCacheDir); empty disables the cache.
	CacheDir string

	version, create, compile, ptxSize, ptx, logSize, log, destroy unsafe.Pointer
	cubinSize, cubin                                              unsafe.Pointer // NVRTC 11.1 and later
	errorString                                                   unsafe.Pointer // optional
}

// LoadNVRTC loads libnvrtc as package cudalib finds it ($HERD_NVRTC alone when set; else
// libnvrtc.so.13, .12, .11.2 or .so from $HERD_CUDA_LIBDIR, $CUDA_HOME, the CUDA toolkits,
// the system's library directories, the nvidia packages of Python environments, or the
// loader's path), and makes sure that the libnvrtc-builtins of the same version can be loaded
// (see cudalib.EnsureNVRTCBuiltins): without it every compilation would fail.
func LoadNVRTC() (*NVRTC, error) {
	lib, err := openLibrary(cudalib.NVRTC.Env, cudalib.NVRTC.Sonames)
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
	n.cubinSize, _ = lib.sym("nvrtcGetCUBINSize")
	n.cubin, _ = lib.sym("nvrtcGetCUBIN")
	var major, minor C.int
	if err := n.check("nvrtcVersion", C.herd_nvrtcVersion(n.version, &major, &minor)); err != nil {
		return nil, err
	}
	n.major, n.minor = int(major), int(minor)
	if n.builtins, err = (cudalib.Env{}).EnsureNVRTCBuiltins(lib.path, n.major, n.minor); err != nil {
		return nil, err
	}
	if dir, err := os.UserCacheDir(); err == nil {
		n.CacheDir = filepath.Join(dir, "herd", "nvrtc")
	}
	return n, nil
}

// Version returns NVRTC's version, e.g. 13 and 0.
func (n *NVRTC) Version() (major, minor int) { return n.major, n.minor }

// Path returns the file libnvrtc was loaded from.
func (n *NVRTC) Path() string { return n.lib.path }

// Builtins says how libnvrtc-builtins was found: on the loader path, or loaded by LoadNVRTC
// from beside NVRTC (then its Advice names the LD_LIBRARY_PATH that would find it).
func (n *NVRTC) Builtins() cudalib.Builtins { return n.builtins }

func (n *NVRTC) check(what string, r C.int) error {
	if r == 0 {
		return nil
	}
	return fmt.Errorf("cuda: %s: %s (%d)", what, C.GoString(C.herd_nvrtcGetErrorString(n.errorString, r)), int(r))
}

// Compile compiles the CUDA C++ source src (name is used in diagnostics) for the architecture
// arch with the extra NVRTC options opts. For a real architecture (sm_80, sm_90, sm_90a) it
// returns the cubin, machine code the driver loads as it is; for a virtual one (compute_80,
// compute_90) the PTX without its terminating NUL, which the driver JIT-compiles. A failed
// compilation returns an error that wraps ErrCompile and holds NVRTC's log. Kernels meant to
// be found by name should be extern "C".
func (n *NVRTC) Compile(src, name, arch string, opts []string) ([]byte, error) {
	code := codeOfArch(arch)
	key := n.cacheKey(src, code, arch, opts)
	if img, ok := n.cached(key, code); ok {
		return img, nil
	}
	img, err := n.compileUncached(src, name, code, arch, opts)
	if err != nil {
		return nil, err
	}
	n.store(key, code, img) // a failed write only costs a recompilation next time
	return img, nil
}

func (n *NVRTC) compileUncached(src, name string, code Code, arch string, opts []string) ([]byte, error) {
	if code == CodeCubin && (n.cubinSize == nil || n.cubin == nil) {
		return nil, fmt.Errorf("%w: %s for %s: NVRTC %d.%d (%s) has no nvrtcGetCUBIN (NVRTC 11.1 or later has)",
			ErrCompile, name, arch, n.major, n.minor, n.lib.path)
	}
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
		hint := ""
		if r == nvrtcBuiltinFailure {
			hint = fmt.Sprintf(" (NVRTC could not load libnvrtc-builtins.so.%d.%d: put its directory on LD_LIBRARY_PATH before starting the process)", n.major, n.minor)
		}
		return nil, fmt.Errorf("%w: %s for %s with %q: %s%s\n%s", ErrCompile, name, arch, opts,
			C.GoString(C.herd_nvrtcGetErrorString(n.errorString, r)), hint, n.programText(prog, n.logSize, n.log))
	}
	sizeFn, getFn, what := n.ptxSize, n.ptx, "nvrtcGetPTX"
	if code == CodeCubin {
		sizeFn, getFn, what = n.cubinSize, n.cubin, "nvrtcGetCUBIN"
	}
	var size C.size_t
	if err := n.check(what+"Size", C.herd_nvrtcGetSize(sizeFn, prog, &size)); err != nil {
		return nil, err
	}
	buf := C.malloc(size + 1)
	defer C.free(buf)
	if err := n.check(what, C.herd_nvrtcGetText(getFn, prog, (*C.char)(buf))); err != nil {
		return nil, err
	}
	img := C.GoBytes(buf, C.int(size))
	if code == CodePTX {
		img = bytes.TrimRight(img, "\x00")
	}
	if len(img) == 0 {
		return nil, fmt.Errorf("%w: %s for %s: %s returned nothing", ErrCompile, name, arch, what)
	}
	return img, nil
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

func (n *NVRTC) cacheKey(src string, code Code, arch string, opts []string) string {
	return codeCacheKey(n.major, n.minor, code, arch, opts, src)
}

func (n *NVRTC) cached(key string, code Code) ([]byte, bool) {
	if n.CacheDir == "" {
		return nil, false
	}
	img, err := os.ReadFile(filepath.Join(n.CacheDir, key+"."+string(code)))
	return img, err == nil && len(img) > 0
}

// store writes the code atomically: a temporary file in the same directory, renamed into place,
// so a concurrent reader sees either nothing or the whole file.
func (n *NVRTC) store(key string, code Code, img []byte) error {
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
	_, werr := f.Write(img)
	cerr := f.Close()
	if err = errors.Join(werr, cerr); err == nil {
		err = os.Rename(f.Name(), filepath.Join(n.CacheDir, key+"."+string(code)))
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}
