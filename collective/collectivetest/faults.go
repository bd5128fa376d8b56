package collectivetest

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herd-llm/herd/collective"
)

// runFaults checks the failure rules on fresh groups of three: whatever goes wrong, every
// rank's pending and later calls fail within failFast, with a *PeerError naming the rank
// the failure is attributed to.
func runFaults(t *testing.T, newGroup NewGroup) {
	t.Run("CloseFailsPeers", func(t *testing.T) { testCloseFailsPeers(t, newGroup(t, 3)) })
	t.Run("DeadlineFailsAll", func(t *testing.T) { testDeadlineFailsAll(t, newGroup(t, 3)) })
	t.Run("WaitGivesUp", func(t *testing.T) { testWaitGivesUp(t, newGroup(t, 2)) })
	t.Run("AbortFailsAll", func(t *testing.T) { testAbortFailsAll(t, newGroup(t, 3)) })
	t.Run("Mismatch", func(t *testing.T) { testMismatch(t, newGroup(t, 3)) })
}

// result is one call's outcome and how long after the trigger it came.
type result struct {
	err   error
	after time.Duration
}

// trigger is when the test acted, read by the goroutines it waits for.
type trigger struct{ ns atomic.Int64 }

func (tr *trigger) set()                 { tr.ns.Store(time.Now().UnixNano()) }
func (tr *trigger) since() time.Duration { return time.Duration(time.Now().UnixNano() - tr.ns.Load()) }

// allReduceOn starts an all-reduce on the given ranks and returns a function that waits for
// them, reporting how long after the trigger (set by the caller as it acts) each failed.
func allReduceOn(g []collective.Communicator, ranks []int, size int, timeout time.Duration) (*trigger, func() map[int]result) {
	tr := new(trigger)
	tr.set()
	res := make(map[int]result)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, r := range ranks {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			err := g[r].AllReduce(ctx, make([]float32, size), collective.Sum)
			mu.Lock()
			res[r] = result{err, tr.since()}
			mu.Unlock()
		})
	}
	return tr, func() map[int]result { wg.Wait(); return res }
}

// checkFailure checks that err is a prompt *PeerError wrapping want and, when blame >= 0,
// naming rank blame.
func checkFailure(t *testing.T, who string, r result, want error, blame int) *collective.PeerError {
	t.Helper()
	var pe *collective.PeerError
	switch {
	case r.err == nil:
		t.Fatalf("%s: succeeded, want %v", who, want)
	case !errors.As(r.err, &pe):
		t.Fatalf("%s: %v is not a *PeerError", who, r.err)
	case !errors.Is(r.err, want):
		t.Fatalf("%s: %v, want %v", who, r.err, want)
	case blame >= 0 && pe.Rank != blame:
		t.Fatalf("%s: %v names rank %d, want %d", who, r.err, pe.Rank, blame)
	case pe.Addr == "":
		t.Fatalf("%s: %v names no address", who, r.err)
	case r.after > failFast:
		t.Fatalf("%s: failed %v after the trigger, want within %v", who, r.after, failFast)
	}
	if !strings.HasPrefix(r.err.Error(), "collective: ") {
		t.Fatalf("%s: message %q lacks the package prefix", who, r.err)
	}
	return pe
}

// later makes one more call on c after the group failed; it must fail at once.
func later(c collective.Communicator) result {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	err := c.AllReduce(ctx, make([]float32, 16), collective.Sum)
	return result{err, time.Since(start)}
}

func testCloseFailsPeers(t *testing.T, g []collective.Communicator) {
	trigger, wait := allReduceOn(g, []int{0, 1}, 4096, time.Minute)
	time.Sleep(50 * time.Millisecond)
	trigger.set()
	g[2].Close()
	for r, res := range wait() {
		checkFailure(t, "rank "+strconv.Itoa(r), res, collective.ErrPeerClosed, 2)
	}
	checkFailure(t, "rank 2 after its Close", later(g[2]), collective.ErrClosed, 2)
	checkFailure(t, "rank 0 later", later(g[0]), collective.ErrPeerClosed, 2)
}

func testDeadlineFailsAll(t *testing.T, g []collective.Communicator) {
	const deadline = 300 * time.Millisecond
	_, wait := allReduceOn(g, []int{0, 1}, 4096, deadline)
	for r, res := range wait() {
		res.after -= deadline
		checkFailure(t, "rank "+strconv.Itoa(r), res, collective.ErrDeadline, -1)
	}
	checkFailure(t, "rank 2, which never called", later(g[2]), collective.ErrDeadline, -1)
}

func testWaitGivesUp(t *testing.T, g []collective.Communicator) {
	h := g[0].AllReduceAsync(context.Background(), make([]float32, 4096), collective.Sum)
	const patience = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	start := time.Now()
	err := h.Wait(ctx)
	checkFailure(t, "Wait", result{err, time.Since(start) - patience}, collective.ErrDeadline, -1)
	select {
	case <-h.Done():
	default:
		t.Fatal("Done not closed after Wait gave up")
	}
	checkFailure(t, "rank 1, which never called", later(g[1]), collective.ErrDeadline, -1)
}

func testAbortFailsAll(t *testing.T, g []collective.Communicator) {
	a, ok := g[1].(collective.Aborter)
	if !ok {
		t.Skip("implementation has no Abort")
	}
	trigger, wait := allReduceOn(g, []int{0, 2}, 4096, time.Minute)
	time.Sleep(50 * time.Millisecond)
	trigger.set()
	a.Abort(errors.New("round 7 ended"))
	res := wait()
	res[1] = later(g[1])
	for r, res := range res {
		checkFailure(t, "rank "+strconv.Itoa(r), res, collective.ErrAborted, 1)
		if !strings.Contains(res.err.Error(), "round 7 ended") {
			t.Fatalf("rank %d: %q does not carry the reason given to Abort", r, res.err)
		}
	}
}

func testMismatch(t *testing.T, g []collective.Communicator) {
	res := make([]result, len(g))
	var wg sync.WaitGroup
	start := time.Now()
	for r, c := range g {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			size := 100
			if r == 2 {
				size = 101
			}
			err := c.AllReduce(ctx, make([]float32, size), collective.Sum)
			res[r] = result{err, time.Since(start)}
		})
	}
	wg.Wait()
	for r, res := range res {
		checkFailure(t, "rank "+strconv.Itoa(r), res, collective.ErrMismatch, -1)
	}
}
