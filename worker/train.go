package worker

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"math/rand/v2"
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

// ErrConfig is wrapped by errors about a training configuration.
var ErrConfig = errors.New("worker: invalid training config")

// TrainConfig is one training run.
type TrainConfig struct {
	Model        model.Config      // Vocab is taken from the dataset's tokenizer
	Optim        model.OptimConfig //
	PeakLR       float64           // peak learning rate
	WarmupSteps  int               // -1: min(2000, Steps/20), LLaMA's 2000 scaled down for short runs
	Data         string            // prepared dataset directory (herd prepare)
	Out          string            // run directory to create
	Seed         uint64            // model init and data order
	Seq          int               // tokens per sequence
	Batch        int               // sequences per optimizer step
	MicroBatch   int               // sequences per forward/backward; Batch must be a multiple
	Steps        int               // optimizer steps
	EvalEvery    int               // steps between validations; 0: at the end only
	EvalSeqs     int               // held-out sequences per source in a validation
	EvalText     string            // optional text file also reported in bits per byte
	SampleEvery  int               // > 0: print a generated sample at each validation
	SampleTokens int               // tokens per sample
	Baseline     bool              // fit the byte trigram baseline and report it at the end

	// Comm, when set, makes this process one rank of a data-parallel group: it trains on its
	// slice of every global batch and gradients are summed across ranks, bucket by bucket
	// while backward runs. Only rank 0 writes the run directory and prints progress.
	Comm collective.Communicator
	// Reducer, when set with Comm, sums the gradients in the backend's memory (NCCL on GPUs)
	// instead of over Comm through host memory; Comm still averages the loss and compares the
	// ranks' parameters.
	Reducer GradReducer
	// CheckEvery is the number of steps between cross-rank parameter checksums (data
	// parallel only); 0 disables the check.
	CheckEvery int
	// Checkpoint configures periodic sharded checkpoints and resuming.
	Checkpoint CheckpointConfig
}

// Validate names the first bad field.
func (c TrainConfig) Validate() error {
	bad := func(f string, a ...any) error { return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(f, a...)) }
	switch {
	case c.Data == "":
		return bad("--data: a prepared dataset directory is required")
	case c.Out == "":
		return bad("--out: a run directory is required")
	case c.Steps <= 0:
		return bad("--steps = %d, must be > 0", c.Steps)
	case c.Batch <= 0:
		return bad("--batch = %d, must be > 0", c.Batch)
	case c.MicroBatch <= 0 || c.Batch%(c.MicroBatch*c.world()) != 0:
		return bad("--micro-batch = %d times %d processes must divide --batch = %d", c.MicroBatch, c.world(), c.Batch)
	case !(c.PeakLR > 0):
		return bad("--lr = %g, must be > 0", c.PeakLR)
	case c.WarmupSteps > c.Steps:
		return bad("--warmup = %d exceeds --steps = %d", c.WarmupSteps, c.Steps)
	case c.EvalEvery < 0 || c.SampleEvery < 0 || c.EvalSeqs <= 0:
		return bad("--eval-every, --sample-every must be >= 0 and --eval-seqs > 0")
	}
	if err := c.Model.CheckSeq(c.Seq); err != nil {
		return fmt.Errorf("--seq: %w", err)
	}
	return c.Optim.Validate()
}

func (c TrainConfig) world() int {
	if c.Comm == nil {
		return 1
	}
	return c.Comm.Size()
}

func (c TrainConfig) rank() int {
	if c.Comm == nil {
		return 0
	}
	return c.Comm.Rank()
}

func (c TrainConfig) schedule() model.Schedule {
	w := c.WarmupSteps
	if w < 0 {
		w = min(2000, c.Steps/20)
	}
	return model.Schedule{PeakLR: c.PeakLR, WarmupSteps: w, TotalSteps: c.Steps, MinRatio: 0.1}
}

// StepMetrics is one line of metrics.jsonl for a training step.
type StepMetrics struct {
	Step       int     `json:"step"`
	DataCRC    uint32  `json:"data_crc"` // CRC-32C of the global batch's (source, offset) pairs
	SaveStallS float64 `json:"save_stall_s,omitempty"`
	Loss       float64 `json:"loss"`
	LR         float64 `json:"lr"`
	GradNorm   float64 `json:"grad_norm"`
	Tokens     int64   `json:"tokens"`
	TokensPerS float64 `json:"tokens_per_s"`
	// TokensPerSPerDevice is TokensPerS divided by the data-parallel world size.
	TokensPerSPerDevice float64 `json:"tokens_per_s_per_device"`
	// MFU is model FLOPs utilization (model.FLOPsPerToken times the per-device token rate over
	// the device's peak), present when the backend knows its peak.
	MFU      float64 `json:"mfu,omitempty"`
	ElapsedS float64 `json:"elapsed_s"`
}

