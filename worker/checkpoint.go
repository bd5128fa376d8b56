package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/herd-llm/herd/checkpoint"
	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/kernels/cpu"
	"github.com/herd-llm/herd/model"
	"github.com/herd-llm/herd/tokenizer"
)

// CheckpointConfig says where and how often a run saves, and what it resumes from.
type CheckpointConfig struct {
	Save      *checkpoint.Location // nil: no checkpoints
	Every     int                  // steps between checkpoints; the last step always saves
	KeepLast  int                  // committed checkpoints to keep (0: all)
	KeepEvery int                  // also keep those whose step is a multiple of this (0: none)
	Resume    *checkpoint.Location // nil: start fresh; else continue its newest good commit
	// FailureLimit is how long checkpoints may keep failing before the run stops. A failed
	// save is logged and the next checkpoint step saves again; the last one is retried until
	// it commits. 0 stops the run at the first failure.
	FailureLimit time.Duration
	// LeaseTTL is the lifetime of rank 0's lease on Save (checkpoint.DefaultLeaseTTL when 0).
	LeaseTTL  time.Duration
	Failpoint func(name string, step int)
}

// Validate names the first bad field.
func (c CheckpointConfig) Validate() error {
	bad := func(f string, a ...any) error { return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(f, a...)) }
	switch {
	case c.Every < 0:
		return bad("--checkpoint-every = %d, must be >= 0 (0: only the last step)", c.Every)
	case c.KeepLast < 0:
		return bad("--keep-last = %d, must be >= 0 (0: keep all)", c.KeepLast)
	case c.KeepEvery < 0:
		return bad("--keep-every = %d, must be >= 0 (0: none)", c.KeepEvery)
	case c.FailureLimit < 0:
		return bad("--checkpoint-failure-limit = %v, must be >= 0", c.FailureLimit)
	case c.LeaseTTL < 0:
		return bad("lease TTL %v, must be >= 0", c.LeaseTTL)
	}
	return nil
}

// stateBuffers is the training state as host float32 slices: views of the CPU backend's
// buffers, or staging copies for a backend whose memory is not host memory. Under ZeRO the
// moments are sharded and not here (m and v nil): host.M and host.V are then nil, and a load
// fills whole temporary ones (loaded) that the shard takes its chunks from.
type stateBuffers struct {
	mod     *model.Model
	be      kernels.Backend
	p, m, v kernels.Buffer
	host    checkpoint.State
	direct  bool
	loaded  checkpoint.State // what the last checkpoint load filled
}

func newStateBuffers(mod *model.Model, mb, vb kernels.Buffer) *stateBuffers {
	be := mod.Backend()
	sb := &stateBuffers{mod: mod, be: be, p: mod.Params(), m: mb, v: vb}
	n := mod.Layout.Size
	view := func(b kernels.Buffer) []float32 {
		switch {
		case b == nil:
			return nil
		case sb.direct:
			return cpu.Data[float32](b)
		}
		return make([]float32, n)
	}
	_, sb.direct = be.(*cpu.Backend[float32])
	sb.host = checkpoint.State{Params: view(sb.p), M: view(mb), V: view(vb)}
	return sb
}

// pull makes host hold the backend's current state.
func (sb *stateBuffers) pull() checkpoint.State {
	if !sb.direct {
		sb.be.Read32(sb.host.Params, sb.p)
		if sb.m != nil {
			sb.be.Read32(sb.host.M, sb.m)
			sb.be.Read32(sb.host.V, sb.v)
		}
	}
	return sb.host
}

// push copies host into the backend after a load.
func (sb *stateBuffers) push() {
	if !sb.direct {
		sb.be.Write32(sb.p, sb.host.Params)
		if sb.m != nil {
			sb.be.Write32(sb.m, sb.host.M)
			sb.be.Write32(sb.v, sb.host.V)
		}
	}
	sb.mod.ParamsUpdated()
}

// forLoad returns the buffers a checkpoint load fills: host, with whole temporary moments
// when the moments are sharded.
func (sb *stateBuffers) forLoad() checkpoint.State {
	st := sb.host
	if st.M == nil {
		st.M, st.V = make([]float32, len(st.Params)), make([]float32, len(st.Params))
	}
	sb.loaded = st
	return st
}

