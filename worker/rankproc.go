package worker

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/herd-llm/herd/checkpoint"
	"github.com/herd-llm/herd/cluster"
	"github.com/herd-llm/herd/collective"
	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/model"
)

// A cluster worker runs one rank process per device. The process lives as long as the job
// on that worker, across rounds: its Trainer (model, optimizer, data cursor) survives a round
// that fails, so the next round continues from its state. The worker agent talks to it over
// its standard input and output, one JSON message per line.

// rankCommand is a message from the agent to a rank process.
type rankCommand struct {
	Type   string           `json:"type"` // "job", "round", "stop", "exit"
	Spec   *cluster.JobSpec `json:"spec,omitempty"`
	Worker string           `json:"worker,omitempty"`
	Round  *cluster.Round   `json:"round,omitempty"`
	Rank   int              `json:"rank,omitempty"` // with round: this process's rank in it
}

// rankEvent is a message from a rank process to the agent.
type rankEvent struct {
	Type       string             `json:"type"` // "listening", "state", "step", "checkpoint"
	Addr       string             `json:"addr,omitempty"`
	TPAddr     string             `json:"tp_addr,omitempty"` // with listening: the tensor group's ring
	DPAddr     string             `json:"dp_addr,omitempty"` // with listening: the data group's ring
	Round      uint64             `json:"round,omitempty"`
	State      *cluster.RankState `json:"state,omitempty"`
	Step       json.RawMessage    `json:"step,omitempty"`
	Checkpoint int                `json:"checkpoint,omitempty"`
	Seconds    float64            `json:"seconds,omitempty"` // with saved: how long the write took
	Error      string             `json:"error,omitempty"`   // with saved: why it failed
}

// RankConfig starts a rank process.
type RankConfig struct {
	// Listen is where the rank's ring listens for the whole job (host:port; port 0 picks).
	Listen string
	// Advertise is the host others dial; "" keeps Listen's host.
	Advertise string
	// Local is this rank's index on its worker; local rank 0 reports step metrics.
	Local int
	// Device is the GPU ordinal (cuda) of this rank.
	Device int
	// OpenBackend opens the backend the job names on device.
	OpenBackend func(name string, device int) (kernels.Backend, func(), error)
	// Stores configures the checkpoint store (S3 endpoint, retries).
	Stores checkpoint.StoreOptions
	In     io.Reader // commands
	Out    io.Writer // events
	Log    io.Writer // progress and errors, for people
}

type rankProc struct {
	cfg     RankConfig
	enc     *json.Encoder
	encMu   sync.Mutex
	cmds    chan rankCommand
	ln      *roundListener
	mesh    [2]*roundListener // the tensor and data groups' rings, for jobs with tp > 1
	addr    string
	spec    *cluster.JobSpec
	worker  string
	t       *Trainer
	closeBe func()
	round   atomic.Uint64
	rank    int
	logger  *zap.Logger
}

// RunRank runs a rank process until the agent says exit or its input ends.
func RunRank(ctx context.Context, cfg RankConfig) error {
	p := &rankProc{cfg: cfg, enc: json.NewEncoder(cfg.Out), cmds: make(chan rankCommand, 16), logger: zap.NewNop()}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("worker: rank listener on %s: %w", cfg.Listen, err)
	}
	p.ln = newRoundListener(ln)
	defer p.ln.Close()
	p.addr = advertised(ln.Addr().(*net.TCPAddr), cfg.Advertise)
	// A job with tensor parallelism also needs a ring per mesh axis; the job arrives after
	// the addresses are reported, so every rank listens for both.
	var meshAddrs [2]string
	for i := range p.mesh {
		host, _, _ := net.SplitHostPort(cfg.Listen)
		mln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return fmt.Errorf("worker: rank listener on %s: %w", host, err)
		}
		p.mesh[i] = newRoundListener(mln)
		defer p.mesh[i].Close()
		meshAddrs[i] = advertised(mln.Addr().(*net.TCPAddr), cfg.Advertise)
	}
	go p.readCommands()
	p.emit(rankEvent{Type: "listening", Addr: p.addr, TPAddr: meshAddrs[0], DPAddr: meshAddrs[1]})
	defer func() {
		if p.t != nil {
			p.t.Close()
		}
		if p.closeBe != nil {
			p.closeBe()
		}
	}()
	var pending *rankCommand
	for {
		var cmd rankCommand
		if pending != nil {
			cmd, pending = *pending, nil
		} else {
			var ok bool
			select {
			case cmd, ok = <-p.cmds:
				if !ok {
					return nil
				}
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		switch cmd.Type {
		case "job":
			if err := p.startJob(ctx, cmd); err != nil {
				p.emitState(cluster.PhaseFailed, err)
				return err
			}
		case "round":
			if p.t == nil {
				return errors.New("worker: a round before the job")
			}
			pending = p.runRound(ctx, cmd)
		case "exit":
			return nil
		}
	}
}

// advertised returns the address peers dial: host (or the listener's host) and its port.
func advertised(a *net.TCPAddr, host string) string {
	if host == "" {
		host = a.IP.String()
		if a.IP.IsUnspecified() {
			host = "127.0.0.1"
		}
	}
	return net.JoinHostPort(host, fmt.Sprint(a.Port))
}

func (p *rankProc) readCommands() {
	defer close(p.cmds)
	sc := bufio.NewScanner(p.cfg.In)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var c rankCommand
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			fmt.Fprintf(p.cfg.Log, "worker: rank: bad command %q: %v\n", sc.Text(), err)
			continue
		}
		p.cmds <- c
	}
}

