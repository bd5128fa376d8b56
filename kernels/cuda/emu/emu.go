// Package emu runs herd's CUDA kernels on the CPU, for testing them on machines without a GPU.
//
// Device compiles the real sources of kernels/cuda/src with g++ (each file as C++ with
// harness/cuda_emu.h, which maps the CUDA builtins the kernels use onto an emulator runtime),
// and runs them in a harness process (harness/harness.cpp): one fiber per GPU thread, real
// barriers, warp shuffles and mma.sync as PTX defines them, blocks in a random order on
// several OS threads, device memory with guard pages and a checked fill around every buffer.
// Device has the methods kernels/cuda's core needs from a GPU, so the CUDA backend's own ops,
// with their launch grids and kernel arguments, run on it unchanged; only matrix
// multiplication, which cuBLASLt does on a GPU, is a reference loop here.
//
// The harness runs in its own process so that a kernel that faults (an access past a buffer's
// end) or breaks a CUDA rule (a shuffle not every lane reaches) ends it with a message
// instead of ending the test.
package emu

import (
	"bufio"
	"bytes"
	"embed"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/kernels/cuda/src"
)

//go:embed harness/cuda_emu.h harness/harness.cpp
var harnessFiles embed.FS

// ErrNoCompiler is returned by Start when no C++ compiler is found, and on machines the
// harness is not written for (its fiber switch is x86-64 assembly; it uses Linux's mmap and
// signal details).
var ErrNoCompiler = errors.New("emu: no C++ compiler (g++) found")

// Options configures Start.
type Options struct {
	// Dir is where the harness and the modules are built; it must exist.
	Dir string
	// CXX is the C++ compiler; empty means $CXX, then g++ on $PATH.
	CXX string
	// SMs is the multiprocessor count the device reports, which caps the backend's grid-stride
	// launches; small values make those loops take several turns. 0 means 2.
	SMs int
	// Workers is the number of OS threads that run blocks; 0 means the number of CPUs.
	Workers int
	// Seed varies the order of blocks and of threads within each launch.
	Seed uint64
	// Sources replaces kernel files (by name, e.g. "rmsnorm.cu") for tests that check that a
	// broken kernel is caught; nil uses src.Files().
	Sources map[string]string
	// Files limits the modules Start builds to these kernel files; nil builds every file but
	// attention.cu, which is built per head dimension on first use in any case.
	Files []string
	// MemoryBytes is the size of device memory; 0 means 1 GiB.
	MemoryBytes int64
}

// Device is the emulated GPU. Its methods are safe for concurrent use; calls run one at a
// time, in the order issued, and each returns when its work is done.
type Device struct {
	opts    Options
	cxx     string
	sources map[string]string

	mu      sync.Mutex
	cmd     *exec.Cmd
	in      *bufio.Writer
	out     *bufio.Reader
	stderr  *lockedBuffer
	mem     *os.File
	base    uintptr
	size    uint64
	dead    error
	seed    uint64
	mods    map[string]int // module key -> id
	kernel  map[string]int // kernel name -> module id (every file but attention.cu)
	nextMod int
}

// LookCXX returns the C++ compiler Start would use.
func LookCXX(cxx string) (string, error) {
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		return "", fmt.Errorf("%w: the harness runs on linux/amd64, this is %s/%s", ErrNoCompiler, runtime.GOOS, runtime.GOARCH)
	}
	if cxx == "" {
		cxx = os.Getenv("CXX")
	}
	if cxx == "" {
		cxx = "g++"
	}
	p, err := exec.LookPath(cxx)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrNoCompiler, err)
	}
	return p, nil
}

