package worker

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/herd-llm/herd/checkpoint"
	"github.com/herd-llm/herd/collective"
	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/model"
	"github.com/herd-llm/herd/shard"
	"github.com/herd-llm/herd/tokenizer"
)

// Trainer is one training run, driven step by step. Its state (model, optimizer, data
// cursor, checkpoint saver, run directory) outlives any one communicator, so a driver can
// change the data-parallel group between steps (SetComm). The life cycle:
//
//	t, err := NewTrainer(ctx, cfg, be, log) // validate, load the data, build the model: writes nothing
//	defer t.Close()
//	err = t.Restore(ctx)                    // fresh weights, or the checkpoint to continue: writes nothing
//	err = t.Begin()                         // from here on the run directory is written
//	for !t.Done() { err = t.Step(ctx) }     // one optimizer step each, with its checkpoint and validation
//	res, err := t.Finish(ctx)               // final validation, weights, summary
//
// Everything that can refuse a run happens before Begin, so a refused run leaves the run
// directory and the checkpoint location as they were.
type Trainer struct {
	cfg  TrainConfig
	be   kernels.Backend
	log  io.Writer // progress and summaries; io.Discard on ranks other than 0
	out  io.Writer // where rank 0 writes log
	lead bool      // rank 0: writes the run directory

	tok     *tokenizer.Tokenizer
	tokJSON []byte
	ds      *shard.Dataset
	sampler *shard.Sampler
	loader  *shard.Loader
	sched   model.Schedule
	rc      RunConfig

	model  *model.Model
	opt    optimizer        // AdamW over the whole state, or over this rank's shard (zero)
	zero   *zeroState       // when the state is sharded (TrainConfig.Zero > 0)
	loaded checkpoint.State // under ZeRO: the whole state a load filled, until adopted
	sb     *stateBuffers    // the whole state's host view (no ZeRO)

	comm collective.Communicator
	red  GradReducer
	dp   *dataParallel
	tg   *tensorGroup // the tensor-parallel group, when cfg.Tensor is set
	// tpWaited is how long the last step waited for the tensor-parallel collectives.
	tpWaited time.Duration
	// tpSave is what this rank writes of the checkpoint of step under tensor parallelism,
	// kept for a retry of the same step.
	tpSave struct {
		step  int
		spans []checkpoint.Span
	}
	// holds says whether the model holds the state of step (set by Restore and by a
	// round's JoinRound; cleared while a JoinRound overwrites it). Without it a rank reports
	// no state, and a round does not continue from it.
	holds bool

	saver       *checkpoint.Saver
	saveCtx     context.Context
	cancelSave  context.CancelFunc
	attempt     string            // names this run's checkpoint shards; the same on every rank
	lock        *runLock          // rank 0: the run directory
	lease       *checkpoint.Lease // rank 0: the checkpoint location
	saveFailing time.Time         // when checkpoints began failing; zero while they commit
	begun       bool              // Begin has run
	bannered    bool              // the model and data lines were printed

	val, text *EvalSet
	bar       *progress
	metrics   *os.File      // nil on ranks other than 0
	menc      *json.Encoder // writes metrics, or io.Discard
	peak      float64       // the device's peak FLOP/s, 0 when unknown

	step      int // optimizer steps done
	startStep int // the step this process started (or resumed) at
	began     time.Time
	inputs    []int32
	targets   []int32
	res       Result
}

