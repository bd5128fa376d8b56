// Package collectivetest holds the conformance suite that every collective.Communicator
// implementation passes (RunAll) and helpers that build whole groups for tests.
package collectivetest

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/herd-llm/herd/collective"
)

// NewGroup builds the n members of a fresh group for one test (element i has rank i) and
// closes them when the test ends.
type NewGroup func(t *testing.T, n int) []collective.Communicator

// NewInMemGroup is a NewGroup for the in-memory implementation.
func NewInMemGroup(t *testing.T, n int) []collective.Communicator {
	g := collective.NewInMemGroup(n)
	t.Cleanup(func() { closeAll(g) })
	return g
}

// NewRingGroup is a NewGroup for the TCP ring: n members in this process, on loopback.
func NewRingGroup(t *testing.T, n int) []collective.Communicator {
	rings := StartRing(t, n, nil)
	g := make([]collective.Communicator, n)
	for i, r := range rings {
		g[i] = r
	}
	return g
}

// StartRing starts n ring members in this process, each listening on its own 127.0.0.1:0
// port, and waits until all are connected. edit, when not nil, adjusts each member's
// Config (Rank, Peers and Listener are already set). The members log warnings to tb and
// are closed when the test ends.
func StartRing(tb testing.TB, n int, edit func(*collective.Config)) []*collective.Ring {
	tb.Helper()
	lns := make([]net.Listener, n)
	peers := make([]string, n)
	for i := range lns {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("listen: %v", err)
		}
		lns[i], peers[i] = ln, ln.Addr().String()
	}
	log := zaptest.NewLogger(tb, zaptest.Level(zap.WarnLevel))
	rings := make([]*collective.Ring, 0, n)
	tb.Cleanup(func() { closeRings(rings) })
	for i := range n {
		cfg := collective.DefaultConfig()
		cfg.Rank, cfg.Peers, cfg.Listener = i, peers, lns[i]
		cfg.JobID, cfg.Secret = "collectivetest", "collectivetest-secret"
		cfg.DialTimeout = 20 * time.Second
		cfg.Logger = log
		if edit != nil {
			edit(&cfg)
		}
		r, err := collective.Start(context.Background(), cfg)
		if err != nil {
			tb.Fatalf("start rank %d: %v", i, err)
		}
		rings = append(rings, r)
	}
	for i, r := range rings {
		select {
		case <-r.Ready():
		case err := <-r.Err():
			tb.Fatalf("rank %d: %v", i, err)
		case <-time.After(30 * time.Second):
			tb.Fatalf("rank %d not connected after 30s", i)
		}
	}
	return rings
}

// closeRings closes members concurrently: a member's Close lingers until its neighbours
// hang up too.
func closeRings(rings []*collective.Ring) {
	var wg sync.WaitGroup
	for _, r := range rings {
		wg.Go(func() { r.Close() })
	}
	wg.Wait()
}

func closeAll(g []collective.Communicator) {
	var wg sync.WaitGroup
	for _, c := range g {
		wg.Go(func() { c.Close() })
	}
	wg.Wait()
}
