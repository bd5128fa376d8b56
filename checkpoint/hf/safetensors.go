package hf

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
)

// The safetensors format: an 8-byte little-endian header length n, n bytes of JSON header
// (padded with spaces so the data starts 8-byte aligned), then the raw little-endian tensor
// data. The header maps each tensor name to its dtype, shape and [begin, end) byte range in
// the data; the ranges cover the data with no gaps. "__metadata__" holds string metadata,
// {"format": "pt"} for files transformers writes.

// maxHeader bounds the JSON header a reader accepts (the format's own readers use 100 MB).
const maxHeader = 100 << 20

// stEntry is one tensor of a safetensors header.
type stEntry struct {
	DType   string   `json:"dtype"`
	Shape   []int    `json:"shape"`
	Offsets [2]int64 `json:"data_offsets"`
}

// dtypeSize gives the bytes per element of every dtype the format defines. Import reads
// F32, BF16 and F16; the others are known only so that a header can be checked.
var dtypeSize = map[string]int64{
	"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
	"I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}

// stTensor names one F32 tensor to be written.
type stTensor struct {
	name  string
	shape []int
}

// numel returns the number of elements of a tensor of the given shape.
func numel(shape []int) int64 {
	n := int64(1)
	for _, s := range shape {
		n *= int64(s)
	}
	return n
}

// encodeHeader returns the bytes that precede the data of a safetensors file holding ts as
// F32, in order: the length, then the padded JSON header. It also returns the data size.
func encodeHeader(ts []stTensor) (prefix []byte, dataBytes int64, err error) {
	h := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	for _, t := range ts {
		if _, dup := h[t.name]; dup {
			return nil, 0, fmt.Errorf("hf: tensor %s written twice", t.name)
		}
		end := dataBytes + 4*numel(t.shape)
		h[t.name] = stEntry{DType: "F32", Shape: t.shape, Offsets: [2]int64{dataBytes, end}}
		dataBytes = end
	}
	js, err := json.Marshal(h)
	if err != nil {
		return nil, 0, fmt.Errorf("hf: safetensors header: %w", err)
	}
	for len(js)%8 != 0 {
		js = append(js, ' ')
	}
	prefix = binary.LittleEndian.AppendUint64(make([]byte, 0, 8+len(js)), uint64(len(js)))
	return append(prefix, js...), dataBytes, nil
}

// writeF32 writes v little-endian through w, using buf (any capacity) as scratch.
func writeF32(w *bufio.Writer, v []float32, buf []byte) ([]byte, error) {
	const chunk = 1 << 14
	for len(v) > 0 {
		n := min(len(v), chunk)
		buf = buf[:0]
		for _, x := range v[:n] {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(x))
		}
		if _, err := w.Write(buf); err != nil {
			return buf, err
		}
		v = v[n:]
	}
	return buf, nil
}

// tensorBytes returns the bytes of a tensor of shape with elements of size bytes, and false
// when that does not fit in an int64 (a header claiming more than any file can hold).
func tensorBytes(shape []int, size int64) (int64, bool) {
	n := size
	for _, d := range shape {
		if d != 0 && n > math.MaxInt64/int64(d) {
			return 0, false
		}
		n *= int64(d)
	}
	return n, true
}

// stFile is an open safetensors file whose header has been checked.
type stFile struct {
	path      string
	f         *os.File
	dataStart int64 // file offset of data byte 0
	tensors   map[string]stEntry
}

// openSafetensors opens path and checks its header: a JSON object whose tensors have known
// dtypes, non-negative shapes and byte ranges that match them, lie inside the file and
// cover its data exactly. Nothing in the header is trusted before it is checked.
func openSafetensors(path string) (*stFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFormat, err)
	}
	s, err := checkHeader(f, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	return s, nil
}