// NewTrainer validates cfg, loads the dataset and tokenizer, and builds the model and
// optimizer on be. It writes nothing: a configuration that cannot run is refused here or in
// Restore, before Begin touches the run directory.
func NewTrainer(ctx context.Context, cfg TrainConfig, be kernels.Backend, log io.Writer) (*Trainer, error) {
	tok, err := tokenizer.Load(filepath.Join(cfg.Data, TokenizerName))
	if err != nil {
		return nil, fmt.Errorf("--data %s: %w", cfg.Data, err)
	}
	cfg.Model.Vocab = tok.VocabSize()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.Checkpoint.Validate(); err != nil {
		return nil, err
	}
	t := &Trainer{cfg: cfg, be: be, log: log, out: log, tok: tok, comm: cfg.Comm, red: cfg.Reducer}
	t.lead = cfg.rank() == 0
	if !t.lead {
		t.log = io.Discard
	}
	t.bar = newProgress(t.log, 0, cfg.Steps)
	if t.ds, err = shard.LoadDataset(cfg.Data, tok.Hash()); err != nil {
		return nil, err
	}
	if t.sampler, err = shard.NewSampler(t.ds.Manifest.Mixture(), cfg.Seed, cfg.Seq); err != nil {
		return nil, fmt.Errorf("--data %s at --seq %d: %w", cfg.Data, cfg.Seq, err)
	}
	if t.loader, err = shard.NewLoader(t.ds, t.sampler); err != nil {
		return nil, err
	}
	if t.tokJSON, err = tok.Marshal(); err != nil {
		return nil, err
	}
	t.val = NewEvalSet(t.ds.HeldOut, cfg.Seq, cfg.EvalSeqs, tok)
	if cfg.EvalText != "" {
		raw, err := os.ReadFile(cfg.EvalText)
		if err != nil {
			return nil, fmt.Errorf("--eval-text: %w", err)
		}
		t.text = NewEvalSet([][]int32{tok.Encode(raw)}, cfg.Seq, math.MaxInt, tok)
	}
	abs, _ := filepath.Abs(cfg.Data)
	t.sched = cfg.schedule()
	t.rc = RunConfig{Model: cfg.Model, Optim: cfg.Optim, Schedule: t.sched, Data: abs, TokenizerHash: tok.Hash(),
		Seed: cfg.Seed, Seq: cfg.Seq, Batch: cfg.Batch, MicroBatch: cfg.MicroBatch, Steps: cfg.Steps, EvalSeqs: cfg.EvalSeqs, World: cfg.world()}
	if cfg.tp() > 1 {
		t.rc.TP = cfg.tp()
	}
	t.saveCtx, t.cancelSave = context.Background(), func() {}
	if t.lead && cfg.Out != "" {
		if err := t.claim(ctx); err != nil {
			t.releaseClaims(true)
			return nil, err
		}
	}
	if err := t.buildState(); err != nil {
		t.releaseClaims(true)
		return nil, err
	}
	if err := t.setComm(t.comm, t.red); err != nil {
		t.model.Close()
		t.releaseClaims(true)
		return nil, err
	}
	if p, ok := be.(kernels.Peak); ok {
		t.peak = p.PeakFLOPS()
	}
	t.menc = json.NewEncoder(io.Discard)
	return t, nil
}

// buildState allocates the model and its training state: whole, or sharded by ZeRO, in
// which case stages 2 and 3 lend the model its storage.
func (t *Trainer) buildState() error {
	cfg, be := t.cfg, t.be
	var err error
	if cfg.Zero > 0 {
		if t.zero, err = newZeroState(cfg.Zero, cfg.Optim, be, model.NewLayout(cfg.Model)); err != nil {
			return err
		}
		t.opt = t.zero
	}
	switch {
	case cfg.Tensor != nil:
		t.tg = newTensorGroup(cfg.Tensor.Rank, cfg.Tensor.Size, cfg.Tensor.TP, be)
		t.model, err = model.NewTensorParallel(cfg.Model, be, t.tg, cfg.Tensor.Sequence)
	case cfg.Zero >= 2:
		t.model, err = model.NewResident(cfg.Model, be, t.zero)
	default:
		t.model, err = model.New(cfg.Model, be)
	}
	if err != nil {
		return err
	}
	if cfg.Zero == 0 {
		full, err := model.NewOptimizer(t.model, cfg.Optim)
		if err != nil {
			t.model.Close()
			return err
		}
		t.opt = fullOptim{full, t.tg}
		mb, vb := full.Moments()
		t.sb = newStateBuffers(t.model, mb, vb)
	}
	return nil
}

// claim makes rank 0 the only writer of the run directory and of the checkpoint location,
// then checks what they hold: a finished run is refused, and so is starting afresh over an
// interrupted one. Nothing is written but the locks.
func (t *Trainer) claim(ctx context.Context) error {
	cfg := t.cfg
	what := cfg.Command
	if what == "" {
		what = strings.Join(os.Args, " ")
	}
	var err error
	if t.lock, err = lockRunDir(cfg.Out, what); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(cfg.Out, WeightsName)); err == nil {
		return fmt.Errorf("%w: --out %s already holds a finished run", ErrConfig, cfg.Out)
	}
	if loc := cfg.Checkpoint.Save; loc != nil {
		t.lease, err = checkpoint.AcquireLease(ctx, *loc, checkpoint.ThisProcess(what),
			checkpoint.LeaseOptions{TTL: cfg.Checkpoint.LeaseTTL, Log: t.bar.println})
		if err != nil {
			return fmt.Errorf("--checkpoint: %w", err)
		}
	}
	if cfg.Checkpoint.Resume != nil {
		return t.checkResumeTarget(ctx)
	}
	lines, last, err := metricsSteps(filepath.Join(cfg.Out, MetricsName))
	if err != nil {
		return err
	}
	if lines > 0 {
		return fmt.Errorf("%w: --out %s holds an interrupted run (metrics.jsonl logs %d steps, up to step %d); continue it with --resume latest, or choose another --out",
			ErrConfig, cfg.Out, lines, last)
	}
	if loc := cfg.Checkpoint.Save; loc != nil {
		steps, err := checkpoint.ListSteps(ctx, *loc)
		if err != nil {
			return err
		}
		for _, st := range steps {
			if st.Committed {
				return fmt.Errorf("%w: the checkpoint location %v already holds a checkpoint of step %d; continue it with --resume latest, or give another --checkpoint or --out", ErrConfig, loc, st.Step)
			}
		}
	}
	return nil
}

