//go:build cuda

package nccl

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"gorgonia.org/cu"

	"github.com/herd-llm/herd/collective"
	"github.com/herd-llm/herd/kernels/cuda"
)

// openDevice opens device 0 for the test, or skips it when the driver lists no device (fails
// under HERD_REQUIRE_GPU=1). (A
// machine without a CUDA driver cannot start this binary at all: gorgonia.org/cu calls cuInit
// at start.)
func openDevice(tb testing.TB) *cuda.Device {
	tb.Helper()
	n, err := cu.NumDevices()
	if err != nil || n == 0 {
		if os.Getenv("HERD_REQUIRE_GPU") == "1" {
			tb.Fatalf("HERD_REQUIRE_GPU=1 but no CUDA device (count %d, err %v)", n, err)
		}
		tb.Skipf("no CUDA device (count %d, err %v): GPU tests need a GPU machine (HERD_REQUIRE_GPU=1 makes this a failure)", n, err)
	}
	d, err := cuda.Open(0)
	if err != nil {
		tb.Fatalf("cuda.Open(0): %v", err)
	}
	tb.Cleanup(func() {
		if err := d.Close(); err != nil {
			tb.Errorf("device Close: %v", err)
		}
	})
	return d
}

// needNCCL skips the test when libnccl is not installed, unless HERD_NCCL names it or
// HERD_REQUIRE_NCCL=1 (as the GPU check sets): then a library that cannot be loaded fails the
// test, so that the NCCL tests cannot pass by skipping.
func needNCCL(tb testing.TB) {
	tb.Helper()
	path, err := LibraryPath()
	if err != nil {
		if errors.Is(err, cuda.ErrLibraryNotFound) && os.Getenv("HERD_NCCL") == "" && os.Getenv("HERD_REQUIRE_NCCL") != "1" {
			tb.Skipf("NCCL not installed (HERD_REQUIRE_NCCL=1 makes this a failure): %v", err)
		}
		tb.Fatal(err)
	}
	v, _ := Version()
	tb.Logf("NCCL %s from %s", VersionString(v), path)
}

// deviceFloats allocates n float32 values on d, filled from src when it is not nil.
func deviceFloats(tb testing.TB, d *cuda.Device, n int, src []float32) cuda.DevicePtr {
	tb.Helper()
	p, err := d.Allocator().Alloc(4 * int64(max(n, 1)))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { d.Allocator().Free(p) })
	if src != nil {
		// Upload runs on the legacy stream and may return before its DMA has landed; the
		// tests' streams do not synchronize with it, so wait for the device.
		if err := errors.Join(cuda.Upload(d, p, src), d.Synchronize()); err != nil {
			tb.Fatal(err)
		}
	}
	return p
}

func sameBits(tb testing.TB, what string, got, want []float32) {
	tb.Helper()
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			tb.Fatalf("%s: element %d of %d: got %v (%#x), want %v (%#x)", what, i, len(want),
				got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
		}
	}
}

func TestUniqueIDEncoding(t *testing.T) {
	var id [uniqueIDBytes]byte
	for i := range id {
		id[i] = byte(255 - i*7)
	}
	msg := make([]float32, idFloats)
	encodeID(msg, id)
	got, err := decodeID(msg)
	if err != nil || got != id {
		t.Fatalf("round trip: %v, %v", got, err)
	}
	msg[5] = 0.5
	if _, err := decodeID(msg); err == nil {
		t.Error("corrupt id decoded")
	}
	if _, err := decodeID(make([]float32, idFloats)); err == nil {
		t.Error("id without the validity flag decoded")
	}
}

