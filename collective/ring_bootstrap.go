package collective

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"go.uber.org/zap"
)

// bootstrap connects the ring: it dials the right neighbour (retrying until it listens)
// while accepting the left one, then starts the reader of the right connection and the
// heartbeats to the left neighbour.
func (r *Ring) bootstrap(ctx context.Context) {
	defer r.wg.Done()
	leftc := make(chan net.Conn, 1)
	r.admits.Add(1)
	go r.acceptLoop(ctx, leftc)
	left, right, err := r.connect(ctx, leftc)
	r.bootCancel() // stops the accept loop and any handshake still running
	r.closeListener()
	r.admits.Wait()
	if err != nil {
		select {
		case c := <-leftc:
			c.Close()
		default:
		}
		r.fail(err)
		return
	}
	if !r.connected(left, right) {
		left.Close()
		right.Close()
		return
	}
	close(r.ready)
	r.log.Info("collective: ring connected", zap.Int("size", r.n),
		zap.String("left", r.cfg.Peers[r.left]), zap.String("right", r.cfg.Peers[r.right]))
}

func (r *Ring) connect(ctx context.Context, leftc <-chan net.Conn) (left, right net.Conn, _ *PeerError) {
	right, err := r.dialRight(ctx)
	if err != nil {
		return nil, nil, err
	}
	select {
	case left = <-leftc:
		return left, right, nil
	case <-ctx.Done():
		right.Close()
		return nil, nil, r.peerErr(r.left, fmt.Errorf("%w: no connection from the left neighbour: %w",
			ErrDeadline, context.Cause(ctx)))
	}
}

// connected installs both connections unless the ring failed meanwhile.
func (r *Ring) connected(left, right net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cause != nil {
		return false
	}
	r.leftConn, r.rightConn = left, right
	r.hb.heard(r.hb.now())
	r.wg.Add(2)
	r.readers.Add(1)
	go r.readRight()
	go r.heartbeatLoop()
	return true
}

func (r *Ring) dialRight(ctx context.Context) (net.Conn, *PeerError) {
	addr := r.cfg.Peers[r.right]
	backoff := 10 * time.Millisecond
	for {
		conn, err := r.dialOnce(ctx, addr)
		if err == nil {
			return conn, nil
		}
		if errors.Is(err, ErrAuth) {
			r.log.Warn("collective: right neighbour refused us", zap.String("remote", addr), zap.Error(err))
			return nil, r.peerErr(r.right, err)
		}
		select {
		case <-ctx.Done():
			return nil, r.peerErr(r.right, fmt.Errorf("%w: could not connect to the right neighbour: %w (last try: %w)",
				ErrDeadline, context.Cause(ctx), err))
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

func (r *Ring) dialOnce(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: handshakeTimeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	stop := handshakeDeadline(ctx, conn)
	err = dialHandshake(conn, r.cfg.JobID, r.cfg.Secret, r.rank, r.right, r.n)
	stop()
	if err != nil {
		conn.Close()
		return nil, err
	}
	r.tune(conn)
	return conn, nil
}

func (r *Ring) acceptLoop(ctx context.Context, leftc chan<- net.Conn) {
	defer r.admits.Done()
	for {
		conn, err := r.ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			r.log.Warn("collective: accept", zap.Error(err))
			select {
			case <-ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		r.admits.Add(1)
		go r.admit(ctx, conn, leftc)
	}
}

// admit runs the acceptor's handshake on conn and hands the first left neighbour that
// passes it to the bootstrap. Everyone else is refused and logged with the remote address.
func (r *Ring) admit(ctx context.Context, conn net.Conn, leftc chan<- net.Conn) {
	defer r.admits.Done()
	remote := zap.String("remote", conn.RemoteAddr().String())
	stop := handshakeDeadline(ctx, conn)
	err := acceptHandshake(conn, r.cfg.JobID, r.cfg.Secret, r.rank, r.left, r.n)
	stop()
	var ref *refusal
	switch {
	case errors.As(err, &ref):
		r.log.Warn("collective: refused peer", remote, zap.String("reason", ref.reason))
	case err != nil:
		r.log.Info("collective: handshake failed", remote, zap.Error(err))
	case r.admitted.CompareAndSwap(false, true):
		r.tune(conn)
		leftc <- conn
		return
	default:
		r.log.Warn("collective: refused peer", remote, zap.String("reason", "left neighbour already connected"))
	}
	conn.Close()
}

// handshakeDeadline bounds a handshake by handshakeTimeout and by ctx; stop clears both.
func handshakeDeadline(ctx context.Context, conn net.Conn) (stop func()) {
	conn.SetDeadline(time.Now().Add(handshakeTimeout))
	unwatch := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	return func() {
		unwatch()
		conn.SetDeadline(time.Time{})
	}
}

func (r *Ring) tune(conn net.Conn) {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return
	}
	tc.SetNoDelay(true)
	if b := r.cfg.SocketBuffer; b > 0 {
		tc.SetReadBuffer(b)
		tc.SetWriteBuffer(b)
	}
}
