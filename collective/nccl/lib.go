//go:build cuda

package nccl

/*
#include <stdint.h>
#include <stddef.h>

// NCCL declared by hand from nccl.h (NCCL 2.10 and later; checked against 2.28), so that no NCCL
// headers are needed and libnccl is loaded with dlopen. ncclComm_t and cudaStream_t are opaque
// pointers; ncclResult_t, ncclDataType_t and ncclRedOp_t are int-sized enums.
#define HERD_NCCL_UNIQUE_ID_BYTES 128
typedef struct { char internal[HERD_NCCL_UNIQUE_ID_BYTES]; } herd_ncclUniqueId;
_Static_assert(sizeof(herd_ncclUniqueId) == 128, "ncclUniqueId is 128 bytes");

typedef int (*herd_ncclGetVersion_t)(int*);
typedef int (*herd_ncclGetUniqueId_t)(herd_ncclUniqueId*);
typedef int (*herd_ncclCommInitRank_t)(void**, int, herd_ncclUniqueId, int);
typedef int (*herd_ncclComm_t)(void*);
typedef int (*herd_ncclCommGetAsyncError_t)(void*, int*);
typedef const char* (*herd_ncclGetErrorString_t)(int);
typedef const char* (*herd_ncclGetLastError_t)(void*);
typedef int (*herd_ncclAllReduce_t)(const void*, void*, size_t, int, int, void*, void*);
typedef int (*herd_ncclReduceScatter_t)(const void*, void*, size_t, int, int, void*, void*);
typedef int (*herd_ncclAllGather_t)(const void*, void*, size_t, int, void*, void*);

static int herd_ncclGetVersion(void* f, int* v) { return ((herd_ncclGetVersion_t)f)(v); }
static int herd_ncclGetUniqueId(void* f, herd_ncclUniqueId* id) { return ((herd_ncclGetUniqueId_t)f)(id); }
static int herd_ncclCommInitRank(void* f, void** comm, int nranks, const herd_ncclUniqueId* id, int rank) {
	return ((herd_ncclCommInitRank_t)f)(comm, nranks, *id, rank);
}
// ncclCommDestroy and ncclCommAbort.
static int herd_ncclComm(void* f, void* comm) { return ((herd_ncclComm_t)f)(comm); }
static int herd_ncclCommGetAsyncError(void* f, void* comm, int* res) {
	return ((herd_ncclCommGetAsyncError_t)f)(comm, res);
}
static const char* herd_ncclGetErrorString(void* f, int res) {
	const char* s = ((herd_ncclGetErrorString_t)f)(res);
	return s ? s : "";
}
static const char* herd_ncclGetLastError(void* f, void* comm) {
	if (!f) return "";
	const char* s = ((herd_ncclGetLastError_t)f)(comm);
	return s ? s : "";
}
// Device pointers travel as uintptr_t so that Go never holds them as unsafe.Pointer.
static int herd_ncclAllReduce(void* f, uintptr_t send, uintptr_t recv, size_t count, int dtype, int op,
                              void* comm, void* stream) {
	return ((herd_ncclAllReduce_t)f)((const void*)send, (void*)recv, count, dtype, op, comm, stream);
}
static int herd_ncclReduceScatter(void* f, uintptr_t send, uintptr_t recv, size_t recvcount, int dtype,
                                  int op, void* comm, void* stream) {
	return ((herd_ncclReduceScatter_t)f)((const void*)send, (void*)recv, recvcount, dtype, op, comm, stream);
}
static int herd_ncclAllGather(void* f, uintptr_t send, uintptr_t recv, size_t sendcount, int dtype,
                              void* comm, void* stream) {
	return ((herd_ncclAllGather_t)f)((const void*)send, (void*)recv, sendcount, dtype, comm, stream);
}
*/
import "C"

import (
	"fmt"
	"sync"
	"unsafe"

	"github.com/herd-llm/herd/kernels/cuda"
	"github.com/herd-llm/herd/kernels/cuda/cudalib"
)

// ABI values from nccl.h (NCCL 2.10 and later; checked against NVIDIA/nccl src/nccl.h.in of the
// 2.28 series). They are part of NCCL's ABI and have not changed since they were introduced.
const (
	uniqueIDBytes = 128 // NCCL_UNIQUE_ID_BYTES

	ncclSuccess    = 0 // ncclResult_t
	ncclInProgress = 7

	ncclFloat32  = 7 // ncclDataType_t
	ncclBfloat16 = 9

	ncclSum = 0 // ncclRedOp_t
	ncclAvg = 4

	// minVersion is NCCL 2.10.0 (NCCL_VERSION(2,10,0) = 2*10000 + 10*100), the first with
	// ncclAvg and ncclBfloat16.
	minVersion = 21000
)

