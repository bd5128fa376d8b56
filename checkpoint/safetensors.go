package checkpoint

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"unsafe"
)

// ErrSafetensors is wrapped by every error about a malformed safetensors file.
var ErrSafetensors = errors.New("checkpoint: bad safetensors file")

// maxHeader bounds the JSON header a reader accepts (the format's own readers use 100 MB).
const maxHeader = 100 << 20

// Tensor is one float32 tensor of a safetensors file.
type Tensor struct {
	Name  string
	Shape []int
	Data  []float32
}

type stEntry struct {
	DType   string   `json:"dtype"`
	Shape   []int    `json:"shape"`
	Offsets [2]int64 `json:"data_offsets"`
}

// WriteSafetensors writes tensors in the safetensors format (an 8-byte little-endian header
// length, a JSON header, then the raw little-endian data, in the given order) with optional
// string metadata. Data is streamed tensor by tensor.
func WriteSafetensors(w io.Writer, tensors []Tensor, meta map[string]string) error {
	header := map[string]any{}
	if len(meta) > 0 {
		header["__metadata__"] = meta
	}
	var off int64
	for _, t := range tensors {
		n := 1
		for _, s := range t.Shape {
			n *= s
		}
		if n != len(t.Data) {
			return fmt.Errorf("checkpoint: tensor %s has shape %v but %d values", t.Name, t.Shape, len(t.Data))
		}
		end := off + int64(4*len(t.Data))
		header[t.Name] = stEntry{DType: "F32", Shape: t.Shape, Offsets: [2]int64{off, end}}
		off = end
	}
	hdr, err := json.Marshal(header)
	if err != nil {
		return err
	}
	for len(hdr)%8 != 0 { // the format pads the header with spaces to 8-byte alignment
		hdr = append(hdr, ' ')
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(hdr)))
	bw.Write(n[:])
	bw.Write(hdr)
	for _, t := range tensors {
		if err := writeFloats(bw, t.Data); err != nil {
			return err
		}
	}
	return bw.Flush()
}

func writeFloats(w io.Writer, v []float32) error {
	if len(v) == 0 {
		return nil
	}
	if nativeLittleEndian() {
		_, err := w.Write(unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v)))
		return err
	}
	buf := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(x))
	}
	_, err := w.Write(buf)
	return err
}

func nativeLittleEndian() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}

// ReadSafetensors reads every F32 tensor of a safetensors file, in file order, and the
// header's metadata. Errors name the file.
func ReadSafetensors(path string) ([]Tensor, map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("checkpoint: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("checkpoint: %w", err)
	}
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w %s: %s", ErrSafetensors, path, fmt.Sprintf(format, a...))
	}
	var n [8]byte
	if _, err := io.ReadFull(f, n[:]); err != nil {
		return nil, nil, bad("truncated header length")
	}
	hlen := binary.LittleEndian.Uint64(n[:])
	if hlen > maxHeader || int64(hlen)+8 > st.Size() {
		return nil, nil, bad("header length %d does not fit a file of %d bytes", hlen, st.Size())
	}
	hdr := make([]byte, hlen)
	if _, err := io.ReadFull(f, hdr); err != nil {
		return nil, nil, bad("truncated header")
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(hdr, &raw); err != nil {
		return nil, nil, bad("header is not a JSON object: %v", err)
	}
	var meta map[string]string
	type named struct {
		name string
		e    stEntry
	}
	var entries []named
	for k, v := range raw {
		if k == "__metadata__" {
			if err := json.Unmarshal(v, &meta); err != nil {
				return nil, nil, bad("__metadata__: %v", err)
			}
			continue
		}
		var e stEntry
		if err := json.Unmarshal(v, &e); err != nil {
			return nil, nil, bad("tensor %s: %v", k, err)
		}
		entries = append(entries, named{k, e})
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].e.Offsets[0] < entries[j].e.Offsets[0] })
	dataLen := st.Size() - 8 - int64(hlen)
	var out []Tensor
	var next int64
	for _, ne := range entries {
		e := ne.e
		if e.DType != "F32" {
			return nil, nil, bad("tensor %s has dtype %s; only F32 is read", ne.name, e.DType)
		}
		count := int64(1)
		for _, s := range e.Shape {
			if s < 0 {
				return nil, nil, bad("tensor %s has a negative dimension", ne.name)
			}
			count *= int64(s)
		}
		if e.Offsets[0] != next || e.Offsets[1]-e.Offsets[0] != 4*count || e.Offsets[1] > dataLen {
			return nil, nil, bad("tensor %s: data_offsets %v do not match shape %v within %d data bytes", ne.name, e.Offsets, e.Shape, dataLen)
		}
		next = e.Offsets[1]
		buf := make([]byte, 4*count)
		if _, err := f.ReadAt(buf, 8+int64(hlen)+e.Offsets[0]); err != nil {
			return nil, nil, bad("tensor %s: %v", ne.name, err)
		}
		v := make([]float32, count)
		for i := range v {
			v[i] = math.Float32frombits(binary.LittleEndian.Uint32(buf[4*i:]))
		}
		out = append(out, Tensor{Name: ne.name, Shape: e.Shape, Data: v})
	}
	return out, meta, nil
}

// WriteFileAtomic writes a file through a temporary name in the same directory, fsyncs it
// and renames it into place, so a reader sees either the old file or the complete new one.
func WriteFileAtomic(path string, write func(w io.Writer) error) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := write(tmp); err != nil {
		return fmt.Errorf("checkpoint: writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