// Start builds the harness and a module of every kernel file except attention.cu (built per
// head dimension on first use), and starts the harness.
func Start(opts Options) (*Device, error) {
	cxx, err := LookCXX(opts.CXX)
	if err != nil {
		return nil, err
	}
	if opts.SMs <= 0 {
		opts.SMs = 2
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.NumCPU()
	}
	if opts.MemoryBytes <= 0 {
		opts.MemoryBytes = 1 << 30
	}
	d := &Device{opts: opts, cxx: cxx, sources: src.Files(), mods: map[string]int{}, kernel: map[string]int{}, seed: opts.Seed}
	for name, code := range opts.Sources {
		d.sources[name] = code
	}
	for _, name := range []string{"cuda_emu.h", "harness.cpp"} {
		b, err := harnessFiles.ReadFile("harness/" + name)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(opts.Dir, name), b, 0o644); err != nil {
			return nil, err
		}
	}
	var files []string
	for name := range d.sources {
		if name != "attention.cu" && (opts.Files == nil || slices.Contains(opts.Files, name)) {
			files = append(files, name)
		}
	}
	slices.Sort(files)
	// Build the harness and the modules side by side, a compiler per CPU.
	jobs := make(chan func() error)
	errs := make(chan error, len(files)+1)
	var wg sync.WaitGroup
	for i := 0; i < runtime.NumCPU(); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				errs <- j()
			}
		}()
	}
	jobs <- d.buildHarness
	paths := make([]string, len(files))
	for i, f := range files {
		jobs <- func() (err error) { paths[i], err = d.buildModule(f, nil); return err }
	}
	close(jobs)
	wg.Wait()
	close(errs)
	for e := range errs {
		if e != nil {
			return nil, e
		}
	}
	if err := d.start(); err != nil {
		return nil, err
	}
	for i, f := range files {
		id, err := d.load(f, paths[i])
		if err != nil {
			d.Close()
			return nil, err
		}
		for _, k := range src.Kernels {
			if k.File == f {
				d.kernel[k.Name] = id
			}
		}
	}
	return d, nil
}

func (d *Device) compile(args ...string) error {
	cmd := exec.Command(d.cxx, args...)
	cmd.Dir = d.opts.Dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("emu: %s %s: %v\n%s", d.cxx, strings.Join(args, " "), err, out)
	}
	return nil
}

func (d *Device) buildHarness() error {
	return d.compile("-std=c++17", "-O2", "-pthread", "-rdynamic", "-o", "harness", "harness.cpp", "-ldl")
}

// moduleFlags: -O1 keeps compilation fast; strict aliasing is off because the kernels read bf16
// arrays through 4- and 16-byte types, as CUDA allows.
var moduleFlags = []string{"-std=c++17", "-O1", "-fPIC", "-shared", "-fvisibility=hidden", "-fno-strict-aliasing",
	"-Wno-unknown-pragmas"}

// buildModule compiles one kernel file with the given -D options into a shared library.
func (d *Device) buildModule(file string, defines []string) (string, error) {
	code, ok := d.sources[file]
	if !ok {
		return "", fmt.Errorf("emu: no kernel file %s", file)
	}
	cpp, err := moduleSource(file, code, src.Kernels)
	if err != nil {
		return "", err
	}
	base := strings.TrimSuffix(file, ".cu")
	for _, def := range defines {
		base += "_" + strings.NewReplacer("-D", "", "=", "").Replace(def)
	}
	if err := os.WriteFile(filepath.Join(d.opts.Dir, base+".cpp"), []byte(cpp), 0o644); err != nil {
		return "", err
	}
	out := filepath.Join(d.opts.Dir, base+".so")
	args := append(slices.Clone(moduleFlags), defines...)
	return out, d.compile(append(args, "-o", out, base+".cpp")...)
}

// start runs the harness on a memory file in /dev/shm when there is one (device memory then
// never reaches a disk), else in the build directory.
func (d *Device) start() error {
	dir := d.opts.Dir
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		dir = "/dev/shm"
	}
	f, err := os.CreateTemp(dir, "herd-emu-mem-*")
	if err != nil {
		return err
	}
	os.Remove(f.Name()) // the harness opens it through /proc/self/fd of ours, below
	d.mem = f
	d.cmd = exec.Command(filepath.Join(d.opts.Dir, "harness"), "/dev/fd/3", strconv.FormatInt(d.opts.MemoryBytes, 10),
		strconv.Itoa(d.opts.Workers))
	d.cmd.ExtraFiles = []*os.File{f}
	d.stderr = &lockedBuffer{}
	d.cmd.Stderr = d.stderr
	stdin, err := d.cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := d.cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := d.cmd.Start(); err != nil {
		return fmt.Errorf("emu: start harness: %w", err)
	}
	d.in, d.out = bufio.NewWriter(stdin), bufio.NewReader(stdout)
	line, err := d.out.ReadString('\n')
	if err != nil {
		return d.died("start", err)
	}
	var base uint64
	if _, err := fmt.Sscanf(line, "ready %d %d", &base, &d.size); err != nil {
		return fmt.Errorf("emu: harness said %q: %w", line, err)
	}
	d.base = uintptr(base)
	return nil
}

