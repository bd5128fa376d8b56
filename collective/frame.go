package collective

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"time"
)

// Every message between ring members is a frame: a fixed header followed by a payload.
//
//	offset size field
//	0      4    magic "HRDC"
//	4      1    version (frameVersion)
//	5      1    kind (frameKind)
//	6      1    coll: the collective of a data frame, 0 otherwise
//	7      1    op: the Op of a data frame (0 when the collective takes none)
//	8      8    seq: the collective's sequence number on this communicator, from 1
//	16     4    part: the segment's index within the collective (step*segments + segment)
//	20     4    root: the broadcast root, 0 otherwise
//	24     4    count: the collective's buffer length in elements, modulo 2^32
//	28     4    length of the payload in bytes
//
// All integers are little-endian. Data payloads are little-endian float32s. Members of a
// ring run the same build, so a change of the format bumps frameVersion and members of
// different versions refuse each other at the handshake. Version 2 added heartbeat frames.
const (
	headerSize   = 32
	frameMagic   = "HRDC"
	frameVersion = 2

	// maxDataPayload bounds a data frame; SegmentBytes may not exceed it.
	maxDataPayload = 64 << 20
	// maxControlPayload bounds handshake and abort frames.
	maxControlPayload = 4 << 10
)

type frameKind uint8

const (
	kindHello     frameKind = iota + 1 // dialer -> acceptor: who I am
	kindChallenge                      // acceptor -> dialer: a nonce to prove the secret with
	kindAuth                           // dialer -> acceptor: the proof
	kindWelcome                        // acceptor -> dialer: accepted, with the acceptor's proof
	kindRefuse                         // acceptor -> dialer: refused, with the reason
	kindData                           // a segment of a collective
	kindAbort                          // the group failed: the cause, to be passed on
	kindHeartbeat                      // to the left neighbour: alive, and who is silent
	kindLast      = kindHeartbeat
)

