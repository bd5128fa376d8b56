package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
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
	lead bool      // rank 0: writes the run directory

	tok     *tokenizer.Tokenizer
	tokJSON []byte
	ds      *shard.Dataset
	sampler *shard.Sampler
	loader  *shard.Loader
	sched   model.Schedule
	rc      RunConfig

	model *model.Model
	opt   *model.Optimizer
	sb    *stateBuffers

	comm collective.Communicator
	red  GradReducer
	dp   *dataParallel

	saver      *checkpoint.Saver
	saveCtx    context.Context
	cancelSave context.CancelFunc

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
	t := &Trainer{cfg: cfg, be: be, log: log, tok: tok, comm: cfg.Comm, red: cfg.Reducer}
	t.lead = cfg.rank() == 0
	if !t.lead {
		t.log = io.Discard
	}
	if t.ds, err = shard.LoadDataset(cfg.Data, tok.Hash()); err != nil {
		return nil, err
	}
	if t.sampler, err = shard.NewSampler(t.ds.Manifest.Mixture(), cfg.Seed, cfg.Seq); err != nil {
		return nil, fmt.Errorf("--data %s at --seq %d: %w", cfg.Data, cfg.Seq, err)
	}
	if t.loader, err = shard.NewLoader(t.ds, t.sampler); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(cfg.Out, WeightsName)); err == nil {
		return nil, fmt.Errorf("%w: --out %s already holds a finished run", ErrConfig, cfg.Out)
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
	if t.model, err = model.New(cfg.Model, be); err != nil {
		return nil, err
	}
	if t.opt, err = model.NewOptimizer(t.model, cfg.Optim); err != nil {
		t.model.Close()
		return nil, err
	}
	t.sb = newStateBuffers(t.model, t.opt)
	if p, ok := be.(kernels.Peak); ok {
		t.peak = p.PeakFLOPS()
	}
	t.bar = newProgress(t.log, 0, cfg.Steps)
	t.menc = json.NewEncoder(io.Discard)
	t.saveCtx, t.cancelSave = context.Background(), func() {}
	return t, nil
}

// Restore gives the model its starting state: the newest good checkpoint of
// cfg.Checkpoint.Resume when set, else fresh weights from the seed. It writes nothing.
func (t *Trainer) Restore(ctx context.Context) error {
	cfg := t.cfg
	if cfg.Checkpoint.Resume == nil {
		if loc := cfg.Checkpoint.Save; loc != nil {
			steps, err := checkpoint.ListSteps(ctx, *loc)
			if err != nil {
				return err
			}
			for _, st := range steps {
				if st.Committed {
					return fmt.Errorf("%w: the checkpoint location already holds a checkpoint of step %d; continue it with --resume latest, or give another --checkpoint or --out", ErrConfig, st.Step)
				}
			}
		}
		t.model.Init(cfg.Seed)
		return nil
	}
	step, err := resume(ctx, cfg, cfg.Checkpoint.Resume, t.model, t.opt, t.sb, t.tok.Hash(), t.bar.println)
	if err != nil {
		return err
	}
	if step >= cfg.Steps {
		return fmt.Errorf("%w: the checkpoint is at step %d, --steps is %d: nothing left to train", ErrConfig, step, cfg.Steps)
	}
	t.step, t.startStep = step, step
	return nil
}

