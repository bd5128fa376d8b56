// Package coordinator runs herd's control plane on the head node: worker membership in etcd
// (leases that lapse when a worker dies), the job's state in a Raft log (one or three
// replicas), rendezvous rounds that say which workers train and where each round's state
// comes from, and the HTTP API that workers join, poll and report through.
//
// Start(ctx, cfg) returns a handle whose Ready channel closes once the coordinator serves,
// as etcd's embed does. Every replica serves the API; a follower redirects workers to the
// leader, whose address is also published in etcd under /herd/jobs/<job>/leader.
package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/herd-llm/herd/checkpoint"
	"github.com/herd-llm/herd/cluster"
)

// Config configures a coordinator replica.
type Config struct {
	Job     *cluster.JobSpec
	DataDir string // etcd (embedded), raft, runs/<job>/metrics.jsonl
	// Listen is the API's address (host:port; port 0 picks one).
	Listen string
	// Advertise is the API address others use; "" derives it from Listen.
	Advertise string
	Etcd      EtcdConfig
	// RaftID names this replica; RaftAddr is its Raft transport address; RaftPeers lists
	// every replica (empty: this one alone).
	RaftID    string
	RaftAddr  string
	RaftPeers []RaftPeer
	Raft      RaftTiming
	// Checkpoint opens the job's checkpoint location, which the leader leases for the job;
	// nil leaves the location unleased (tests of the control plane alone).
	Checkpoint func(ctx context.Context) (checkpoint.Location, error)
	Logger     *zap.Logger
	// Out receives the lines an operator reads: the join command, rounds, progress.
	Out io.Writer
}

// Coordinator is a running replica.
type Coordinator struct {
	cfg  Config
	spec *cluster.JobSpec
	log  *zap.Logger
	out  io.Writer
	etcd *etcdHandle
	fsm  *fsm
	// metricsPath is the job's metrics.jsonl, which the dashboard reads.
	metricsPath string
	node        *raftNode
	srv         *http.Server
	ln          net.Listener
	addr        string // advertised API address

	ready chan struct{}
	done  chan struct{} // closed when the job has finished
	errc  chan error
	stop  context.CancelFunc
	wg    sync.WaitGroup
	met   *metrics

	mu        sync.Mutex
	live      map[string]cluster.Registration // workers with a live lease
	lastSeen  map[string]time.Time
	gone      map[string]goneWorker                     // workers lost or left lately, shown by Status for goneShown
	states    map[uint64]map[string][]cluster.RankState // round -> worker -> ranks
	changed   chan struct{}                             // closed and replaced on every change
	leading   bool
	leaderAPI string
	doneOnce  sync.Once
}