func (k frameKind) String() string {
	names := [...]string{"", "hello", "challenge", "auth", "welcome", "refuse", "data", "abort", "heartbeat"}
	if k >= 1 && k <= kindLast {
		return names[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

type header struct {
	kind   frameKind
	coll   coll
	op     Op
	seq    uint64
	part   uint32
	root   uint32
	count  uint32
	length uint32
}

// encode writes h into b, which must hold headerSize bytes.
func (h *header) encode(b []byte) {
	_ = b[headerSize-1]
	copy(b[0:4], frameMagic)
	b[4] = frameVersion
	b[5] = byte(h.kind)
	b[6] = byte(h.coll)
	b[7] = byte(h.op)
	binary.LittleEndian.PutUint64(b[8:], h.seq)
	binary.LittleEndian.PutUint32(b[16:], h.part)
	binary.LittleEndian.PutUint32(b[20:], h.root)
	binary.LittleEndian.PutUint32(b[24:], h.count)
	binary.LittleEndian.PutUint32(b[28:], h.length)
}

func badFrame(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadFrame, fmt.Sprintf(format, args...))
}

// decodeHeader parses and checks a header. It returns an error wrapping ErrBadFrame, never
// panics, for short input, a wrong magic or version, an unknown kind or an implausible field.
func decodeHeader(b []byte) (header, error) {
	if len(b) < headerSize {
		return header{}, badFrame("truncated header: %d of %d bytes: %v", len(b), headerSize, io.ErrUnexpectedEOF)
	}
	if string(b[0:4]) != frameMagic {
		return header{}, badFrame("magic %q, want %q", b[0:4], frameMagic)
	}
	if b[4] != frameVersion {
		return header{}, badFrame("version %d, want %d", b[4], frameVersion)
	}
	h := header{
		kind:   frameKind(b[5]),
		coll:   coll(b[6]),
		op:     Op(b[7]),
		seq:    binary.LittleEndian.Uint64(b[8:]),
		part:   binary.LittleEndian.Uint32(b[16:]),
		root:   binary.LittleEndian.Uint32(b[20:]),
		count:  binary.LittleEndian.Uint32(b[24:]),
		length: binary.LittleEndian.Uint32(b[28:]),
	}
	return h, h.check()
}

func (h *header) check() error {
	switch {
	case h.kind < 1 || h.kind > kindLast:
		return badFrame("unknown kind %d", h.kind)
	case h.kind != kindData:
		if h.coll != 0 || h.op != 0 {
			return badFrame("%v frame with coll %d op %d", h.kind, h.coll, h.op)
		}
		if h.length > maxControlPayload {
			return badFrame("%v payload of %d bytes exceeds %d", h.kind, h.length, maxControlPayload)
		}
	case h.coll < 1 || h.coll > collLast:
		return badFrame("data frame with unknown collective %d", h.coll)
	case h.op != 0 && !h.op.valid():
		return badFrame("data frame with unknown op %d", h.op)
	case h.length > maxDataPayload || h.length%4 != 0:
		return badFrame("data payload of %d bytes: want a multiple of 4 up to %d", h.length, maxDataPayload)
	}
	return nil
}

// decodeFrame parses one whole frame at the start of b and returns its header, its payload
// (aliasing b) and the number of bytes it occupies.
func decodeFrame(b []byte) (h header, payload []byte, n int, err error) {
	if h, err = decodeHeader(b); err != nil {
		return header{}, nil, 0, err
	}
	n = headerSize + int(h.length)
	if len(b) < n {
		return header{}, nil, 0, badFrame("truncated %v payload: %d of %d bytes: %v",
			h.kind, len(b)-headerSize, h.length, io.ErrUnexpectedEOF)
	}
	return h, b[headerSize:n], n, nil
}

// readHeader reads and checks one header from r into the caller's buffer b.
func readHeader(r io.Reader, b *[headerSize]byte) (header, error) {
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return header{}, err
	}
	return decodeHeader(b[:])
}

// readControl reads one whole control frame. It refuses data frames, whose payloads are read
// in place by the ring instead.
func readControl(r io.Reader) (header, []byte, error) {
	var hb [headerSize]byte
	h, err := readHeader(r, &hb)
	if err != nil {
		return header{}, nil, err
	}
	if h.kind == kindData {
		return header{}, nil, badFrame("data frame where a control frame was expected")
	}
	payload := make([]byte, h.length)
	if _, err := io.ReadFull(r, payload); err != nil {
		return header{}, nil, err
	}
	return h, payload, nil
}

// writeControl writes one control frame in a single write.
func writeControl(w io.Writer, kind frameKind, payload []byte) error {
	if len(payload) > maxControlPayload {
		return fmt.Errorf("collective: %v payload of %d bytes exceeds %d", kind, len(payload), maxControlPayload)
	}
	_, err := w.Write(encodeControl(kind, payload))
	return err
}

// encodeControl returns the bytes of one control frame; payload must not exceed
// maxControlPayload.
func encodeControl(kind frameKind, payload []byte) []byte {
	b := make([]byte, headerSize+len(payload))
	h := header{kind: kind, length: uint32(len(payload))}
	h.encode(b)
	copy(b[headerSize:], payload)
	return b
}

// frameWriter writes data frames with one writev per frame and no allocation.
type frameWriter struct {
	w    io.Writer
	hdr  [headerSize]byte
	vec  [2][]byte
	wire wireScratch
}

func (fw *frameWriter) writeData(h header, seg []float32) error {
	payload := encodeFloats(&fw.wire, seg)
	h.kind = kindData
	h.length = uint32(len(payload))
	h.encode(fw.hdr[:])
	bufs := net.Buffers(fw.vec[:0])
	bufs = append(bufs, fw.hdr[:], payload)
	_, err := bufs.WriteTo(fw.w)
	return err
}

// payloadReader decodes the fields of a control payload; the first short read sticks and
// every later field reads as zero, so callers check err once at the end.
type payloadReader struct {
	b   []byte
	err error
}

func (p *payloadReader) take(n int) []byte {
	if p.err != nil || n > len(p.b) {
		if p.err == nil {
			p.err = badFrame("truncated payload")
		}
		return make([]byte, n)
	}
	v := p.b[:n]
	p.b = p.b[n:]
	return v
}

func (p *payloadReader) u8() uint8   { return p.take(1)[0] }
func (p *payloadReader) u16() uint16 { return binary.LittleEndian.Uint16(p.take(2)) }
func (p *payloadReader) u32() uint32 { return binary.LittleEndian.Uint32(p.take(4)) }
func (p *payloadReader) u64() uint64 { return binary.LittleEndian.Uint64(p.take(8)) }

func (p *payloadReader) str() string {
	n := int(binary.LittleEndian.Uint16(p.take(2)))
	return string(p.take(n))
}

func (p *payloadReader) done() error {
	if p.err == nil && len(p.b) != 0 {
		p.err = badFrame("%d trailing payload bytes", len(p.b))
	}
	return p.err
}

// payloadWriter builds a control payload.
type payloadWriter struct{ b []byte }

func (p *payloadWriter) u8(v uint8)     { p.b = append(p.b, v) }
func (p *payloadWriter) u16(v uint16)   { p.b = binary.LittleEndian.AppendUint16(p.b, v) }
func (p *payloadWriter) u32(v uint32)   { p.b = binary.LittleEndian.AppendUint32(p.b, v) }
func (p *payloadWriter) u64(v uint64)   { p.b = binary.LittleEndian.AppendUint64(p.b, v) }
func (p *payloadWriter) bytes(v []byte) { p.b = append(p.b, v...) }

// str appends a string of at most 1 KiB, cutting longer ones.
func (p *payloadWriter) str(s string) {
	s = s[:min(len(s), 1<<10)]
	p.b = binary.LittleEndian.AppendUint16(p.b, uint16(len(s)))
	p.b = append(p.b, s...)
}

// abortMsg is the payload of an abort frame: a *PeerError on the wire.
func encodeAbort(pe *PeerError) []byte {
	var w payloadWriter
	code, msg := wireCode(pe.Err)
	w.u8(code)
	w.u32(uint32(int32(pe.Rank)))
	w.u32(uint32(int32(pe.Reporter)))
	w.str(pe.Addr)
	w.str(msg)
	return w.b
}

func decodeAbort(b []byte) (*PeerError, error) {
	p := payloadReader{b: b}
	code := p.u8()
	rank, reporter := int(int32(p.u32())), int(int32(p.u32()))
	addr, msg := p.str(), p.str()
	if err := p.done(); err != nil {
		return nil, err
	}
	return &PeerError{Rank: rank, Addr: addr, Reporter: reporter, Err: fromWire(code, msg)}, nil
}

// A heartbeat frame's payload lists the members that the sender knows to be silent, at most
// maxSilentReported of them, longest silent first:
//
//	u16 count, then count times: u32 rank, u64 nanoseconds since that rank was last heard
//
// An empty list (count 0) is the usual beat: the sender is alive and knows of no silence.
const maxSilentReported = 256

func encodeHeartbeat(silent []silence) []byte {
	silent = silent[:min(len(silent), maxSilentReported)]
	w := payloadWriter{b: make([]byte, 0, 2+12*len(silent))}
	w.u16(uint16(len(silent)))
	for _, s := range silent {
		w.u32(uint32(s.rank))
		w.u64(uint64(s.d))
	}
	return w.b
}

// decodeHeartbeat parses a heartbeat payload. Ranks are checked against the world size by
// the caller; here only the format is: the count, no duplicate rank, durations in range.
func decodeHeartbeat(b []byte) ([]silence, error) {
	p := payloadReader{b: b}
	n := int(p.u16())
	if n > maxSilentReported {
		return nil, badFrame("heartbeat lists %d silent ranks, at most %d allowed", n, maxSilentReported)
	}
	silent := make([]silence, 0, min(n, len(b)/12))
	for range n {
		rank, d := p.u32(), p.u64()
		if p.err != nil {
			break
		}
		if rank > math.MaxInt32 || d > math.MaxInt64 {
			return nil, badFrame("heartbeat entry rank %d silent %dns out of range", rank, d)
		}
		for _, s := range silent {
			if s.rank == int(rank) {
				return nil, badFrame("heartbeat lists rank %d twice", rank)
			}
		}
		silent = append(silent, silence{rank: int(rank), d: time.Duration(d)})
	}
	if err := p.done(); err != nil {
		return nil, err
	}
	return silent, nil
}

// isTimeout reports whether err is a network timeout, as set by a deadline.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
