package collective

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

const (
	// handshakeTimeout bounds one connection's handshake.
	handshakeTimeout = 10 * time.Second
	// abortGrace bounds how long a failing member keeps its connections open to pass the
	// cause on: finishing a frame cut short, writing the abort frame, and reading until the
	// neighbour hangs up (closing with unread data would reset the connection and could
	// destroy the abort frame before the neighbour reads it).
	abortGrace = time.Second
	// mismatchGrace is how long a rank that received a frame of the wrong collective waits
	// for an abort frame explaining it before it reports a mismatch.
	mismatchGrace = 200 * time.Millisecond
)

// Ring is one member of a TCP ring. Start it on every member; it is ready once it has
// connected to both neighbours. Calls made before that wait for it.
//
// Failure detection: the ring always reads the connection to its right neighbour (which
// carries heartbeats and at most one abort frame back) and, during a collective, the one
// from its left, so a dead neighbour is noticed on both sides as soon as its kernel closes
// the sockets. The member that notices sends the cause (a *PeerError naming the dead peer)
// to both neighbours, which pass it on, so every member fails with the same cause. A member
// that is alive but stuck is caught by the call's deadline, and blamed by name when it has
// stopped sending heartbeats (heartbeat.go).
type Ring struct {
	cfg         Config
	log         *zap.Logger
	n, rank     int
	left, right int // neighbour ranks
	segElems    int

	ln         net.Listener
	lnOnce     sync.Once
	bootCancel context.CancelFunc
	admitted   atomic.Bool    // a left neighbour passed the handshake
	admits     sync.WaitGroup // the accept loop and the handshakes it started

	ready chan struct{} // closed once both neighbours are connected
	errc  chan error    // receives the first failure
	done  chan struct{} // closed on the first failure, including Close

	mu        sync.Mutex
	cause     *PeerError // the first failure
	closed    bool       // Close was called
	seq       uint64     // sequence number of the last collective issued
	leftConn  net.Conn
	rightConn net.Conn
	// notified is set once the neighbours have been sent the cause; failed calls wait in
	// unfinished until then.
	notified   bool
	unfinished []*ringOp

	sendQ, recvQ opQueue
	wmu          sync.Mutex // one frame at a time on rightConn
	rightDirty   bool       // a frame on rightConn was cut short; nothing may follow it
	sent         atomic.Int64

	hb       beats
	lmu      sync.Mutex // one frame at a time on leftConn: heartbeats, then the abort
	leftRest []byte     // the unsent end of a heartbeat cut short; sent before the next frame
	leftShut bool       // leftConn takes no more frames: it broke, or the abort was sent

	wg      sync.WaitGroup // every goroutine of the ring
	readers sync.WaitGroup // the goroutines that read the connections
}

var (
	_ Communicator = (*Ring)(nil)
	_ Aborter      = (*Ring)(nil)
)

// Join is Start followed by the wait for the ring to be up: it returns a connected ring, or
// the bootstrap's error (ctx's, when ctx ends first) with the ring closed.
func Join(ctx context.Context, cfg Config) (*Ring, error) {
	r, err := Start(ctx, cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-r.Ready():
		return r, nil
	case err = <-r.Err():
	case <-ctx.Done():
		err = ctx.Err()
	}
	r.Close()
	return nil, err
}

// Start validates cfg, listens, and connects to the neighbours in the background, returning
// at once; Ready tells when the ring is up. ctx bounds the bootstrap only (as does
// cfg.DialTimeout); cancelling it after Ready has no effect.
func Start(ctx context.Context, cfg Config) (*Ring, error) {
	if err := cfg.Validate(); err != nil {
		if cfg.Listener != nil {
			cfg.Listener.Close()
		}
		return nil, err
	}
	n := len(cfg.Peers)
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	r := &Ring{
		cfg: cfg, log: log.With(zap.Int("rank", cfg.Rank), zap.String("job", cfg.JobID)),
		n: n, rank: cfg.Rank, left: (cfg.Rank + n - 1) % n, right: (cfg.Rank + 1) % n,
		segElems: cfg.SegmentBytes / 4,
		ready:    make(chan struct{}), errc: make(chan error, 1), done: make(chan struct{}),
	}
	r.sendQ.init()
	r.recvQ.init()
	r.hb.init(&cfg, cfg.Rank, n)
	if n == 1 {
		if cfg.Listener != nil {
			cfg.Listener.Close()
		}
		close(r.ready)
		return r, nil
	}
	if err := r.listen(); err != nil {
		return nil, err
	}
	bootCtx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	r.bootCancel = cancel
	r.wg.Add(3)
	r.readers.Add(1)
	go r.bootstrap(bootCtx)
	go r.sendLoop()
	go r.recvLoop()
	return r, nil
}

func (r *Ring) listen() error {
	if r.cfg.Listener != nil {
		r.ln = r.cfg.Listener
		return nil
	}
	addr := r.cfg.ListenAddr
	if addr == "" {
		addr = r.cfg.Peers[r.rank]
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("collective: listen on %s: %w", addr, err)
	}
	r.ln = ln
	return nil
}

// SentBytes returns the bytes of collective data this rank has sent to its right neighbour
// since Start: the elements of every data frame, without frame headers, heartbeats or
// control frames. It is what a collective costs on the wire, to compare with a plan.
func (r *Ring) SentBytes() int64 { return r.sent.Load() }