func layoutRanges(l model.Layout) []checkpoint.TensorRange {
	out := make([]checkpoint.TensorRange, len(l.Specs))
	for i, s := range l.Specs {
		out[i] = checkpoint.TensorRange{Name: s.Name, Shape: s.Shape, Offset: int64(s.Offset), Size: int64(s.Size)}
	}
	return out
}

// checkResume returns the function that checks a checkpoint's manifest against the run
// before its state is loaded into sb: the checkpoint must hold the same model (every
// shape-determining and numeric field of the model config) and tokenizer; a checkpoint of a
// training run must also have the same sequence length, global batch and seed, so the data
// stream continues where it stopped (the number of ranks may differ). A step-0 checkpoint
// (from herd import) only provides weights. prev receives the checkpoint's run config.
func checkResume(cfg TrainConfig, mod *model.Model, alloc func() checkpoint.State, tokHash string, prev *RunConfig) func(*checkpoint.Manifest) (checkpoint.State, error) {
	want := layoutRanges(mod.Layout.Whole())
	return func(m *checkpoint.Manifest) (checkpoint.State, error) {
		if fmt.Sprint(m.Layout) != fmt.Sprint(want) {
			return checkpoint.State{}, fmt.Errorf("worker: checkpoint step %d holds another model (its parameter layout differs from --preset's)", m.Step)
		}
		if err := json.Unmarshal(m.Config, prev); err != nil {
			return checkpoint.State{}, fmt.Errorf("%w: checkpoint step %d: config: %v", checkpoint.ErrManifest, m.Step, err)
		}
		if d := modelDiff(prev.Model, cfg.Model); d != "" {
			return checkpoint.State{}, fmt.Errorf("worker: checkpoint step %d has %s", m.Step, d)
		}
		if m.TokenizerHash != tokHash {
			return checkpoint.State{}, fmt.Errorf("worker: checkpoint step %d was trained with tokenizer %s, --data has %s", m.Step, m.TokenizerHash, tokHash)
		}
		if m.Step > 0 && (m.Cursor.GlobalBatch != cfg.Batch || m.Cursor.Seq != cfg.Seq || m.Cursor.Seed != cfg.Seed) {
			return checkpoint.State{}, fmt.Errorf("worker: checkpoint step %d used --batch %d --seq %d --seed %d; resume with the same values (the number of processes may change)",
				m.Step, m.Cursor.GlobalBatch, m.Cursor.Seq, m.Cursor.Seed)
		}
		return alloc(), nil
	}
}

// noteResumed logs where a run continues and whether it continues as the interrupted run
// would have. Differences in the schedule or optimizer settings are reported: the run then
// continues, but not as the same run would have.
func noteResumed(cfg TrainConfig, loc *checkpoint.Location, man *checkpoint.Manifest, prev RunConfig, log func(string)) {
	log(fmt.Sprintf("resumed from %v/%s: step %d, written by %d ranks", loc, checkpoint.StepDir(man.Step), man.Step, man.World))
	if man.Step > 0 {
		sched := cfg.schedule()
		if prev.Schedule != sched || prev.Optim != cfg.Optim {
			log(fmt.Sprintf("note: the schedule or optimizer differs from the checkpoint's (%+v %+v, now %+v %+v); training continues, but not as the interrupted run would have",
				prev.Schedule, prev.Optim, sched, cfg.Optim))
		}
	}
}

// modelDiff names the first model field that differs between a checkpoint's config and the
// run's, or returns "". The remat policy and the peak learning rate do not change the model.
func modelDiff(ck, run model.Config) string {
	type field struct {
		name     string
		ck, want any
	}
	for _, f := range []field{{"dim", ck.Dim, run.Dim}, {"layers", ck.Layers, run.Layers}, {"heads", ck.Heads, run.Heads},
		{"ffn_hidden", ck.FFNHidden, run.FFNHidden}, {"vocab", ck.Vocab, run.Vocab}, {"norm_eps", ck.NormEps, run.NormEps},
		{"rope_theta", ck.RopeTheta, run.RopeTheta}} {
		if f.ck != f.want {
			return fmt.Sprintf("%s = %v, the run has %v", f.name, f.ck, f.want)
		}
	}
	return ""
}

// AbandonedMetricsName holds the metrics lines of steps that a resumed run trains again.
const AbandonedMetricsName = "metrics.abandoned.jsonl"