// resultNames are ncclResult_t's values, for messages when ncclGetErrorString is unhelpful.
var resultNames = map[int]string{
	0: "ncclSuccess", 1: "ncclUnhandledCudaError", 2: "ncclSystemError", 3: "ncclInternalError",
	4: "ncclInvalidArgument", 5: "ncclInvalidUsage", 6: "ncclRemoteError", 7: "ncclInProgress",
	8: "ncclTimeout",
}

// api is libnccl's entry points. ncclGetLastError (NCCL 2.13+) is optional: nil when missing.
type api struct {
	lib     *cuda.Library
	version int

	getVersion, getUniqueID, commInitRank, commDestroy, commAbort unsafe.Pointer
	commGetAsyncError, getErrorString, getLastError               unsafe.Pointer
	allReduce, reduceScatter, allGather                           unsafe.Pointer
}

var (
	loadOnce sync.Once
	loaded   *api
	loadErr  error
)

// load opens libnccl once per process and resolves the functions the package uses.
func load() (*api, error) {
	loadOnce.Do(func() { loaded, loadErr = loadAPI() })
	return loaded, loadErr
}

func loadAPI() (*api, error) {
	lib, err := cuda.OpenLibrary(cudalib.NCCL.Env, cudalib.NCCL.Sonames)
	if err != nil {
		return nil, fmt.Errorf("nccl: %w", err)
	}
	a := &api{lib: lib}
	for name, dst := range map[string]*unsafe.Pointer{
		"ncclGetVersion":        &a.getVersion,
		"ncclGetUniqueId":       &a.getUniqueID,
		"ncclCommInitRank":      &a.commInitRank,
		"ncclCommDestroy":       &a.commDestroy,
		"ncclCommAbort":         &a.commAbort,
		"ncclCommGetAsyncError": &a.commGetAsyncError,
		"ncclGetErrorString":    &a.getErrorString,
		"ncclAllReduce":         &a.allReduce,
		"ncclReduceScatter":     &a.reduceScatter,
		"ncclAllGather":         &a.allGather,
	} {
		p, err := lib.Sym(name)
		if err != nil {
			return nil, fmt.Errorf("nccl: %w", err)
		}
		*dst = p
	}
	if p, err := lib.Sym("ncclGetLastError"); err == nil {
		a.getLastError = p
	}
	var v C.int
	if err := a.check("ncclGetVersion", nil, C.herd_ncclGetVersion(a.getVersion, &v)); err != nil {
		return nil, err
	}
	a.version = int(v)
	if a.version < minVersion {
		return nil, fmt.Errorf("nccl: %s is NCCL %s, need 2.10 or later (ncclAvg, ncclBfloat16)",
			lib.Path(), VersionString(a.version))
	}
	return a, nil
}

// Version returns the version code of the NCCL library the process loads (for example 22809 for
// 2.28.9), loading it if needed.
func Version() (int, error) {
	a, err := load()
	if err != nil {
		return 0, err
	}
	return a.version, nil
}

// LibraryPath returns the path libnccl was loaded from, loading it if needed.
func LibraryPath() (string, error) {
	a, err := load()
	if err != nil {
		return "", err
	}
	return a.lib.Path(), nil
}

// VersionString formats an NCCL_VERSION_CODE: X*1000+Y*100+Z up to 2.8, X*10000+Y*100+Z after.
func VersionString(code int) string { return cudalib.FormatNCCLVersion(code) }

// Error is a failed NCCL call.
type Error struct {
	Func   string // the NCCL function, e.g. "ncclAllReduce"
	Result int    // its ncclResult_t
	Msg    string // ncclGetErrorString(Result)
	Detail string // ncclGetLastError, when the library has it and says something
}