// Begin starts the run: it writes run.json and tokenizer.json, opens metrics.jsonl, drops
// what a resumed run abandons, and starts the checkpoint saver.
func (t *Trainer) Begin(ctx context.Context) error {
	cfg := t.cfg
	if t.lead {
		if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
			return err
		}
		if err := writeJSON(filepath.Join(cfg.Out, RunConfigName), t.rc); err != nil {
			return err
		}
		if err := t.tok.Save(filepath.Join(cfg.Out, TokenizerName)); err != nil {
			return err
		}
		flags := os.O_CREATE | os.O_WRONLY | os.O_TRUNC
		if cfg.Checkpoint.Resume != nil {
			flags = os.O_CREATE | os.O_WRONLY | os.O_APPEND
			if loc := cfg.Checkpoint.Save; loc != nil {
				if err := checkpoint.DropAfter(ctx, *loc, t.step, t.bar.println); err != nil {
					return err
				}
			}
			if err := truncateMetrics(filepath.Join(cfg.Out, MetricsName), t.step); err != nil {
				return err
			}
		}
		f, err := os.OpenFile(filepath.Join(cfg.Out, MetricsName), flags, 0o644)
		if err != nil {
			return err
		}
		t.metrics, t.menc = f, json.NewEncoder(f)
	}
	t.saveCtx, t.cancelSave = context.WithCancel(ctx)
	if loc := cfg.Checkpoint.Save; loc != nil {
		t.saver = checkpoint.NewSaver(*loc, checkpoint.SaverOptions{KeepLast: cfg.Checkpoint.KeepLast,
			KeepEvery: cfg.Checkpoint.KeepEvery, Failpoint: cfg.Checkpoint.Failpoint, Log: t.bar.println})
	}
	fmt.Fprintf(t.log, "model: %d parameters (d=%d, %d layers, %d heads, vocab %d), remat %s, backend %s\n",
		model.NumParams(cfg.Model), cfg.Model.Dim, cfg.Model.Layers, cfg.Model.Heads, cfg.Model.Vocab, cfg.Model.Remat, t.be.Name())
	fmt.Fprintf(t.log, "data: %s, %d sources, %d held-out sequences; batch %d x %d tokens, %d steps, peak lr %g, warmup %d\n",
		cfg.Data, len(t.ds.Train), len(t.val.Inputs), cfg.Batch, cfg.Seq, cfg.Steps, cfg.PeakLR, t.sched.WarmupSteps)
	if len(t.val.Inputs) == 0 {
		fmt.Fprintln(t.log, "note: the dataset has no held-out tokens (prepared with --held-out 0): no validation, no baseline")
	}
	t.SetComm(t.comm, t.red)
	t.bar.start = t.step
	t.res = Result{Dir: cfg.Out, ParamsCount: model.NumParams(cfg.Model)}
	t.began = time.Now()
	return nil
}

// SetComm makes comm (nil: none) the data-parallel group of the coming steps, with red
// summing gradients in device memory when set. The global batch stays the same: each rank
// takes its slice of it. It may be called between steps.
func (t *Trainer) SetComm(comm collective.Communicator, red GradReducer) {
	t.comm, t.red = comm, red
	t.cfg.Comm, t.cfg.Reducer = comm, red
	world := t.cfg.world()
	if world > 1 {
		fmt.Fprintf(t.log, "data parallel: %d processes, %d sequences each per step, gradients summed over the TCP ring\n",
			world, t.cfg.Batch/world)
	}
	t.bar.perDevice = world > 1
	t.dp = newDataParallel(context.Background(), comm, red, t.model)
	share := t.cfg.Batch / world
	t.inputs, t.targets = make([]int32, share*t.cfg.Seq), make([]int32, share*t.cfg.Seq)
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
	if _, err := t.loader.FillBatch(step, cfg.Batch, cfg.rank(), cfg.world(), t.inputs, t.targets); err != nil {
		return err
	}
	accum := cfg.Batch / cfg.world() / cfg.MicroBatch
	t.model.ZeroGrad()
	var loss float64
	for a := 0; a < accum; a++ {
		lo, hi := a*cfg.MicroBatch*cfg.Seq, (a+1)*cfg.MicroBatch*cfg.Seq
		l, err := t.model.Forward(t.inputs[lo:hi], t.targets[lo:hi], cfg.MicroBatch, cfg.Seq)
		if err != nil {
			return err
		}
		if a == accum-1 {
			t.dp.startBuckets() // the last micro-batch finishes each gradient range
		}
		if err := t.model.Backward(); err != nil {
			return err
		}
		loss += l / float64(accum)
	}
	loss, err := t.dp.finish(loss)
	if err != nil {
		return fmt.Errorf("step %d: %w", step+1, err)
	}
	lr := t.sched.LR(step)
	var stall time.Duration
	if t.saver != nil {
		stall = t.saver.WaitSnapshot() // the optimizer must not change state a save is still copying
	}
	norm := t.opt.Step(lr, 1/float64(accum*cfg.world()))
	if math.IsNaN(norm) || math.IsInf(norm, 0) {
		return fmt.Errorf("worker: gradient norm is %v at step %d (loss %v); parameters left unchanged", norm, step+1, loss)
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
		held, err := saveCheckpoint(t.saveCtx, t.saver, cfg, t.rc, t.model, t.sb, t.tokJSON, t.step)
		if err != nil {
			return err
		}
		stall += held
	}
	if err := t.logStep(loss, lr, norm, stall); err != nil {
		return err
	}
	if t.lead && cfg.EvalEvery > 0 && t.step%cfg.EvalEvery == 0 && t.step < cfg.Steps {
		return t.validate(t.step)
	}
	return nil
}

