package collective

import (
	"context"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
)

// TestRingCloseStopsGoroutines checks that Close leaves nothing running: after a clean run,
// after a member aborted, and for a member that never connected.
func TestRingCloseStopsGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	rings := startRing(t, 3)
	allReduce(t, rings, 1000)
	rings[1].Abort(nil)
	closeAll(rings)

	lonely := startRingMember(t, 0, []string{"", "127.0.0.1:1"})
	lonely.Close()

	for range 500 {
		if runtime.NumGoroutine() <= before {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	buf := make([]byte, 1<<16)
	t.Fatalf("%d goroutines before, %d after Close:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
}

func startRing(t *testing.T, n int) []*Ring {
	t.Helper()
	lns := make([]net.Listener, n)
	peers := make([]string, n)
	for i := range lns {
		lns[i] = listenLoopback(t)
		peers[i] = lns[i].Addr().String()
	}
	rings := make([]*Ring, n)
	for i := range rings {
		rings[i] = startMember(t, i, peers, lns[i], "", zap.NewNop())
	}
	return rings
}

// startRingMember starts a member that listens on peers[rank] itself.
func startRingMember(t *testing.T, rank int, peers []string) *Ring {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	peers[rank] = ln.Addr().String()
	ln.Close()
	cfg := DefaultConfig()
	cfg.Rank, cfg.Peers, cfg.JobID = rank, peers, "job-1"
	r, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func allReduce(t *testing.T, rings []*Ring, size int) {
	t.Helper()
	errs := make([]error, len(rings))
	var wg sync.WaitGroup
	for i, r := range rings {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			errs[i] = r.AllReduce(ctx, make([]float32, size), Sum)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", i, err)
		}
	}
}

func closeAll(rings []*Ring) {
	var wg sync.WaitGroup
	for _, r := range rings {
		wg.Go(func() { r.Close() })
	}
	wg.Wait()
}
