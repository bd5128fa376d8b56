//go:build cuda

package cuda

import (
	"math"
	"testing"
)

// TestPinnedRoundTrip copies a float32 pattern from pinned memory to the device and back into a
// poisoned second pinned buffer, asynchronously on one stream, at unaligned offsets.
func TestPinnedRoundTrip(t *testing.T) {
	d := openDevice(t)
	s, err := d.NewStream()
	if err != nil {
		t.Fatal(err)
	}
	defer d.DestroyStream(s)

	const n = 1<<20 + 3 // elements; not a multiple of a page
	src, err := d.AllocHost(4 * n)
	if err != nil {
		t.Fatal(err)
	}
	defer d.FreeHost(src)
	dst, err := d.AllocHost(4*n + 64)
	if err != nil {
		t.Fatal(err)
	}
	defer d.FreeHost(dst)
	if src.Len() != 4*n || len(src.Float32s()) != n || len(src.Bytes()) != 4*n {
		t.Fatalf("views: Len %d, %d floats, %d bytes", src.Len(), len(src.Float32s()), len(src.Bytes()))
	}

	f := src.Float32s()
	for i := range f {
		f[i] = float32(i)*0.5 - 7
	}
	f[1] = float32(math.NaN())
	poison := dst.Bytes()
	for i := range poison {
		poison[i] = 0xAB
	}

	dev, err := d.Allocator().Alloc(4 * n)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Allocator().Free(dev)

	// Up in two pieces, down into dst at byte offset 12 in two pieces.
	const half = n / 2
	mustDo(t,
		d.CopyHtoDAsync(dev, src, 0, 4*half, s),
		d.CopyHtoDAsync(dev+4*half, src, 4*half, 4*(n-half), s),
		d.CopyDtoHAsync(dst, 12, dev, 4*half, s),
		d.CopyDtoHAsync(dst, 12+4*half, dev+4*half, 4*(n-half), s),
		d.SyncStream(s),
	)
	got := dst.Bytes()
	want := src.Bytes()
	for i := 0; i < 12; i++ {
		if got[i] != 0xAB {
			t.Fatalf("byte %d before the copied range overwritten: %#x", i, got[i])
		}
	}
	for i := range want {
		if got[12+i] != want[i] {
			t.Fatalf("byte %d: got %#x, want %#x", i, got[12+i], want[i])
		}
	}
	for i := 12 + len(want); i < len(got); i++ {
		if got[i] != 0xAB {
			t.Fatalf("byte %d after the copied range overwritten: %#x", i, got[i])
		}
	}
}

func TestPinnedBounds(t *testing.T) {
	d := openDevice(t)
	h, err := d.AllocHost(64)
	if err != nil {
		t.Fatal(err)
	}
	defer d.FreeHost(h)
	dev, err := d.Allocator().Alloc(64)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Allocator().Free(dev)
	var s Stream
	if err := d.CopyDtoHAsync(h, 32, dev, 64, s); err == nil {
		t.Error("CopyDtoHAsync past the end of the host buffer: no error")
	}
	if err := d.CopyHtoDAsync(dev, h, -4, 4, s); err == nil {
		t.Error("CopyHtoDAsync at a negative offset: no error")
	}
	if err := d.CopyHtoDAsync(dev, HostBuffer{}, 0, 4, s); err == nil {
		t.Error("CopyHtoDAsync from the empty buffer: no error")
	}
	if _, err := d.AllocHost(-1); err == nil {
		t.Error("AllocHost(-1): no error")
	}
	empty, err := d.AllocHost(0)
	if err != nil || empty.Len() != 0 || empty.Bytes() != nil || empty.Float32s() != nil {
		t.Errorf("AllocHost(0) = %+v, %v", empty, err)
	}
	mustDo(t, d.FreeHost(empty))
}
