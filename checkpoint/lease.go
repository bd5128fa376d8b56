package checkpoint

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// One writer at a time per checkpoint location: two jobs that write the same location would
// interleave their checkpoints and delete each other's. A writer holds a lease, an object
// named LeaseName beside the step directories, that says who holds it and when it was last
// renewed. The holder renews it every TTL/3 with a compare-and-swap (Swapper), so of two
// writers racing for it exactly one wins, and a holder whose lease was taken over learns it at
// its next renewal. A lease whose holder is gone can be taken over: at once when the holder
// ran on this machine and its process no longer exists, otherwise once it has gone unrenewed
// for twice its TTL (the margin absorbs clock skew between machines).

// LeaseName is the key of the lease object under a location's prefix.
const LeaseName = "writer.lease"

// DefaultLeaseTTL is the lease lifetime unless LeaseOptions.TTL says otherwise.
const DefaultLeaseTTL = 30 * time.Second

// Errors of leases.
var (
	// ErrLocked is returned by AcquireLease when another live writer holds the location.
	ErrLocked = errors.New("checkpoint: location in use by another writer")
	// ErrLeaseLost means a holder can no longer be sure it holds its lease: another writer
	// took it over, or it could not be renewed within its TTL.
	ErrLeaseLost = errors.New("checkpoint: lease on the checkpoint location lost")
)

// Holder is the content of a lease object: who holds it, so that a refused writer can say.
type Holder struct {
	ID       string    `json:"id"`   // random, one per acquisition
	Host     string    `json:"host"` // hostname
	Boot     string    `json:"boot,omitempty"`
	PID      int       `json:"pid"`
	PIDStart string    `json:"pid_start,omitempty"` // the process's start time, against pid reuse
	What     string    `json:"what"`                // the command that holds it
	Acquired time.Time `json:"acquired"`
	Renewed  time.Time `json:"renewed"`
	TTL      float64   `json:"ttl_s"`
	Seq      uint64    `json:"seq"`                // renewals so far
	Released bool      `json:"released,omitempty"` // the holder let go
}

// String describes the holder for messages.
func (h Holder) String() string {
	what := h.What
	if what == "" {
		what = "a herd process"
	}
	return fmt.Sprintf("%s (pid %d on %s, since %s)", what, h.PID, h.Host, h.Acquired.Local().Format(time.DateTime))
}

// ThisProcess describes the calling process as a lease holder doing what.
func ThisProcess(what string) Holder {
	host, _ := os.Hostname()
	return Holder{ID: randomID(), Host: host, Boot: bootID(), PID: os.Getpid(), PIDStart: processStart(os.Getpid()), What: what}
}

// Gone reports whether h's process is known to have ended: it ran on this machine (same
// host name and boot) and no process with its pid and start time exists any more.
func (h Holder) Gone() bool {
	me := ThisProcess("")
	if h.Host != me.Host || h.Boot != me.Boot || h.Boot == "" {
		return false
	}
	start := processStart(h.PID)
	return start == "" || (h.PIDStart != "" && start != h.PIDStart)
}

// stale returns why a lease held by h may be taken over at now, or "" when it may not.
func (h Holder) stale(now time.Time) string {
	if h.Released {
		return "released"
	}
	if h.Gone() {
		return fmt.Sprintf("its process %d on this machine has ended", h.PID)
	}
	ttl := time.Duration(h.TTL * float64(time.Second))
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	if idle := now.Sub(h.Renewed); idle > 2*ttl {
		return fmt.Sprintf("it was last renewed %v ago (TTL %v)", idle.Round(time.Second), ttl)
	}
	return ""
}

func randomID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// LeaseOptions configures AcquireLease.
type LeaseOptions struct {
	// TTL is how long a lease stays valid without renewal; it is renewed every TTL/3.
	// 0 means DefaultLeaseTTL.
	TTL time.Duration
	// Log receives a line when a stale lease is taken over or the lease is lost; nil discards.
	Log func(string)
	// TakeOver, when set, may allow taking over a live holder's lease: a replicated service
	// whose new leader continues the work of the old one takes over its own lease.
	TakeOver func(Holder) bool
}

// Lease is a held lease on a checkpoint location.
type Lease struct {
	sw   Swapper
	key  string
	ttl  time.Duration
	logf func(string, ...any)

	mu      sync.Mutex
	me      Holder
	version string
	renewed time.Time // when the last renewal succeeded (by this clock)
	err     error     // set once the lease is lost

	stop chan struct{}
	done chan struct{}
}

