//go:build cuda

package cuda

import (
	"fmt"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"gorgonia.org/cu"
)

// DevicePtr is an address in device memory.
type DevicePtr = cu.DevicePtr

// Stream is a CUDA stream; the zero Stream is the legacy default stream.
type Stream = cu.Stream

// Event is a CUDA event.
type Event = cu.Event

// Device is one GPU with its CUDA context. CUDA contexts are bound to an OS thread, so a Device
// runs one goroutine, locked to its thread with the context current, and every CUDA call of the
// package goes through Do, which executes it there. A Device is safe for concurrent use.
type Device struct {
	ordinal  int
	dev      cu.Device
	ctx      cu.CUContext
	name     string
	major    int
	minor    int
	sms      int
	totalMem int64

	work chan func()
	quit chan struct{}
	// exited is closed when the device goroutine has returned.
	exited chan struct{}

	mu     sync.Mutex
	closed bool

	mem *Allocator
}

// Open starts the goroutine of device ordinal, makes the device's primary context current on
// its thread and reads the device's properties.
func Open(ordinal int) (*Device, error) {
	d := &Device{
		ordinal: ordinal,
		work:    make(chan func()),
		quit:    make(chan struct{}),
		exited:  make(chan struct{}),
	}
	ready := make(chan error, 1)
	go d.loop(ready)
	if err := <-ready; err != nil {
		return nil, fmt.Errorf("cuda: open device %d: %w", ordinal, err)
	}
	d.mem = newAllocator(d)
	return d, nil
}

// loop is the device goroutine: it never leaves its OS thread, so the context stays current.
// It returns, and the runtime ends the locked thread, after Close.
func (d *Device) loop(ready chan<- error) {
	runtime.LockOSThread()
	defer close(d.exited)
	if err := d.init(); err != nil {
		ready <- err
		return
	}
	ready <- nil
	for {
		select {
		case fn := <-d.work:
			fn()
		case <-d.quit:
			return
		}
	}
}

// init runs on the device thread.
func (d *Device) init() error {
	n, err := cu.NumDevices()
	if err != nil {
		return err
	}
	if d.ordinal < 0 || d.ordinal >= n {
		return fmt.Errorf("ordinal %d out of range [0, %d)", d.ordinal, n)
	}
	if d.dev, err = cu.GetDevice(d.ordinal); err != nil {
		return err
	}
	// The primary context is the one the CUDA runtime (and so cuBLASLt and NCCL) uses.
	if d.ctx, err = d.dev.RetainPrimaryCtx(); err != nil {
		return fmt.Errorf("retain primary context: %w", err)
	}
	if err = cu.SetCurrentContext(d.ctx); err != nil {
		_ = d.dev.ReleasePrimaryCtx()
		return fmt.Errorf("set current context: %w", err)
	}
	if err = d.readProperties(); err != nil {
		_ = d.dev.ReleasePrimaryCtx()
		return err
	}
	return nil
}

func (d *Device) readProperties() error {
	var err error
	if d.name, err = d.dev.Name(); err != nil {
		return fmt.Errorf("device name: %w", err)
	}
	if d.major, err = d.dev.Attribute(cu.ComputeCapabilityMajor); err != nil {
		return fmt.Errorf("compute capability: %w", err)
	}
	if d.minor, err = d.dev.Attribute(cu.ComputeCapabilityMinor); err != nil {
		return fmt.Errorf("compute capability: %w", err)
	}
	if d.sms, err = d.dev.Attribute(cu.MultiprocessorCount); err != nil {
		return fmt.Errorf("multiprocessor count: %w", err)
	}
	if d.totalMem, err = d.dev.TotalMem(); err != nil {
		return fmt.Errorf("total memory: %w", err)
	}
	return nil
}

// Do runs fn on the device thread, with the device's context current, and returns its error.
// fn must not call Do (nor any method that does): that would deadlock.
func (d *Device) Do(fn func() error) error {
	errc := make(chan error, 1)
	job := func() {
		defer func() {
			if r := recover(); r != nil {
				errc <- fmt.Errorf("cuda: panic on device thread: %v", r)
			}
		}()
		errc <- fn()
	}
	select {
	case d.work <- job:
		return <-errc
	case <-d.quit:
		return ErrClosed
	}
}