// Rank returns this member's rank.
func (r *Ring) Rank() int { return r.rank }

// Size returns the number of members.
func (r *Ring) Size() int { return r.n }

// Addr returns the address this member listens on (its entry in Peers with one member).
func (r *Ring) Addr() string {
	if r.ln != nil {
		return r.ln.Addr().String()
	}
	return r.cfg.Peers[r.rank]
}

// Ready is closed once the ring has connected to both neighbours.
func (r *Ring) Ready() <-chan struct{} { return r.ready }

// Err receives the first failure of the ring (a *PeerError), unless the ring was closed
// by Close before anything failed.
func (r *Ring) Err() <-chan error { return r.errc }

// Close fails pending and later calls (ErrClosed here, ErrPeerClosed on the other members),
// tells the neighbours, and returns once every goroutine of the ring has stopped: at most
// about a second when a neighbour does not answer.
func (r *Ring) Close() error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.fail(r.peerErr(r.rank, ErrClosed))
	r.wg.Wait()
	return nil
}

// Abort fails every pending and later call on every member with an error wrapping
// ErrAborted and err, naming this member.
func (r *Ring) Abort(err error) {
	cause := fmt.Errorf("%w", ErrAborted)
	if err != nil {
		cause = fmt.Errorf("%w: %w", ErrAborted, err)
	}
	r.fail(r.peerErr(r.rank, cause))
}

func (r *Ring) peerErr(rank int, err error) *PeerError {
	return &PeerError{Rank: rank, Addr: r.cfg.Peers[rank], Reporter: r.rank, Err: err}
}

// callErrLocked returns the error of a call issued on a failed or closed ring. Calls that
// were pending when the ring failed get the cause itself.
func (r *Ring) callErrLocked() error {
	if r.closed {
		return r.peerErr(r.rank, ErrClosed)
	}
	return r.cause
}

// fail records the first failure, fails every call, and passes the cause to the
// neighbours. Later failures are consequences of the first and are dropped.
func (r *Ring) fail(pe *PeerError) {
	r.mu.Lock()
	if r.cause != nil {
		r.mu.Unlock()
		return
	}
	r.cause = pe
	close(r.done)
	r.wg.Add(1)
	r.mu.Unlock()
	if r.bootCancel != nil {
		r.bootCancel()
	}
	if errors.Is(pe.Err, ErrClosed) {
		r.log.Debug("collective: ring closed")
	} else {
		r.log.Warn("collective: ring failed", zap.Int("peer_rank", pe.Rank),
			zap.String("peer_addr", pe.Addr), zap.Int("reporter", pe.Reporter), zap.Error(pe.Err))
		r.errc <- pe
	}
	go r.shutdown(pe)
}

// shutdown stops the readers, sends the cause to both neighbours and closes the connections
// once the neighbours hang up or abortGrace passes.
func (r *Ring) shutdown(pe *PeerError) {
	defer r.wg.Done()
	r.closeListener()
	r.mu.Lock()
	left, right := r.leftConn, r.rightConn
	r.mu.Unlock()
	if left == nil {
		r.notifyDone()
		return // never connected; bootstrap closes what it opened
	}
	now := time.Now()
	for _, c := range []net.Conn{left, right} {
		c.SetReadDeadline(now)
	}
	right.SetWriteDeadline(now.Add(abortGrace)) // a data frame in flight may finish
	left.SetWriteDeadline(now)                  // a heartbeat in flight stops; its rest goes below
	r.readers.Wait()
	msg := encodeAbort(pe)
	r.wmu.Lock()
	if !r.rightDirty {
		_ = writeControl(right, kindAbort, msg) // best effort: the neighbour may be the dead one
	}
	r.rightDirty = true
	r.wmu.Unlock()
	r.lmu.Lock()
	left.SetWriteDeadline(now.Add(abortGrace))
	if !r.leftShut && r.finishLeftRest(left) == nil {
		_ = writeControl(left, kindAbort, msg) // best effort, as on the right
	}
	r.leftShut = true
	r.lmu.Unlock()
	r.notifyDone()
	var wg sync.WaitGroup
	for _, c := range []net.Conn{left, right} {
		wg.Go(func() { linger(c, now.Add(abortGrace)) })
	}
	wg.Wait()
}

// finishLeftRest writes the end of a heartbeat cut short, so that a frame may follow it;
// r.lmu is held.
func (r *Ring) finishLeftRest(left net.Conn) error {
	if len(r.leftRest) == 0 {
		return nil
	}
	n, err := left.Write(r.leftRest)
	r.leftRest = r.leftRest[n:]
	return err
}

// notifyDone finishes the failed calls that waited for the neighbours to be told.
func (r *Ring) notifyDone() {
	r.mu.Lock()
	r.notified = true
	ops := r.unfinished
	r.unfinished = nil
	err := r.cause
	r.mu.Unlock()
	for _, o := range ops {
		o.h.finish(err)
	}
}

// linger half-closes c, reads until the peer closes too or the deadline passes, and closes.
func linger(c net.Conn, deadline time.Time) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	c.SetReadDeadline(deadline)
	io.Copy(io.Discard, c)
	c.Close()
}

func (r *Ring) closeListener() {
	r.lnOnce.Do(func() {
		if r.ln != nil {
			r.ln.Close()
		}
	})
}