// Close stops the harness and releases device memory.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil || d.cmd.Process == nil {
		return nil
	}
	if d.dead == nil {
		fmt.Fprintln(d.in, "quit")
		d.in.Flush()
		d.dead = errors.New("emu: device closed")
	}
	d.cmd.Wait()
	d.cmd = nil
	return d.mem.Close()
}

// call sends one command and returns the rest of its "ok" answer.
func (d *Device) call(format string, args ...any) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dead != nil {
		return "", d.dead
	}
	cmd := fmt.Sprintf(format, args...)
	if _, err := fmt.Fprintln(d.in, cmd); err != nil {
		return "", d.died(cmd, err)
	}
	if err := d.in.Flush(); err != nil {
		return "", d.died(cmd, err)
	}
	line, err := d.out.ReadString('\n')
	if err != nil {
		return "", d.died(cmd, err)
	}
	line = strings.TrimSuffix(line, "\n")
	if rest, ok := strings.CutPrefix(line, "ok"); ok {
		return strings.TrimSpace(rest), nil
	}
	return "", fmt.Errorf("emu: %s: %s", firstField(cmd, 3), strings.TrimPrefix(line, "err "))
}

// died records that the harness ended, with what it printed, and returns that error.
func (d *Device) died(cmd string, err error) error {
	if err == io.EOF || errors.Is(err, os.ErrClosed) || strings.Contains(err.Error(), "broken pipe") {
		err = d.cmd.Wait()
	}
	d.dead = fmt.Errorf("emu: the harness died during %q (%v): %s", firstField(cmd, 3), err, strings.TrimSpace(d.stderr.String()))
	return d.dead
}

func firstField(s string, n int) string {
	f := strings.Fields(s)
	return strings.Join(f[:min(n, len(f))], " ")
}

func (d *Device) load(key, path string) (int, error) {
	d.mu.Lock()
	id := d.nextMod
	d.nextMod++
	d.mu.Unlock()
	if _, err := d.call("load %d %s", id, path); err != nil {
		return 0, err
	}
	d.mu.Lock()
	d.mods[key] = id
	d.mu.Unlock()
	return id, nil
}

// Alloc returns size bytes of device memory, 256-byte aligned, filled with 0xff.
func (d *Device) Alloc(size int64) (uintptr, error) {
	r, err := d.call("alloc %d", size)
	if err != nil {
		return 0, err
	}
	p, err := strconv.ParseUint(r, 10, 64)
	return uintptr(p), err
}

// Free returns memory from Alloc.
func (d *Device) Free(p uintptr) error { _, err := d.call("free %d", p); return err }

// offset checks that [p, p+n) is device memory and returns its offset in the memory file.
func (d *Device) offset(p uintptr, n int) (int64, error) {
	if p < d.base || uint64(p-d.base)+uint64(n) > d.size {
		return 0, fmt.Errorf("emu: address %#x (+%d bytes) is not device memory", p, n)
	}
	return int64(p - d.base), nil
}

// Upload copies src to device memory at dst.
func (d *Device) Upload(dst uintptr, src []byte) error {
	off, err := d.offset(dst, len(src))
	if err != nil {
		return err
	}
	_, err = d.mem.WriteAt(src, off)
	return err
}

// Download copies device memory at src into dst.
func (d *Device) Download(dst []byte, src uintptr) error {
	off, err := d.offset(src, len(dst))
	if err != nil {
		return err
	}
	_, err = d.mem.ReadAt(dst, off)
	return err
}

// Zero sets size bytes at dst to zero.
func (d *Device) Zero(dst uintptr, size int64) error {
	if _, err := d.offset(dst, int(size)); err != nil {
		return err
	}
	_, err := d.call("zero %d %d", dst, size)
	return err
}

// CopyDevice copies size bytes from src to dst.
func (d *Device) CopyDevice(dst, src uintptr, size int64) error {
	if _, err := d.offset(dst, int(size)); err != nil {
		return err
	}
	if _, err := d.offset(src, int(size)); err != nil {
		return err
	}
	_, err := d.call("copy %d %d %d", dst, src, size)
	return err
}