// Close frees the allocator's blocks, synchronizes the device, releases the primary context
// and ends the device goroutine. Blocks still live are lost with the context.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return ErrClosed
	}
	d.closed = true
	d.mu.Unlock()
	err := d.mem.Release()
	err2 := d.Do(func() error {
		if err := cu.Synchronize(); err != nil {
			return err
		}
		return d.dev.ReleasePrimaryCtx()
	})
	close(d.quit)
	<-d.exited
	if err == nil {
		err = err2
	}
	return err
}

// Ordinal returns the device's index.
func (d *Device) Ordinal() int { return d.ordinal }

// Name returns the device's name, e.g. "NVIDIA H200".
func (d *Device) Name() string { return d.name }

// ComputeCapability returns the major and minor compute capability, e.g. 9 and 0.
func (d *Device) ComputeCapability() (major, minor int) { return d.major, d.minor }

// SMs returns the number of streaming multiprocessors.
func (d *Device) SMs() int { return d.sms }

// TotalMem returns the device's memory in bytes.
func (d *Device) TotalMem() int64 { return d.totalMem }

// Allocator returns the device's caching allocator.
func (d *Device) Allocator() *Allocator { return d.mem }

// Synchronize waits until all work on the device has finished.
func (d *Device) Synchronize() error {
	return d.Do(cu.Synchronize)
}

// NewStream creates a stream that does not synchronize with the legacy default stream.
func (d *Device) NewStream() (Stream, error) {
	var s Stream
	err := d.Do(func() error {
		var err error
		s, err = cu.MakeStream(cu.NonBlocking)
		return err
	})
	return s, err
}

// DestroyStream destroys s once its pending work has finished.
func (d *Device) DestroyStream(s Stream) error {
	return d.Do(func() error { return s.Destroy() })
}

// SyncStream waits until all work on s has finished.
func (d *Device) SyncStream(s Stream) error {
	return d.Do(s.Synchronize)
}

// NewEvent creates an event that records timing.
func (d *Device) NewEvent() (Event, error) {
	var e Event
	err := d.Do(func() error {
		var err error
		e, err = cu.MakeEvent(cu.DefaultEvent)
		return err
	})
	return e, err
}

// DestroyEvent destroys e.
func (d *Device) DestroyEvent(e Event) error {
	return d.Do(func() error { return cu.DestroyEvent(&e) })
}

// Record records e on s.
func (d *Device) Record(e Event, s Stream) error {
	return d.Do(func() error { return e.Record(s) })
}

// StreamWait makes all work enqueued on s after this call wait until the work captured by the
// last Record of e has finished. The host does not wait.
func (d *Device) StreamWait(s Stream, e Event) error {
	return d.Do(func() error { return s.Wait(e, 0) })
}

// SyncEvent waits until the work captured by the last Record of e has finished.
func (d *Device) SyncEvent(e Event) error {
	return d.Do(e.Synchronize)
}

// Elapsed returns the time between two recorded events (resolution about 0.5 µs).
func (d *Device) Elapsed(start, end Event) (time.Duration, error) {
	var ms float64
	err := d.Do(func() error {
		var err error
		ms, err = start.Elapsed(end)
		return err
	})
	return time.Duration(ms * float64(time.Millisecond)), err
}

// hostElem are the element types that may be copied between host and device. They hold no Go
// pointers, so their slices may be passed to the driver.
type hostElem interface {
	~uint8 | ~uint16 | ~int32 | ~uint32 | ~int64 | ~uint64 | ~float32 | ~float64
}

// Upload copies src into device memory at dst and waits for the copy.
func Upload[T hostElem](d *Device, dst DevicePtr, src []T) error {
	if len(src) == 0 {
		return nil
	}
	n := int64(len(src)) * int64(unsafe.Sizeof(src[0]))
	return d.Do(func() error { return cu.MemcpyHtoD(dst, unsafe.Pointer(&src[0]), n) })
}

// Download copies device memory at src into dst and waits for the copy.
func Download[T hostElem](d *Device, dst []T, src DevicePtr) error {
	if len(dst) == 0 {
		return nil
	}
	n := int64(len(dst)) * int64(unsafe.Sizeof(dst[0]))
	return d.Do(func() error { return cu.MemcpyDtoH(unsafe.Pointer(&dst[0]), src, n) })
}

// Memset sets n bytes at dst to the byte value v.
func (d *Device) Memset(dst DevicePtr, v byte, n int64) error {
	return d.Do(func() error { return cu.MemsetD8(dst, v, n) })
}
