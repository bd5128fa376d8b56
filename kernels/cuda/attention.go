//go:build cuda

package cuda

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/herd-llm/herd/kernels/cuda/src"
)

// Attention runs the attention kernels for one head dimension on a device.
//
// attention.cu is compiled once per head dimension (it is a compile-time constant there, which
// sizes the register tiles), so a model holds one Attention per head size it uses. The launch
// geometry is read from the compiled module itself (its attention_geometry array); the grids
// and argument lists are attnKernels', shared with the emulator.
type Attention struct {
	d   *Device
	hd  int
	mod *Module
	fns map[string]*Function
	k   *attnKernels
}

// attentionKernelNames are the kernels of attention.cu.
var attentionKernelNames = []string{"attention_fwd_bf16", "attention_bwd_delta_bf16", "attention_bwd_dkdv_bf16",
	"attention_bwd_dq_bf16", "attention_cached_bf16"}

// attentionOptions are the NVRTC options of attention.cu for head dim hd. The source uses C++11
// constexpr and alignas; NVRTC 11's default dialect predates them.
func attentionOptions(hd int) []string {
	return []string{"-DHERD_HD=" + strconv.Itoa(hd), "--std=c++17"}
}

// LoadAttention compiles attention.cu for head dim hd with nv for arch (sm_XY for a cubin,
// compute_XY for PTX; the caller passes what it uses for every other kernel) and loads it on d.
func LoadAttention(d *Device, nv *NVRTC, arch string, hd int) (*Attention, error) {
	if hd < 1 || hd > 256 {
		return nil, fmt.Errorf("cuda: attention: head dim %d out of range 1..256", hd)
	}
	source, ok := src.Files()["attention.cu"]
	if !ok {
		return nil, errors.New("cuda: attention: attention.cu missing from the embedded sources")
	}
	img, err := nv.Compile(source, "attention.cu", arch, attentionOptions(hd))
	if err != nil {
		return nil, fmt.Errorf("cuda: attention: head dim %d: %w", hd, err)
	}
	mod, err := d.LoadModule(img)
	if err != nil {
		return nil, fmt.Errorf("cuda: attention: head dim %d (%s): %w", hd, arch, err)
	}
	a := &Attention{d: d, hd: hd, mod: mod, fns: map[string]*Function{}}
	if err := a.init(); err != nil {
		return nil, errors.Join(err, mod.Unload())
	}
	return a, nil
}

// init looks up the kernels and reads the module's launch geometry.
func (a *Attention) init() error {
	for _, name := range attentionKernelNames {
		fn, err := a.mod.Function(name)
		if err != nil {
			return err
		}
		a.fns[name] = fn
	}
	var ptr DevicePtr
	var size int64
	err := a.d.Do(func() error {
		var err error
		ptr, size, err = a.mod.m.Global("attention_geometry")
		return err
	})
	if err != nil {
		return fmt.Errorf("cuda: attention: geometry: %w", err)
	}
	var g [8]int32
	if size != int64(4*len(g)) {
		return fmt.Errorf("cuda: attention: geometry is %d bytes, want %d", size, 4*len(g))
	}
	if err := Download(a.d, g[:], ptr); err != nil {
		return fmt.Errorf("cuda: attention: geometry: %w", err)
	}
	a.k, err = newAttnKernels(a.hd, g)
	return err
}

// HeadDim returns the head dimension the kernels were compiled for.
func (a *Attention) HeadDim() int { return a.hd }

// Close unloads the module; the Attention must not be used afterwards.
func (a *Attention) Close() error { return a.mod.Unload() }

// on returns a launcher of the module's kernels on stream s.
func (a *Attention) on(s Stream) launcher { return moduleLauncher{d: a.d, fns: a.fns, s: s} }

// Forward computes causal softmax(q k^T / sqrt(D)) v and the per-row logsumexp on s. out, q,
// k, v are bf16 [B,T,H,D]; lse is fp32 [B,H,T]. out and lse must not overlap the inputs.
func (a *Attention) Forward(s Stream, out, lse, q, k, v DevicePtr, b, t, h int) error {
	return a.k.forward(a.on(s), uintptr(out), uintptr(lse), uintptr(q), uintptr(k), uintptr(v), b, t, h)
}

// Backward overwrites dq, dk, dv from dout and the forward's out and lse, on s. delta is
// caller-provided fp32 scratch of b*h*t elements. See attnKernels.backward.
func (a *Attention) Backward(s Stream, dq, dk, dv, dout, out, lse, q, k, v, delta DevicePtr, b, t, h int) error {
	return a.k.backward(a.on(s), uintptr(dq), uintptr(dk), uintptr(dv), uintptr(dout), uintptr(out), uintptr(lse),
		uintptr(q), uintptr(k), uintptr(v), uintptr(delta), b, t, h)
}

// Cached is causal attention for generation with a KV cache, batch 1, on s: the tq queries q
// [tq,H,D] at positions tk-tq .. tk-1 attend to the first tk rows of k, v [>=tk,H,D]; out is
// [tq,H,D].
func (a *Attention) Cached(s Stream, out, q, k, v DevicePtr, tq, tk, h int) error {
	return a.k.cached(a.on(s), uintptr(out), uintptr(q), uintptr(k), uintptr(v), tq, tk, h)
}

// moduleLauncher launches kernels by name from a table of loaded functions on one stream.
type moduleLauncher struct {
	d   *Device
	fns map[string]*Function
	s   Stream
}

func (m moduleLauncher) Launch(kernel string, grid, block int, args ...any) error {
	fn, ok := m.fns[kernel]
	if !ok {
		return fmt.Errorf("cuda: kernel %s not loaded", kernel)
	}
	return m.d.Launch(fn, [3]int{grid, 1, 1}, [3]int{block, 1, 1}, 0, m.s, KernelArgs(args...)...)
}