// checkResumeTarget refuses to resume from one location into another that already holds
// checkpoints: the resumed run would delete them as an abandoned timeline.
func (t *Trainer) checkResumeTarget(ctx context.Context) error {
	save, from := t.cfg.Checkpoint.Save, t.cfg.Checkpoint.Resume
	if save == nil || save.String() == from.String() {
		return nil
	}
	steps, err := checkpoint.ListSteps(ctx, *save)
	if err != nil {
		return err
	}
	for _, st := range steps {
		if st.Committed {
			return fmt.Errorf("%w: --checkpoint %v already holds a checkpoint of step %d; resuming from %v into it would mix two runs: give an empty --checkpoint, or resume with --resume latest",
				ErrConfig, save, st.Step, from)
		}
	}
	return nil
}

// releaseClaims gives up the locks; with forget, a run directory the lock created is removed.
func (t *Trainer) releaseClaims(forget bool) {
	if t.lease != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		t.lease.Release(ctx)
		cancel()
		t.lease = nil
	}
	t.lock.release(forget)
	t.lock = nil
}

// Restore gives the model its starting state: the newest good checkpoint of
// cfg.Checkpoint.Resume when set, else fresh weights from the seed. It writes nothing.
//
// With several ranks, rank 0 alone chooses: it loads the newest checkpoint that verifies
// (falling back past damaged ones) and sends every rank the step it chose, with the attempt
// that names this run's checkpoint shards. The others load exactly that step, with no
// fallback of their own; any rank that fails fails them all, and the ranks then prove that
// they hold identical parameters before training starts.
func (t *Trainer) Restore(ctx context.Context) error {
	var step int
	var err error
	if t.lead {
		t.attempt = checkpoint.NewAttempt()
		step, err = t.restoreLead(ctx)
	}
	if t.cfg.world() > 1 {
		if step, err = t.agree(ctx, step, err); err != nil {
			return err
		}
		if !t.lead {
			err = t.restoreFollower(ctx, step)
		}
		if err = t.allOK(ctx, err); err != nil {
			return err
		}
		if err := t.dp.checkParams(step); err != nil {
			return fmt.Errorf("worker: after restoring step %d: %w", step, err)
		}
	} else if err != nil {
		return err
	}
	t.step, t.startStep = step, step
	t.holds = true
	return nil
}

// restoreLead is rank 0's part of Restore: it returns the step the run starts at.
func (t *Trainer) restoreLead(ctx context.Context) (int, error) {
	cfg := t.cfg
	if cfg.Checkpoint.Resume == nil {
		t.initFresh()
		return 0, nil
	}
	var prev RunConfig
	loc := cfg.Checkpoint.Resume
	man, err := checkpoint.LoadLatest(ctx, *loc, checkResume(cfg, t.model, t.loadBuffers, t.tok.Hash(), &prev), t.bar.println)
	if err != nil {
		return 0, err
	}
	if man.Step >= cfg.Steps {
		return 0, fmt.Errorf("%w: the checkpoint is at step %d, --steps is %d: nothing left to train", ErrConfig, man.Step, cfg.Steps)
	}
	t.adoptLoaded()
	t.opt.SetSteps(man.Step)
	noteResumed(cfg, loc, man, prev, t.bar.println)
	return man.Step, nil
}

// restoreFollower is the part of Restore of a rank other than 0: it loads the step rank 0
// chose, or initializes fresh weights when that is 0 and there is nothing to resume.
func (t *Trainer) restoreFollower(ctx context.Context, step int) error {
	cfg := t.cfg
	if cfg.Checkpoint.Resume == nil {
		t.initFresh()
		return nil
	}
	var prev RunConfig
	if _, err := checkpoint.LoadStep(ctx, *cfg.Checkpoint.Resume, step, checkResume(cfg, t.model, t.loadBuffers, t.tok.Hash(), &prev)); err != nil {
		return fmt.Errorf("rank %d: loading step %d, which rank 0 chose: %w", cfg.rank(), step, err)
	}
	t.adoptLoaded()
	t.opt.SetSteps(step)
	return nil
}

// initFresh sets the weights from the seed and zero moments.
func (t *Trainer) initFresh() {
	if t.zero != nil {
		t.zero.init(t.cfg.Model, t.cfg.Seed)
		return
	}
	t.model.Init(t.cfg.Seed)
}

// loadBuffers returns the buffers a checkpoint load fills: the state's own host view, or
// under ZeRO whole temporary buffers that each rank takes its part of.
func (t *Trainer) loadBuffers() checkpoint.State {
	if t.zero != nil || t.tg != nil {
		n := t.model.Layout.Whole().Size
		t.loaded = checkpoint.State{Params: make([]float32, n), M: make([]float32, n), V: make([]float32, n)}
		return t.loaded
	}
	return t.sb.forLoad()
}

