package cuda

import (
	"errors"
	"testing"
)

func TestBlockCacheReuse(t *testing.T) {
	c := newBlockCache()
	if _, ok := c.take(1024); ok {
		t.Fatal("take from an empty cache succeeded")
	}
	c.addLive(0x1000, 1024)
	c.addLive(0x2000, 4096)
	if c.liveBytes != 5120 || c.cachedBytes != 0 {
		t.Fatalf("live %d cached %d, want 5120 0", c.liveBytes, c.cachedBytes)
	}
	if err := c.put(0x1000); err != nil {
		t.Fatal(err)
	}
	if c.liveBytes != 4096 || c.cachedBytes != 1024 {
		t.Fatalf("after put: live %d cached %d, want 4096 1024", c.liveBytes, c.cachedBytes)
	}
	if err := c.put(0x1000); !errors.Is(err, ErrUnknownPtr) {
		t.Fatalf("double free error = %v, want ErrUnknownPtr", err)
	}
	if _, ok := c.take(2048); ok {
		t.Fatal("took a block of another class")
	}
	p, ok := c.take(1024)
	if !ok || p != 0x1000 || c.liveBytes != 5120 || c.cachedBytes != 0 {
		t.Fatalf("take = 0x%x %v, live %d cached %d", p, ok, c.liveBytes, c.cachedBytes)
	}
	_ = c.put(0x1000)
	_ = c.put(0x2000)
	blocks := c.drain()
	if len(blocks) != 2 || c.cachedBytes != 0 || c.liveBytes != 0 {
		t.Fatalf("drain = %v, live %d cached %d", blocks, c.liveBytes, c.cachedBytes)
	}
}
