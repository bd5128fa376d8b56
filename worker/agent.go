package worker

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/herd-llm/herd/cluster"
)

// AgentConfig configures a cluster worker (herd worker --join).
type AgentConfig struct {
	Join    string // coordinator API address(es), comma-separated
	Token   string
	Job     string // the job this worker is for; "" takes the coordinator's
	Host    string // this worker's name for people ("" : the host name)
	Backend string // cpu or cuda
	Devices int    // GPUs found (cuda)
	Slots   int    // rank processes it may run (0: 1 on cpu, Devices on cuda)
	// RankCommand returns the command that runs local rank i (herd worker-rank ...). Its
	// standard input and output carry the agent's protocol; its standard error is copied to
	// Log with a prefix.
	RankCommand func(local int) *exec.Cmd
	// MetricsListen is where the worker serves Prometheus /metrics ("" : not at all).
	MetricsListen string
	Log           io.Writer
	Logger        *zap.Logger
}

// agent is a running worker.
type agent struct {
	cfg    AgentConfig
	client *cluster.Client
	etcd   *clientv3.Client
	spec   *cluster.JobSpec
	id     string
	job    string
	ttl    time.Duration

	events chan agentEvent
	ranks  []*rankHandle
	met    *agentMetrics

	mu       sync.Mutex
	round    uint64                               // the newest round seen (0: none)
	inRound  bool                                 // this worker is a member of it
	statesBy map[uint64]map[int]cluster.RankState // round -> local rank -> last state
	steps    map[uint64][]json.RawMessage         // step lines to report, by round
	ckpts    map[uint64][]int                     // checkpoints to report, by round
	lease    clientv3.LeaseID
	joined   time.Time
}

// agentEvent is something a rank process did.
type agentEvent struct {
	local int
	ev    rankEvent
	exit  error // the process ended (ev unused)
	ended bool
}

type rankHandle struct {
	local  int
	cmd    *exec.Cmd
	in     io.WriteCloser
	enc    *json.Encoder
	addr   string
	mesh   [2]string // the rank's tensor and data groups' ring addresses
	exited chan struct{}
}

func (h *rankHandle) send(c rankCommand) {
	if h.enc != nil {
		h.enc.Encode(c)
	}
}

// RunAgent joins the coordinator's job, starts the rank processes, registers in etcd under a
// lease it keeps alive, and drives the ranks through the rounds the coordinator forms until
// the job is done or ctx ends; on ctx's end it leaves cleanly.
func RunAgent(ctx context.Context, cfg AgentConfig) error {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if cfg.Host == "" {
		cfg.Host, _ = os.Hostname()
	}
	if cfg.Slots == 0 {
		cfg.Slots = 1
		if cfg.Backend == "cuda" {
			cfg.Slots = cfg.Devices
		}
	}
	a := &agent{cfg: cfg, client: cluster.NewClient(cfg.Join, cfg.Token), events: make(chan agentEvent, 256),
		statesBy: map[uint64]map[int]cluster.RankState{}, steps: map[uint64][]json.RawMessage{}, ckpts: map[uint64][]int{}, joined: time.Now()}
	a.client.Log = func(s string) { fmt.Fprintln(cfg.Log, s) }
	resp, err := a.client.Join(ctx, cluster.JoinRequest{Job: cfg.Job, Host: cfg.Host, Backend: cfg.Backend, Devices: cfg.Devices, Slots: cfg.Slots})
	if err != nil {
		return fmt.Errorf("worker: joining %s: %w", cfg.Join, err)
	}
	a.id, a.job, a.ttl = resp.WorkerID, resp.Job, time.Duration(resp.LeaseTTL*float64(time.Second))
	a.spec = &cluster.JobSpec{}
	if err := json.Unmarshal(resp.Spec, a.spec); err != nil {
		return fmt.Errorf("worker: the job spec from %s: %w", cfg.Join, err)
	}
	fmt.Fprintf(cfg.Log, "worker: joined job %s as %s; starting %d rank processes\n", a.job, a.id, a.spec.Workers.NprocPerNode)
	a.met = newAgentMetrics(a.id)
	defer a.met.close()
	if cfg.MetricsListen != "" {
		addr, stop, err := a.met.serve(cfg.MetricsListen)
		if err != nil {
			return fmt.Errorf("worker: --metrics-listen %s: %w", cfg.MetricsListen, err)
		}
		defer stop()
		fmt.Fprintf(cfg.Log, "worker: metrics on http://%s/metrics\n", addr)
	}
	defer a.stopRanks()
	for i := 0; i < a.spec.Workers.NprocPerNode; i++ {
		if err := a.startRank(ctx, i); err != nil {
			return err
		}
	}
	if a.etcd, err = clientv3.New(clientv3.Config{Endpoints: resp.Etcd, DialTimeout: 10 * time.Second, Logger: cfg.Logger.Named("etcd")}); err != nil {
		return fmt.Errorf("worker: etcd at %v: %w", resp.Etcd, err)
	}
	defer a.etcd.Close()
	a.client.Resolve = a.resolveLeader
	return a.run(ctx)
}