// AcquireLease takes the lease of loc for the process described by me (see ThisProcess) and
// keeps renewing it until Release. It fails with an error wrapping ErrLocked that names the
// holder when a live writer holds it. The store must implement Swapper.
func AcquireLease(ctx context.Context, loc Location, me Holder, opts LeaseOptions) (*Lease, error) {
	sw, ok := loc.Store.(Swapper)
	if !ok {
		return nil, fmt.Errorf("checkpoint: %v cannot hold a lease: it cannot replace objects conditionally", loc)
	}
	l := &Lease{sw: sw, key: loc.key(LeaseName), ttl: opts.TTL, stop: make(chan struct{}), done: make(chan struct{})}
	if l.ttl <= 0 {
		l.ttl = DefaultLeaseTTL
	}
	l.logf = func(format string, a ...any) {
		if opts.Log != nil {
			opts.Log(fmt.Sprintf(format, a...))
		}
	}
	me.TTL = l.ttl.Seconds()
	for attempt := 0; ; attempt++ {
		raw, ver, err := sw.ReadVersion(ctx, l.key)
		switch {
		case errors.Is(err, ErrNotFound):
			ver = ""
		case err != nil:
			return nil, fmt.Errorf("checkpoint: reading the lease of %v: %w", loc, err)
		default:
			var cur Holder
			if jerr := json.Unmarshal(raw, &cur); jerr != nil {
				l.logf("checkpoint: the lease %s of %v is unreadable (%v); taking it over", LeaseName, loc, jerr)
			} else if why := cur.stale(time.Now()); why == "released" {
				// free
			} else if why == "" && opts.TakeOver != nil && opts.TakeOver(cur) {
				l.logf("checkpoint: taking over the lease of %v from %v, which did the same work", loc, cur)
			} else if why == "" {
				return nil, fmt.Errorf("%w: %v is held by %v, last renewed %v ago; stop that job first (a lease whose holder died is taken over after %v, or at once on the machine it ran on)",
					ErrLocked, loc, cur, time.Since(cur.Renewed).Round(time.Second), 2*time.Duration(cur.TTL*float64(time.Second)))
			} else {
				l.logf("checkpoint: taking over the lease of %v from %v: %s", loc, cur, why)
			}
		}
		now := time.Now()
		me.Acquired, me.Renewed = now, now
		data, _ := json.Marshal(me)
		nv, err := sw.Swap(ctx, l.key, ver, data)
		if errors.Is(err, ErrConflict) && attempt < 5 {
			continue // another writer moved first: look again at who holds it
		}
		if err != nil {
			return nil, fmt.Errorf("checkpoint: taking the lease of %v: %w", loc, err)
		}
		l.me, l.version, l.renewed = me, nv, now
		go l.renewLoop()
		return l, nil
	}
}

// Holder returns the holder as written in the lease.
func (l *Lease) Holder() Holder {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.me
}

// Check returns nil while the lease is held, else an error wrapping ErrLeaseLost. A holder
// calls it before every commit.
func (l *Lease) Check() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return l.err
	}
	if since := time.Since(l.renewed); since > l.ttl {
		return fmt.Errorf("%w: not renewed for %v (TTL %v)", ErrLeaseLost, since.Round(time.Millisecond), l.ttl)
	}
	return nil
}

func (l *Lease) renewLoop() {
	defer close(l.done)
	tick := time.NewTicker(l.ttl / 3)
	defer tick.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-tick.C:
		}
		if err := l.renew(); err != nil {
			l.logf("checkpoint: %v", err)
			if errors.Is(err, ErrLeaseLost) {
				return
			}
		}
	}
}

// renew writes the next renewal; a conflict means the lease was taken over.
func (l *Lease) renew() error {
	l.mu.Lock()
	next := l.me
	old := l.version
	l.mu.Unlock()
	next.Seq++
	next.Renewed = time.Now()
	data, _ := json.Marshal(next)
	ctx, cancel := context.WithTimeout(context.Background(), l.ttl/2)
	defer cancel()
	nv, err := l.sw.Swap(ctx, l.key, old, data)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil {
		l.me, l.version, l.renewed = next, nv, next.Renewed
		return nil
	}
	if errors.Is(err, ErrConflict) {
		who := "another writer"
		if raw, _, rerr := l.sw.ReadVersion(ctx, l.key); rerr == nil {
			var cur Holder
			if json.Unmarshal(raw, &cur) == nil {
				who = cur.String()
			}
		}
		l.err = fmt.Errorf("%w: taken over by %s", ErrLeaseLost, who)
		return l.err
	}
	return fmt.Errorf("renewing the lease %s: %w", l.key, err)
}

// Release stops renewing and deletes the lease object if it is still this holder's.
func (l *Lease) Release(ctx context.Context) error {
	select {
	case <-l.stop:
		return nil
	default:
		close(l.stop)
	}
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return nil
	}
	l.err = fmt.Errorf("%w: released", ErrLeaseLost)
	_, ver, err := l.sw.ReadVersion(ctx, l.key)
	if err != nil || ver != l.version {
		return err
	}
	// Replace it by a released record rather than deleting it unconditionally: a writer that
	// took it over between the read and now keeps its lease.
	rel := l.me
	rel.Released = true
	data, _ := json.Marshal(rel)
	_, err = l.sw.Swap(ctx, l.key, ver, data)
	if errors.Is(err, ErrConflict) {
		return nil
	}
	return err
}

// processStart returns the start time of process pid (clock ticks since boot, from
// /proc/PID/stat on Linux), or "" if there is no such process or no /proc.
func processStart(pid int) string {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	// After the command: state (field 3) ... starttime is field 22, so index 19 here.
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

// bootID identifies this boot of this machine (Linux), so a host name shared by two machines
// is not taken for the same machine.
func bootID() string {
	raw, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(raw))
}
