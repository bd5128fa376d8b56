//go:build cuda

package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/herd-llm/herd/kernels"
	"gorgonia.org/cu"
)

// openDevice opens device 0 or skips the test when the driver reports no device, unless
// HERD_REQUIRE_GPU=1 (as the GPU check sets), which makes that a failure. (A machine without any
// CUDA driver cannot run this binary at all: gorgonia.org/cu calls cuInit at start.)
func openDevice(t *testing.T) *Device {
	t.Helper()
	n, err := cu.NumDevices()
	if err != nil || n == 0 {
		noDevice(t, n, err)
	}
	d, err := Open(0)
	if err != nil {
		t.Fatalf("Open(0): %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	major, minor := d.ComputeCapability()
	t.Logf("device 0: %s, sm_%d%d, %d MiB", d.Name(), major, minor, d.TotalMem()>>20)
	return d
}

// noDevice skips, or fails under HERD_REQUIRE_GPU=1, a test that found no device.
func noDevice(tb testing.TB, n int, err error) {
	tb.Helper()
	if os.Getenv("HERD_REQUIRE_GPU") == "1" {
		tb.Fatalf("HERD_REQUIRE_GPU=1 but no CUDA device (count %d, err %v)", n, err)
	}
	tb.Skipf("no CUDA device (count %d, err %v): GPU tests need a GPU machine (HERD_REQUIRE_GPU=1 makes this a failure)", n, err)
}

func TestDeviceInfo(t *testing.T) {
	d := openDevice(t)
	if major, _ := d.ComputeCapability(); d.Name() == "" || major < 5 || d.TotalMem() <= 0 {
		t.Fatalf("implausible device: %q cc %d total %d", d.Name(), major, d.TotalMem())
	}
	s, err := d.NewStream()
	if err != nil {
		t.Fatal(err)
	}
	start, err1 := d.NewEvent()
	end, err2 := d.NewEvent()
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	mustDo(t, d.Record(start, s), d.Record(end, s), d.SyncEvent(end))
	el, err := d.Elapsed(start, end)
	if err != nil || el < 0 {
		t.Fatalf("Elapsed = %v, %v", el, err)
	}
	mustDo(t, d.DestroyEvent(start), d.DestroyEvent(end), d.DestroyStream(s))
}

// loadNVRTC loads NVRTC with a cache directory of the test's own, so every run compiles.
func loadNVRTC(t *testing.T) *NVRTC {
	t.Helper()
	nv, err := LoadNVRTC()
	if err != nil {
		t.Fatal(err)
	}
	nv.CacheDir = t.TempDir()
	return nv
}

func mustDo(t *testing.T, errs ...error) {
	t.Helper()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

const vaddSource = `
extern "C" __global__ void vadd(const float* a, const float* b, float* c, int n) {
	int i = blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n) c[i] = a[i] + b[i];
}
`

// TestNVRTCVectorAdd compiles, caches, loads and runs a kernel as a cubin for the device's
// real architecture and as PTX for its virtual one: the two paths the backend chooses between.
func TestNVRTCVectorAdd(t *testing.T) {
	d := openDevice(t)
	nv := loadNVRTC(t)
	major, minor := d.ComputeCapability()
	maj, mnr := nv.Version()
	t.Logf("NVRTC %d.%d from %s; builtins %+v", maj, mnr, nv.Path(), nv.Builtins())
	for _, code := range []Code{CodeCubin, CodePTX} {
		t.Run(string(code), func(t *testing.T) { vectorAdd(t, d, nv, code.Arch(major, minor), code) })
	}
}

func vectorAdd(t *testing.T, d *Device, nv *NVRTC, arch string, code Code) {
	img, err := nv.Compile(vaddSource, "vadd.cu", arch, []string{"--std=c++17"})
	if err != nil {
		t.Fatal(err)
	}
	isELF := len(img) > 4 && string(img[:4]) == "\x7fELF"
	if isELF != (code == CodeCubin) {
		t.Fatalf("%s for %s: image starts %q, ELF %v", code, arch, img[:min(8, len(img))], isELF)
	}
	cached, _ := filepath.Glob(filepath.Join(nv.CacheDir, "*."+string(code)))
	if len(cached) == 0 {
		t.Errorf("no .%s file in the cache %s", code, nv.CacheDir)
	}
	again, err := nv.Compile(vaddSource, "vadd.cu", arch, []string{"--std=c++17"})
	if err != nil || string(again) != string(img) {
		t.Fatalf("cached compile differs (err %v)", err)
	}
	if _, err := nv.Compile("this is not C++", "bad.cu", arch, nil); err == nil {
		t.Fatal("compiling garbage succeeded")
	} else {
		t.Logf("expected compile error: %v", err)
	}

	mod, err := d.LoadModule(img)
	if err != nil {
		t.Fatal(err)
	}
	defer mod.Unload()
	fn, err := mod.Function("vadd")
	if err != nil {
		t.Fatal(err)
	}
	const n = 1000 + 7 // not a multiple of the block size
	a, b := make([]float32, n), make([]float32, n)
	for i := range a {
		a[i], b[i] = float32(i), float32(2*i)+0.5
	}
	mem := d.Allocator()
	pa, pb, pc := mustAlloc(t, mem, 4*n), mustAlloc(t, mem, 4*n), mustAlloc(t, mem, 4*n)
	mustDo(t, Upload(d, pa, a), Upload(d, pb, b), d.Memset(pc, 0xff, 4*n)) // poison the output
	block := 256
	grid := (n + block - 1) / block
	err = d.Launch(fn, [3]int{grid, 1, 1}, [3]int{block, 1, 1}, 0, Stream{}, KernelArgs(pa, pb, pc, n)...)
	mustDo(t, err, d.Synchronize())
	c := make([]float32, n)
	mustDo(t, Download(d, c, pc))
	for i := range c {
		if c[i] != a[i]+b[i] {
			t.Fatalf("c[%d] = %v, want %v", i, c[i], a[i]+b[i])
		}
	}
	mustDo(t, mem.Free(pa), mem.Free(pb), mem.Free(pc))
}

func mustAlloc(t *testing.T, a *Allocator, bytes int64) DevicePtr {
	t.Helper()
	p, err := a.Alloc(bytes)
	if err != nil {
		t.Fatalf("Alloc(%d): %v", bytes, err)
	}
	return p
}

func TestAllocatorReuse(t *testing.T) {
	d := openDevice(t)
	a := d.Allocator()
	p := mustAlloc(t, a, 1000)
	if a.LiveBytes() != 1024 || a.CachedBytes() != 0 {
		t.Fatalf("after Alloc(1000): live %d cached %d, want 1024 0", a.LiveBytes(), a.CachedBytes())
	}
	big := mustAlloc(t, a, 3<<20)
	mustDo(t, a.Free(p), a.Free(big))
	if a.LiveBytes() != 0 || a.CachedBytes() != 1024+4<<20 {
		t.Fatalf("after Free: live %d cached %d, want 0 %d", a.LiveBytes(), a.CachedBytes(), 1024+4<<20)
	}
	if q := mustAlloc(t, a, 900); q != p {
		t.Fatalf("Alloc(900) = %v, want the cached block %v", q, p)
	}
	if a.CachedBytes() != 4<<20 {
		t.Fatalf("cached %d after reuse, want %d", a.CachedBytes(), 4<<20)
	}
	if err := a.Free(p + 1); err == nil {
		t.Fatal("Free of an unknown pointer succeeded")
	}
	mustDo(t, a.Free(p), a.Release())
	if a.LiveBytes() != 0 || a.CachedBytes() != 0 {
		t.Fatalf("after Release: live %d cached %d", a.LiveBytes(), a.CachedBytes())
	}
}

// bf16 rounds x to the nearest bfloat16 (ties to even) and returns its bits.
func bf16(x float32) uint16 {
	u := math.Float32bits(x)
	u += 0x7fff + (u>>16)&1
	return uint16(u >> 16)
}

func bf16ToFloat(h uint16) float64 { return float64(math.Float32frombits(uint32(h) << 16)) }

// randBF16 returns n random bfloat16 values in [-1, 1) and their exact float64 values.
func randBF16(rng *rand.Rand, n int) ([]uint16, []float64) {
	h, f := make([]uint16, n), make([]float64, n)
	for i := range h {
		h[i] = bf16(rng.Float32()*2 - 1)
		f[i] = bf16ToFloat(h[i])
	}
	return h, f
}

// refMatMul is the float64 reference of kernels.Backend.MatMul on row-major matrices.
func refMatMul(c, a, b []float64, m, n, k int, transA, transB bool, beta float64) {
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float64
			for p := 0; p < k; p++ {
				av, bv := a[i*k+p], b[p*n+j]
				if transA {
					av = a[p*m+i]
				}
				if transB {
					bv = b[j*k+p]
				}
				s += av * bv
			}
			c[i*n+j] = s + beta*c[i*n+j]
		}
	}
}

// TestGemmBF16 checks all four transpose combinations at sizes that are not multiples of 16,
// with beta != 0, for float32 and bfloat16 C.
//
// Tolerances: inputs are exact bfloat16 values in [-1, 1], so every product is exact in float32
// and |C| <= k + |beta C|; float32 accumulation of k = 33 terms errs by at most about
// k * k * 2^-24 = 6.5e-5. A float32 C must match to 1e-3 absolute, which leaves room for the
// summation order of tensor-core kernels and still catches any layout error (errors of order 1).
// A bfloat16 C is additionally rounded once (relative error 2^-9) and its input is bfloat16, so
// it must match to 2^-8 * |ref| + 1e-3.
func TestGemmBF16(t *testing.T) {
	d := openDevice(t)
	lt, err := d.OpenBLASLt()
	if err != nil {
		t.Fatal(err)
	}
	defer lt.Close()
	mem := d.Allocator()
	ws := Workspace{Ptr: mustAlloc(t, mem, 32<<20), Bytes: 32 << 20}
	defer mem.Free(ws.Ptr)
	const m, n, k = 67, 130, 33
	const beta = 0.5
	rng := rand.New(rand.NewPCG(1, 2))
	for _, cType := range []kernels.DType{kernels.Float32, kernels.BFloat16} {
		for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
			name := fmt.Sprintf("%v/transA=%v/transB=%v", cType, tr[0], tr[1])
			t.Run(name, func(t *testing.T) {
				checkGemm(t, d, lt, ws, rng, m, n, k, tr[0], tr[1], cType, beta)
			})
		}
	}
}

