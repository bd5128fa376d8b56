//go:build cuda

package cuda

/*
#cgo LDFLAGS: -lcuda
#include <cuda.h>

static CUresult herd_memHostAlloc(void** p, size_t bytes) {
	return cuMemHostAlloc(p, bytes, CU_MEMHOSTALLOC_PORTABLE);
}
static const char* herd_cuErrorName(CUresult r) {
	const char* s = 0;
	if (cuGetErrorName(r, &s) != CUDA_SUCCESS || s == 0) return "unknown CUresult";
	return s;
}
*/
import "C"

import (
	"fmt"
	"unsafe"

	"gorgonia.org/cu"
)

// HostBuffer is page-locked (pinned) host memory from Device.AllocHost. The device's copy
// engines read and write it directly, so copies between it and device memory run at full
// PCIe/NVLink-C2C speed and may be asynchronous (CopyDtoHAsync, CopyHtoDAsync). It is
// allocated portable: pinned for every CUDA context of the process, not only the allocating
// device's. The zero HostBuffer is empty.
//
// Its memory is not managed by Go: views returned by Bytes and Float32s stay valid until
// FreeHost and must not be used after it. While an asynchronous copy that involves the buffer
// is pending on a stream, the host must neither read the copy's destination range nor write
// its source range; synchronize the stream (Device.SyncStream) or an event recorded after the
// copy first.
type HostBuffer struct {
	ptr   unsafe.Pointer
	bytes int64
}

// Len returns the buffer's size in bytes.
func (h HostBuffer) Len() int64 { return h.bytes }

// Ptr returns the buffer's address (nil for an empty buffer).
func (h HostBuffer) Ptr() unsafe.Pointer { return h.ptr }

// Bytes returns the whole buffer as a byte slice, without copying.
func (h HostBuffer) Bytes() []byte {
	if h.bytes == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(h.ptr), h.bytes)
}

// Float32s returns the buffer as float32 values, without copying: Len()/4 of them (a tail
// shorter than 4 bytes is left out). The memory from cuMemHostAlloc is at least page
// aligned, so the view is aligned.
func (h HostBuffer) Float32s() []float32 {
	if h.bytes < 4 {
		return nil
	}
	return unsafe.Slice((*float32)(h.ptr), h.bytes/4)
}

// AllocHost returns bytes bytes of page-locked host memory (cuMemHostAlloc with
// CU_MEMHOSTALLOC_PORTABLE), contents undefined. Pinning is expensive (the driver maps and
// locks the pages, and too much pinned memory starves the OS), so allocate once and reuse.
// AllocHost(0) returns the empty buffer. Free it with FreeHost.
func (d *Device) AllocHost(bytes int64) (HostBuffer, error) {
	if bytes < 0 {
		return HostBuffer{}, fmt.Errorf("cuda: AllocHost(%d): negative size", bytes)
	}
	if bytes == 0 {
		return HostBuffer{}, nil
	}
	var p unsafe.Pointer
	err := d.Do(func() error {
		res := C.herd_memHostAlloc(&p, C.size_t(bytes))
		switch res {
		case C.CUDA_SUCCESS:
			return nil
		case C.CUDA_ERROR_OUT_OF_MEMORY:
			return fmt.Errorf("cuda: cuMemHostAlloc(%d bytes): %w", bytes, cu.OutOfMemory)
		}
		return fmt.Errorf("cuda: cuMemHostAlloc(%d bytes): %s (%d)", bytes, C.GoString(C.herd_cuErrorName(res)), int(res))
	})
	if err != nil {
		return HostBuffer{}, err
	}
	return HostBuffer{ptr: p, bytes: bytes}, nil
}

// FreeHost releases a buffer from AllocHost; freeing the empty buffer does nothing. Copies
// that involve the buffer must have finished.
func (d *Device) FreeHost(h HostBuffer) error {
	if h.ptr == nil {
		return nil
	}
	return d.Do(func() error {
		if err := cu.MemFreeHost(h.ptr); err != nil {
			return fmt.Errorf("cuda: cuMemFreeHost: %w", err)
		}
		return nil
	})
}

// checkHostRange validates the byte range [off, off+bytes) of h.
func checkHostRange(what string, h HostBuffer, off, bytes int64) error {
	if h.ptr == nil && bytes > 0 {
		return fmt.Errorf("cuda: %s: empty host buffer", what)
	}
	if off < 0 || bytes < 0 || off > h.bytes || bytes > h.bytes-off {
		return fmt.Errorf("cuda: %s: range [%d, %d+%d) outside host buffer of %d bytes",
			what, off, off, bytes, h.bytes)
	}
	return nil
}

// CopyDtoHAsync enqueues on s a copy of bytes bytes from device memory at src into dst at
// byte offset off, and returns without waiting. The data is in dst once s has reached that
// point (Device.SyncStream, or an event recorded after the copy). A zero-byte copy does
// nothing.
func (d *Device) CopyDtoHAsync(dst HostBuffer, off int64, src DevicePtr, bytes int64, s Stream) error {
	if err := checkHostRange("CopyDtoHAsync", dst, off, bytes); err != nil {
		return err
	}
	if bytes == 0 {
		return nil
	}
	p := unsafe.Add(dst.ptr, off)
	return d.Do(func() error {
		if err := cu.MemcpyDtoHAsync(p, src, bytes, s); err != nil {
			return fmt.Errorf("cuda: cuMemcpyDtoHAsync(%d bytes): %w", bytes, err)
		}
		return nil
	})
}

// CopyHtoDAsync enqueues on s a copy of bytes bytes from src at byte offset off into device
// memory at dst, and returns without waiting. src's range must not be written until s has
// passed the copy. A zero-byte copy does nothing.
func (d *Device) CopyHtoDAsync(dst DevicePtr, src HostBuffer, off int64, bytes int64, s Stream) error {
	if err := checkHostRange("CopyHtoDAsync", src, off, bytes); err != nil {
		return err
	}
	if bytes == 0 {
		return nil
	}
	p := unsafe.Add(src.ptr, off)
	return d.Do(func() error {
		if err := cu.MemcpyHtoDAsync(dst, p, bytes, s); err != nil {
			return fmt.Errorf("cuda: cuMemcpyHtoDAsync(%d bytes): %w", bytes, err)
		}
		return nil
	})
}
