//go:build cuda

package cuda

import (
	"errors"
	"fmt"
	"os"
	"slices"

	"gorgonia.org/cu"

	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/kernels/cuda/cudalib"
	"github.com/herd-llm/herd/kernels/cuda/src"
)

// Backend is herd's GPU backend: kernels.Backend and kernels.Mixed on one NVIDIA GPU, with
// bfloat16 activations and float32 master weights, gradients, optimizer state, statistics and
// residual stream. Matrix multiplications run in cuBLASLt (bf16 inputs, fp32 accumulation,
// fp32 or bf16 output); every other op is a kernel of kernels/cuda/src compiled by NVRTC at
// start-up for the device's architecture (a cubin by default, see Code; cached on disk). The
// ops themselves (argument checks, launch geometry, kernel arguments) are core's, which the
// emulator of kernels/cuda/emu runs on the CPU.
//
// Every op and every copy is enqueued on the legacy default stream, so they run in program
// order, a synchronous copy waits for the work before it, and a freed block may be reused
// at once. The host does not wait for kernels: Read, Read32 and SumSquares are the points
// where it does, as the model's loss read is once per step.
//
// The kernels.Backend interface has no error returns: a CUDA error inside an op (a launch
// failure, device memory exhausted) panics with a *kernels.DeviceError naming the op and
// wrapping the driver's error, which worker.Train returns as an error; a broken precondition
// (wrong buffer type or length) panics with a message, as on the CPU backend.
type Backend struct {
	*core
	dev *cudaDevice
}

// Options configures New.
type Options struct {
	Device int // device ordinal
	// Code is the kind of device code the kernels are compiled to; empty means $HERD_CUDA_CODE,
	// and when that is unset too, a cubin with a fallback to PTX (see CodeAuto).
	Code Code
	// Logf receives the start-up report: the libraries loaded with their paths and versions,
	// the code kind and any fallback. nil discards it.
	Logf func(format string, args ...any)
}

// lt workspace bytes: 32 MiB lets cuBLASLt pick its fastest Hopper kernels.
const gemmWorkspace = 32 << 20

// New opens the device, loads NVRTC and cuBLASLt, and compiles and loads every kernel except
// attention's, which is compiled per head dimension on first use.
func New(opts Options) (_ *Backend, err error) {
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	code := opts.Code
	if code == CodeAuto {
		if code, err = ParseCode(os.Getenv(CodeEnv)); err != nil {
			return nil, err
		}
	}
	d, err := Open(opts.Device)
	if err != nil {
		return nil, err
	}
	cd := &cudaDevice{d: d, fns: map[string]*Function{}, attn: map[int]*Attention{}}
	be := &Backend{core: newCore(cd), dev: cd}
	defer func() {
		if err != nil {
			be.Close()
		}
	}()
	major, minor := d.ComputeCapability()
	if major < 8 {
		return nil, fmt.Errorf("cuda: device %d (%s) has compute capability %d.%d; bf16 tensor cores need 8.0 (A100) or newer", opts.Device, d.Name(), major, minor)
	}
	logf("cuda: device %d: %s, sm_%d%d, %d SMs, %d MiB; driver API %s (%s)", opts.Device, d.Name(), major, minor, d.SMs(),
		d.TotalMem()>>20, cudalib.FormatDriverVersion(cu.Version()), driverPath())
	if cd.nv, err = LoadNVRTC(); err != nil {
		return nil, err
	}
	nvMajor, nvMinor := cd.nv.Version()
	logf("cuda: NVRTC %d.%d from %s", nvMajor, nvMinor, cd.nv.Path())
	if a := cd.nv.Builtins().Advice(); a != "" {
		logf("cuda: %s", a)
	}
	if cd.lt, err = d.OpenBLASLt(); err != nil {
		return nil, err
	}
	ltVersion, err := cd.lt.Version()
	if err != nil {
		return nil, err
	}
	logf("cuda: cuBLASLt %s from %s", cudalib.FormatCublasVersion(ltVersion), cd.lt.Path())
	if cd.ws.Ptr, err = d.Allocator().Alloc(gemmWorkspace); err != nil {
		return nil, fmt.Errorf("cuda: cuBLASLt workspace: %w", err)
	}
	cd.ws.Bytes = gemmWorkspace

	try := CodePTX
	if code != CodePTX {
		try = CodeCubin
	}
	cd.arch = try.Arch(major, minor)
	err = cd.loadKernels()
	if err != nil && code == CodeAuto {
		logf("cuda: cubin for %s failed, falling back to PTX: %v", cd.arch, err)
		cd.unloadKernels()
		cd.arch = CodePTX.Arch(major, minor)
		err = cd.loadKernels()
	}
	if err != nil {
		return nil, err
	}
	logf("cuda: kernels compiled to %s for %s (%s=%s)", codeOfArch(cd.arch), cd.arch, CodeEnv, code)
	return be, nil
}

