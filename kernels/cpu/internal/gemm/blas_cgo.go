//go:build cgo

package gemm

// The BLAS binding is a few lines of dlopen, written by hand rather than taken from a cgo BLAS
// package. Those packages include cblas.h and link -lopenblas, so building herd would need the
// BLAS headers and library installed, and the binary would not start on a machine without the
// library. Here nothing BLAS-specific is needed at build time (only libdl): the two function
// types are declared below, the library is looked up when Load runs, and a machine without it
// still runs herd on the pure Go path.

/*
#cgo LDFLAGS: -ldl
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// CBLAS enum values, fixed by the CBLAS standard.
enum { herdRowMajor = 101, herdNoTrans = 111, herdTrans = 112 };

typedef void (*herd_sgemm_fn)(int order, int transA, int transB, int m, int n, int k,
	float alpha, const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);
typedef void (*herd_dgemm_fn)(int order, int transA, int transB, int m, int n, int k,
	double alpha, const double *a, int lda, const double *b, int ldb, double beta, double *c, int ldc);

typedef struct {
	void *sgemm, *dgemm;
	char file[1024]; // the file the symbols were found in
	char err[512];   // set when sgemm is NULL
} herd_blas;

// herd_blas_open opens path and resolves the two functions. It reads dlerror in the same call
// as the dlopen that set it: dlerror state is per OS thread, and a goroutine may move between
// threads between two cgo calls.
static void herd_blas_open(const char *path, herd_blas *out) {
	void *h;
	Dl_info info;

	memset(out, 0, sizeof *out);
	h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		const char *e = dlerror();
		snprintf(out->err, sizeof out->err, "dlopen: %s", e != NULL ? e : "failed");
		return;
	}
	out->sgemm = dlsym(h, "cblas_sgemm");
	out->dgemm = dlsym(h, "cblas_dgemm");
	if (out->sgemm == NULL || out->dgemm == NULL) {
		snprintf(out->err, sizeof out->err, "does not export cblas_sgemm and cblas_dgemm");
		out->sgemm = out->dgemm = NULL;
		dlclose(h);
		return;
	}
	snprintf(out->file, sizeof out->file, "%s", path);
	if (dladdr(out->sgemm, &info) != 0 && info.dli_fname != NULL) {
		snprintf(out->file, sizeof out->file, "%s", info.dli_fname);
	}
}

static void herd_sgemm(void *fn, int transA, int transB, int m, int n, int k,
		float alpha, const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc) {
	((herd_sgemm_fn)fn)(herdRowMajor, transA ? herdTrans : herdNoTrans, transB ? herdTrans : herdNoTrans,
		m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

static void herd_dgemm(void *fn, int transA, int transB, int m, int n, int k,
		double alpha, const double *a, int lda, const double *b, int ldb, double beta, double *c, int ldc) {
	((herd_dgemm_fn)fn)(herdRowMajor, transA ? herdTrans : herdNoTrans, transB ? herdTrans : herdNoTrans,
		m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
*/
import "C"

import (
	"fmt"
	"unsafe"
)

const haveCgo = true

// open dlopens path and resolves cblas_sgemm and cblas_dgemm.
func open(path string) (*Lib, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var r C.herd_blas
	C.herd_blas_open(cpath, &r)
	if r.sgemm == nil {
		return nil, fmt.Errorf("%s: %s", path, C.GoString(&r.err[0]))
	}
	return &Lib{path: C.GoString(&r.file[0]), sgemm: r.sgemm, dgemm: r.dgemm}, nil
}

// blasGemm calls cblas_sgemm or cblas_dgemm. The arguments are checked and m, n, k > 0, so
// none of the slices is empty.
func blasGemm[T Float](l *Lib, q *problem[T]) {
	ta, tb := cBool(q.transA), cBool(q.transB)
	m, n, k, lda, ldb, ldc := C.int(q.m), C.int(q.n), C.int(q.k), C.int(q.lda), C.int(q.ldb), C.int(q.ldc)
	a, b, c := unsafe.Pointer(&q.a[0]), unsafe.Pointer(&q.b[0]), unsafe.Pointer(&q.c[0])
	if unsafe.Sizeof(q.alpha) == 4 {
		C.herd_sgemm(l.sgemm, ta, tb, m, n, k, C.float(q.alpha), (*C.float)(a), lda,
			(*C.float)(b), ldb, C.float(q.beta), (*C.float)(c), ldc)
		return
	}
	C.herd_dgemm(l.dgemm, ta, tb, m, n, k, C.double(q.alpha), (*C.double)(a), lda,
		(*C.double)(b), ldb, C.double(q.beta), (*C.double)(c), ldc)
}

func cBool(v bool) C.int {
	if v {
		return 1
	}
	return 0
}
