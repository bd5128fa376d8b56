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
	// HeartbeatInterval is how often a member tells its left neighbour that it is alive
	// (see heartbeat.go): 0 means DefaultHeartbeatInterval, otherwise at least 10ms.
	HeartbeatInterval time.Duration
	// HeartbeatTimeout is how long a right neighbour may send nothing before this member
	// considers it silent; when a call's deadline passes, the member silent longest is
	// blamed. 0 means DefaultHeartbeatTimeout, otherwise at least 2*HeartbeatInterval. With
	// a positive OpTimeout shorter than twice this, the threshold becomes half of OpTimeout
	// and the interval shrinks by the same factor (to no less than 10ms), so that silence
	// is noticed before the deadline. A call whose own ctx deadline is shorter than the
	// threshold blames the neighbour it waited for, as it would without heartbeats.
	HeartbeatTimeout time.Duration
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

// Heartbeat defaults: a silent member is one that missed about five beats.
const (
	// DefaultHeartbeatInterval is the default of Config.HeartbeatInterval.
	DefaultHeartbeatInterval = time.Second
	// DefaultHeartbeatTimeout is the default of Config.HeartbeatTimeout.
	DefaultHeartbeatTimeout = 5 * time.Second
	// minHeartbeatInterval is the shortest Config.HeartbeatInterval, and the shortest
	// interval that a short OpTimeout shrinks it to.
	minHeartbeatInterval = 10 * time.Millisecond
)

// DefaultConfig returns a Config with every tunable set; fill in Rank, Peers and JobID.
func DefaultConfig() Config {
	return Config{
		DialTimeout:       30 * time.Second,
		SegmentBytes:      1 << 20,
		HeartbeatInterval: DefaultHeartbeatInterval,
		HeartbeatTimeout:  DefaultHeartbeatTimeout,
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
	case c.HeartbeatInterval != 0 && c.HeartbeatInterval < minHeartbeatInterval:
		return fmt.Errorf("%w: HeartbeatInterval %v, want 0 (the default, %v) or at least %v",
			ErrInvalidConfig, c.HeartbeatInterval, DefaultHeartbeatInterval, minHeartbeatInterval)
	case c.HeartbeatTimeout < 0:
		return fmt.Errorf("%w: HeartbeatTimeout %v, want 0 (the default, %v) or at least 2*HeartbeatInterval",
			ErrInvalidConfig, c.HeartbeatTimeout, DefaultHeartbeatTimeout)
	}
	if iv, to := c.heartbeatSettings(); to < 2*iv {
		return fmt.Errorf("%w: HeartbeatTimeout %v, want at least 2*HeartbeatInterval (%v): a neighbour must be able to miss a beat",
			ErrInvalidConfig, to, 2*iv)
	}
	for i, p := range c.Peers {
		if p == "" {
			return fmt.Errorf("%w: Peers[%d] is empty, want host:port", ErrInvalidConfig, i)
		}
	}
	return nil
}

// heartbeatSettings returns HeartbeatInterval and HeartbeatTimeout with defaults for zeros.
func (c *Config) heartbeatSettings() (interval, timeout time.Duration) {
	interval, timeout = c.HeartbeatInterval, c.HeartbeatTimeout
	if interval == 0 {
		interval = DefaultHeartbeatInterval
	}
	if timeout == 0 {
		timeout = DefaultHeartbeatTimeout
	}
	return interval, timeout
}
