package collective

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestBeatTiming(t *testing.T) {
	const ms = time.Millisecond
	cases := []struct {
		interval, timeout, op time.Duration
		wantInterval, wantThr time.Duration
	}{
		{0, 0, 0, DefaultHeartbeatInterval, DefaultHeartbeatTimeout},
		{time.Second, 5 * time.Second, time.Hour, time.Second, 5 * time.Second},
		{time.Second, 5 * time.Second, 10 * time.Second, time.Second, 5 * time.Second},
		{time.Second, 5 * time.Second, 3 * time.Second, 300 * ms, 1500 * ms},
		{time.Second, 5 * time.Second, 200 * ms, 20 * ms, 100 * ms},
		{time.Second, 5 * time.Second, 30 * ms, 10 * ms, 20 * ms},       // interval floor, two beats
		{10 * ms, time.Second, time.Second, 10 * ms, 500 * ms},          // interval already at the floor
		{100 * ms, 200 * ms, 300 * ms, 75 * ms, 150 * ms},               // ratio kept
		{time.Second, 5 * time.Second, 0, time.Second, 5 * time.Second}, // calls' own deadlines only
	}
	for _, c := range cases {
		cfg := Config{HeartbeatInterval: c.interval, HeartbeatTimeout: c.timeout, OpTimeout: c.op}
		iv, thr := beatTiming(&cfg)
		if iv != c.wantInterval || thr != c.wantThr {
			t.Errorf("interval %v timeout %v OpTimeout %v: got interval %v threshold %v, want %v and %v",
				c.interval, c.timeout, c.op, iv, thr, c.wantInterval, c.wantThr)
		}
		if c.op > 0 && thr > max(c.op/2, 2*iv) || thr < 2*iv || iv < minHeartbeatInterval {
			t.Errorf("OpTimeout %v: interval %v threshold %v break the rules", c.op, iv, thr)
		}
	}
}

// TestBeatsSilent checks a member's view of who is silent: rank 1 of 5, whose right
// neighbour is rank 2 and left neighbour rank 0.
func TestBeatsSilent(t *testing.T) {
	const ms = time.Millisecond
	cfg := Config{HeartbeatInterval: 100 * ms, HeartbeatTimeout: time.Second}
	var b beats
	b.init(&cfg, 1, 5)
	check := func(what string, got, want []silence) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Fatalf("%s: %v, want %v", what, got, want)
		}
	}
	b.heard(500 * ms)
	// The right neighbour says ranks 3 and 4 are silent; it cannot know about itself or us.
	b.report(500*ms, []silence{{4, 2 * time.Second}, {3, 3 * time.Second}, {1, 9 * time.Second}, {2, 9 * time.Second}})
	check("reported", b.silent(time.Second, -1), []silence{{3, 3500 * ms}, {4, 2500 * ms}})
	check("reported, to rank 3", b.silent(time.Second, 3), []silence{{4, 2500 * ms}})
	check("just below the threshold", b.silent(1499*ms, 0), []silence{{3, 3999 * ms}, {4, 2999 * ms}})
	// The right neighbour itself falls silent: its last word is stale.
	check("right silent", b.silent(1500*ms, -1), []silence{{2, time.Second}})
	check("right silent, to rank 2", b.silent(1500*ms, 2), nil)
	if d := b.nextWake(600*ms, 2*time.Second); d != 900*ms {
		t.Fatalf("next wake at 600ms with a beat due at 2s: %v, want 900ms (when rank 2 turns silent)", d)
	}
	if d := b.nextWake(600*ms, time.Second); d != 400*ms {
		t.Fatalf("next wake at 600ms with a beat due at 1s: %v, want 400ms", d)
	}
	// Heard again, with nothing to report.
	b.heard(1600 * ms)
	b.report(1600*ms, nil)
	check("heard again", b.silent(2*time.Second, -1), nil)
	// A neighbour that closed is never silent, and its word is forgotten.
	b.report(1600*ms, []silence{{3, time.Second}})
	b.gone()
	check("right closed", b.silent(time.Hour, -1), nil)
	if d := b.nextWake(time.Hour, time.Hour+time.Second); d != time.Second {
		t.Fatalf("next wake after the right neighbour closed: %v, want the next beat in 1s", d)
	}
}

