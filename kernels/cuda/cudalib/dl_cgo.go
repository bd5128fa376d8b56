//go:build cgo

package cudalib

/*
#cgo LDFLAGS: -ldl
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <stdlib.h>
#include <stdint.h>
#include <stddef.h>

static void* herd_dlopen(const char* path, int global) {
	return dlopen(path, RTLD_NOW | (global ? RTLD_GLOBAL : RTLD_LOCAL));
}
static int herd_loaded(const char* path) { return dlopen(path, RTLD_NOW | RTLD_NOLOAD) != 0; }
static const char* herd_dlerror(void) { const char* e = dlerror(); return e ? e : "unknown dlopen error"; }
static void* herd_dlsym(void* h, const char* name) { dlerror(); return dlsym(h, name); }
static const char* herd_linkmap_name(void* h) {
	struct link_map* m = 0;
	if (dlinfo(h, RTLD_DI_LINKMAP, &m) != 0 || m == 0) return 0;
	return m->l_name;
}

// The version queries, each called through a pointer from dlsym.
static int herd_call_int2(void* f, int* a, int* b) { return ((int (*)(int*, int*))f)(a, b); }
static int herd_call_int1(void* f, int* a) { return ((int (*)(int*))f)(a); }
static size_t herd_call_size(void* f) { return ((size_t (*)(void))f)(); }
*/
import "C"

import (
	"errors"
	"unsafe"
)

func dlopen(path string, global bool) (unsafe.Pointer, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	g := C.int(0)
	if global {
		g = 1
	}
	h := C.herd_dlopen(cpath, g)
	if h == nil {
		return nil, errors.New("dlopen " + path + ": " + C.GoString(C.herd_dlerror()))
	}
	return h, nil
}

// loaded reports whether a library of that name (a path, or a soname the loader matches against
// the libraries already in the process) is loaded, without loading it.
func loaded(name string) bool {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	return C.herd_loaded(cname) != 0
}

func dlsym(h unsafe.Pointer, name string) (unsafe.Pointer, error) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	p := C.herd_dlsym(h, cname)
	if p == nil {
		return nil, errors.New(C.GoString(C.herd_dlerror()))
	}
	return p, nil
}

func loadedPath(h unsafe.Pointer) string {
	if h == nil {
		return ""
	}
	s := C.herd_linkmap_name(h)
	if s == nil {
		return ""
	}
	return C.GoString(s)
}

func callInt2(f unsafe.Pointer) (int, int, int) {
	var a, b C.int
	r := C.herd_call_int2(f, &a, &b)
	return int(r), int(a), int(b)
}

func callInt1(f unsafe.Pointer) (int, int) {
	var a C.int
	r := C.herd_call_int1(f, &a)
	return int(r), int(a)
}

func callSize(f unsafe.Pointer) uint64 { return uint64(C.herd_call_size(f)) }