// TestNCCLWorldSize1 runs every collective through NCCL at world size 1 (a one-GPU machine
// cannot hold two NCCL ranks): each is the identity on the in-place buffer, which checks the
// in-place pointer arithmetic, the dtypes and ops NCCL accepts, and that nothing is corrupted.
func TestNCCLWorldSize1(t *testing.T) {
	d := openDevice(t)
	needNCCL(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := Init(ctx, collective.NewInMemGroup(1)[0], d)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Rank() != 0 || c.Size() != 1 || c.Version() < minVersion {
		t.Fatalf("rank %d size %d version %d", c.Rank(), c.Size(), c.Version())
	}
	s, err := d.NewStream()
	if err != nil {
		t.Fatal(err)
	}
	defer d.DestroyStream(s)

	const n = 1<<20 + 5
	rng := rand.New(rand.NewPCG(1, 2))
	want := make([]float32, n)
	for i := range want {
		want[i] = float32(rng.NormFloat64()) + 3 // normal numbers only: no denormals to flush
	}
	buf := deviceFloats(t, d, n, want)
	got := make([]float32, n)
	check := func(what string) {
		t.Helper()
		if err := d.SyncStream(s); err != nil {
			t.Fatalf("%s: sync: %v", what, err)
		}
		if err := c.AsyncError(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if err := cuda.Download(d, got, buf); err != nil {
			t.Fatal(err)
		}
		sameBits(t, what, got, want)
	}
	for _, op := range []collective.Op{collective.Sum, collective.Avg} {
		if err := c.AllReduce(ctx, buf, n, op, s); err != nil {
			t.Fatalf("AllReduce %v: %v", op, err)
		}
		check("all-reduce " + op.String())
		if err := c.ReduceScatter(ctx, buf, n, op, s); err != nil {
			t.Fatalf("ReduceScatter %v: %v", op, err)
		}
		check("reduce-scatter " + op.String())
	}
	if err := c.AllGather(ctx, buf, n, s); err != nil {
		t.Fatalf("AllGather: %v", err)
	}
	check("all-gather")
	// Sub-buffers at an odd element offset.
	if err := c.AllReduce(ctx, offset(buf, 3), 1001, collective.Sum, s); err != nil {
		t.Fatal(err)
	}
	check("all-reduce at an offset")

	// bfloat16: n/2 values in the same buffer.
	bf := make([]uint16, n-1)
	for i := range bf {
		bf[i] = collective.Float32ToBF16(want[i])
	}
	if err := errors.Join(cuda.Upload(d, buf, bf), d.Synchronize()); err != nil {
		t.Fatal(err)
	}
	if err := c.AllReduceBF16(ctx, buf, len(bf), collective.Avg, s); err != nil {
		t.Fatal(err)
	}
	if err := d.SyncStream(s); err != nil {
		t.Fatal(err)
	}
	gotBF := make([]uint16, len(bf))
	if err := cuda.Download(d, gotBF, buf); err != nil {
		t.Fatal(err)
	}
	for i := range bf {
		if gotBF[i] != bf[i] {
			t.Fatalf("bf16 all-reduce: element %d: got %#x, want %#x", i, gotBF[i], bf[i])
		}
	}

	// Argument errors, before NCCL is called.
	if err := c.AllReduce(ctx, buf, n, collective.Op(9), s); !errors.Is(err, collective.ErrInvalidArgument) {
		t.Errorf("AllReduce with a bad op: %v", err)
	}
	if err := c.AllGather(ctx, buf, -1, s); !errors.Is(err, collective.ErrInvalidArgument) {
		t.Errorf("AllGather of -1 elements: %v", err)
	}
	if err := c.AllReduce(ctx, buf, 0, collective.Sum, s); err != nil {
		t.Errorf("AllReduce of 0 elements: %v", err)
	}
	done, stop := context.WithCancel(ctx)
	stop()
	if err := c.AllReduce(done, buf, n, collective.Sum, s); !errors.Is(err, context.Canceled) {
		t.Errorf("AllReduce with a cancelled context: %v", err)
	}

	// Error mapping through the library's own strings.
	err = c.a.check("ncclAllReduce", nil, 4)
	var ne *Error
	if !errors.As(err, &ne) || ne.Func != "ncclAllReduce" || ne.Result != 4 || ne.Msg == "" ||
		!strings.Contains(err.Error(), "ncclAllReduce") || !strings.Contains(err.Error(), "ncclInvalidArgument") {
		t.Errorf("mapped error = %v", err)
	}
	t.Logf("mapped error: %v", err)

	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := c.AllReduce(ctx, buf, n, collective.Sum, s); !errors.Is(err, collective.ErrClosed) {
		t.Errorf("AllReduce after Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestNCCLAbort(t *testing.T) {
	d := openDevice(t)
	needNCCL(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := Init(ctx, collective.NewInMemGroup(1)[0], d)
	if err != nil {
		t.Fatal(err)
	}
	buf := deviceFloats(t, d, 1024, make([]float32, 1024))
	var s cuda.Stream
	if err := c.AllReduce(ctx, buf, 1024, collective.Sum, s); err != nil {
		t.Fatal(err)
	}
	if err := d.SyncStream(s); err != nil {
		t.Fatal(err)
	}
	why := errors.New("new round")
	c.Abort(why)
	err = c.AllReduce(ctx, buf, 1024, collective.Sum, s)
	if !errors.Is(err, collective.ErrAborted) || !errors.Is(err, why) {
		t.Errorf("AllReduce after Abort: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close after Abort: %v", err)
	}
}

// TestNCCLInitDeadline: a rank whose peer never arrives fails Init when ctx ends, in the boot
// broadcast, before NCCL waits for anyone.
func TestNCCLInitDeadline(t *testing.T) {
	d := openDevice(t)
	needNCCL(t)
	g := collective.NewInMemGroup(2)
	defer g[1].Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	c, err := Init(ctx, g[0], d)
	if err == nil {
		c.Close()
		t.Fatal("Init without the second rank succeeded")
	}
	if !errors.Is(err, collective.ErrDeadline) && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Init error does not name the deadline: %v", err)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("Init took %v to fail", el)
	}
	t.Logf("Init without a peer: %v", err)
}