// metricsSteps returns the number of step lines in a run directory's metrics.jsonl and the
// last step logged (0, 0 when there is none).
func metricsSteps(path string) (lines, last int, err error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	for _, line := range bytes.Split(raw, []byte("\n")) {
		var rec struct {
			Step int `json:"step"`
		}
		if len(bytes.TrimSpace(line)) > 0 && json.Unmarshal(line, &rec) == nil {
			lines++
			last = max(last, rec.Step)
		}
	}
	return lines, last, nil
}

// setAsideMetrics keeps the lines of metrics.jsonl up to step and moves the rest (the steps
// a resumed run trains again, and a line cut short by a crash) to metrics.abandoned.jsonl,
// so the history stays one line per step and nothing of it is lost. The kept prefix replaces
// the file atomically, after the moved lines are safely appended to the other one.
func setAsideMetrics(dir string, step int) (moved int, err error) {
	path := filepath.Join(dir, MetricsName)
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	keep := 0
	for _, line := range bytes.SplitAfter(raw, []byte("\n")) {
		var rec struct {
			Step int `json:"step"`
		}
		if !bytes.HasSuffix(line, []byte("\n")) || json.Unmarshal(line, &rec) != nil || rec.Step > step {
			break
		}
		keep += len(line)
	}
	rest := raw[keep:]
	if len(rest) == 0 {
		return 0, nil
	}
	if !bytes.HasSuffix(rest, []byte("\n")) {
		rest = append(rest, '\n')
	}
	f, err := os.OpenFile(filepath.Join(dir, AbandonedMetricsName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	if _, err := f.Write(rest); err != nil {
		f.Close()
		return 0, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	err = checkpoint.WriteFileAtomic(path, func(w io.Writer) error {
		_, err := w.Write(raw[:keep])
		return err
	})
	return bytes.Count(rest, []byte("\n")), err
}

// saveCheckpoint starts an asynchronous save of the state after step and returns how long
// the step loop was held. Under ZeRO each rank writes the chunks it owns; under tensor
// parallelism the ranges of the whole network's state in tpSpans (see Trainer.save).
func saveCheckpoint(ctx context.Context, saver *checkpoint.Saver, cfg TrainConfig, rc RunConfig, mod *model.Model, sb *stateBuffers, z *zeroState, tokJSON []byte, step int, tpSpans []checkpoint.Span) (time.Duration, error) {
	raw, err := json.Marshal(rc)
	if err != nil {
		return 0, err
	}
	req := checkpoint.SaveRequest{
		Step: step, Rank: cfg.rank(), World: cfg.world(),
		Cursor:        checkpoint.Cursor{Step: step, GlobalBatch: cfg.Batch, Seq: cfg.Seq, Seed: cfg.Seed, NextIndex: int64(step) * int64(cfg.Batch)},
		Config:        raw,
		TokenizerHash: rc.TokenizerHash,
		Layout:        layoutRanges(mod.Layout.Whole()),
		Extra:         map[string][]byte{TokenizerName: tokJSON},
	}
	if cfg.Tensor != nil {
		req.Spans, req.Elems = tpSpans, int64(mod.Layout.Whole().Size)
		return saver.Save(ctx, req)
	}
	if z != nil {
		req.Spans, req.Elems = z.spans(), int64(mod.Layout.Size)
	} else {
		req.State = sb.pull()
	}
	return saver.Save(ctx, req)
}

// CheckpointModel reads the run configuration and tokenizer stored with a checkpoint.
func CheckpointModel(ctx context.Context, loc checkpoint.Location, m *checkpoint.Manifest) (RunConfig, *tokenizer.Tokenizer, error) {
	var rc RunConfig
	if err := json.Unmarshal(m.Config, &rc); err != nil {
		return rc, nil, fmt.Errorf("%w: checkpoint step %d: config: %v", checkpoint.ErrManifest, m.Step, err)
	}
	if err := rc.Model.Validate(); err != nil {
		return rc, nil, fmt.Errorf("checkpoint step %d: %w", m.Step, err)
	}
	raw, err := checkpoint.ReadObject(ctx, loc, m.Step, TokenizerName)
	if err != nil {
		return rc, nil, err
	}
	tok, err := tokenizer.Unmarshal(raw)
	if err != nil {
		return rc, nil, err
	}
	if tok.Hash() != m.TokenizerHash {
		return rc, nil, fmt.Errorf("%w: checkpoint step %d: tokenizer.json hash %s, manifest %s", checkpoint.ErrChecksum, m.Step, tok.Hash(), m.TokenizerHash)
	}
	return rc, tok, nil
}
