//go:build cuda

package cuda

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"unsafe"

	"gorgonia.org/cu"
)

// Module is a cubin or PTX loaded into a device's context.
type Module struct {
	d *Device
	m cu.Module
}

// Function is a kernel of a loaded Module.
type Function struct {
	d    *Device
	name string
	f    cu.Function
}

// LoadModule loads a cubin or PTX (as returned by NVRTC.Compile) into the device's context; the
// driver loads a cubin as it is and JIT-compiles PTX for the device.
func (d *Device) LoadModule(ptx []byte) (*Module, error) {
	var m cu.Module
	err := d.Do(func() error {
		var err error
		m, err = cu.LoadData(string(ptx))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("cuda: load module: %w", err)
	}
	return &Module{d: d, m: m}, nil
}

// Function returns the kernel named name (its extern "C" name, or the mangled C++ name).
func (m *Module) Function(name string) (*Function, error) {
	var f cu.Function
	err := m.d.Do(func() error {
		var err error
		f, err = m.m.Function(name)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("cuda: function %s: %w", name, err)
	}
	return &Function{d: m.d, name: name, f: f}, nil
}

// Unload removes the module from the context; its Functions become invalid.
func (m *Module) Unload() error {
	return m.d.Do(m.m.Unload)
}

// Name returns the kernel's name.
func (f *Function) Name() string { return f.name }

// Launch enqueues fn on stream with the given grid and block dimensions and dynamic shared
// memory. Each of args points to one kernel parameter.
//
// gorgonia.org/cu copies exactly 8 bytes from each argument pointer, so every argument must
// point to 8 readable bytes holding the value in its low bytes: build args with KernelArgs
// rather than taking the address of an int32 or float32 variable.
func (d *Device) Launch(fn *Function, grid, block [3]int, shmem int, stream Stream, args ...unsafe.Pointer) error {
	for i, g := range grid {
		if g <= 0 || block[i] <= 0 {
			return fmt.Errorf("cuda: launch %s: grid %v and block %v must be positive", fn.name, grid, block)
		}
	}
	err := d.Do(func() error {
		return fn.f.Launch(grid[0], grid[1], grid[2], block[0], block[1], block[2], shmem, stream, args)
	})
	if err != nil {
		return fmt.Errorf("cuda: launch %s grid %v block %v shmem %d: %w", fn.name, grid, block, shmem, err)
	}
	return nil
}

// KernelArgs stores each value in its own 8-byte slot, in the little-endian low bytes, and
// returns pointers to the slots for Launch. Supported: DevicePtr, uintptr (a device address), int (passed as int32, CUDA's
// int), int32, uint32, int64, uint64, float32, float64. It panics on any other type, a broken
// precondition of the caller.
func KernelArgs(vals ...any) []unsafe.Pointer {
	slots := make([]uint64, len(vals))
	ptrs := make([]unsafe.Pointer, len(vals))
	for i, v := range vals {
		switch v := v.(type) {
		case DevicePtr:
			slots[i] = uint64(v)
		case uintptr:
			slots[i] = uint64(v)
		case int:
			if v < math.MinInt32 || v > math.MaxInt32 {
				panic(fmt.Sprintf("cuda: kernel argument %d: int %d does not fit int32", i, v))
			}
			slots[i] = uint64(uint32(int32(v)))
		case int32:
			slots[i] = uint64(uint32(v))
		case uint32:
			slots[i] = uint64(v)
		case int64:
			slots[i] = uint64(v)
		case uint64:
			slots[i] = v
		case float32:
			slots[i] = uint64(math.Float32bits(v))
		case float64:
			slots[i] = math.Float64bits(v)
		default:
			panic(fmt.Sprintf("cuda: kernel argument %d: unsupported type %T", i, v))
		}
		ptrs[i] = unsafe.Pointer(&slots[i])
	}
	return ptrs
}

// cuErrorUnsupportedPTXVersion is CUDA_ERROR_UNSUPPORTED_PTX_VERSION (cuda.h): the driver
// refuses PTX of a newer ISA than it knows, as PTX from a newer NVRTC is.
const cuErrorUnsupportedPTXVersion = 222

// cuResultCode finds the CUresult in err's chain: gorgonia.org/cu returns it as an unexported
// integer type, so it is read by kind.
func cuResultCode(err error) (int, bool) {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if v := reflect.ValueOf(e); v.Kind() == reflect.Int {
			return int(v.Int()), true
		}
	}
	return 0, false
}
