package collective

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"
)

// TestRingDropConnection breaks the connection between ranks 1 and 2 in the middle of an
// all-reduce, as a failing network would: every rank fails within 5 s with ErrPeerFailed
// naming one of the two ends.
func TestRingDropConnection(t *testing.T) {
	rings := startRing(t, 3)
	errs := make([]error, len(rings))
	took := make([]time.Duration, len(rings))
	var wg sync.WaitGroup
	var dropped time.Time
	start := make(chan struct{})
	for i, r := range rings {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			buf := make([]float32, 4<<20)
			<-start
			for k := 0; k < 100 && errs[i] == nil; k++ {
				errs[i] = r.AllReduce(ctx, buf, Sum)
			}
			took[i] = time.Since(dropped)
		})
	}
	dropped = time.Now().Add(100 * time.Millisecond)
	close(start)
	time.Sleep(time.Until(dropped))
	rings[1].mu.Lock()
	conn := rings[1].rightConn
	rings[1].mu.Unlock()
	conn.Close()
	wg.Wait()
	for i, err := range errs {
		var pe *PeerError
		if !errors.Is(err, ErrPeerFailed) || !errors.As(err, &pe) || (pe.Rank != 1 && pe.Rank != 2) {
			t.Fatalf("rank %d: %v, want ErrPeerFailed naming rank 1 or 2", i, err)
		}
		if took[i] > 5*time.Second {
			t.Fatalf("rank %d failed %v after the drop, want within 5s", i, took[i])
		}
		t.Logf("rank %d failed %v after the drop: %v", i, took[i].Round(time.Millisecond), err)
	}
}

// TestRingOpTimeout checks that Config.OpTimeout bounds calls whose ctx has no deadline.
func TestRingOpTimeout(t *testing.T) {
	lns := []net.Listener{listenLoopback(t), listenLoopback(t)}
	peers := []string{lns[0].Addr().String(), lns[1].Addr().String()}
	rings := make([]*Ring, 2)
	for i := range rings {
		cfg := DefaultConfig()
		cfg.Rank, cfg.Peers, cfg.Listener, cfg.JobID = i, peers, lns[i], "job-1"
		cfg.OpTimeout = 200 * time.Millisecond
		r, err := Start(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		rings[i] = r
	}
	start := time.Now()
	err := rings[0].AllReduce(context.Background(), make([]float32, 10), Sum) // rank 1 never calls
	var pe *PeerError
	if !errors.Is(err, ErrDeadline) || !errors.As(err, &pe) || pe.Rank != 1 {
		t.Fatalf("%v, want ErrDeadline naming rank 1", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("failed after %v, want about 200ms", d)
	}
}
