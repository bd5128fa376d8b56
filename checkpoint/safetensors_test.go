package checkpoint

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestSafetensorsRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.safetensors")
	in := []Tensor{
		{Name: "a.weight", Shape: []int{2, 3}, Data: []float32{1, 2, 3, 4, 5, -6.5}},
		{Name: "b", Shape: []int{1}, Data: []float32{7}},
		{Name: "empty", Shape: []int{0, 4}, Data: nil},
	}
	err := WriteFileAtomic(path, func(w io.Writer) error {
		return WriteSafetensors(w, in, map[string]string{"format": "pt"})
	})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	// Independent check of the header: 8-byte length, JSON, 8-byte aligned, offsets contiguous.
	hlen := binary.LittleEndian.Uint64(raw[:8])
	if hlen%8 != 0 {
		t.Errorf("header length %d not 8-aligned", hlen)
	}
	var hdr map[string]any
	if err := json.Unmarshal(raw[8:8+hlen], &hdr); err != nil {
		t.Fatal(err)
	}
	if m := hdr["__metadata__"].(map[string]any); m["format"] != "pt" {
		t.Errorf("metadata %v", m)
	}
	if got := uint64(len(raw)) - 8 - hlen; got != 28 {
		t.Errorf("data section %d bytes, want 28", got)
	}
	out, meta, err := ReadSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	if meta["format"] != "pt" || len(out) != 3 {
		t.Fatalf("read %d tensors, meta %v", len(out), meta)
	}
	for i := range in {
		if out[i].Name != in[i].Name || len(out[i].Data) != len(in[i].Data) {
			t.Fatalf("tensor %d: %+v", i, out[i])
		}
		for j := range in[i].Data {
			if out[i].Data[j] != in[i].Data[j] {
				t.Errorf("%s[%d] = %v", in[i].Name, j, out[i].Data[j])
			}
		}
	}
}

func TestSafetensorsErrors(t *testing.T) {
	dir := t.TempDir()
	var good bytes.Buffer
	WriteSafetensors(&good, []Tensor{{Name: "x", Shape: []int{4}, Data: []float32{1, 2, 3, 4}}}, nil)
	cases := map[string][]byte{
		"short":     good.Bytes()[:5],
		"truncated": good.Bytes()[:good.Len()-3],
		"notjson":   append([]byte{8, 0, 0, 0, 0, 0, 0, 0}, []byte("nonsense")...),
	}
	for name, data := range cases {
		p := filepath.Join(dir, name)
		os.WriteFile(p, data, 0o644)
		_, _, err := ReadSafetensors(p)
		if !errors.Is(err, ErrSafetensors) || !bytes.Contains([]byte(err.Error()), []byte(p)) {
			t.Errorf("%s: err = %v, want ErrSafetensors naming the file", name, err)
		}
	}
	if err := WriteSafetensors(io.Discard, []Tensor{{Name: "x", Shape: []int{3}, Data: []float32{1}}}, nil); err == nil {
		t.Error("shape/data mismatch accepted")
	}
}
