package collective

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"slices"
	"testing"
	"time"
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

func TestHeartbeatRoundTrip(t *testing.T) {
	for _, sent := range [][]silence{
		nil,
		{{rank: 1, d: 5200 * time.Millisecond}},
		{{rank: 7, d: time.Hour}, {rank: 0, d: 1}, {rank: math.MaxInt32, d: math.MaxInt64}},
	} {
		b := controlFrame(t, kindHeartbeat, encodeHeartbeat(sent))
		h, payload, n, err := decodeFrame(b)
		if err != nil || h.kind != kindHeartbeat || n != len(b) {
			t.Fatalf("frame of %v: %+v (%d of %d bytes), %v", sent, h, n, len(b), err)
		}
		got, err := decodeHeartbeat(payload)
		if err != nil || !slices.Equal(got, sent) {
			t.Fatalf("decoded %v (%v), want %v", got, err, sent)
		}
	}
	many := make([]silence, maxSilentReported+10)
	for i := range many {
		many[i] = silence{rank: i, d: time.Duration(len(many) - i)}
	}
	got, err := decodeHeartbeat(encodeHeartbeat(many))
	if err != nil || !slices.Equal(got, many[:maxSilentReported]) {
		t.Fatalf("%d silent ranks: decoded %d (%v), want the first %d", len(many), len(got), err, maxSilentReported)
	}
}

// TestHeartbeatRejects checks that malformed heartbeat payloads are ErrBadFrame errors.
func TestHeartbeatRejects(t *testing.T) {
	valid := encodeHeartbeat([]silence{{rank: 1, d: time.Second}, {rank: 2, d: time.Millisecond}})
	bad := map[string][]byte{
		"empty":         {},
		"count too big": binary.LittleEndian.AppendUint16(nil, maxSilentReported+1),
		"short entry":   valid[:len(valid)-1],
		"trailing":      append(slices.Clone(valid), 0),
		"count high":    append([]byte{3, 0}, valid[2:]...),
		"duplicate":     encodeHeartbeat([]silence{{rank: 4, d: 1}, {rank: 4, d: 2}}),
		"rank range":    encodeHeartbeat([]silence{{rank: -1, d: 1}}),
		"negative":      encodeHeartbeat([]silence{{rank: 1, d: -time.Second}}),
	}
	for name, b := range bad {
		if got, err := decodeHeartbeat(b); !errors.Is(err, ErrBadFrame) {
			t.Errorf("%s: decoded %v, %v; want ErrBadFrame", name, got, err)
		}
	}
}

// TestDecodeRejects feeds the decoder every truncation of valid frames and a set of
// corruptions; each must be an ErrBadFrame error, not a panic or a success.
func TestDecodeRejects(t *testing.T) {
	frames := [][]byte{
		dataFrame(t, []float32{1, 2, 3}),
		controlFrame(t, kindAbort, encodeAbort(&PeerError{Rank: 1, Addr: "x", Err: ErrAborted})),
		controlFrame(t, kindHeartbeat, encodeHeartbeat([]silence{{rank: 3, d: time.Second}})),
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
	f.Add(controlFrame(f, kindHeartbeat, encodeHeartbeat([]silence{{rank: 2, d: time.Second}})))
	f.Add([]byte("HRDC\x02garbage"))
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
		case kindHeartbeat:
			if silent, err := decodeHeartbeat(payload); err == nil && !bytes.Equal(encodeHeartbeat(silent), payload) {
				t.Fatalf("heartbeat %v re-encodes to %x, want %x", silent, encodeHeartbeat(silent), payload)
			}
		case kindRefuse:
			p := payloadReader{b: payload}
			p.str()
			p.done()
		}
	})
}