// startRank starts local rank i and waits for its listening address.
func (a *agent) startRank(ctx context.Context, i int) error {
	cmd := a.cfg.RankCommand(i)
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("worker: starting rank process %d: %w", i, err)
	}
	h := &rankHandle{local: i, cmd: cmd, in: in, enc: json.NewEncoder(in), exited: make(chan struct{})}
	addr := make(chan rankEvent, 1)
	go func() {
		sc := bufio.NewScanner(errPipe)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			fmt.Fprintf(a.cfg.Log, "[%s rank %d] %s\n", a.id, i, sc.Text())
		}
	}()
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			var ev rankEvent
			if json.Unmarshal(sc.Bytes(), &ev) != nil {
				continue
			}
			if ev.Type == "listening" {
				addr <- ev
				continue
			}
			a.events <- agentEvent{local: i, ev: ev}
		}
		err := cmd.Wait()
		close(h.exited)
		a.events <- agentEvent{local: i, exit: err, ended: true}
	}()
	select {
	case ev := <-addr:
		h.addr, h.mesh = ev.Addr, [2]string{ev.TPAddr, ev.DPAddr}
	case <-h.exited:
		return fmt.Errorf("worker: rank process %d exited before it listened", i)
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		return fmt.Errorf("worker: rank process %d did not start listening within 2 minutes", i)
	case <-ctx.Done():
		cmd.Process.Kill()
		return ctx.Err()
	}
	h.send(rankCommand{Type: "job", Spec: a.spec, Worker: a.id})
	if i < len(a.ranks) {
		a.ranks[i] = h
	} else {
		a.ranks = append(a.ranks, h)
	}
	return nil
}

func (a *agent) stopRanks() {
	for _, h := range a.ranks {
		h.send(rankCommand{Type: "exit"})
		h.in.Close()
	}
	for _, h := range a.ranks {
		select {
		case <-h.exited:
		case <-time.After(10 * time.Second):
			h.cmd.Process.Signal(syscall.SIGKILL)
			<-h.exited
		}
	}
}

// register puts the worker's registration under a new lease and keeps it alive; the
// returned channel closes if the lease is lost.
func (a *agent) register(ctx context.Context) (<-chan struct{}, error) {
	ttl := int64(max(1, int(a.ttl.Round(time.Second)/time.Second)))
	lease, err := a.etcd.Grant(ctx, ttl)
	if err != nil {
		return nil, fmt.Errorf("worker: etcd lease: %w", err)
	}
	a.lease = lease.ID
	if err := a.putRegistration(ctx); err != nil {
		return nil, err
	}
	ka, err := a.etcd.KeepAlive(ctx, lease.ID)
	if err != nil {
		return nil, err
	}
	lost := make(chan struct{})
	go func() {
		for range ka {
		}
		close(lost)
	}()
	return lost, nil
}

