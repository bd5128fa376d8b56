package collective

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Heartbeats name the member that stopped answering.
//
// A member that is alive but sends nothing (stopped with SIGSTOP, a paused VM, a machine
// swapping itself to death) breaks no connection: its kernel still acknowledges TCP. The
// others only see a collective that makes no progress, and their deadlines pass at about
// the same time, each waiting for a different neighbour; whichever fails first would set
// the cause for all. So every member sends a heartbeat to its left neighbour every
// interval, on the connection that neighbour dialled: the reverse of the data flow, which
// otherwise carries only the abort frame, so beats never queue behind data and the data
// path is untouched. The left neighbour's readRight reads them.
//
//	rank 0 <-beat- rank 1 <-beat- rank 2 <-beat- rank 0   (data flows the other way)
//
// A member whose right neighbour has sent nothing for the silence threshold considers it
// silent. Each beat lists the silent members its sender knows of, with how long each has
// been silent, leaving out the receiver: the sender's right neighbour when it is silent,
// and otherwise what that neighbour's latest beat listed (a silent member's last word is
// stale and dropped). A beat goes out at once when that list changes, so the news travels
// leftwards around the ring, one hop per network round trip, and every member knows within
// milliseconds times the world size. When a call's deadline passes, the member blames the
// member silent longest, if it knows of one, and otherwise the neighbour it was waiting for
// (deadlineErr).
//
// Silence alone fails nothing: the deadline says how long to wait, the beats only whom to
// blame. Beats measure whether a member's process runs, not whether its caller makes
// progress: a member busy elsewhere between calls is not silent.
//
// Timing: the threshold is Config.HeartbeatTimeout, but at most half of a positive
// OpTimeout, so that a member stopped during a call is found silent well before the call's
// deadline; the interval shrinks by the same factor (see beatTiming).
//
// Writes: a beat's write may block for at most beatWriteTimeout. A left neighbour that stops
// reading fills the socket; a beat that cannot go out is skipped, and a beat cut short
// leaves its rest in Ring.leftRest, written before the next frame, so the stream stays
// whole. Ring.lmu orders beats and the abort frame that shutdown writes on the same
// connection.

// beatWriteTimeout bounds one heartbeat's write (and the interval, when shorter).
const beatWriteTimeout = 100 * time.Millisecond

// The longest heartbeat payload fits a control frame; this fails to compile otherwise.
const _ = uint(maxControlPayload - (2 + 12*maxSilentReported))

// silence is a member that has sent nothing to its left neighbour for d.
type silence struct {
	rank int
	d    time.Duration
}

// heardAt is a member reported silent by the right neighbour: last is when it was last
// heard, on this member's clock (time since beats.epoch).
type heardAt struct {
	rank int
	last time.Duration
}

// beats is what a member knows of who is silent, fed by its right neighbour's heartbeats.
type beats struct {
	self, left, right int
	interval          time.Duration // between two beats
	threshold         time.Duration // silence longer than this makes a member silent
	epoch             time.Time     // the zero of every time below (monotonic)

	lastHeard atomic.Int64  // when the right neighbour last sent a frame, ns since epoch
	rightGone atomic.Bool   // the right neighbour closed and said so; its silence means nothing
	kick      chan struct{} // pokes heartbeatLoop when a beat arrives

	mu       sync.Mutex
	reported []heardAt // what the right neighbour's latest beat listed
}

func (b *beats) init(cfg *Config, self, n int) {
	b.self, b.left, b.right = self, (self+n-1)%n, (self+1)%n
	b.interval, b.threshold = beatTiming(cfg)
	b.epoch = time.Now()
	b.kick = make(chan struct{}, 1)
}