// Start starts a replica: etcd (embedded or existing), Raft, the API.
func Start(ctx context.Context, cfg Config) (*Coordinator, error) {
	if cfg.Job == nil {
		return nil, fmt.Errorf("%w: no job", cluster.ErrJobSpec)
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if len(cfg.RaftPeers) > 1 && len(cfg.Etcd.Endpoints) == 0 {
		return nil, errors.New("coordinator: several replicas (--raft-peers) need a shared etcd (--etcd): an embedded etcd lives and dies with one replica")
	}
	if cfg.RaftID == "" {
		cfg.RaftID = "c1"
	}
	if cfg.DataDir == "" {
		return nil, errors.New("coordinator: a data directory is required")
	}
	c := &Coordinator{cfg: cfg, spec: cfg.Job, log: cfg.Logger, out: cfg.Out,
		ready: make(chan struct{}), done: make(chan struct{}), errc: make(chan error, 1),
		live: map[string]cluster.Registration{}, lastSeen: map[string]time.Time{}, gone: map[string]goneWorker{},
		states: map[uint64]map[string][]cluster.RankState{}, changed: make(chan struct{})}
	runDir := filepath.Join(cfg.DataDir, "runs", cfg.Job.Name)
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return nil, err
	}
	var err error
	if c.etcd, err = openEtcd(ctx, cfg.Etcd, cfg.DataDir, cfg.Logger); err != nil {
		return nil, err
	}
	c.metricsPath = filepath.Join(runDir, "metrics.jsonl")
	if c.fsm, err = newFSM(c.metricsPath); err != nil {
		c.etcd.close()
		return nil, err
	}
	if err := c.listen(); err != nil {
		c.closeParts()
		return nil, err
	}
	raftAddr, err := raftAddress(cfg, filepath.Join(cfg.DataDir, "raft"))
	if err != nil {
		c.closeParts()
		return nil, err
	}
	if c.node, err = startRaft(cfg.RaftID, raftAddr, cfg.RaftPeers, filepath.Join(cfg.DataDir, "raft"), cfg.Raft, c.fsm, raftLog(cfg.Logger)); err != nil {
		c.closeParts()
		return nil, err
	}
	c.met = newMetrics(c)
	c.srv = &http.Server{Handler: c.routes(), ReadHeaderTimeout: 10 * time.Second}
	runCtx, cancel := context.WithCancel(context.Background())
	c.stop = cancel
	c.wg.Add(3)
	go func() { defer c.wg.Done(); c.srv.Serve(c.ln) }()
	go func() { defer c.wg.Done(); c.watchWorkers(runCtx) }()
	go func() { defer c.wg.Done(); c.leadership(runCtx) }()
	return c, nil
}

// raftAddress returns this replica's Raft address: the configured one, the one a previous
// start used (Raft keeps addresses in its log), or a free port on 127.0.0.1.
func raftAddress(cfg Config, dir string) (string, error) {
	if cfg.RaftAddr != "" {
		return cfg.RaftAddr, nil
	}
	for _, p := range cfg.RaftPeers {
		if p.ID == cfg.RaftID {
			return p.Addr, nil
		}
	}
	path := filepath.Join(dir, "address")
	if raw, err := os.ReadFile(path); err == nil {
		return string(raw), nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	l.Close()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	return addr, os.WriteFile(path, []byte(addr), 0o644)
}

func (c *Coordinator) listen() error {
	ln, err := net.Listen("tcp", c.cfg.Listen)
	if err != nil {
		return fmt.Errorf("coordinator: --listen %s: %w", c.cfg.Listen, err)
	}
	c.ln = ln
	c.addr = c.cfg.Advertise
	if c.addr == "" {
		a := ln.Addr().(*net.TCPAddr)
		host := a.IP.String()
		if a.IP.IsUnspecified() {
			host = cluster.OutboundIP()
		}
		c.addr = net.JoinHostPort(host, fmt.Sprint(a.Port))
	}
	return nil
}

// Addr returns the API address workers join.
func (c *Coordinator) Addr() string { return c.addr }

// EtcdEndpoints returns the etcd endpoints workers register with.
func (c *Coordinator) EtcdEndpoints() []string { return c.etcd.endpoints }

// Ready is closed once some replica leads and this one serves.
func (c *Coordinator) Ready() <-chan struct{} { return c.ready }

// Done is closed when the job has finished.
func (c *Coordinator) Done() <-chan struct{} { return c.done }

// Err receives a failure that stops the replica.
func (c *Coordinator) Err() <-chan error { return c.errc }

// State returns the replica's copy of the job state.
func (c *Coordinator) State() JobState { return c.fsm.snapshot() }

// Leader reports whether this replica leads.
func (c *Coordinator) Leader() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leading
}

// Close stops the replica: the API, Raft (a leader steps down by leaving), etcd.
func (c *Coordinator) Close() error {
	if c.stop != nil {
		c.stop()
	}
	if c.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c.srv.Shutdown(ctx)
		cancel()
	}
	c.wg.Wait()
	c.closeParts()
	return nil
}