func checkHeader(f *os.File, path string) (*stFile, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrFormat, path, fmt.Sprintf(format, a...))
	}
	st, err := f.Stat()
	if err != nil {
		return nil, bad("%v", err)
	}
	var n [8]byte
	if _, err := io.ReadFull(f, n[:]); err != nil {
		return nil, bad("truncated header length")
	}
	hlen := binary.LittleEndian.Uint64(n[:])
	if hlen > maxHeader || int64(hlen)+8 > st.Size() {
		return nil, bad("header length %d does not fit a file of %d bytes", hlen, st.Size())
	}
	hdr := make([]byte, hlen)
	if _, err := io.ReadFull(f, hdr); err != nil {
		return nil, bad("truncated header")
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(hdr, &raw); err != nil {
		return nil, bad("header is not a JSON object: %v", err)
	}
	s := &stFile{path: path, f: f, dataStart: 8 + int64(hlen), tensors: map[string]stEntry{}}
	dataLen := st.Size() - s.dataStart
	names := make([]string, 0, len(raw))
	for name, v := range raw {
		if name == "__metadata__" {
			continue
		}
		var e stEntry
		if err := json.Unmarshal(v, &e); err != nil {
			return nil, bad("tensor %s: %v", name, err)
		}
		size, ok := dtypeSize[e.DType]
		if !ok {
			return nil, bad("tensor %s: unknown dtype %q", name, e.DType)
		}
		for _, d := range e.Shape {
			if d < 0 {
				return nil, bad("tensor %s: negative dimension in shape %v", name, e.Shape)
			}
		}
		want, ok := tensorBytes(e.Shape, size)
		if !ok {
			return nil, bad("tensor %s: shape %v of %s overflows a 64-bit byte count", name, e.Shape, e.DType)
		}
		if e.Offsets[0] < 0 || e.Offsets[1] < e.Offsets[0] {
			return nil, bad("tensor %s: data_offsets %v are not an increasing pair of byte offsets", name, e.Offsets)
		}
		if e.Offsets[1]-e.Offsets[0] != want {
			return nil, bad("tensor %s: data_offsets %v hold %d bytes, shape %v of %s needs %d",
				name, e.Offsets, e.Offsets[1]-e.Offsets[0], e.Shape, e.DType, want)
		}
		s.tensors[name] = e
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool {
		return s.tensors[names[i]].Offsets[0] < s.tensors[names[j]].Offsets[0]
	})
	var next int64
	for _, name := range names {
		e := s.tensors[name]
		if e.Offsets[0] != next {
			return nil, bad("tensor %s: data starts at byte %d, expected %d (ranges must be contiguous)", name, e.Offsets[0], next)
		}
		if e.Offsets[1] > dataLen {
			return nil, bad("tensor %s: data_offsets %v end past the data, which holds %d bytes (file truncated?)",
				name, e.Offsets, dataLen)
		}
		next = e.Offsets[1]
	}
	if next != dataLen {
		return nil, bad("tensors cover %d data bytes, file holds %d", next, dataLen)
	}
	return s, nil
}

// decoders widen one little-endian element of each dtype Import reads to float32.
var decoders = map[string]func(b []byte) float32{
	"F32":  func(b []byte) float32 { return math.Float32frombits(binary.LittleEndian.Uint32(b)) },
	"BF16": func(b []byte) float32 { return bf16to32(binary.LittleEndian.Uint16(b)) },
	"F16":  func(b []byte) float32 { return f16to32(binary.LittleEndian.Uint16(b)) },
}

// readChunk bounds the bytes read holds at a time.
const readChunk = 1 << 20

// read converts tensor name (entry e) to float32 into dst, which has its element count.
func (s *stFile) read(name string, e stEntry, dst []float32) error {
	decode, ok := decoders[e.DType]
	if !ok {
		return fmt.Errorf("%w: %s: tensor %s has dtype %s; F32, BF16 or F16 is needed", ErrUnsupported, s.path, name, e.DType)
	}
	size := dtypeSize[e.DType]
	buf := make([]byte, min(int64(len(dst))*size, readChunk))
	per := int64(len(buf)) / size
	off := s.dataStart + e.Offsets[0]
	for done := int64(0); done < int64(len(dst)); {
		n := min(per, int64(len(dst))-done)
		b := buf[:n*size]
		if _, err := s.f.ReadAt(b, off+done*size); err != nil {
			return fmt.Errorf("%w: %s: tensor %s: %v", ErrFormat, s.path, name, err)
		}
		for i := range n {
			dst[done+i] = decode(b[i*size:])
		}
		done += n
	}
	return nil
}

// Close closes the file.
func (s *stFile) Close() error { return s.f.Close() }

// bf16to32 widens a bfloat16, the top half of a float32, exactly.
func bf16to32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// f16to32 widens an IEEE half-precision value exactly, keeping signed zeros, subnormals,
// infinities and NaN payloads.
func f16to32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // infinity or NaN
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp == 0: // zero or subnormal: mant * 2^-24
		f := float32(mant) / (1 << 24)
		if sign != 0 {
			f = -f
		}
		return f
	default: // rebias the exponent from 15 to 127
		return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
	}
}
