package coordinator

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.uber.org/zap"
)

// RaftPeer is one coordinator replica.
type RaftPeer struct {
	ID   string
	Addr string // host:port of its Raft transport
}

// ParseRaftPeers parses "ID=ADDR,ID=ADDR".
func ParseRaftPeers(s string) ([]RaftPeer, error) {
	var out []RaftPeer
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		id, addr, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("--raft-peers: %q is not ID=HOST:PORT", part)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("--raft-peers: %s: %w", part, err)
		}
		if seen[id] {
			return nil, fmt.Errorf("--raft-peers: ID %s appears twice", id)
		}
		seen[id] = true
		out = append(out, RaftPeer{ID: id, Addr: addr})
	}
	return out, nil
}

// RaftTiming holds Raft's timeouts; zero fields take the defaults (500 ms heartbeat and
// election timeouts, 250 ms leader lease: a new leader within about a second of a crash).
type RaftTiming struct {
	Heartbeat, Election, LeaderLease time.Duration
}

type raftNode struct {
	r     *raft.Raft
	store *raftboltdb.BoltStore
	trans *raft.NetworkTransport
}

func (n *raftNode) close() {
	if n.r != nil {
		n.r.Shutdown().Error()
	}
	if n.trans != nil {
		n.trans.Close()
	}
	if n.store != nil {
		n.store.Close()
	}
}

// startRaft starts this replica. Every replica bootstraps with the same peer list the first
// time (a cluster whose only bootstrapped node dies before replicating never elects).
func startRaft(id, bind string, peers []RaftPeer, dir string, timing RaftTiming, fsm raft.FSM, logw io.Writer) (*raftNode, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	c := raft.DefaultConfig()
	c.LocalID = raft.ServerID(id)
	c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = 500*time.Millisecond, 500*time.Millisecond, 250*time.Millisecond
	if timing.Heartbeat > 0 {
		c.HeartbeatTimeout = timing.Heartbeat
	}
	if timing.Election > 0 {
		c.ElectionTimeout = timing.Election
	}
	if timing.LeaderLease > 0 {
		c.LeaderLeaseTimeout = timing.LeaderLease
	}
	c.SnapshotThreshold = 2048
	c.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Error, Output: logw})
	n := &raftNode{}
	var err error
	if n.store, err = raftboltdb.NewBoltStore(filepath.Join(dir, "raft.db")); err != nil {
		return nil, fmt.Errorf("coordinator: raft log in %s: %w", dir, err)
	}
	snaps, err := raft.NewFileSnapshotStore(dir, 2, logw)
	if err != nil {
		n.close()
		return nil, fmt.Errorf("coordinator: raft snapshots in %s: %w", dir, err)
	}
	addr, err := net.ResolveTCPAddr("tcp", bind)
	if err != nil {
		n.close()
		return nil, fmt.Errorf("coordinator: --raft-addr %s: %w", bind, err)
	}
	if n.trans, err = raft.NewTCPTransport(bind, addr, 3, 5*time.Second, logw); err != nil {
		n.close()
		return nil, fmt.Errorf("coordinator: raft transport on %s: %w", bind, err)
	}
	if n.r, err = raft.NewRaft(c, fsm, n.store, n.store, snaps, n.trans); err != nil {
		n.close()
		return nil, fmt.Errorf("coordinator: raft: %w", err)
	}
	has, err := raft.HasExistingState(n.store, n.store, snaps)
	if err != nil {
		n.close()
		return nil, err
	}
	if !has {
		servers := []raft.Server{}
		for _, p := range peers {
			servers = append(servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr)})
		}
		if len(peers) == 0 {
			servers = append(servers, raft.Server{ID: c.LocalID, Address: n.trans.LocalAddr()})
		}
		if err := n.r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil && err != raft.ErrCantBootstrap {
			n.close()
			return nil, fmt.Errorf("coordinator: bootstrapping raft: %w", err)
		}
	}
	return n, nil
}

// raftLog passes Raft's log lines to the coordinator's logger at debug level: they repeat
// while a replica is down, which the coordinator reports in its own words.
func raftLog(log *zap.Logger) io.Writer { return zapWriter{log.Named("raft")} }

type zapWriter struct{ log *zap.Logger }

func (w zapWriter) Write(p []byte) (int, error) {
	w.log.Debug(strings.TrimSpace(string(p)))
	return len(p), nil
}