func (e *Error) Error() string {
	name, ok := resultNames[e.Result]
	if !ok {
		name = "unknown ncclResult_t"
	}
	s := fmt.Sprintf("nccl: %s: %s (%s, %d)", e.Func, e.Msg, name, e.Result)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// check turns the result of the NCCL function fn into an error; comm (may be nil) is asked for
// its last error message.
func (a *api) check(fn string, comm unsafe.Pointer, res C.int) error {
	if res == ncclSuccess {
		return nil
	}
	e := &Error{Func: fn, Result: int(res)}
	if a.getErrorString != nil {
		e.Msg = C.GoString(C.herd_ncclGetErrorString(a.getErrorString, res))
	}
	if a.getLastError != nil {
		e.Detail = C.GoString(C.herd_ncclGetLastError(a.getLastError, comm))
	}
	return e
}

// The wrappers below call libnccl; each returns an *Error naming the function on failure. The
// ones that touch a communicator or the device run on the device thread (Device.Do), except
// where noted.

// uniqueID calls ncclGetUniqueId.
func (a *api) uniqueID() (id [uniqueIDBytes]byte, err error) {
	var cid C.herd_ncclUniqueId
	if err := a.check("ncclGetUniqueId", nil, C.herd_ncclGetUniqueId(a.getUniqueID, &cid)); err != nil {
		return id, err
	}
	copy(id[:], unsafe.Slice((*byte)(unsafe.Pointer(&cid)), uniqueIDBytes))
	return id, nil
}

// commInitRankFn calls ncclCommInitRank; it returns once all size ranks have called it.
func (a *api) commInitRankFn(size int, id [uniqueIDBytes]byte, rank int) (unsafe.Pointer, error) {
	var cid C.herd_ncclUniqueId
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&cid)), uniqueIDBytes), id[:])
	var comm unsafe.Pointer
	res := C.herd_ncclCommInitRank(a.commInitRank, &comm, C.int(size), &cid, C.int(rank))
	if err := a.check("ncclCommInitRank", nil, res); err != nil {
		return nil, err
	}
	return comm, nil
}

// destroy calls ncclCommDestroy.
func (a *api) destroy(comm unsafe.Pointer) error {
	return a.check("ncclCommDestroy", comm, C.herd_ncclComm(a.commDestroy, comm))
}

// abort calls ncclCommAbort. It is safe to call from any thread, also while another thread is
// blocked in NCCL or in a synchronization waiting for NCCL kernels: that is what it is for.
func (a *api) abort(comm unsafe.Pointer) error {
	return a.check("ncclCommAbort", comm, C.herd_ncclComm(a.commAbort, comm))
}

// asyncError calls ncclCommGetAsyncError and returns the communicator's asynchronous error
// (nil while it is healthy or an operation is still in progress).
func (a *api) asyncError(comm unsafe.Pointer) error {
	var res C.int
	if err := a.check("ncclCommGetAsyncError", comm, C.herd_ncclCommGetAsyncError(a.commGetAsyncError, comm, &res)); err != nil {
		return err
	}
	if res == ncclSuccess || res == ncclInProgress {
		return nil
	}
	return a.check("communicator (asynchronous error)", comm, res)
}

// allReduceFn calls ncclAllReduce.
func (a *api) allReduceFn(send, recv cuda.DevicePtr, count, dtype, op int, comm unsafe.Pointer, s cuda.Stream) error {
	res := C.herd_ncclAllReduce(a.allReduce, C.uintptr_t(send), C.uintptr_t(recv), C.size_t(count),
		C.int(dtype), C.int(op), comm, unsafe.Pointer(s.C()))
	return a.check("ncclAllReduce", comm, res)
}

// reduceScatterFn calls ncclReduceScatter.
func (a *api) reduceScatterFn(send, recv cuda.DevicePtr, recvCount, dtype, op int, comm unsafe.Pointer, s cuda.Stream) error {
	res := C.herd_ncclReduceScatter(a.reduceScatter, C.uintptr_t(send), C.uintptr_t(recv), C.size_t(recvCount),
		C.int(dtype), C.int(op), comm, unsafe.Pointer(s.C()))
	return a.check("ncclReduceScatter", comm, res)
}

// allGatherFn calls ncclAllGather.
func (a *api) allGatherFn(send, recv cuda.DevicePtr, sendCount, dtype int, comm unsafe.Pointer, s cuda.Stream) error {
	res := C.herd_ncclAllGather(a.allGather, C.uintptr_t(send), C.uintptr_t(recv), C.size_t(sendCount),
		C.int(dtype), comm, unsafe.Pointer(s.C()))
	return a.check("ncclAllGather", comm, res)
}