// EvalMetrics is one line of metrics.jsonl for a validation.
type EvalMetrics struct {
	Step    int         `json:"step"`
	Val     EvalResult  `json:"val"`
	Text    *EvalResult `json:"eval_text,omitempty"`
	Sample  string      `json:"sample,omitempty"`
	Trigram *float64    `json:"trigram_bits_per_byte,omitempty"`
}

// Result summarizes a finished run.
type Result struct {
	Steps       int
	FinalLoss   float64
	Val         EvalResult
	TrigramBPB  float64 // 0 unless Baseline
	TokensPerS  float64
	Elapsed     time.Duration
	Dir         string
	ParamsCount int
}

// Train runs cfg on be, printing progress to log, and returns when the run directory holds
// the final weights. Cancelling ctx stops it between steps with an error.
//
// A device failure inside the backend (a kernels.DeviceError panic: memory exhausted, a failed
// launch) ends the run with an error that says so; checkpoints already committed stay valid.
func Train(ctx context.Context, cfg TrainConfig, be kernels.Backend, log io.Writer) (res *Result, err error) {
	defer recoverDevice(&err)
	return train(ctx, cfg, be, log)
}

// recoverDevice turns a kernels.DeviceError panic into *err, with a hint when the device ran
// out of memory. Other panics go on: they are bugs.
func recoverDevice(err *error) {
	r := recover()
	if r == nil {
		return
	}
	de, ok := r.(*kernels.DeviceError)
	if !ok {
		panic(r)
	}
	*err = fmt.Errorf("worker: training stopped by a device error: %w", de)
	if strings.Contains(strings.ToLower(de.Err.Error()), "out of memory") {
		*err = fmt.Errorf("%w (lower --micro-batch, or use --remat full; herd plan shows the memory a configuration needs)", *err)
	}
}