func (p *rankProc) emit(e rankEvent) {
	p.encMu.Lock()
	defer p.encMu.Unlock()
	p.enc.Encode(e)
}

func (p *rankProc) emitState(phase string, err error) {
	st := cluster.RankState{Rank: p.rank, Step: -1, Phase: phase}
	if p.t != nil && phase != cluster.PhaseFailed {
		var world, shard int
		st.Step, world, shard = p.t.State()
		if st.Step >= 0 {
			st.Checksum = p.t.Checksum()
		}
		if st.Step >= 0 && world > 0 {
			st.Shard = &cluster.ShardOf{World: world, Rank: shard}
		}
	}
	if err != nil {
		st.Error = err.Error()
	}
	p.emit(rankEvent{Type: "state", Round: p.round.Load(), State: &st})
}

// startJob builds the Trainer of the job: data, model, optimizer, checkpoint location.
func (p *rankProc) startJob(ctx context.Context, cmd rankCommand) error {
	spec := cmd.Spec
	if spec == nil {
		return errors.New("worker: job command without a spec")
	}
	p.spec, p.worker = spec, cmd.Worker
	mc, err := spec.ModelConfig()
	if err != nil {
		return err
	}
	be, closeBe, err := p.cfg.OpenBackend(spec.Workers.Backend, p.cfg.Device)
	if err != nil {
		return err
	}
	p.closeBe = closeBe
	opts := p.cfg.Stores
	opts.S3.Endpoint = firstNonEmpty(spec.Checkpoint.S3Endpoint, opts.S3.Endpoint)
	opts.S3.Region = firstNonEmpty(spec.Checkpoint.S3Region, opts.S3.Region)
	loc, err := checkpoint.OpenLocation(ctx, spec.Checkpoint.URI, opts)
	if err != nil {
		return fmt.Errorf("checkpoint.uri: %w", err)
	}
	optim := model.DefaultOptim()
	if s := spec.Schedule.WeightDecay; s != nil {
		optim.WeightDecay = *s
	}
	if s := spec.Schedule.Clip; s != nil {
		optim.ClipNorm = *s
	}
	lr := spec.Schedule.LR
	if lr == 0 {
		lr = mc.PeakLR
	}
	warmup := -1
	if spec.Schedule.Warmup != nil {
		warmup = *spec.Schedule.Warmup
	}
	var mesh *Mesh
	if spec.TP > 1 {
		// A rank keeps its index in its worker, so its tensor-parallel share, in every round.
		mesh = &Mesh{Size: spec.TP, Rank: p.cfg.Local % spec.TP, Sequence: spec.SequenceParallel == nil || *spec.SequenceParallel}
	}
	cfg := TrainConfig{Model: mc, Optim: optim, PeakLR: lr, WarmupSteps: warmup, Data: spec.Dataset, Seed: spec.Seed, Tensor: mesh,
		Seq: spec.Seq, Batch: spec.Batch, MicroBatch: spec.Batch, Steps: spec.Steps, EvalSeqs: 32, CheckEvery: 50, Zero: spec.Zero,
		Checkpoint: CheckpointConfig{Save: &loc, Every: spec.Checkpoint.Every, KeepLast: spec.Checkpoint.KeepLast,
			KeepEvery: spec.Checkpoint.KeepEvery, FailureLimit: 30 * time.Minute},
		OnStep: func(sm StepMetrics) {
			if p.cfg.Local == 0 {
				raw, _ := json.Marshal(sm)
				p.emit(rankEvent{Type: "step", Round: p.round.Load(), Step: raw})
			}
		},
		OnCheckpoint: func(step int) { p.emit(rankEvent{Type: "checkpoint", Round: p.round.Load(), Checkpoint: step}) },
		OnSaved: func(step int, took time.Duration, err error) {
			e := rankEvent{Type: "saved", Round: p.round.Load(), Checkpoint: step, Seconds: took.Seconds()}
			if err != nil {
				e.Error = err.Error()
			}
			p.emit(e)
		},
	}
	t, err := NewTrainer(ctx, cfg, be, p.cfg.Log)
	if err != nil {
		return err
	}
	if err := t.Begin(ctx); err != nil {
		t.Close()
		return err
	}
	p.t = t
	return nil
}

