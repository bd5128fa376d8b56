//go:build 386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64 || wasm

package collective

import (
	"io"
	"unsafe"
)

// f32Bytes views f as bytes, without copying.
func f32Bytes(f []float32) []byte {
	if len(f) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&f[0])), 4*len(f))
}

// encodeFloats returns the wire form of src: src itself.
func encodeFloats(_ *wireScratch, src []float32) []byte { return f32Bytes(src) }

// readFloats reads len(dst) floats from r straight into dst.
func readFloats(r io.Reader, dst []float32, _ *wireScratch) error {
	_, err := io.ReadFull(r, f32Bytes(dst))
	return err
}

// readAddFloats reads len(dst) floats from r into scratch and adds them into dst.
func readAddFloats(r io.Reader, dst []float32, w *wireScratch) error {
	s := w.floats(len(dst))
	if _, err := io.ReadFull(r, f32Bytes(s)); err != nil {
		return err
	}
	addTo(dst, s)
	return nil
}