// Launch runs a kernel of kernels/cuda/src (not of attention.cu) on grid blocks of block
// threads.
func (d *Device) Launch(kernel string, grid, block int, args ...any) error {
	d.mu.Lock()
	id, ok := d.kernel[kernel]
	d.mu.Unlock()
	if !ok {
		return fmt.Errorf("emu: kernel %s not loaded", kernel)
	}
	return d.launch(id, kernel, grid, block, args)
}

func (d *Device) launch(mod int, kernel string, grid, block int, args []any) error {
	var b strings.Builder
	d.mu.Lock()
	d.seed++
	seed := d.seed
	d.mu.Unlock()
	fmt.Fprintf(&b, "launch %d %s %d %d %d", mod, kernel, grid, block, seed)
	for i, a := range args {
		switch v := a.(type) {
		case uintptr:
			fmt.Fprintf(&b, " p:%x", v)
		case int:
			if v < math.MinInt32 || v > math.MaxInt32 {
				return fmt.Errorf("emu: %s argument %d: int %d does not fit int32", kernel, i, v)
			}
			fmt.Fprintf(&b, " i:%d", v)
		case int32:
			fmt.Fprintf(&b, " i:%d", v)
		case int64:
			fmt.Fprintf(&b, " l:%d", v)
		case float32:
			fmt.Fprintf(&b, " f:%x", math.Float32bits(v))
		case float64:
			fmt.Fprintf(&b, " d:%x", math.Float64bits(v))
		default:
			return fmt.Errorf("emu: %s argument %d: unsupported type %T", kernel, i, a)
		}
	}
	_, err := d.call("%s", b.String())
	if err != nil {
		return fmt.Errorf("%w (launch seed %d)", err, seed)
	}
	return nil
}

// moduleLauncher launches the kernels of one module.
type moduleLauncher struct {
	d  *Device
	id int
}

func (m moduleLauncher) Launch(kernel string, grid, block int, args ...any) error {
	return m.d.launch(m.id, kernel, grid, block, args)
}

// Attention builds attention.cu for head dimension hd (once) and returns its launcher and the
// module's attention_geometry.
func (d *Device) Attention(hd int) (interface {
	Launch(kernel string, grid, block int, args ...any) error
}, [8]int32, error) {
	var geom [8]int32
	key := fmt.Sprintf("attention.cu HERD_HD=%d", hd)
	d.mu.Lock()
	id, ok := d.mods[key]
	d.mu.Unlock()
	if !ok {
		path, err := d.buildModule("attention.cu", []string{"-DHERD_HD=" + strconv.Itoa(hd)})
		if err != nil {
			return nil, geom, err
		}
		if id, err = d.load(key, path); err != nil {
			return nil, geom, err
		}
	}
	r, err := d.call("symbol %d attention_geometry", id)
	if err != nil {
		return nil, geom, err
	}
	raw, err := hex.DecodeString(r)
	if err != nil || len(raw) != 4*len(geom) {
		return nil, geom, fmt.Errorf("emu: attention_geometry is %q", r)
	}
	if err := binary.Read(bytes.NewReader(raw), binary.LittleEndian, &geom); err != nil {
		return nil, geom, err
	}
	return moduleLauncher{d: d, id: id}, geom, nil
}

// Gemm is cuBLASLt's part, by a reference loop: C = op(A) op(B) + beta*C, row-major, bf16 A
// and B, float32 or bfloat16 C, sums in float64 rounded once; C is not read when beta is 0.
func (d *Device) Gemm(transA, transB bool, m, n, k int, a, b, c uintptr, cType kernels.DType, beta float32) error {
	ct := "f32"
	switch cType {
	case kernels.Float32:
	case kernels.BFloat16:
		ct = "bf16"
	default:
		return fmt.Errorf("emu: gemm: C dtype %v", cType)
	}
	for _, r := range []struct {
		p     uintptr
		bytes int
	}{{a, 2 * m * k}, {b, 2 * k * n}, {c, cType.Size() * m * n}} {
		if _, err := d.offset(r.p, r.bytes); err != nil {
			return err
		}
	}
	_, err := d.call("gemm %d %d %d %d %d %d %d %d %s %x", b2i(transA), b2i(transB), m, n, k, a, b, c, ct, math.Float32bits(beta))
	return err
}

// SMs returns Options.SMs.
func (d *Device) SMs() int { return d.opts.SMs }

// Synchronize returns at once: every call has finished when it returns.
func (d *Device) Synchronize() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dead
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// lockedBuffer keeps the first 64 KiB the harness writes to stderr.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := 64<<10 - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
