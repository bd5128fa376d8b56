package collective

import (
	"fmt"
	"net"
	"time"

	"go.uber.org/zap"
)

// Config describes one member of a TCP ring. Start from DefaultConfig.
type Config struct {
	// Rank is this member's index into Peers.
	Rank int
	// Peers lists every member's address in rank order; Peers[i] is where rank i listens.
	// Rank i dials Peers[(i+1)%len(Peers)] and accepts rank (i-1+len(Peers))%len(Peers).
	Peers []string
	// ListenAddr is where to listen; empty means Peers[Rank]. Ignored when Listener is set.
	ListenAddr string
	// Listener, when set, is used instead of listening on ListenAddr: a socket bound
	// beforehand (tests bind 127.0.0.1:0 first) or inherited from a parent process. The
	// ring closes it.
	Listener net.Listener
	// JobID names the job; members of different jobs refuse each other. Required.
	JobID string
	// Secret, when set, must be the same on every member: each connection proves knowledge
	// of it (HMAC-SHA256 over the job id and fresh nonces). Connections that fail the proof
	// are refused and logged with their remote address.
	Secret string
	// DialTimeout bounds the bootstrap: connecting to both neighbours, retries included.
	DialTimeout time.Duration
	// OpTimeout, when positive, is the deadline of every call whose ctx has none.
	OpTimeout time.Duration
	// SegmentBytes is the payload size of one data frame. A step of the ring moves one chunk
	// (about 1/Size() of the buffer) as several segments, so sending, receiving and reducing
	// overlap.
	SegmentBytes int
	// SocketBuffer sets SO_SNDBUF and SO_RCVBUF when positive; 0 keeps the kernel's
	// automatic tuning, which on Linux grows past what an explicit setting may (rmem_max).
	SocketBuffer int
	// Logger receives connection and failure events; nil discards them.
	Logger *zap.Logger
}

// DefaultConfig returns a Config with every tunable set; fill in Rank, Peers and JobID.
func DefaultConfig() Config {
	return Config{
		DialTimeout:  30 * time.Second,
		SegmentBytes: 1 << 20,
	}
}

// Validate checks every field and names the first wrong one with its allowed range.
func (c *Config) Validate() error {
	n := len(c.Peers)
	switch {
	case n == 0:
		return fmt.Errorf("%w: Peers is empty, want at least 1 address", ErrInvalidConfig)
	case c.Rank < 0 || c.Rank >= n:
		return fmt.Errorf("%w: Rank %d out of range [0, %d) (len(Peers))", ErrInvalidConfig, c.Rank, n)
	case c.JobID == "" || len(c.JobID) > 256:
		return fmt.Errorf("%w: JobID %q, want 1 to 256 bytes", ErrInvalidConfig, c.JobID)
	case c.DialTimeout <= 0:
		return fmt.Errorf("%w: DialTimeout %v, want > 0", ErrInvalidConfig, c.DialTimeout)
	case c.OpTimeout < 0:
		return fmt.Errorf("%w: OpTimeout %v, want >= 0", ErrInvalidConfig, c.OpTimeout)
	case c.SegmentBytes < 4<<10 || c.SegmentBytes > maxDataPayload || c.SegmentBytes%4 != 0:
		return fmt.Errorf("%w: SegmentBytes %d, want a multiple of 4 in [%d, %d]",
			ErrInvalidConfig, c.SegmentBytes, 4<<10, maxDataPayload)
	case c.SocketBuffer < 0:
		return fmt.Errorf("%w: SocketBuffer %d, want >= 0", ErrInvalidConfig, c.SocketBuffer)
	}
	for i, p := range c.Peers {
		if p == "" {
			return fmt.Errorf("%w: Peers[%d] is empty, want host:port", ErrInvalidConfig, i)
		}
	}
	return nil
}
