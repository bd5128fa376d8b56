//go:build cuda

package cuda

import (
	"errors"
	"sync"

	"gorgonia.org/cu"
)

// Allocator is a caching device allocator. A request is rounded up to its size class (see
// sizeClass); Free keeps the block for the next request of the same class instead of returning
// it to the driver, so the driver's allocator (cuMemAlloc, which synchronizes the device) is
// called only on a cache miss. Release gives the cached blocks back.
//
// Blocks are reused without regard to streams: a block freed while a kernel on one stream still
// uses it may be handed to work on another stream. Callers that use several streams must
// synchronize before freeing; with one stream, stream order makes reuse safe.
//
// Its bookkeeping is guarded by its own mutex; driver calls go through Device.Do.
type Allocator struct {
	d     *Device
	mu    sync.Mutex
	cache *blockCache
}

func newAllocator(d *Device) *Allocator {
	return &Allocator{d: d, cache: newBlockCache()}
}

// Alloc returns a block of at least bytes bytes. Its contents are undefined.
// When the driver is out of memory, the cache is released and the allocation tried once more.
func (a *Allocator) Alloc(bytes int64) (DevicePtr, error) {
	class, err := sizeClass(bytes)
	if err != nil {
		return 0, err
	}
	a.mu.Lock()
	p, ok := a.cache.take(class)
	a.mu.Unlock()
	if ok {
		return DevicePtr(p), nil
	}
	ptr, err := a.driverAlloc(class)
	if errors.Is(err, cu.OutOfMemory) {
		if err = a.Release(); err == nil {
			ptr, err = a.driverAlloc(class)
		}
	}
	if err != nil {
		return 0, err
	}
	a.mu.Lock()
	a.cache.addLive(uintptr(ptr), class)
	a.mu.Unlock()
	return ptr, nil
}

func (a *Allocator) driverAlloc(class int64) (DevicePtr, error) {
	var p DevicePtr
	err := a.d.Do(func() error {
		var err error
		p, err = cu.MemAlloc(class)
		return err
	})
	return p, err
}

// Free returns a block obtained from Alloc to the cache.
func (a *Allocator) Free(p DevicePtr) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cache.put(uintptr(p))
}

// LiveBytes returns the bytes of the blocks handed out and not freed, counted by size class.
func (a *Allocator) LiveBytes() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cache.liveBytes
}

// CachedBytes returns the bytes of the freed blocks kept for reuse.
func (a *Allocator) CachedBytes() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cache.cachedBytes
}

// Release returns every cached block to the driver. Live blocks are untouched.
func (a *Allocator) Release() error {
	a.mu.Lock()
	blocks := a.cache.drain()
	a.mu.Unlock()
	if len(blocks) == 0 {
		return nil
	}
	return a.d.Do(func() error {
		var first error
		for _, p := range blocks {
			if err := cu.MemFree(DevicePtr(p)); err != nil && first == nil {
				first = err
			}
		}
		return first
	})
}