func train(ctx context.Context, cfg TrainConfig, be kernels.Backend, log io.Writer) (*Result, error) {
	tok, err := tokenizer.Load(filepath.Join(cfg.Data, TokenizerName))
	if err != nil {
		return nil, fmt.Errorf("--data %s: %w", cfg.Data, err)
	}
	cfg.Model.Vocab = tok.VocabSize()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ds, err := shard.LoadDataset(cfg.Data, tok.Hash())
	if err != nil {
		return nil, err
	}
	sampler, err := shard.NewSampler(ds.Manifest.Mixture(), cfg.Seed, cfg.Seq)
	if err != nil {
		return nil, fmt.Errorf("--data %s at --seq %d: %w", cfg.Data, cfg.Seq, err)
	}
	loader, err := shard.NewLoader(ds, sampler)
	if err != nil {
		return nil, err
	}
	lead := cfg.rank() == 0
	if !lead {
		log = io.Discard
	}
	if _, err := os.Stat(filepath.Join(cfg.Out, WeightsName)); err == nil {
		return nil, fmt.Errorf("%w: --out %s already holds a finished run", ErrConfig, cfg.Out)
	}
	abs, _ := filepath.Abs(cfg.Data)
	sched := cfg.schedule()
	rc := RunConfig{Model: cfg.Model, Optim: cfg.Optim, Schedule: sched, Data: abs, TokenizerHash: tok.Hash(),
		Seed: cfg.Seed, Seq: cfg.Seq, Batch: cfg.Batch, MicroBatch: cfg.MicroBatch, Steps: cfg.Steps, EvalSeqs: cfg.EvalSeqs, World: cfg.world()}
	menc := json.NewEncoder(io.Discard)
	if lead {
		if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
			return nil, err
		}
		if err := writeJSON(filepath.Join(cfg.Out, RunConfigName), rc); err != nil {
			return nil, err
		}
		if err := tok.Save(filepath.Join(cfg.Out, TokenizerName)); err != nil {
			return nil, err
		}
		flags := os.O_CREATE | os.O_WRONLY | os.O_TRUNC
		if cfg.Checkpoint.Resume != nil {
			// Lines after the resumed step are dropped once the step is known.
			flags = os.O_CREATE | os.O_WRONLY | os.O_APPEND
		}
		metrics, err := os.OpenFile(filepath.Join(cfg.Out, MetricsName), flags, 0o644)
		if err != nil {
			return nil, err
		}
		defer metrics.Close()
		menc = json.NewEncoder(metrics)
	}

	m, err := model.New(cfg.Model, be)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	m.Init(cfg.Seed)
	opt, err := model.NewOptimizer(m, cfg.Optim)
	if err != nil {
		return nil, err
	}
	defer opt.Close()

	sb := newStateBuffers(m, opt)
	startStep := 0
	bar := newProgress(log, 0, cfg.Steps)
	logLine := bar.println // the saver logs from its own goroutine; lines must not cut the bar
	if cfg.Checkpoint.Resume != nil {
		if startStep, err = resume(ctx, cfg, cfg.Checkpoint.Resume, m, opt, sb, tok.Hash(), logLine); err != nil {
			return nil, err
		}
		if startStep >= cfg.Steps {
			return nil, fmt.Errorf("%w: the checkpoint is at step %d, --steps is %d: nothing left to train", ErrConfig, startStep, cfg.Steps)
		}
		if lead {
			if loc := cfg.Checkpoint.Save; loc != nil {
				if err := checkpoint.DropAfter(ctx, *loc, startStep, logLine); err != nil {
					return nil, err
				}
			}
			if err := truncateMetrics(filepath.Join(cfg.Out, MetricsName), startStep); err != nil {
				return nil, err
			}
		}
	} else if loc := cfg.Checkpoint.Save; loc != nil {
		steps, err := checkpoint.ListSteps(ctx, *loc)
		if err != nil {
			return nil, err
		}
		for _, st := range steps {
			if st.Committed {
				return nil, fmt.Errorf("%w: the checkpoint location already holds a checkpoint of step %d; continue it with --resume latest, or give another --checkpoint or --out", ErrConfig, st.Step)
			}
		}
	}
	tokJSON, err := tok.Marshal()
	if err != nil {
		return nil, err
	}
	var saver *checkpoint.Saver
	saveCtx, cancelSave := context.WithCancel(ctx)
	if loc := cfg.Checkpoint.Save; loc != nil {
		saver = checkpoint.NewSaver(*loc, checkpoint.SaverOptions{KeepLast: cfg.Checkpoint.KeepLast,
			KeepEvery: cfg.Checkpoint.KeepEvery, Failpoint: cfg.Checkpoint.Failpoint, Log: logLine})
		defer saver.Wait()
	}
	defer cancelSave() // runs first: a run that fails does not wait for a save that cannot commit

	val := NewEvalSet(ds.HeldOut, cfg.Seq, cfg.EvalSeqs, tok)
	var text *EvalSet
	if cfg.EvalText != "" {
		raw, err := os.ReadFile(cfg.EvalText)
		if err != nil {
			return nil, fmt.Errorf("--eval-text: %w", err)
		}
		text = NewEvalSet([][]int32{tok.Encode(raw)}, cfg.Seq, math.MaxInt, tok)
	}
	fmt.Fprintf(log, "model: %d parameters (d=%d, %d layers, %d heads, vocab %d), remat %s, backend %s\n",
		model.NumParams(cfg.Model), cfg.Model.Dim, cfg.Model.Layers, cfg.Model.Heads, cfg.Model.Vocab, cfg.Model.Remat, be.Name())
	fmt.Fprintf(log, "data: %s, %d sources, %d held-out sequences; batch %d x %d tokens, %d steps, peak lr %g, warmup %d\n",
		cfg.Data, len(ds.Train), len(val.Inputs), cfg.Batch, cfg.Seq, cfg.Steps, cfg.PeakLR, sched.WarmupSteps)
	if cfg.world() > 1 {
		fmt.Fprintf(log, "data parallel: %d processes, %d sequences each per step, gradients summed over the TCP ring\n",
			cfg.world(), cfg.Batch/cfg.world())
	}

	bar.start = startStep
	bar.perDevice = cfg.world() > 1
	var peak float64
	if p, ok := be.(kernels.Peak); ok {
		peak = p.PeakFLOPS()
	}
	dp := newDataParallel(ctx, cfg.Comm, cfg.Reducer, m)
	share := cfg.Batch / cfg.world()
	accum := share / cfg.MicroBatch
	inputs := make([]int32, share*cfg.Seq)
	targets := make([]int32, share*cfg.Seq)
	start := time.Now()
	res := &Result{Dir: cfg.Out, ParamsCount: model.NumParams(cfg.Model)}
	if len(val.Inputs) == 0 {
		fmt.Fprintln(log, "note: the dataset has no held-out tokens (prepared with --held-out 0): no validation, no baseline")
	}
	validate := func(step int) error {
		if len(val.Inputs) == 0 {
			return nil
		}
		ev := EvalMetrics{Step: step}
		if ev.Val, err = Evaluate(m, val, cfg.MicroBatch); err != nil {
			return err
		}
		line := fmt.Sprintf("step %d: val loss %.4f, %.4f bits/byte", step, ev.Val.Loss, ev.Val.BitsPerByte)
		if text != nil {
			r, err := Evaluate(m, text, cfg.MicroBatch)
			if err != nil {
				return err
			}
			ev.Text = &r
			line += fmt.Sprintf("; %s %.4f bits/byte", filepath.Base(cfg.EvalText), r.BitsPerByte)
		}
		if cfg.SampleEvery > 0 && cfg.SampleTokens > 0 {
			ev.Sample, err = sampleText(m, tok, cfg.SampleTokens, cfg.Seed+uint64(step))
			if err != nil {
				return err
			}
		}
		bar.println(line)
		if ev.Sample != "" {
			bar.println("sample: " + printable(ev.Sample))
		}
		res.Val = ev.Val
		return menc.Encode(ev)
	}
	for step := startStep; step < cfg.Steps; step++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if _, err := loader.FillBatch(step, cfg.Batch, cfg.rank(), cfg.world(), inputs, targets); err != nil {
			return nil, err
		}
		m.ZeroGrad()
		var loss float64
		for a := 0; a < accum; a++ {
			lo, hi := a*cfg.MicroBatch*cfg.Seq, (a+1)*cfg.MicroBatch*cfg.Seq
			l, err := m.Forward(inputs[lo:hi], targets[lo:hi], cfg.MicroBatch, cfg.Seq)
			if err != nil {
				return nil, err
			}
			if a == accum-1 {
				dp.startBuckets() // the last micro-batch finishes each gradient range
			}
			if err := m.Backward(); err != nil {
				return nil, err
			}
			loss += l / float64(accum)
		}
		if loss, err = dp.finish(loss); err != nil {
			return nil, fmt.Errorf("step %d: %w", step+1, err)
		}
		lr := sched.LR(step)
		var stall time.Duration
		if saver != nil {
			stall = saver.WaitSnapshot() // the optimizer must not change state a save is still copying
		}
		norm := opt.Step(lr, 1/float64(accum*cfg.world()))
		if math.IsNaN(norm) || math.IsInf(norm, 0) {
			return nil, fmt.Errorf("worker: gradient norm is %v at step %d (loss %v); parameters left unchanged", norm, step+1, loss)
		}
		if cfg.CheckEvery > 0 && (step+1)%cfg.CheckEvery == 0 {
			if err := dp.checkParams(step + 1); err != nil {
				return nil, err
			}
		}
		if math.IsNaN(loss) || math.IsInf(loss, 0) {
			return nil, fmt.Errorf("worker: loss is %v at step %d", loss, step)
		}
		if saver != nil && (step+1 == cfg.Steps || (cfg.Checkpoint.Every > 0 && (step+1)%cfg.Checkpoint.Every == 0)) {
			held, err := saveCheckpoint(saveCtx, saver, cfg, rc, m, sb, tokJSON, step+1)
			if err != nil {
				return nil, err
			}
			stall += held
		}
		el := time.Since(start)
		tokens := int64(step+1-startStep) * int64(cfg.Batch*cfg.Seq)
		sm := StepMetrics{Step: step + 1, DataCRC: batchCRC(sampler, step, cfg.Batch), Loss: loss, LR: lr, GradNorm: norm,
			Tokens: int64(step+1) * int64(cfg.Batch*cfg.Seq), TokensPerS: float64(tokens) / el.Seconds(), ElapsedS: el.Seconds(),
			SaveStallS: stall.Seconds()}
		sm.TokensPerSPerDevice = sm.TokensPerS / float64(cfg.world())
		if peak > 0 {
			sm.MFU = sm.TokensPerSPerDevice * model.FLOPsPerToken(cfg.Model, cfg.Seq) / peak
		}
		if err := menc.Encode(sm); err != nil {
			return nil, err
		}
		bar.update(step+1, loss, sm, el)
		res.FinalLoss, res.TokensPerS = loss, sm.TokensPerS
		if lead && cfg.EvalEvery > 0 && (step+1)%cfg.EvalEvery == 0 && step+1 < cfg.Steps {
			if err := validate(step + 1); err != nil {
				return nil, err
			}
		}
	}
	res.Steps, res.Elapsed = cfg.Steps, time.Since(start)
	if err := dp.checkParams(cfg.Steps); err != nil {
		return nil, err
	}
	if saver != nil {
		if err := saver.Wait(); err != nil {
			return nil, err
		}
	}
	if !lead {
		return res, nil
	}
	if err := validate(cfg.Steps); err != nil {
		return nil, err
	}
	rc.StepsDone = cfg.Steps
	if err := SaveWeights(m, filepath.Join(cfg.Out, WeightsName)); err != nil {
		return nil, err
	}
	if err := writeJSON(filepath.Join(cfg.Out, RunConfigName), rc); err != nil {
		return nil, err
	}
	if cfg.Baseline && val.Bytes > 0 {
		tri := NewTrigram()
		for _, s := range ds.Train {
			fitDocs(tri, tok, s)
		}
		res.TrigramBPB = val.TrigramBits(tri, tok) / float64(val.Bytes)
		fmt.Fprintf(log, "held-out bits/byte: model %.4f, byte trigram baseline %.4f (fitted on the same training text)\n",
			res.Val.BitsPerByte, res.TrigramBPB)
		if err := menc.Encode(EvalMetrics{Step: cfg.Steps, Val: res.Val, Trigram: &res.TrigramBPB}); err != nil {
			return nil, err
		}
	}
	ep := sampler.Epochs(int64(cfg.Steps) * int64(cfg.Batch))
	var parts []string
	for i, c := range sampler.Mixture() {
		parts = append(parts, fmt.Sprintf("%s %.2f", c.Name, ep[i]))
	}
	fmt.Fprintf(log, "epochs per source: %s\n", strings.Join(parts, ", "))
	fmt.Fprintf(log, "done: %d steps in %s (%.0f tokens/s); weights in %s\n", cfg.Steps,
		res.Elapsed.Round(time.Second), res.TokensPerS, filepath.Join(cfg.Out, WeightsName))
	return res, nil
}

