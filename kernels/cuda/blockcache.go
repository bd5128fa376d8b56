package cuda

import (
	"errors"
	"fmt"
)

// Sentinel errors of the package.
var (
	ErrBadSize    = errors.New("cuda: bad allocation size")
	ErrUnknownPtr = errors.New("cuda: pointer not allocated by this allocator (or freed twice)")
	ErrClosed     = errors.New("cuda: device closed")
)

// blockCache is the bookkeeping of the caching allocator, free of any CUDA call so that it can
// be tested everywhere: which blocks are live (handed out) and which are cached (freed by the
// caller but still held from the driver), by size class. It is not safe for concurrent use.
type blockCache struct {
	free        map[int64][]uintptr // size class -> cached blocks of that class
	live        map[uintptr]int64   // live block -> its size class
	liveBytes   int64
	cachedBytes int64
}

func newBlockCache() *blockCache {
	return &blockCache{free: map[int64][]uintptr{}, live: map[uintptr]int64{}}
}

// take removes and returns a cached block of the class, if there is one, and marks it live.
func (c *blockCache) take(class int64) (uintptr, bool) {
	list := c.free[class]
	if len(list) == 0 {
		return 0, false
	}
	p := list[len(list)-1]
	c.free[class] = list[:len(list)-1]
	c.cachedBytes -= class
	c.addLive(p, class)
	return p, true
}

// addLive records a block just obtained from the driver (or the cache) as live.
func (c *blockCache) addLive(p uintptr, class int64) {
	c.live[p] = class
	c.liveBytes += class
}

// put moves a live block into the cache.
func (c *blockCache) put(p uintptr) error {
	class, ok := c.live[p]
	if !ok {
		return fmt.Errorf("%w: 0x%x", ErrUnknownPtr, p)
	}
	delete(c.live, p)
	c.liveBytes -= class
	c.free[class] = append(c.free[class], p)
	c.cachedBytes += class
	return nil
}

// drain empties the cache and returns its blocks, which the caller gives back to the driver.
func (c *blockCache) drain() []uintptr {
	var out []uintptr
	for class, list := range c.free {
		out = append(out, list...)
		delete(c.free, class)
	}
	c.cachedBytes = 0
	return out
}
