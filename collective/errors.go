package collective

import (
	"errors"
	"fmt"
)

// Sentinel errors. Failures of a group arrive as a *PeerError whose Err wraps one of these,
// so errors.Is works on every rank, including for causes reported by another rank.
var (
	ErrClosed          = errors.New("collective: communicator closed")
	ErrPeerClosed      = errors.New("collective: peer closed")
	ErrPeerFailed      = errors.New("collective: peer failed")
	ErrAborted         = errors.New("collective: aborted")
	ErrDeadline        = errors.New("collective: deadline exceeded")
	ErrMismatch        = errors.New("collective: mismatched calls across ranks")
	ErrBadFrame        = errors.New("collective: bad frame")
	ErrAuth            = errors.New("collective: authentication failed")
	ErrInvalidConfig   = errors.New("collective: invalid config")
	ErrInvalidArgument = errors.New("collective: invalid argument")
)

// PeerError is the failure of a group, attributed to one rank.
type PeerError struct {
	// Rank and Addr name the rank the failure is attributed to: the dead or closing peer,
	// the rank that had stopped answering when a deadline passed (for the TCP ring, the one
	// whose heartbeats stopped longest ago; failing that, the neighbour that was being
	// waited on), or the rank that called Abort.
	Rank int
	Addr string
	// Reporter is the rank that observed the failure first; other ranks learn of it from
	// their neighbours.
	Reporter int
	// Err wraps one of the package's sentinel errors.
	Err error
}

func (e *PeerError) Error() string {
	return fmt.Sprintf("%v (rank %d at %s, reported by rank %d)", e.Err, e.Rank, e.Addr, e.Reporter)
}

func (e *PeerError) Unwrap() error { return e.Err }

// wireSentinels numbers the sentinels that a failure can carry between ranks; the index is
// the code in an abort frame. Append only.
var wireSentinels = []error{nil, ErrPeerFailed, ErrPeerClosed, ErrAborted, ErrDeadline,
	ErrMismatch, ErrBadFrame, ErrAuth}

// wireCode returns the code under which err travels to other ranks. A rank that closes is,
// to everyone else, a peer that closed.
func wireCode(err error) (code uint8, msg string) {
	if errors.Is(err, ErrClosed) {
		return 2, ErrPeerClosed.Error()
	}
	for i, s := range wireSentinels[1:] {
		if errors.Is(err, s) {
			return uint8(i + 1), err.Error()
		}
	}
	return 1, fmt.Sprintf("%v: %v", ErrPeerFailed, err)
}

// remoteError is an error received from another rank: its message as that rank wrote it,
// and the sentinel its code names.
type remoteError struct {
	sentinel error
	msg      string
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

func fromWire(code uint8, msg string) error {
	if int(code) >= len(wireSentinels) || code == 0 {
		return &remoteError{sentinel: ErrPeerFailed, msg: msg}
	}
	return &remoteError{sentinel: wireSentinels[code], msg: msg}
}