// driverPath returns the libcuda the process runs on, as the loader mapped it.
func driverPath() string {
	l, err := (cudalib.Env{}).OpenLib(cudalib.Driver)
	if err != nil {
		return "libcuda.so.1"
	}
	return l.RealPath()
}

// Code returns the kind of code the kernels were loaded as: CodeCubin or CodePTX.
func (be *Backend) Code() Code { return codeOfArch(be.dev.arch) }

// Close waits for the enqueued work and releases everything the backend holds, the device
// included. Buffers still live are freed with the context.
func (be *Backend) Close() error {
	cd := be.dev
	errs := []error{cd.d.Synchronize()}
	for _, a := range cd.attn {
		errs = append(errs, a.Close())
	}
	errs = append(errs, cd.unloadKernels())
	if cd.lt != nil {
		errs = append(errs, cd.lt.Close())
	}
	if cd.ws.Ptr != 0 {
		errs = append(errs, cd.d.Allocator().Free(cd.ws.Ptr))
	}
	errs = append(errs, cd.d.Allocator().Release(), cd.d.Close())
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// Device returns the backend's device.
func (be *Backend) Device() *Device { return be.dev.d }

// Stream returns the stream every op is enqueued on: the legacy default stream. Work on
// another stream that reads or writes the backend's buffers must be ordered against it with
// events (Device.Record, Device.StreamWait).
func (be *Backend) Stream() Stream { return be.dev.s }

// Pointer returns the device address of x's first element and its element type, for libraries
// that work on device memory directly (NCCL).
func (be *Backend) Pointer(x kernels.Buffer) (DevicePtr, kernels.DType) {
	b := be.buf("Pointer", "buffer", x)
	return DevicePtr(b.ptr), b.dt
}

// Name implements kernels.Backend.
func (be *Backend) Name() string {
	major, minor := be.dev.d.ComputeCapability()
	return fmt.Sprintf("cuda-bf16 (%s, sm_%d%d)", be.dev.d.Name(), major, minor)
}

// DeviceBytes returns the device memory the backend's allocator holds from the driver: live
// blocks rounded to their size classes plus freed blocks kept for reuse. With the context and
// the libraries' own memory, this is the backend's footprint as nvidia-smi would show it.
func (be *Backend) DeviceBytes() int64 {
	a := be.dev.d.Allocator()
	return a.LiveBytes() + a.CachedBytes()
}

// PeakFLOPS implements kernels.Peak: the datasheet dense bf16 peak of the device, or 0 for a
// device not in the table (MFU is then not reported).
func (be *Backend) PeakFLOPS() float64 { return densePeak(be.dev.d.Name()) }

var (
	_ kernels.Backend = (*Backend)(nil)
	_ kernels.Mixed   = (*Backend)(nil)
	_ kernels.Peak    = (*Backend)(nil)
)

// cudaDevice is core's device on a GPU: the caching allocator, the legacy default stream, the
// kernels of kernels/cuda/src compiled by NVRTC for arch, and cuBLASLt.
type cudaDevice struct {
	d    *Device
	nv   *NVRTC
	lt   *BLASLt
	ws   Workspace
	arch string // sm_XY (cubin) or compute_XY (PTX)
	s    Stream // the legacy default stream

	fns  map[string]*Function
	mods []*Module
	attn map[int]*Attention // guarded by core.mu through core.attention
}

const attentionFile = "attention.cu"

// loadKernels compiles and loads every source but attention.cu for cd.arch.
func (cd *cudaDevice) loadKernels() error {
	files := src.Files()
	names := make([]string, 0, len(files))
	for name := range files {
		if name != attentionFile {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		img, err := cd.nv.Compile(files[name], name, cd.arch, nil)
		if err != nil {
			return err
		}
		mod, err := cd.d.LoadModule(img)
		if err != nil {
			return fmt.Errorf("cuda: load %s (%s for %s): %w", name, codeOfArch(cd.arch), cd.arch, explainLoad(err, cd.nv))
		}
		cd.mods = append(cd.mods, mod)
		for _, k := range src.Kernels {
			if k.File != name {
				continue
			}
			if cd.fns[k.Name], err = mod.Function(k.Name); err != nil {
				return err
			}
		}
	}
	return nil
}

// unloadKernels unloads what loadKernels loaded.
func (cd *cudaDevice) unloadKernels() error {
	var errs []error
	for _, m := range cd.mods {
		errs = append(errs, m.Unload())
	}
	cd.mods = nil
	clear(cd.fns)
	return errors.Join(errs...)
}

// explainLoad adds what to do to the driver's refusal of PTX newer than it reads.
func explainLoad(err error, nv *NVRTC) error {
	if code, ok := cuResultCode(err); ok && code == cuErrorUnsupportedPTXVersion {
		major, minor := nv.Version()
		return fmt.Errorf("%w (the PTX of NVRTC %d.%d is newer than this driver (CUDA %s) reads: load cubins (%s=cubin) or use an NVRTC no newer than the driver)",
			err, major, minor, cudalib.FormatDriverVersion(cu.Version()), CodeEnv)
	}
	return err
}

func (cd *cudaDevice) Alloc(size int64) (uintptr, error) {
	p, err := cd.d.Allocator().Alloc(size)
	return uintptr(p), err
}

func (cd *cudaDevice) Free(p uintptr) error { return cd.d.Allocator().Free(DevicePtr(p)) }

func (cd *cudaDevice) Upload(dst uintptr, src []byte) error { return Upload(cd.d, DevicePtr(dst), src) }

func (cd *cudaDevice) Download(dst []byte, src uintptr) error {
	return Download(cd.d, dst, DevicePtr(src))
}

func (cd *cudaDevice) Zero(dst uintptr, size int64) error {
	return cd.d.Do(func() error { return cu.MemsetD8Async(DevicePtr(dst), 0, size, cd.s) })
}

func (cd *cudaDevice) CopyDevice(dst, src uintptr, size int64) error {
	return cd.d.Do(func() error { return cu.MemcpyDtoDAsync(DevicePtr(dst), DevicePtr(src), size, cd.s) })
}

func (cd *cudaDevice) Launch(kernel string, grid, block int, args ...any) error {
	return moduleLauncher{d: cd.d, fns: cd.fns, s: cd.s}.Launch(kernel, grid, block, args...)
}

// Attention compiles attention.cu for hd with the arch of the other kernels. core calls it
// under its mutex, once per head dimension.
func (cd *cudaDevice) Attention(hd int) (launcher, [8]int32, error) {
	a, ok := cd.attn[hd]
	if !ok {
		var err error
		if a, err = LoadAttention(cd.d, cd.nv, cd.arch, hd); err != nil {
			return nil, [8]int32{}, err
		}
		cd.attn[hd] = a
	}
	g := a.k.geom
	return a.on(cd.s), [8]int32{int32(g.fwdRows), int32(g.fwdThreads), int32(g.bwdRows), int32(g.bwdThreads),
		int32(g.deltaRows), int32(g.deltaThreads), int32(g.cachedRows), int32(g.cachedThreads)}, nil
}

func (cd *cudaDevice) Gemm(transA, transB bool, m, n, k int, a, b, c uintptr, cType kernels.DType, beta float32) error {
	return cd.lt.Gemm(cd.s, transA, transB, m, n, k, DevicePtr(a), DevicePtr(b), DevicePtr(c), cType, beta, cd.ws)
}

func (cd *cudaDevice) SMs() int { return cd.d.SMs() }

func (cd *cudaDevice) Synchronize() error { return cd.d.Synchronize() }
