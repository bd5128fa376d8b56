package worker

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"strings"
	"time"

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
	// Zero is the ZeRO stage: 0 replicates the whole state on every rank; 1 shards the AdamW
	// moments across the ranks, 2 the gradients too, 3 the parameters too (see zero.go).
	Zero int
	// Tensor, when set, makes this process one rank of a dp x tp mesh (see Mesh): Comm is the
	// whole world, each tensor-parallel group splits every layer of the model, and the
	// gradients are summed across Tensor.DP.
	Tensor *Mesh
	// Checkpoint configures periodic sharded checkpoints and resuming.
	Checkpoint CheckpointConfig
	// Command describes the run in lock refusals ("herd train --out runs/x"); "" means the
	// process's command line.
	Command string
	// OnStep, when set, receives every step's metrics. With it Out may be "": the driver (a
	// cluster worker) records the run, no run directory is written and no lock is taken.
	OnStep func(StepMetrics)
	// OnCheckpoint, when set, receives the step of every checkpoint this rank commits.
	OnCheckpoint func(step int)
	// OnSaved, when set, receives how long this rank's part of each checkpoint took to write.
	OnSaved func(step int, took time.Duration, err error)
}

// Validate names the first bad field.
func (c TrainConfig) Validate() error {
	bad := func(f string, a ...any) error { return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(f, a...)) }
	switch {
	case c.Data == "":
		return bad("--data: a prepared dataset directory is required")
	case c.Out == "" && c.OnStep == nil:
		return bad("--out: a run directory is required")
	case c.Steps <= 0:
		return bad("--steps = %d, must be > 0", c.Steps)
	case c.Batch <= 0:
		return bad("--batch = %d, must be > 0", c.Batch)
	case c.MicroBatch <= 0 || c.Batch%(c.MicroBatch*c.dpWorld()) != 0:
		if c.Tensor != nil {
			return bad("--micro-batch = %d times %d data-parallel groups (%d processes / --tp %d) must divide --batch = %d", c.MicroBatch, c.dpWorld(), c.world(), c.tp(), c.Batch)
		}
		return bad("--micro-batch = %d times %d processes must divide --batch = %d", c.MicroBatch, c.world(), c.Batch)
	case !(c.PeakLR > 0):
		return bad("--lr = %g, must be > 0", c.PeakLR)
	case c.WarmupSteps > c.Steps:
		return bad("--warmup = %d exceeds --steps = %d", c.WarmupSteps, c.Steps)
	case c.EvalEvery < 0 || c.SampleEvery < 0 || c.EvalSeqs <= 0:
		return bad("--eval-every, --sample-every must be >= 0 and --eval-seqs > 0")
	case c.Zero < 0 || c.Zero > 3:
		return bad("--zero = %d: the stages are 0 (replicated), 1 (moments sharded), 2 (and gradients), 3 (and parameters)", c.Zero)
	case c.Tensor != nil && c.Reducer != nil:
		return bad("tensor parallelism sums gradients over its data-parallel groups: a device reducer over all ranks would add different shares together")
	case c.Tensor != nil && c.Zero > 0:
		return bad("--zero with --tp is not supported yet: ZeRO shards the whole network's state, not a tensor-parallel share")
	case c.Tensor != nil && c.Comm != nil && c.world()%c.tp() != 0:
		return bad("%d processes cannot form groups of --tp %d: the number of processes must be a multiple of --tp", c.world(), c.tp())
	case c.Tensor != nil && c.Tensor.Sequence && c.Seq%c.tp() != 0:
		return bad("--seq = %d: sequence parallelism splits every sequence's tokens over the --tp %d ranks, so --tp must divide it", c.Seq, c.tp())
	}
	if c.Tensor != nil {
		if err := model.CheckTensorParallel(c.Model, c.tp()); err != nil {
			return fmt.Errorf("%w: --tp: %v", ErrConfig, err)
		}
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

// tp returns the tensor-parallel size (1 without tensor parallelism).
func (c TrainConfig) tp() int {
	if c.Tensor == nil {
		return 1
	}
	return c.Tensor.Size
}

// dpWorld returns the number of data-parallel replicas: the ranks divided by the
// tensor-parallel size (1 before a cluster's first round). Each replica trains on its slice
// of the global batch.
func (c TrainConfig) dpWorld() int {
	if c.Comm == nil {
		return 1
	}
	return c.world() / c.tp()
}

// dpRank returns this rank's data-parallel replica.
func (c TrainConfig) dpRank() int { return c.rank() / c.tp() }

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
	// CommWaitS is how long the step waited for communication that computation did not hide:
	// the gradient sums after the backward pass (data parallel), and under tensor parallelism
	// the tensor group's collectives inside the passes.
	CommWaitS  float64 `json:"comm_wait_s,omitempty"`
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
	t, err := NewTrainer(ctx, cfg, be, log)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	if err := t.Restore(ctx); err != nil {
		return nil, err
	}
	if err := t.Begin(ctx); err != nil {
		return nil, err
	}
	for !t.Done() {
		if err := t.Step(ctx); err != nil {
			return nil, err
		}
	}
	return t.Finish(ctx)
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
	boundary := tok.Boundary()
	n = min(n, m.Cfg.MaxSeq-len(boundary))
	g, err := m.NewGenerator(n + len(boundary))
	if err != nil {
		return "", err
	}
	defer g.Close()
	rng := rand.New(rand.NewPCG(seed, 0x5a))
	logits, err := g.Feed(boundary)
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
