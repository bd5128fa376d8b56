package worker

import (
	"net"
	"sync"
)

// roundListener serves one listening socket to a sequence of rings: a rank process keeps its
// address for the whole job (the coordinator hands it out in every round), while each round's
// ring takes, and closes, a listener of its own. Connections that arrive between rounds are
// closed; the dialer retries until the next round listens.
type roundListener struct {
	ln  net.Listener
	mu  sync.Mutex
	cur *subListener
}

func newRoundListener(ln net.Listener) *roundListener {
	m := &roundListener{ln: ln}
	go m.run()
	return m
}

func (m *roundListener) run() {
	for {
		c, err := m.ln.Accept()
		if err != nil {
			return
		}
		m.mu.Lock()
		s := m.cur
		m.mu.Unlock()
		if s == nil || !s.deliver(c) {
			c.Close()
		}
	}
}

// next returns the listener of the next round; the previous one stops receiving.
func (m *roundListener) next() net.Listener {
	s := &subListener{m: m, ch: make(chan net.Conn, 16), closed: make(chan struct{})}
	m.mu.Lock()
	m.cur = s
	m.mu.Unlock()
	return s
}

// Close closes the socket itself.
func (m *roundListener) Close() error { return m.ln.Close() }

type subListener struct {
	m      *roundListener
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func (s *subListener) deliver(c net.Conn) bool {
	select {
	case <-s.closed:
		return false
	case s.ch <- c:
		return true
	default:
		return false
	}
}

func (s *subListener) Accept() (net.Conn, error) {
	select {
	case c := <-s.ch:
		return c, nil
	case <-s.closed:
		return nil, net.ErrClosed
	}
}

func (s *subListener) Close() error {
	s.once.Do(func() {
		close(s.closed)
		s.m.mu.Lock()
		if s.m.cur == s {
			s.m.cur = nil
		}
		s.m.mu.Unlock()
		for {
			select {
			case c := <-s.ch:
				c.Close()
			default:
				return
			}
		}
	})
	return nil
}

func (s *subListener) Addr() net.Addr { return s.m.ln.Addr() }