func (c *Coordinator) closeParts() {
	if c.node != nil {
		c.node.close()
	}
	if c.ln != nil {
		c.ln.Close()
	}
	if c.fsm != nil {
		c.fsm.close()
	}
	if c.etcd != nil {
		c.etcd.close()
	}
}

// say prints a line for the operator, with the time.
func (c *Coordinator) say(format string, a ...any) {
	fmt.Fprintf(c.out, time.Now().Format("15:04:05.000")+" "+format+"\n", a...)
}

func (c *Coordinator) fail(err error) {
	select {
	case c.errc <- err:
	default:
	}
}

// notify wakes everything that waits for a change (long polls, the leader's loop).
func (c *Coordinator) notify() {
	c.mu.Lock()
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

func (c *Coordinator) changes() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

// apply appends a command to the Raft log and waits for it to be applied here.
func (c *Coordinator) apply(cmd command) error {
	raw, _ := json.Marshal(cmd)
	f := c.node.r.Apply(raw, 5*time.Second)
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return fmt.Errorf("%w: %v", cluster.ErrNotLeader, err)
		}
		return fmt.Errorf("coordinator: raft: %w", err)
	}
	if err, ok := f.Response().(error); ok && err != nil {
		return err
	}
	c.notify()
	return nil
}

// watchWorkers keeps c.live in step with the registrations in etcd.
func (c *Coordinator) watchWorkers(ctx context.Context) {
	prefix := cluster.WorkersPrefix(c.spec.Name)
	for ctx.Err() == nil {
		resp, err := c.etcd.cli.Get(ctx, prefix, clientv3.WithPrefix())
		if err != nil {
			c.log.Warn("listing workers", zap.Error(err))
			sleep(ctx, time.Second)
			continue
		}
		live := map[string]cluster.Registration{}
		for _, kv := range resp.Kvs {
			var reg cluster.Registration
			if json.Unmarshal(kv.Value, &reg) == nil {
				live[reg.WorkerID] = reg
			}
		}
		c.setLive(live)
		wch := c.etcd.cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
		for wr := range wch {
			if wr.Err() != nil {
				break
			}
			c.mu.Lock()
			for _, ev := range wr.Events {
				id := string(ev.Kv.Key[len(prefix):])
				if ev.Type == mvccpb.DELETE {
					if reg, ok := c.live[id]; ok {
						c.say("coordinator: worker %s left or was lost (its lease ended)", id)
						c.gone[id] = goneWorker{reg: reg, at: time.Now(), state: "lost"}
					}
					delete(c.live, id)
					continue
				}
				var reg cluster.Registration
				if json.Unmarshal(ev.Kv.Value, &reg) == nil {
					if _, ok := c.live[id]; !ok {
						c.say("coordinator: worker %s registered (%s, %d ranks)", id, reg.Host, len(reg.Ranks))
					}
					delete(c.gone, id)
					c.live[id] = reg
					c.lastSeen[id] = time.Now()
				}
			}
			c.mu.Unlock()
			c.notify()
		}
	}
}

// goneShown is how long Status lists a worker that was lost or left.
const goneShown = 10 * time.Minute

// goneWorker is a worker that was lost (its lease ended) or left (it said so).
type goneWorker struct {
	reg   cluster.Registration
	at    time.Time
	state string // "lost" or "left"
}

func (c *Coordinator) setLive(live map[string]cluster.Registration) {
	c.mu.Lock()
	c.live = live
	for id := range live {
		c.lastSeen[id] = time.Now()
	}
	c.mu.Unlock()
	c.notify()
}

// liveInOrder returns the live workers in the order they joined.
func (c *Coordinator) liveInOrder() []cluster.Registration {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]cluster.Registration, 0, len(c.live))
	for _, r := range c.live {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Joined.Equal(out[j].Joined) {
			return out[i].Joined.Before(out[j].Joined)
		}
		return out[i].WorkerID < out[j].WorkerID
	})
	return out
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func (c *Coordinator) markDone() {
	c.doneOnce.Do(func() { close(c.done) })
}