// adoptLoaded puts a loaded checkpoint into the backend: the whole state, or under ZeRO
// this rank's part of it.
func (t *Trainer) adoptLoaded() {
	if t.zero != nil {
		t.zero.adopt(t.loaded)
		t.loaded = checkpoint.State{}
		return
	}
	if t.tg != nil {
		// This rank's share of the whole network's state.
		l := t.model.Layout
		l.Take(t.sb.host.Params, t.loaded.Params)
		l.Take(t.sb.host.M, t.loaded.M)
		l.Take(t.sb.host.V, t.loaded.V)
		t.loaded = checkpoint.State{}
	}
	t.sb.push()
	t.sb.loaded = checkpoint.State{}
}

// agree sends rank 0's decision (its error, the step, the attempt) to every rank. Integers
// travel as 16-bit pieces, which float32 holds exactly.
func (t *Trainer) agree(ctx context.Context, step int, leadErr error) (int, error) {
	const n = 1 + 4 + 8
	buf := make([]float32, n)
	if t.lead {
		if leadErr != nil {
			buf[0] = 1
		}
		putU64(buf[1:5], uint64(step))
		var a [8]byte
		hex.Decode(a[:], []byte(t.attempt))
		for i := 0; i < 8; i++ {
			buf[5+i] = float32(a[i])
		}
	}
	if err := t.comm.Broadcast(ctx, buf, 0); err != nil {
		if leadErr != nil {
			return 0, leadErr
		}
		return 0, fmt.Errorf("worker: waiting for rank 0 to choose the starting step: %w", err)
	}
	if t.lead {
		return step, leadErr
	}
	if buf[0] != 0 {
		return 0, fmt.Errorf("worker: %w", ErrPeerRestore)
	}
	var a [8]byte
	for i := range a {
		a[i] = byte(buf[5+i])
	}
	t.attempt = hex.EncodeToString(a[:])
	return int(getU64(buf[1:5])), nil
}

// ErrPeerRestore is the error of a rank whose run stopped because rank 0 could not restore
// the run; rank 0 reports why.
var ErrPeerRestore = errors.New("rank 0 could not start the run (its error says why)")