// beatTiming returns the heartbeat interval and silence threshold for cfg. With a positive
// OpTimeout, the threshold is at most half of it, so that a member stopped during a call is
// found silent before the call's deadline, and the interval shrinks by the same factor, but
// not below minHeartbeatInterval nor below half the threshold.
func beatTiming(cfg *Config) (interval, threshold time.Duration) {
	interval, threshold = cfg.heartbeatSettings()
	if cfg.OpTimeout <= 0 || threshold <= cfg.OpTimeout/2 {
		return interval, threshold
	}
	limit := cfg.OpTimeout / 2
	interval = max(minHeartbeatInterval, time.Duration(float64(interval)*float64(limit)/float64(threshold)))
	return interval, max(limit, 2*interval)
}

func (b *beats) now() time.Duration { return time.Since(b.epoch) }

// heard records that the right neighbour sent something at now.
func (b *beats) heard(now time.Duration) { b.lastHeard.Store(int64(now)) }

// report replaces what the right neighbour said with its latest beat, received at now.
// Entries naming this member or the right neighbour itself are dropped: neither can be
// known silent from over there.
func (b *beats) report(now time.Duration, silent []silence) {
	kept := make([]heardAt, 0, len(silent))
	for _, s := range silent {
		if s.rank != b.self && s.rank != b.right {
			kept = append(kept, heardAt{s.rank, now - s.d})
		}
	}
	b.mu.Lock()
	b.reported = kept
	b.mu.Unlock()
}

// gone records that the right neighbour closed: it sends nothing more, and neither its
// silence nor its last word means anything.
func (b *beats) gone() {
	b.rightGone.Store(true)
	b.mu.Lock()
	b.reported = nil
	b.mu.Unlock()
}

// rightSilence returns how long the right neighbour has sent nothing, or 0 while that is
// less than the threshold or after it closed.
func (b *beats) rightSilence(now time.Duration) time.Duration {
	if b.rightGone.Load() {
		return 0
	}
	if d := now - time.Duration(b.lastHeard.Load()); d >= b.threshold {
		return d
	}
	return 0
}

// silent returns the members known at now to be silent, longest silent first, leaving out
// rank skip (the receiver of a beat; -1 for none).
func (b *beats) silent(now time.Duration, skip int) []silence {
	if d := b.rightSilence(now); d > 0 {
		// The right neighbour's last word is stale: whoever it listed may have been heard
		// since, and only the right neighbour would have said so.
		if b.right == skip {
			return nil
		}
		return []silence{{b.right, d}}
	}
	b.mu.Lock()
	out := make([]silence, 0, len(b.reported))
	for _, h := range b.reported {
		if h.rank != skip {
			out = append(out, silence{h.rank, now - h.last})
		}
	}
	b.mu.Unlock()
	slices.SortFunc(out, func(x, y silence) int {
		return cmp.Or(cmp.Compare(y.d, x.d), cmp.Compare(x.rank, y.rank))
	})
	return out
}

// nextWake returns how long to sleep from now: until the next beat is due, or until the
// right neighbour turns silent if that comes first.
func (b *beats) nextWake(now, due time.Duration) time.Duration {
	wake := due
	if t := time.Duration(b.lastHeard.Load()) + b.threshold; !b.rightGone.Load() && t > now && t < wake {
		wake = t
	}
	return max(0, wake-now)
}

// sameRanks reports whether two lists name the same members.
func sameRanks(a, b []silence) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.ContainsFunc(b, func(y silence) bool { return y.rank == x.rank }) {
			return false
		}
	}
	return true
}

// heartbeatLoop sends a beat to the left neighbour every interval, and at once when the list
// of silent members it carries changes, until the ring fails.
func (r *Ring) heartbeatLoop() {
	defer r.wg.Done()
	timer := time.NewTimer(0)
	defer timer.Stop()
	var sent []silence
	var due time.Duration // when the next regular beat is due
	rightSilent := false
	for {
		select {
		case <-r.done:
			return
		case <-timer.C:
		case <-r.hb.kick:
		}
		now := r.hb.now()
		if d := r.hb.rightSilence(now); (d > 0) != rightSilent {
			rightSilent = d > 0
			r.logRightSilence(d)
		}
		silent := r.hb.silent(now, r.left)
		if now >= due || !sameRanks(silent, sent) {
			r.sendBeat(encodeHeartbeat(silent))
			sent, due = silent, now+r.hb.interval
		}
		timer.Reset(r.hb.nextWake(now, due))
	}
}