// startRingConfig starts n members on loopback with edit applied to each Config, waits until
// they are connected, and closes them when the test ends.
func startRingConfig(t *testing.T, n int, edit func(*Config)) []*Ring {
	t.Helper()
	lns := make([]net.Listener, n)
	peers := make([]string, n)
	for i := range lns {
		lns[i] = listenLoopback(t)
		peers[i] = lns[i].Addr().String()
	}
	rings := make([]*Ring, n)
	t.Cleanup(func() { closeAll(rings) })
	for i := range rings {
		cfg := DefaultConfig()
		cfg.Rank, cfg.Peers, cfg.Listener, cfg.JobID = i, peers, lns[i], "job-1"
		cfg.DialTimeout = 10 * time.Second
		edit(&cfg)
		r, err := Start(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		rings[i] = r
	}
	for i, r := range rings {
		select {
		case <-r.Ready():
		case err := <-r.Err():
			t.Fatalf("rank %d: %v", i, err)
		}
	}
	return rings
}

// TestRingHeartbeatsHealthy runs a ring with fast heartbeats idle and then under load, and
// checks that no member ever considers another silent and that nothing fails.
func TestRingHeartbeatsHealthy(t *testing.T) {
	const interval, threshold = 50 * time.Millisecond, 400 * time.Millisecond
	rings := startRingConfig(t, 3, func(c *Config) {
		c.HeartbeatInterval, c.HeartbeatTimeout = interval, threshold
	})
	// watch samples every member's view for d and fails on the first silence or failure.
	watch := func(phase string, d time.Duration) {
		t.Helper()
		var longest time.Duration
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
			for i, r := range rings {
				now := r.hb.now()
				longest = max(longest, now-time.Duration(r.hb.lastHeard.Load()))
				if s := r.hb.silent(now, -1); len(s) > 0 {
					t.Fatalf("%s: rank %d considers %v silent", phase, i, s)
				}
				select {
				case err := <-r.Err():
					t.Fatalf("%s: rank %d failed: %v", phase, i, err)
				default:
				}
			}
		}
		t.Logf("%s: longest gap between two frames from a right neighbour: %v (threshold %v)",
			phase, longest.Round(time.Millisecond), threshold)
	}
	watch("idle", 3*time.Second)

	// Rank 0 decides when to stop and says so in the last element of every sum, so that all
	// members leave after the same all-reduce.
	var stop atomic.Bool
	errs := make([]error, len(rings))
	rounds := make([]int, len(rings))
	var wg sync.WaitGroup
	for i, r := range rings {
		wg.Go(func() {
			buf := make([]float32, 1<<20)
			for {
				buf[len(buf)-1] = 0
				if i == 0 && stop.Load() {
					buf[len(buf)-1] = 1
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				errs[i] = r.AllReduce(ctx, buf, Sum)
				cancel()
				rounds[i]++
				if errs[i] != nil || buf[len(buf)-1] != 0 {
					return
				}
			}
		})
	}
	watch("under load", 2*time.Second)
	stop.Store(true)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: all-reduce %d: %v", i, rounds[i], err)
		}
	}
	t.Logf("%d all-reduces of 4 MiB under watch", rounds[0])
}

// TestRingBlamesSilentMember silences one member's heartbeats (holding the lock that every
// heartbeat write takes) while it makes no calls, as a stopped process would, and checks
// that every other member's call fails at its deadline naming that member, however far
// around the ring the news had to travel.
func TestRingBlamesSilentMember(t *testing.T) {
	for _, c := range []struct{ n, silent int }{{4, 2}, {3, 0}} {
		rings := startRingConfig(t, c.n, func(cfg *Config) { cfg.OpTimeout = time.Second })
		mute := rings[c.silent]
		mute.lmu.Lock()
		muted := true
		unmute := func() {
			if muted {
				muted = false
				mute.lmu.Unlock()
			}
		}
		defer unmute()
		errs := make([]error, c.n)
		var wg sync.WaitGroup
		for i, r := range rings {
			if i != c.silent {
				wg.Go(func() { errs[i] = r.AllReduce(context.Background(), make([]float32, 1000), Sum) })
			}
		}
		wg.Wait()
		for i, err := range errs {
			if i == c.silent {
				continue
			}
			var ringErr error
			select {
			case ringErr = <-rings[i].Err():
			case <-time.After(5 * time.Second):
				t.Fatalf("world %d: rank %d: nothing on Err within 5s", c.n, i)
			}
			for _, err := range []error{err, ringErr} {
				var pe *PeerError
				if !errors.Is(err, ErrDeadline) || !errors.As(err, &pe) || pe.Rank != c.silent ||
					pe.Addr != rings[c.silent].Addr() || !strings.Contains(err.Error(), "sent nothing for") {
					t.Fatalf("world %d: rank %d: %v, want ErrDeadline naming the silent rank %d at %s",
						c.n, i, err, c.silent, rings[c.silent].Addr())
				}
			}
			t.Logf("world %d: rank %d: %v", c.n, i, err)
		}
		unmute()
		closeAll(rings)
	}
}