// joinMesh joins the round's tensor-parallel and data-parallel rings of rank (configured as
// the round's ring, base), each on its own listener.
func (p *rankProc) joinMesh(ctx context.Context, r *cluster.Round, rank, tp int, base collective.Config) ([2]*collective.Ring, error) {
	var rings [2]*collective.Ring
	tpPeers, dpPeers := r.MeshPeers(rank, tp)
	if tpPeers == nil {
		return rings, fmt.Errorf("the round lists no tensor-parallel addresses for its %d ranks", r.World)
	}
	axes := [2]struct {
		name  string
		rank  int
		peers []string
	}{{fmt.Sprintf("tp%d", rank/tp), rank % tp, tpPeers}, {fmt.Sprintf("dp%d", rank%tp), rank / tp, dpPeers}}
	for i, ax := range axes {
		cfg := base
		cfg.Rank, cfg.Peers, cfg.Listener = ax.rank, ax.peers, p.mesh[i].next()
		cfg.JobID = base.JobID + "/" + ax.name
		ring, err := collective.Join(ctx, cfg)
		if err != nil {
			if i == 1 {
				rings[0].Close()
			}
			return rings, fmt.Errorf("the %s ring: %w", ax.name, err)
		}
		rings[i] = ring
	}
	return rings, nil
}

// runRound trains one round until it ends: every step done, the agent asks it to stop, or a
// failure (a peer lost, a deadline). It returns a command that arrived meanwhile and must be
// handled next (a newer round), or nil.
func (p *rankProc) runRound(ctx context.Context, cmd rankCommand) *rankCommand {
	r := cmd.Round
	p.round.Store(r.ID)
	p.rank = cmd.Rank
	cfg := collective.DefaultConfig()
	cfg.Rank, cfg.Peers, cfg.Listener = cmd.Rank, r.Peers(), p.ln.next()
	cfg.JobID, cfg.Secret = fmt.Sprintf("%s/round-%d", p.spec.Name, r.ID), r.Secret
	cfg.OpTimeout = p.spec.Workers.CollectiveTimeout.D()
	cfg.Logger = p.logger
	ring, err := collective.Start(ctx, cfg)
	if err != nil {
		p.emitState(cluster.PhaseStopped, err)
		return nil
	}
	defer ring.Close()
	// A rank told to stop (its worker died or is leaving) closes its ring at once, so the
	// other ranks learn that this rank closed rather than time out on it.
	defer context.AfterFunc(ctx, func() { ring.Close() })()
	select {
	case <-ring.Ready():
	case err := <-ring.Err():
		p.emitState(cluster.PhaseStopped, fmt.Errorf("joining round %d: %w", r.ID, err))
		return nil
	case <-ctx.Done():
		return nil
	}
	var mesh *Mesh
	if tp := p.spec.TP; tp > 1 {
		rings, err := p.joinMesh(ctx, r, cmd.Rank, tp, cfg)
		if err != nil {
			p.emitState(cluster.PhaseStopped, fmt.Errorf("joining round %d: %w", r.ID, err))
			return nil
		}
		for _, g := range rings {
			defer g.Close()
			defer context.AfterFunc(ctx, func() { g.Close() })()
		}
		mesh = &Mesh{Size: tp, Rank: cmd.Rank % tp, TP: rings[0], DP: rings[1]}
	}
	err = p.t.JoinRound(ctx, RoundStart{Comm: ring, Micro: r.Micro, Start: r.Start, Source: r.Source.Kind,
		Root: r.Source.Rank, ShardWorld: r.Source.World, Holders: r.Source.Holders, Attempt: r.Attempt, SaveFirst: r.SaveFirst, Mesh: mesh})
	if err != nil {
		p.emitState(cluster.PhaseStopped, err)
		return nil
	}
	p.emitState(cluster.PhaseTraining, nil)
	for !p.t.Done() {
		select {
		case c, ok := <-p.cmds:
			if !ok {
				return &rankCommand{Type: "exit"}
			}
			switch c.Type {
			case "stop":
				p.emitState(cluster.PhaseStopped, errors.New("the round ended"))
				return nil
			case "round", "exit":
				p.emitState(cluster.PhaseStopped, errors.New("the round ended"))
				return &c
			}
		default:
		}
		if err := p.t.Step(ctx); err != nil {
			p.emitState(cluster.PhaseStopped, err)
			return nil
		}
	}
	if _, err := p.t.Finish(ctx); err != nil {
		p.emitState(cluster.PhaseStopped, err)
		return nil
	}
	p.emitState(cluster.PhaseDone, nil)
	return nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