func (r *Ring) logRightSilence(d time.Duration) {
	peer := []zap.Field{zap.Int("peer_rank", r.right), zap.String("peer_addr", r.cfg.Peers[r.right])}
	if d > 0 {
		r.log.Warn("collective: right neighbour silent", append(peer, zap.Duration("silent_for", d))...)
	} else {
		r.log.Info("collective: right neighbour heard again", peer...)
	}
}

// sendBeat writes one beat to the left neighbour, first finishing a beat cut short before.
// It gives up after beatWriteTimeout; the connection then takes no more beats only if it
// broke (the readers notice that and fail the ring).
func (r *Ring) sendBeat(payload []byte) {
	frame := encodeControl(kindHeartbeat, payload)
	r.lmu.Lock()
	defer r.lmu.Unlock()
	select {
	case <-r.done:
		return // shutdown owns the connection now
	default:
	}
	if r.leftShut {
		return
	}
	r.leftConn.SetWriteDeadline(time.Now().Add(min(r.hb.interval, beatWriteTimeout)))
	if err := r.finishLeftRest(r.leftConn); err != nil {
		r.beatFailed(err)
		return
	}
	n, err := r.leftConn.Write(frame)
	if n > 0 && n < len(frame) {
		r.leftRest = frame[n:]
	}
	if err != nil {
		r.beatFailed(err)
	}
}

// beatFailed handles a heartbeat write that failed; r.lmu is held.
func (r *Ring) beatFailed(err error) {
	if isTimeout(err) {
		r.log.Debug("collective: heartbeat to left neighbour skipped: connection full",
			zap.Int("peer_rank", r.left), zap.Int("unsent_bytes", len(r.leftRest)))
		return
	}
	r.leftShut = true
	r.log.Debug("collective: heartbeats to left neighbour stopped", zap.Int("peer_rank", r.left), zap.Error(err))
}

// readBeat reads the payload of a heartbeat whose header is h, from the right neighbour,
// and wakes heartbeatLoop to pass on what changed. A broken connection or a malformed beat
// fails the ring.
func (r *Ring) readBeat(h header) error {
	payload := make([]byte, h.length)
	if _, err := io.ReadFull(r.rightConn, payload); err != nil {
		return r.broke(r.right, "read heartbeat", err)
	}
	silent, err := decodeHeartbeat(payload)
	if err == nil {
		for _, s := range silent {
			if s.rank >= r.n {
				err = badFrame("heartbeat names rank %d in a world of %d", s.rank, r.n)
				break
			}
		}
	}
	if err != nil {
		return r.broke(r.right, "decode heartbeat", fmt.Errorf("%w (heartbeat from rank %d)", err, r.right))
	}
	r.hb.report(r.hb.now(), silent)
	select {
	case r.hb.kick <- struct{}{}:
	default:
	}
	return nil
}

// silenceErr blames the member known to be silent longest when a call's deadline passes,
// or returns nil when no member is known to be silent.
func (r *Ring) silenceErr(o *ringOp, ctx context.Context) *PeerError {
	silent := r.hb.silent(r.hb.now(), -1)
	if len(silent) == 0 {
		return nil
	}
	s := silent[0]
	return r.peerErr(s.rank, fmt.Errorf("%w: %v #%d: rank %d (%s) sent nothing for %v (no heartbeat reached rank %d): %w",
		ErrDeadline, o.coll, o.seq, s.rank, r.cfg.Peers[s.rank], s.d.Round(10*time.Millisecond),
		(s.rank+r.n-1)%r.n, context.Cause(ctx)))
}