// putRegistration writes the worker's registration, with its ranks' addresses, under its lease.
func (a *agent) putRegistration(ctx context.Context) error {
	reg := cluster.Registration{WorkerID: a.id, Host: a.cfg.Host, Backend: a.cfg.Backend, Devices: a.cfg.Devices, Joined: a.joined}
	for _, h := range a.ranks {
		reg.Ranks = append(reg.Ranks, h.addr)
		reg.TPRanks = append(reg.TPRanks, h.mesh[0])
		reg.DPRanks = append(reg.DPRanks, h.mesh[1])
	}
	raw, _ := json.Marshal(reg)
	if _, err := a.etcd.Put(ctx, cluster.WorkerKey(a.job, a.id), string(raw), clientv3.WithLease(a.lease)); err != nil {
		return fmt.Errorf("worker: registering in etcd: %w", err)
	}
	return nil
}

func (a *agent) resolveLeader(ctx context.Context) (string, error) {
	resp, err := a.etcd.Get(ctx, cluster.LeaderKey(a.job))
	if err != nil || len(resp.Kvs) == 0 {
		return "", err
	}
	var rec struct {
		API string `json:"api"`
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		return "", err
	}
	return rec.API, nil
}

// pollResult is one answer of the round long poll.
type pollResult struct {
	resp *cluster.RoundResponse
	err  error
}

func (a *agent) run(ctx context.Context) error {
	leaseCtx, cancelLease := context.WithCancel(context.Background())
	defer cancelLease()
	lost, err := a.register(leaseCtx)
	if err != nil {
		return err
	}
	polls := make(chan pollResult, 1)
	pollCtx, cancelPoll := context.WithCancel(ctx)
	defer cancelPoll()
	var after uint64
	var afterMu sync.Mutex
	go func() {
		for pollCtx.Err() == nil {
			afterMu.Lock()
			n := after
			afterMu.Unlock()
			r, err := a.client.Round(pollCtx, a.id, n)
			select {
			case polls <- pollResult{r, err}:
			case <-pollCtx.Done():
				return
			}
			if err != nil {
				time.Sleep(time.Second)
			}
		}
	}()
	flush := time.NewTicker(200 * time.Millisecond)
	defer flush.Stop()
	for {
		select {
		case <-ctx.Done():
			return a.leave()
		case <-lost:
			fmt.Fprintf(a.cfg.Log, "worker: lost the etcd lease; registering again\n")
			a.stopRound()
			if lost, err = a.register(leaseCtx); err != nil {
				return err
			}
		case p := <-polls:
			if p.err != nil {
				if errors.Is(p.err, cluster.ErrToken) || errors.Is(p.err, cluster.ErrWrongJob) {
					return p.err
				}
				fmt.Fprintf(a.cfg.Log, "worker: waiting for the coordinator: %v\n", p.err)
				continue
			}
			done, n := a.onRound(p.resp)
			afterMu.Lock()
			after = max(after, n)
			afterMu.Unlock()
			if done {
				a.flush(ctx)
				fmt.Fprintf(a.cfg.Log, "worker: job %s finished\n", a.job)
				a.etcd.Revoke(context.Background(), a.lease)
				return nil
			}
		case e := <-a.events:
			if err := a.onEvent(ctx, e); err != nil {
				return err
			}
		case <-flush.C:
			a.flush(ctx)
		}
	}
}

// onRound acts on a long-poll answer; it returns whether the job is done and the newest
// round id seen.
func (a *agent) onRound(r *cluster.RoundResponse) (bool, uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case r.Done:
		return true, a.round
	case r.Round != nil && r.Round.ID > a.round:
		rd := r.Round
		a.round = rd.ID
		if a.statesBy[rd.ID] == nil {
			a.statesBy[rd.ID] = map[int]cluster.RankState{}
		}
		m, in := rd.Member(a.id)
		a.inRound = in && !r.Spare
		if !a.inRound {
			fmt.Fprintf(a.cfg.Log, "worker: round %d leaves this worker out; waiting as a spare\n", rd.ID)
			for _, h := range a.ranks {
				h.send(rankCommand{Type: "stop"})
			}
			return false, rd.ID
		}
		fmt.Fprintf(a.cfg.Log, "worker: round %d: ranks %d-%d of %d, from step %d (%s)\n", rd.ID, m.FirstRank, m.FirstRank+len(m.Ranks)-1, rd.World, rd.Start, rd.Source.Kind)
		a.met.joined(rd.ID)
		for i, h := range a.ranks {
			h.send(rankCommand{Type: "round", Round: rd, Rank: m.FirstRank + i})
		}
		return false, rd.ID
	case r.Ending != 0 && r.Ending == a.round:
		for _, h := range a.ranks {
			h.send(rankCommand{Type: "stop"})
		}
	}
	return false, a.round
}

