package collective

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
)

// A ring connection opens with a handshake. The dialer is the left member of the pair.
//
//	dialer                         acceptor
//	hello{job, from, to, world, nonceD} ->
//	                               <- challenge{nonceA}     (or refuse: wrong job or ranks)
//	auth{mac("dial", ...)}         ->
//	                               <- welcome{mac("accept", ...)}  (or refuse: bad proof)
//
// With a secret, mac is HMAC-SHA256 keyed by the secret over a label, the job id, both
// ranks, the world size and both nonces, so each side proves it knows the secret without
// sending it, and a recorded handshake cannot be replayed against a fresh nonce. Without a
// secret the macs are empty and only the job id and ranks are checked.

const nonceSize = 32

type hello struct {
	job             string
	from, to, world uint32
	nonce           [nonceSize]byte
}

func (h *hello) encode() []byte {
	var w payloadWriter
	w.str(h.job)
	w.u32(h.from)
	w.u32(h.to)
	w.u32(h.world)
	w.bytes(h.nonce[:])
	return w.b
}

func decodeHello(b []byte) (hello, error) {
	p := payloadReader{b: b}
	h := hello{job: p.str(), from: p.u32(), to: p.u32(), world: p.u32()}
	copy(h.nonce[:], p.take(nonceSize))
	return h, p.done()
}

// refusal is why an acceptor turned a dialer away; it travels in a refuse frame.
type refusal struct{ reason string }

func (r *refusal) Error() string { return r.reason }

// proof computes one side's mac; it is empty without a secret.
func proof(secret, label string, h *hello, nonceA []byte) []byte {
	if secret == "" {
		return nil
	}
	m := hmac.New(sha256.New, []byte(secret))
	var n [4]byte
	io.WriteString(m, "herd-collective/1 "+label)
	binary.LittleEndian.PutUint32(n[:], uint32(len(h.job)))
	m.Write(n[:])
	io.WriteString(m, h.job)
	for _, v := range []uint32{h.from, h.to, h.world} {
		binary.LittleEndian.PutUint32(n[:], v)
		m.Write(n[:])
	}
	m.Write(h.nonce[:])
	m.Write(nonceA)
	return m.Sum(nil)
}

func newNonce() ([nonceSize]byte, error) {
	var n [nonceSize]byte
	_, err := rand.Read(n[:])
	return n, err
}

// expectControl reads one control frame and checks its kind; a refuse frame becomes an
// ErrAuth error carrying the acceptor's reason.
func expectControl(rw io.Reader, want frameKind) ([]byte, error) {
	h, payload, err := readControl(rw)
	if err != nil {
		return nil, err
	}
	if h.kind == kindRefuse {
		p := payloadReader{b: payload}
		reason := p.str()
		return nil, fmt.Errorf("%w: refused by acceptor: %s", ErrAuth, reason)
	}
	if h.kind != want {
		return nil, badFrame("got %v during handshake, want %v", h.kind, want)
	}
	return payload, nil
}

// dialHandshake runs the dialer's side on a fresh connection. Errors wrapping ErrAuth mean
// the acceptor refused us or failed to prove the secret; retrying will not help.
func dialHandshake(rw io.ReadWriter, job, secret string, from, to, world int) error {
	nonce, err := newNonce()
	if err != nil {
		return err
	}
	h := hello{job: job, from: uint32(from), to: uint32(to), world: uint32(world), nonce: nonce}
	if err := writeControl(rw, kindHello, h.encode()); err != nil {
		return err
	}
	nonceA, err := expectControl(rw, kindChallenge)
	if err != nil {
		return err
	}
	if len(nonceA) != nonceSize {
		return badFrame("challenge of %d bytes, want %d", len(nonceA), nonceSize)
	}
	if err := writeControl(rw, kindAuth, proof(secret, "dial", &h, nonceA)); err != nil {
		return err
	}
	mac, err := expectControl(rw, kindWelcome)
	if err != nil {
		return err
	}
	if !hmac.Equal(mac, proof(secret, "accept", &h, nonceA)) {
		return fmt.Errorf("%w: acceptor did not prove the secret", ErrAuth)
	}
	return nil
}

// acceptHandshake runs the acceptor's side: it admits only rank from of a world of size world
// in job, proving the secret. A *refusal error means the dialer was told why and turned away.
func acceptHandshake(rw io.ReadWriter, job, secret string, self, from, world int) error {
	payload, err := expectControl(rw, kindHello)
	if err != nil {
		return err
	}
	h, err := decodeHello(payload)
	if err != nil {
		return err
	}
	if h.job != job || h.to != uint32(self) || h.from != uint32(from) || h.world != uint32(world) {
		return refuse(rw, fmt.Sprintf("expected job %q rank %d -> %d of %d, got job %q rank %d -> %d of %d",
			job, from, self, world, h.job, h.from, h.to, h.world))
	}
	nonceA, err := newNonce()
	if err != nil {
		return err
	}
	if err := writeControl(rw, kindChallenge, nonceA[:]); err != nil {
		return err
	}
	mac, err := expectControl(rw, kindAuth)
	if err != nil {
		return err
	}
	if !hmac.Equal(mac, proof(secret, "dial", &h, nonceA[:])) {
		return refuse(rw, "wrong secret for job "+job)
	}
	return writeControl(rw, kindWelcome, proof(secret, "accept", &h, nonceA[:]))
}

// refuse tells the dialer why it is turned away and returns that reason as a *refusal.
func refuse(w io.Writer, reason string) error {
	var p payloadWriter
	p.str(reason)
	_ = writeControl(w, kindRefuse, p.b) // the dialer may already be gone; the refusal stands
	return &refusal{reason: reason}
}