// allOK fails every rank when any rank's err is not nil, naming the ranks that failed.
func (t *Trainer) allOK(ctx context.Context, err error) error {
	w, r := t.cfg.world(), t.cfg.rank()
	flags := make([]float32, w)
	if err != nil {
		flags[r] = 1
	}
	if aerr := t.comm.AllReduce(ctx, flags, collective.Sum); aerr != nil {
		if err != nil {
			return err
		}
		return fmt.Errorf("worker: agreeing on the restored state: %w", aerr)
	}
	if err != nil {
		return err
	}
	var bad []string
	for i, f := range flags {
		if f != 0 {
			bad = append(bad, strconv.Itoa(i))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("worker: %w: rank %s could not load the chosen checkpoint (their errors say why)", ErrPeerRestore, strings.Join(bad, ", "))
	}
	return nil
}

func putU64(dst []float32, v uint64) {
	for i := range 4 {
		dst[i] = float32(uint16(v >> (16 * i)))
	}
}

func getU64(src []float32) uint64 {
	var v uint64
	for i := range 4 {
		v |= uint64(uint16(src[i])) << (16 * i)
	}
	return v
}

// Begin starts the run: it writes run.json and tokenizer.json, opens metrics.jsonl (setting
// aside the lines of steps a resumed run trains again), and starts the checkpoint saver.
func (t *Trainer) Begin(ctx context.Context) error {
	cfg := t.cfg
	t.begun = true
	if t.lead && cfg.Out != "" {
		if err := writeJSON(filepath.Join(cfg.Out, RunConfigName), t.rc); err != nil {
			return err
		}
		if err := t.tok.Save(filepath.Join(cfg.Out, TokenizerName)); err != nil {
			return err
		}
		if cfg.Checkpoint.Resume != nil {
			moved, err := setAsideMetrics(cfg.Out, t.step)
			if err != nil {
				return err
			}
			if moved > 0 {
				t.bar.println(fmt.Sprintf("metrics: %d lines after step %d set aside in %s", moved, t.step, filepath.Join(cfg.Out, AbandonedMetricsName)))
			}
		}
		f, err := os.OpenFile(filepath.Join(cfg.Out, MetricsName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		t.metrics, t.menc = f, json.NewEncoder(f)
	}
	t.newSaver(ctx)
	if cfg.Out != "" {
		t.banner() // in a cluster, the first round's rank 0 prints it (JoinRound)
	}
	t.bar.start = t.step
	t.res = Result{Dir: cfg.Out, ParamsCount: model.NumParams(cfg.Model)}
	t.began = time.Now()
	return nil
}

// newSaver starts a saver for the coming steps: its shards carry t.attempt, and the step
// directories after the current step that it did not write are another timeline's.
func (t *Trainer) newSaver(ctx context.Context) {
	cfg := t.cfg
	t.saveCtx, t.cancelSave = context.WithCancel(ctx)
	t.saver = nil
	if loc := cfg.Checkpoint.Save; loc != nil {
		opts := checkpoint.SaverOptions{KeepLast: cfg.Checkpoint.KeepLast, KeepEvery: cfg.Checkpoint.KeepEvery,
			Attempt: t.attempt, Base: t.step, Failpoint: cfg.Checkpoint.Failpoint, Log: t.bar.println, OnCommit: cfg.OnCheckpoint,
			OnSaved: cfg.OnSaved}
		if t.lease != nil {
			opts.Lease = t.lease
		}
		t.saver = checkpoint.NewSaver(*loc, opts)
	}
}

// SetComm makes comm (nil: none) the data-parallel group of the coming steps, with red
// summing gradients in device memory when set. The global batch stays the same: each rank
// takes its slice of it. It may be called between steps.
func (t *Trainer) SetComm(comm collective.Communicator, red GradReducer) error {
	if err := t.setComm(comm, red); err != nil {
		return err
	}
	t.noteWorld()
	return nil
}

func (t *Trainer) setComm(comm collective.Communicator, red GradReducer) error {
	t.comm, t.red = comm, red
	t.cfg.Comm, t.cfg.Reducer = comm, red
	// Rank 0 of the group prints and validates; in a cluster that is another process from
	// round to round.
	t.lead = t.cfg.rank() == 0
	t.log = io.Discard
	if t.lead {
		t.log = t.out
	}
	t.bar.w = t.log
	world := t.cfg.world()
	t.bar.perDevice = world > 1
	if t.cfg.Zero > 0 {
		if err := t.shard(); err != nil {
			return err
		}
	}
	dpComm := comm
	if t.cfg.Tensor != nil {
		dpComm = t.cfg.Tensor.DP
	}
	t.dp = newDataParallel(context.Background(), dpComm, red, t.model)
	t.dp.scatter = t.zero != nil && world > 1
	if t.zero != nil {
		t.dp.crc = t.zero.checksum
	}
	share := t.cfg.Batch / t.cfg.dpWorld()
	t.inputs, t.targets = make([]int32, share*t.cfg.Seq), make([]int32, share*t.cfg.Seq)
	return nil
}

// shard partitions the state among the group's ranks for ZeRO and allocates this rank's
// shards.
func (t *Trainer) shard() error {
	return t.zero.shard(t.model, t.comm)
}

// banner prints the run's model and data once, on rank 0.
func (t *Trainer) banner() {
	if t.bannered || !t.lead {
		return
	}
	t.bannered = true
	cfg := t.cfg
	fmt.Fprintf(t.log, "model: %d parameters (d=%d, %d layers, %d heads, vocab %d), remat %s, backend %s\n",
		model.NumParams(cfg.Model), cfg.Model.Dim, cfg.Model.Layers, cfg.Model.Heads, cfg.Model.Vocab, cfg.Model.Remat, t.be.Name())
	fmt.Fprintf(t.log, "data: %s, %d sources, %d held-out sequences; batch %d x %d tokens, %d steps, peak lr %g, warmup %d\n",
		cfg.Data, len(t.ds.Train), len(t.val.Inputs), cfg.Batch, cfg.Seq, cfg.Steps, cfg.PeakLR, t.sched.WarmupSteps)
	if len(t.val.Inputs) == 0 {
		fmt.Fprintln(t.log, "note: the dataset has no held-out tokens (prepared with --held-out 0): no validation, no baseline")
	}
	if cfg.Zero > 0 {
		fmt.Fprintf(t.log, "zero: stage %d, this rank's shard holds %d of %d elements\n", cfg.Zero, t.zero.plan.size, t.zero.plan.elems)
	}
	t.noteWorld()
}

func (t *Trainer) noteWorld() {
	if c := t.cfg; c.Tensor != nil {
		sp := "off"
		if c.Tensor.Sequence {
			sp = "on"
		}
		fmt.Fprintf(t.log, "tensor parallel: %d processes as %d data-parallel x %d tensor-parallel, sequence parallelism %s; %d sequences per replica per step; no samples are generated (each rank holds a share of the weights)\n",
			c.world(), c.dpWorld(), c.tp(), sp, c.Batch/c.dpWorld())
		return
	}
	if world := t.cfg.world(); world > 1 {
		fmt.Fprintf(t.log, "data parallel: %d processes, %d sequences each per step, gradients summed over the TCP ring\n",
			world, t.cfg.Batch/world)
	}
}

// Done reports whether every step has been trained.
func (t *Trainer) Done() bool { return t.step >= t.cfg.Steps }

// StepsDone returns the number of optimizer steps done.
func (t *Trainer) StepsDone() int { return t.step }

// Step trains one optimizer step on this rank's slice of the global batch, then writes the
// checkpoint and runs the validation that fall on the step.
func (t *Trainer) Step(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	cfg, step := t.cfg, t.step
	t.dp.ctx = ctx
	var tpWait time.Duration
	if t.tg != nil {
		t.tg.ctx = ctx
		tpWait = t.tg.waited
	}
	if _, err := t.loader.FillBatch(step, cfg.Batch, cfg.dpRank(), cfg.dpWorld(), t.inputs, t.targets); err != nil {
		return err
	}
	accum := cfg.Batch / cfg.dpWorld() / cfg.MicroBatch
	loss, err := t.passes(ctx, accum)
	if err != nil {
		return fmt.Errorf("step %d: %w", step+1, err)
	}
	lr := t.sched.LR(step)
	var stall time.Duration
	if t.saver != nil {
		stall = t.saver.WaitSnapshot() // the optimizer must not change state a save is still copying
	}
	norm, err := t.opt.Step(ctx, lr, 1/float64(accum*cfg.dpWorld()))
	if err != nil {
		return fmt.Errorf("step %d: %w", step+1, err)
	}
	if math.IsNaN(norm) || math.IsInf(norm, 0) {
		return fmt.Errorf("worker: gradient norm is %v at step %d (loss %v); parameters left unchanged", norm, step+1, loss)
	}
	if t.tg != nil {
		t.tpWaited = t.tg.waited - tpWait
	}
	t.step++
	if cfg.CheckEvery > 0 && t.step%cfg.CheckEvery == 0 {
		if err := t.dp.checkParams(t.step); err != nil {
			return err
		}
	}
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return fmt.Errorf("worker: loss is %v at step %d", loss, step)
	}
	if t.saver != nil && (t.step == cfg.Steps || (cfg.Checkpoint.Every > 0 && t.step%cfg.Checkpoint.Every == 0)) {
		held, prevErr, err := t.save(t.step)
		if err != nil {
			return err
		}
		stall += held
		if err := t.saveOutcome(prevErr); err != nil {
			return err
		}
	}
	if err := t.logStep(loss, lr, norm, stall); err != nil {
		return err
	}
	if (t.lead || t.everyRankForwards()) && cfg.EvalEvery > 0 && t.step%cfg.EvalEvery == 0 && t.step < cfg.Steps {
		return t.validate(ctx, t.step)
	}
	return nil
}

// passes runs the forward and backward passes of a step over this rank's inputs in accum
// micro-batches and leaves the gradients, summed across ranks, where the optimizer reads
// them. It returns the loss averaged over the ranks.
func (t *Trainer) passes(ctx context.Context, accum int) (float64, error) {
	cfg := t.cfg
	t.model.ZeroGrad()
	if t.model.Resident() {
		t.zero.begin(ctx) // the passes' collectives run under ctx
		t.zero.zeroGrads()
	}
	var loss float64
	for a := 0; a < accum; a++ {
		lo, hi := a*cfg.MicroBatch*cfg.Seq, (a+1)*cfg.MicroBatch*cfg.Seq
		l, err := t.model.Forward(t.inputs[lo:hi], t.targets[lo:hi], cfg.MicroBatch, cfg.Seq)
		if err != nil {
			return 0, err
		}
		if a == accum-1 {
			t.dp.startBuckets() // the last micro-batch finishes each gradient range
		}
		if err := t.model.Backward(); err != nil {
			return 0, err
		}
		loss += l / float64(accum)
	}
	if t.model.Resident() {
		if err := t.zero.endPass(); err != nil {
			return 0, err
		}
	}
	return t.dp.finish(loss)
}

// logStep writes the metrics line of the step just done and updates the progress bar.
func (t *Trainer) logStep(loss, lr, norm float64, stall time.Duration) error {
	cfg := t.cfg
	el := time.Since(t.began)
	tokens := int64(t.step-t.startStep) * int64(cfg.Batch*cfg.Seq)
	sm := StepMetrics{Step: t.step, DataCRC: batchCRC(t.sampler, t.step-1, cfg.Batch), Loss: loss, LR: lr, GradNorm: norm,
		Tokens: int64(t.step) * int64(cfg.Batch*cfg.Seq), TokensPerS: float64(tokens) / el.Seconds(), ElapsedS: el.Seconds(),
		SaveStallS: stall.Seconds(), CommWaitS: (t.dp.waited + t.tpWaited).Seconds()}
	sm.TokensPerSPerDevice = sm.TokensPerS / float64(cfg.world())
	if t.peak > 0 {
		sm.MFU = sm.TokensPerSPerDevice * model.FLOPsPerToken(cfg.Model, cfg.Seq) / t.peak
	}
	if err := t.menc.Encode(sm); err != nil {
		return err
	}
	if t.cfg.OnStep != nil {
		t.cfg.OnStep(sm)
	}
	t.bar.update(t.step, loss, sm, el)
	t.res.FinalLoss, t.res.TokensPerS = loss, sm.TokensPerS
	return nil
}

// everyRankForwards reports whether every rank must run the model's forward passes for a
// validation or a sample: under ZeRO-3 each forward gathers the parameters, a collective.
func (t *Trainer) everyRankForwards() bool {
	return (t.cfg.Zero == 3 && t.cfg.world() > 1) || t.cfg.Tensor != nil
}

// validate evaluates the held-out split (and --eval-text), prints a sample when asked, and
// logs the result. Only rank 0 validates, unless every rank must run the forwards with it
// (ZeRO-3); rank 0 alone logs.
func (t *Trainer) validate(ctx context.Context, step int) error {
	if t.zero != nil {
		t.zero.begin(ctx)
		defer func() { t.zero.endPass() }()
	}
	if len(t.val.Inputs) == 0 {
		return nil
	}
	cfg := t.cfg
	ev := EvalMetrics{Step: step}
	var err error
	if ev.Val, err = Evaluate(t.model, t.val, cfg.MicroBatch); err != nil {
		return err
	}
	line := fmt.Sprintf("step %d: val loss %.4f, %.4f bits/byte", step, ev.Val.Loss, ev.Val.BitsPerByte)
	if t.text != nil {
		r, err := Evaluate(t.model, t.text, cfg.MicroBatch)
		if err != nil {
			return err
		}
		ev.Text = &r
		line += fmt.Sprintf("; %s %.4f bits/byte", filepath.Base(cfg.EvalText), r.BitsPerByte)
	}
	if cfg.SampleEvery > 0 && cfg.SampleTokens > 0 && t.tg == nil {
		if ev.Sample, err = sampleText(t.model, t.tok, cfg.SampleTokens, cfg.Seed+uint64(step)); err != nil {
			return err
		}
	}
	t.res.Val = ev.Val
	if !t.lead {
		return nil
	}
	t.bar.println(line)
	if ev.Sample != "" {
		t.bar.println("sample: " + printable(ev.Sample))
	}
	return t.menc.Encode(ev)
}

// Finish ends a run whose steps are all done: it checks the ranks agree, waits for the last
// checkpoint, and on rank 0 validates, writes the final weights and prints the summary.
func (t *Trainer) Finish(ctx context.Context) (*Result, error) {
	cfg := t.cfg
	t.dp.ctx = ctx
	res := &t.res
	res.Steps, res.Elapsed = cfg.Steps, time.Since(t.began)
	if err := t.dp.checkParams(cfg.Steps); err != nil {
		return nil, err
	}
	if err := t.finalSave(ctx); err != nil {
		return nil, err
	}
	if t.everyRankForwards() {
		if err := t.validate(ctx, cfg.Steps); err != nil {
			return nil, err
		}
	}
	var whole []float32 // under ZeRO or tensor parallelism the final weights are assembled from the shares
	if t.zero != nil && cfg.Out != "" {
		var err error
		if whole, err = t.zero.wholeParams(ctx); err != nil {
			return nil, err
		}
	}
	if t.tg != nil && cfg.Out != "" {
		var err error
		if whole, err = wholeOf(ctx, cfg.Tensor.TP, cfg.Model, t.sb.pull().Params); err != nil {
			return nil, err
		}
	}
	if !t.lead {
		return res, nil
	}
	if !t.everyRankForwards() {
		if err := t.validate(ctx, cfg.Steps); err != nil {
			return nil, err
		}
	}
	if cfg.Out == "" {
		return res, nil // the driver keeps the record; the weights are in the final checkpoint
	}
	rc := t.rc
	rc.StepsDone = cfg.Steps
	path := filepath.Join(cfg.Out, WeightsName)
	if whole != nil {
		if err := saveWeights(t.model.Layout.Whole(), whole, path); err != nil {
			return nil, err
		}
	} else if err := SaveWeights(t.model, path); err != nil {
		return nil, err
	}
	if err := writeJSON(filepath.Join(cfg.Out, RunConfigName), rc); err != nil {
		return nil, err
	}
	if cfg.Baseline && t.val.Bytes > 0 {
		tri := NewTrigram()
		for _, s := range t.ds.Train {
			fitDocs(tri, t.tok, s)
		}
		res.TrigramBPB = t.val.TrigramBits(tri, t.tok) / float64(t.val.Bytes)
		fmt.Fprintf(t.log, "held-out bits/byte: model %.4f, byte trigram baseline %.4f (fitted on the same training text)\n",
			res.Val.BitsPerByte, res.TrigramBPB)
		if err := t.menc.Encode(EvalMetrics{Step: cfg.Steps, Val: res.Val, Trigram: &res.TrigramBPB}); err != nil {
			return nil, err
		}
	}
	ep := t.sampler.Epochs(int64(cfg.Steps) * int64(cfg.Batch))
	var parts []string
	for i, c := range t.sampler.Mixture() {
		parts = append(parts, fmt.Sprintf("%s %.2f", c.Name, ep[i]))
	}
	fmt.Fprintf(t.log, "epochs per source: %s\n", strings.Join(parts, ", "))
	fmt.Fprintf(t.log, "done: %d steps in %s (%.0f tokens/s); weights in %s\n", cfg.Steps,
		res.Elapsed.Round(time.Second), res.TokensPerS, filepath.Join(cfg.Out, WeightsName))
	return res, nil
}

// saveOutcome applies the failure policy to the error of the last save (nil: it committed).
// A failed save is logged and training goes on, the next checkpoint saving again, until
// checkpoints have kept failing for Checkpoint.FailureLimit; a lost lease stops at once.
func (t *Trainer) saveOutcome(err error) error {
	if err == nil {
		if !t.saveFailing.IsZero() {
			t.bar.println(fmt.Sprintf("checkpoint: saving works again after failing for %v", time.Since(t.saveFailing).Round(time.Second)))
		}
		t.saveFailing = time.Time{}
		return nil
	}
	limit := t.cfg.Checkpoint.FailureLimit
	if errors.Is(err, checkpoint.ErrLeaseLost) || errors.Is(err, context.Canceled) || limit == 0 {
		return err
	}
	if t.saveFailing.IsZero() {
		t.saveFailing = time.Now()
	}
	if failing := time.Since(t.saveFailing); failing > limit {
		return fmt.Errorf("worker: checkpoints have failed for %v, past --checkpoint-failure-limit %v: %w", failing.Round(time.Second), limit, err)
	}
	t.bar.println(fmt.Sprintf("checkpoint: a save failed (%v); training goes on and the next checkpoint saves again (the run stops if checkpoints keep failing for %v)", err, limit))
	return nil
}

// finalSave waits for the checkpoint of the last step and, while the failure policy allows,
// saves it again until it commits: a run does not end without its final checkpoint.
func (t *Trainer) finalSave(ctx context.Context) error {
	if t.saver == nil {
		return nil
	}
	backoff := time.Second
	for {
		err := t.saver.Wait()
		if err == nil {
			return t.saveOutcome(nil)
		}
		if err := t.saveOutcome(err); err != nil {
			return err
		}
		t.bar.println(fmt.Sprintf("checkpoint: saving step %d again in %v", t.step, backoff))
		if err := sleepCtx(ctx, backoff); err != nil {
			return err
		}
		backoff = min(2*backoff, 30*time.Second)
		if _, prevErr, err := t.save(t.step); err != nil || prevErr != nil {
			return errors.Join(err, prevErr)
		}
	}
}

// save starts the checkpoint of step (see saveCheckpoint) and returns how long it held the
// step loop, the previous save's error (prevErr: the failure policy applies) and an error
// that ends the run. Under tensor parallelism the rank's ranges of the whole network's
// state are first assembled within its tensor group, a collective every rank runs at the
// same step; a retry of the same step (finalSave's, which only a rank whose write failed
// makes) reuses them, so that no rank issues a collective the others do not. A failed
// assembly is a failed collective: it ends the run.
func (t *Trainer) save(step int) (held time.Duration, prevErr, err error) {
	start := time.Now()
	if t.tg != nil && (t.tpSave.spans == nil || t.tpSave.step != step) {
		t.tpSave.spans, t.tpSave.step = nil, step
		if t.tpSave.spans, err = tensorSpans(t.saveCtx, t.cfg, t.sb.pull()); err != nil {
			return time.Since(start), nil, fmt.Errorf("checkpoint of step %d: %w", step, err)
		}
	}
	_, prevErr = saveCheckpoint(t.saveCtx, t.saver, t.cfg, t.rc, t.model, t.sb, t.zero, t.tokJSON, step, t.tpSave.spans)
	return time.Since(start), prevErr, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops a save still in flight (a run that failed does not wait for a save that
// cannot commit), frees the model, optimizer and files, and gives up the locks. A run
// directory that a refused run created is removed again.
func (t *Trainer) Close() error {
	t.cancelSave()
	if t.saver != nil {
		t.saver.Wait()
	}
	t.opt.Close()
	t.model.Close()
	var err error
	if t.metrics != nil {
		err = t.metrics.Close()
	}
	t.releaseClaims(!t.begun)
	return err
}

// optimizer is AdamW over the training state: the whole of it (model.Optimizer) or this
// rank's shard (zeroOptim).
type optimizer interface {
	// Step updates the parameters with learning rate lr from the gradients times gradScale,
	// clipping their global norm, and returns that norm before clipping.
	Step(ctx context.Context, lr, gradScale float64) (float64, error)
	Steps() int
	SetSteps(n int)
	Close()
}

// fullOptim is model.Optimizer as an optimizer.
type fullOptim struct {
	*model.Optimizer
	tg *tensorGroup // the tensor-parallel group whose shares make up the gradient norm, or nil
}

func (f fullOptim) Step(ctx context.Context, lr, gradScale float64) (float64, error) {
	if f.tg == nil {
		return f.Optimizer.Step(lr, gradScale), nil
	}
	return f.Optimizer.StepSharded(lr, gradScale, func(split, whole float64) (float64, error) {
		// The shares' sums of squares travel as float32 pairs (value and rounding error), so
		// the norm keeps more than float32's precision (the ring adds each part in float32).
		hi := float32(split)
		buf := []float32{hi, float32(split - float64(hi))}
		if err := f.tg.comm.AllReduce(ctx, buf, collective.Sum); err != nil {
			return 0, fmt.Errorf("gradient norm across the tensor-parallel group: %w", err)
		}
		return float64(buf[0]) + float64(buf[1]) + whole, nil
	})
}