func checkGemm(t *testing.T, d *Device, lt *BLASLt, ws Workspace, rng *rand.Rand, m, n, k int,
	transA, transB bool, cType kernels.DType, beta float32) {
	mem := d.Allocator()
	ah, af := randBF16(rng, m*k)
	bh, bf := randBF16(rng, k*n)
	ch, cf := randBF16(rng, m*n) // C's initial value, exact in both dtypes
	pa, pb := mustAlloc(t, mem, int64(2*m*k)), mustAlloc(t, mem, int64(2*k*n))
	pc := mustAlloc(t, mem, int64(4*m*n))
	defer func() { mustDo(t, mem.Free(pa), mem.Free(pb), mem.Free(pc)) }()
	mustDo(t, Upload(d, pa, ah), Upload(d, pb, bh))
	if cType == kernels.Float32 {
		c32 := make([]float32, m*n)
		for i, v := range cf {
			c32[i] = float32(v)
		}
		mustDo(t, Upload(d, pc, c32))
	} else {
		mustDo(t, Upload(d, pc, ch))
	}
	mustDo(t, lt.Gemm(Stream{}, transA, transB, m, n, k, pa, pb, pc, cType, beta, ws), d.Synchronize())

	got := make([]float64, m*n)
	if cType == kernels.Float32 {
		c32 := make([]float32, m*n)
		mustDo(t, Download(d, c32, pc))
		for i, v := range c32 {
			got[i] = float64(v)
		}
	} else {
		c16 := make([]uint16, m*n)
		mustDo(t, Download(d, c16, pc))
		for i, v := range c16 {
			got[i] = bf16ToFloat(v)
		}
	}
	refMatMul(cf, af, bf, m, n, k, transA, transB, float64(beta))
	worst := 0.0
	for i := range got {
		tol := 1e-3
		if cType == kernels.BFloat16 {
			tol = math.Abs(cf[i])/256 + 1e-3
		}
		diff := math.Abs(got[i] - cf[i])
		if !(diff <= tol) { // also catches NaN
			t.Fatalf("C[%d,%d] = %v, want %v (diff %g > tol %g)", i/n, i%n, got[i], cf[i], diff, tol)
		}
		worst = math.Max(worst, diff)
	}
	t.Logf("max abs error %g", worst)
}