// logStep writes the metrics line of the step just done and updates the progress bar.
func (t *Trainer) logStep(loss, lr, norm float64, stall time.Duration) error {
	cfg := t.cfg
	el := time.Since(t.began)
	tokens := int64(t.step-t.startStep) * int64(cfg.Batch*cfg.Seq)
	sm := StepMetrics{Step: t.step, DataCRC: batchCRC(t.sampler, t.step-1, cfg.Batch), Loss: loss, LR: lr, GradNorm: norm,
		Tokens: int64(t.step) * int64(cfg.Batch*cfg.Seq), TokensPerS: float64(tokens) / el.Seconds(), ElapsedS: el.Seconds(),
		SaveStallS: stall.Seconds()}
	sm.TokensPerSPerDevice = sm.TokensPerS / float64(cfg.world())
	if t.peak > 0 {
		sm.MFU = sm.TokensPerSPerDevice * model.FLOPsPerToken(cfg.Model, cfg.Seq) / t.peak
	}
	if err := t.menc.Encode(sm); err != nil {
		return err
	}
	t.bar.update(t.step, loss, sm, el)
	t.res.FinalLoss, t.res.TokensPerS = loss, sm.TokensPerS
	return nil
}

// validate evaluates the held-out split (and --eval-text), prints a sample when asked, and
// logs the result. Only rank 0 validates.
func (t *Trainer) validate(step int) error {
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
	if cfg.SampleEvery > 0 && cfg.SampleTokens > 0 {
		if ev.Sample, err = sampleText(t.model, t.tok, cfg.SampleTokens, cfg.Seed+uint64(step)); err != nil {
			return err
		}
	}
	t.bar.println(line)
	if ev.Sample != "" {
		t.bar.println("sample: " + printable(ev.Sample))
	}
	t.res.Val = ev.Val
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
	if t.saver != nil {
		if err := t.saver.Wait(); err != nil {
			return nil, err
		}
	}
	if !t.lead {
		return res, nil
	}
	if err := t.validate(cfg.Steps); err != nil {
		return nil, err
	}
	rc := t.rc
	rc.StepsDone = cfg.Steps
	if err := SaveWeights(t.model, filepath.Join(cfg.Out, WeightsName)); err != nil {
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

// Close stops a save still in flight (a run that failed does not wait for a save that
// cannot commit), then frees the model, optimizer and files.
func (t *Trainer) Close() error {
	t.cancelSave()
	if t.saver != nil {
		t.saver.Wait()
	}
	t.opt.Close()
	t.model.Close()
	if t.metrics != nil {
		return t.metrics.Close()
	}
	return nil
}