// batchCRC fingerprints the sequences of step's global batch, so runs can be compared
// sequence for sequence whatever their number of ranks.
func batchCRC(s *shard.Sampler, step, batch int) uint32 {
	var buf [16]byte
	var crc uint32
	tab := crc32.MakeTable(crc32.Castagnoli)
	for i := int64(step) * int64(batch); i < int64(step+1)*int64(batch); i++ {
		r := s.At(i)
		binary.LittleEndian.PutUint64(buf[:8], uint64(r.Source))
		binary.LittleEndian.PutUint64(buf[8:], uint64(r.Offset))
		crc = crc32.Update(crc, tab, buf[:])
	}
	return crc
}

// fitDocs feeds a token stream to the trigram model document by document (EOS separates).
func fitDocs(tri *Trigram, tok *tokenizer.Tokenizer, stream []int32) {
	start := 0
	for i, id := range stream {
		if id == tok.EOS() {
			tri.Fit(tok.Decode(stream[start:i]))
			start = i + 1
		}
	}
	tri.Fit(tok.Decode(stream[start:]))
}

// sampleText generates n tokens after a document boundary.
func sampleText(m *model.Model, tok *tokenizer.Tokenizer, n int, seed uint64) (string, error) {
	n = min(n, m.Cfg.MaxSeq-1)
	g, err := m.NewGenerator(n + 1)
	if err != nil {
		return "", err
	}
	defer g.Close()
	rng := rand.New(rand.NewPCG(seed, 0x5a))
	logits, err := g.Feed([]int32{tok.EOS()})
	if err != nil {
		return "", err
	}
	var out []int32
	for i := 0; i < n; i++ {
		id := model.SampleToken(logits, 0.8, 0.95, rng)
		out = append(out, id)
		if i+1 < n {
			if logits, err = g.Feed([]int32{id}); err != nil {
				return "", err
			}
		}
	}
	return string(tok.Decode(out)), nil
}

// printable shows a sample on one line: newlines as ⏎, other control bytes as '.'.
func printable(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n':
			b.WriteString("⏎")
		case r == '\t':
			b.WriteString(" ")
		case r < 32 || r == 0x7f:
			b.WriteByte('.')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
