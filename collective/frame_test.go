package collective

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func dataFrame(t testing.TB, seg []float32) []byte {
	t.Helper()
	var buf bytes.Buffer
	fw := frameWriter{w: &buf}
	h := header{coll: collAllReduce, op: Avg, seq: 7, part: 3, root: 0, count: 1000}
	if err := fw.writeData(h, seg); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func controlFrame(t testing.TB, kind frameKind, payload []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := writeControl(&buf, kind, payload); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestFrameRoundTrip(t *testing.T) {
	seg := []float32{1, -2.5, 3e-20}
	b := dataFrame(t, seg)
	h, payload, n, err := decodeFrame(b)
	if err != nil {
		t.Fatal(err)
	}
	want := header{kind: kindData, coll: collAllReduce, op: Avg, seq: 7, part: 3, count: 1000, length: 12}
	if h != want || n != len(b) {
		t.Fatalf("decoded %+v (%d bytes), want %+v (%d bytes)", h, n, want, len(b))
	}
	got := make([]float32, 3)
	if err := readFloatsPortable(bytes.NewReader(payload), got, &wireScratch{}); err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if got[i] != seg[i] {
			t.Fatalf("payload %v, want %v", got, seg)
		}
	}
}

func TestAbortRoundTrip(t *testing.T) {
	sent := &PeerError{Rank: 2, Addr: "127.0.0.1:9", Reporter: 3,
		Err: errors.Join(ErrDeadline, errors.New("waited 5s"))}
	pe, err := decodeAbort(encodeAbort(sent))
	if err != nil {
		t.Fatal(err)
	}
	if pe.Rank != 2 || pe.Addr != "127.0.0.1:9" || pe.Reporter != 3 || !errors.Is(pe, ErrDeadline) ||
		pe.Err.Error() != sent.Err.Error() {
		t.Fatalf("decoded %#v, want %#v", pe, sent)
	}
	closed, err := decodeAbort(encodeAbort(&PeerError{Rank: 1, Err: ErrClosed}))
	if err != nil || !errors.Is(closed, ErrPeerClosed) {
		t.Fatalf("a closing rank reaches its peers as %v (%v), want ErrPeerClosed", closed, err)
	}
}

// TestDecodeRejects feeds the decoder every truncation of valid frames and a set of
// corruptions; each must be an ErrBadFrame error, not a panic or a success.
func TestDecodeRejects(t *testing.T) {
	frames := [][]byte{
		dataFrame(t, []float32{1, 2, 3}),
		controlFrame(t, kindAbort, encodeAbort(&PeerError{Rank: 1, Addr: "x", Err: ErrAborted})),
	}
	for _, f := range frames {
		for cut := range len(f) {
			if _, _, _, err := decodeFrame(f[:cut]); !errors.Is(err, ErrBadFrame) {
				t.Fatalf("frame cut to %d of %d bytes: %v, want ErrBadFrame", cut, len(f), err)
			}
		}
	}
	corrupt := map[string]func(b []byte){
		"magic":           func(b []byte) { b[0] = 'X' },
		"version":         func(b []byte) { b[4] = 9 },
		"kind 0":          func(b []byte) { b[5] = 0 },
		"kind 200":        func(b []byte) { b[5] = 200 },
		"coll":            func(b []byte) { b[6] = 99 },
		"op":              func(b []byte) { b[7] = 9 },
		"odd length":      func(b []byte) { b[28] = 13 },
		"huge length":     func(b []byte) { b[31] = 0xff },
		"control coll":    func(b []byte) { b[5], b[6] = byte(kindAbort), 1 },
		"control too big": func(b []byte) { b[5], b[6], b[7], b[30] = byte(kindAbort), 0, 0, 1 },
	}
	for name, f := range corrupt {
		b := dataFrame(t, []float32{1, 2, 3})
		f(b)
		if _, _, _, err := decodeFrame(b); !errors.Is(err, ErrBadFrame) {
			t.Errorf("%s: %v, want ErrBadFrame", name, err)
		}
	}
}

func TestReadControlRefusesData(t *testing.T) {
	_, _, err := readControl(bytes.NewReader(dataFrame(t, []float32{1})))
	if !errors.Is(err, ErrBadFrame) {
		t.Fatalf("%v, want ErrBadFrame", err)
	}
	_, _, err = readControl(bytes.NewReader(controlFrame(t, kindHello, []byte{1, 2, 3})[:34]))
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated control frame: %v, want io.ErrUnexpectedEOF", err)
	}
}

// FuzzDecodeFrame checks that no input makes the decoders panic, that whatever decodes
// re-encodes to the same bytes, and that the streaming reader agrees with the slice decoder.
func FuzzDecodeFrame(f *testing.F) {
	f.Add(dataFrame(f, []float32{1, 2, 3}))
	f.Add(dataFrame(f, nil))
	f.Add(controlFrame(f, kindAbort, encodeAbort(&PeerError{Rank: 1, Addr: "127.0.0.1:1", Err: ErrPeerFailed})))
	h := hello{job: "job", from: 1, to: 2, world: 3}
	f.Add(controlFrame(f, kindHello, h.encode()))
	f.Add([]byte("HRDC\x01garbage"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, payload, n, err := decodeFrame(b)
		var hb [headerSize]byte
		rh, rerr := readHeader(bytes.NewReader(b), &hb)
		if err != nil {
			if !errors.Is(err, ErrBadFrame) {
				t.Fatalf("error %v does not wrap ErrBadFrame", err)
			}
			if rerr == nil && len(b) >= headerSize+int(rh.length) {
				t.Fatalf("readHeader accepted %+v that decodeFrame refused: %v", rh, err)
			}
			return
		}
		if rerr != nil || rh != h {
			t.Fatalf("readHeader: %+v, %v; decodeFrame: %+v", rh, rerr, h)
		}
		again := make([]byte, headerSize, n)
		h.encode(again)
		again = append(again, payload...)
		if !bytes.Equal(again, b[:n]) {
			t.Fatalf("re-encoded %x, want %x", again, b[:n])
		}
		switch h.kind {
		case kindAbort:
			decodeAbort(payload)
		case kindHello:
			decodeHello(payload)
		case kindRefuse:
			p := payloadReader{b: payload}
			p.str()
			p.done()
		}
	})
}