func (a *agent) stopRound() {
	for _, h := range a.ranks {
		h.send(rankCommand{Type: "stop"})
	}
}

// onEvent records a rank's news for the next report; a rank process that ended is restarted.
func (a *agent) onEvent(ctx context.Context, e agentEvent) error {
	if e.ended {
		if ctx.Err() != nil {
			return nil
		}
		fmt.Fprintf(a.cfg.Log, "worker: rank process %d ended (%v); starting it again\n", e.local, e.exit)
		a.mu.Lock()
		if st := a.statesBy[a.round]; st != nil && a.inRound {
			st[e.local] = cluster.RankState{Rank: -1, Step: -1, Phase: cluster.PhaseFailed, Error: fmt.Sprint(e.exit)}
		}
		a.mu.Unlock()
		a.flush(ctx)
		if err := a.startRank(ctx, e.local); err != nil {
			return err
		}
		return a.putRegistration(ctx) // the new process listens elsewhere
	}
	ev := e.ev
	a.mu.Lock()
	defer a.mu.Unlock()
	switch ev.Type {
	case "state":
		states := a.statesBy[ev.Round]
		if states == nil {
			states = map[int]cluster.RankState{}
			a.statesBy[ev.Round] = states
		}
		states[e.local] = *ev.State
	case "step":
		a.steps[ev.Round] = append(a.steps[ev.Round], ev.Step)
		a.met.step(ev.Step)
	case "saved":
		a.met.saved(ev.Seconds, ev.Error != "")
	case "checkpoint":
		a.ckpts[ev.Round] = append(a.ckpts[ev.Round], ev.Checkpoint)
	}
	return nil
}

// flush sends what the ranks reported since the last flush: one report per round with news.
func (a *agent) flush(ctx context.Context) {
	a.mu.Lock()
	reps := map[uint64]*cluster.Report{}
	get := func(round uint64) *cluster.Report {
		if reps[round] == nil {
			reps[round] = &cluster.Report{WorkerID: a.id, Round: round}
		}
		return reps[round]
	}
	for round, lines := range a.steps {
		get(round).Steps = lines
	}
	for round, ck := range a.ckpts {
		get(round).Checkpoints = ck
	}
	states := a.statesBy[a.round]
	for i := range a.ranks {
		if st, ok := states[i]; ok {
			get(a.round).Ranks = append(get(a.round).Ranks, st)
		}
	}
	a.steps, a.ckpts = map[uint64][]json.RawMessage{}, map[uint64][]int{}
	a.mu.Unlock()
	rounds := make([]uint64, 0, len(reps))
	for r := range reps {
		rounds = append(rounds, r)
	}
	slices.Sort(rounds)
	for _, round := range rounds {
		rep := reps[round]
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := a.client.Report(rctx, *rep)
		cancel()
		if err != nil {
			fmt.Fprintf(a.cfg.Log, "worker: reporting to the coordinator: %v\n", err)
			a.mu.Lock()
			a.steps[round] = append(rep.Steps, a.steps[round]...)
			a.ckpts[round] = append(rep.Checkpoints, a.ckpts[round]...)
			a.mu.Unlock()
		}
	}
}

// leave stops the ranks after their current step, reports their state, and deregisters.
func (a *agent) leave() error {
	fmt.Fprintf(a.cfg.Log, "worker: leaving job %s\n", a.job)
	a.stopRound()
	deadline := time.After(10 * time.Second)
	for waiting := true; waiting; {
		select {
		case e := <-a.events:
			a.onEvent(context.Background(), e)
			a.mu.Lock()
			ended := 0
			for _, st := range a.statesBy[a.round] {
				if st.Phase != cluster.PhaseTraining {
					ended++
				}
			}
			waiting = a.inRound && ended < len(a.ranks)
			a.mu.Unlock()
		case <-deadline:
			waiting = false
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a.flush(ctx)
	a.client.Leave(ctx, a.id)
	a.etcd.Revoke(ctx, a.lease)
	return nil
}
