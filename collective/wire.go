package collective

import (
	"encoding/binary"
	"io"
	"math"
)

// Payloads travel as little-endian IEEE 754 float32. On little-endian machines (wire_le.go)
// a []float32 is its own wire form and is written and read in place; elsewhere
// (wire_be.go) the portable functions below convert through a byte buffer.

// wireScratch is the reusable memory of one sending or receiving goroutine.
type wireScratch struct {
	f []float32
	b []byte
}

func (w *wireScratch) floats(n int) []float32 {
	if cap(w.f) < n {
		w.f = make([]float32, n)
	}
	return w.f[:n]
}

func (w *wireScratch) bytes(n int) []byte {
	if cap(w.b) < n {
		w.b = make([]byte, n)
	}
	return w.b[:n]
}

// encodeFloatsPortable returns the wire form of src, built in w.
func encodeFloatsPortable(w *wireScratch, src []float32) []byte {
	b := w.bytes(4 * len(src))
	for i, v := range src {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

// readFloatsPortable reads len(dst) floats from r into dst.
func readFloatsPortable(r io.Reader, dst []float32, w *wireScratch) error {
	b := w.bytes(4 * len(dst))
	if _, err := io.ReadFull(r, b); err != nil {
		return err
	}
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return nil
}

// readAddFloatsPortable reads len(dst) floats from r and adds them into dst.
func readAddFloatsPortable(r io.Reader, dst []float32, w *wireScratch) error {
	s := w.floats(len(dst))
	if err := readFloatsPortable(r, s, w); err != nil {
		return err
	}
	addTo(dst, s)
	return nil
}
