package checkpoint

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"path"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// A checkpoint directory holds, under a store prefix (the job):
//
//	<prefix>/step-00000100/rank-00000-of-00002.bin    rank 0's range of params, adam_m, adam_v
//	<prefix>/step-00000100/rank-00000-of-00002.done   its size and sha256, written after it
//	<prefix>/step-00000100/rank-00001-of-00002.bin
//	<prefix>/step-00000100/rank-00001-of-00002.done
//	<prefix>/step-00000100/manifest.json              written last by rank 0: the commit
//	<prefix>/latest                                   "step-00000100", written after the commit
const (
	ManifestName = "manifest.json"
	LatestName   = "latest"
)

// Location is a checkpoint directory in a store.
type Location struct {
	Store  ObjectStore
	Prefix string // "" or a slash-separated key prefix without a trailing slash
}

// String names the location for messages: the store's URI and the prefix.
func (l Location) String() string {
	base := strings.TrimSuffix(fmt.Sprint(l.Store), "/")
	if l.Prefix == "" {
		return base
	}
	return base + "/" + l.Prefix
}

func (l Location) key(parts ...string) string {
	if l.Prefix == "" {
		return path.Join(parts...)
	}
	return path.Join(append([]string{l.Prefix}, parts...)...)
}

// State is a rank's view of the training state: the full flat buffers in host memory.
type State struct {
	Params, M, V []float32
}

func (s State) buffers() [][]float32 { return [][]float32{s.Params, s.M, s.V} }

// SaveRequest is one checkpoint as a rank sees it.
type SaveRequest struct {
	Step          int
	Rank, World   int
	State         State // read only during Save; the write uses a copy
	Cursor        Cursor
	Config        json.RawMessage
	TokenizerHash string
	Layout        []TensorRange
	// Extra holds small objects (such as tokenizer.json) that rank 0 writes into the step
	// directory before the manifest, so a checkpoint is complete on its own.
	Extra map[string][]byte
	// Spans, when set, are the ranges this rank writes and their values (a rank that owns
	// parts of the state, under ZeRO), and Elems the number of elements of the flat buffers;
	// State is then unused. Without Spans the rank writes Partition(len(State.Params), World,
	// Rank) of State.
	Spans []Span
	Elems int64
}

// Span is a range of the flat buffers starting at Offset and a rank's values of each buffer
// over it (equal lengths).
type Span struct {
	Offset       int64
	Params, M, V []float32
}

// SaverOptions configures a Saver.
type SaverOptions struct {
	// KeepLast keeps the newest KeepLast committed checkpoints (0 keeps all).
	KeepLast int
	// KeepEvery also keeps every checkpoint whose step is a multiple of KeepEvery (0: none).
	KeepEvery int
	// CommitTimeout bounds how long rank 0 waits for the other ranks' shards. A newer Save
	// also ends that wait, after supersedeGrace: the older checkpoint is abandoned (and
	// reported as failed).
	CommitTimeout time.Duration
	// Attempt names this run's shards (see Manifest.Attempt); every rank of a run must use
	// the same one. "" means a fresh NewAttempt(), which suits a single writer.
	Attempt string
	// Base is the step the run started from (0 for a fresh run). Step directories after Base
	// that this run did not write belong to an abandoned timeline: a resumed run leaves them
	// alone until it has committed a checkpoint of its own, then deletes them.
	Base int
	// Lease, when set, must be held (Check returns nil) for rank 0 to commit.
	Lease interface{ Check() error }
	// Failpoint, when set, is called at named points of the save of step ("after-shard",
	// "before-manifest", "after-manifest"); tests use it to kill the process there.
	Failpoint func(name string, step int)
	// Log receives one line per event (commit, deletion); nil discards.
	Log func(string)
	// OnCommit, when set, is called on rank 0 with the step of each checkpoint it commits.
	OnCommit func(step int)
	// OnSaved, when set, is called on every rank when its part of a save has ended, with
	// how long it took and its error.
	OnSaved func(step int, took time.Duration, err error)
}

// Saver writes checkpoints in the background: Save copies the rank's range of the state into
// a staging buffer and returns, and a goroutine uploads it. At most one save is in flight; a
// Save that finds the previous one still uploading waits for it (back-pressure) rather than
// holding a second copy, and one that finds rank 0 still waiting for other ranks' shards
// gives them supersedeGrace, then abandons that older checkpoint.
type Saver struct {
	loc  Location
	opts SaverOptions

	mu        sync.Mutex
	busy      chan struct{} // closed when the in-flight save is done; nil when idle
	snap      chan struct{} // closed when the last save's state is copied to staging
	abandon   context.CancelCauseFunc
	awaiting  bool // the in-flight save is waiting for other ranks' shards
	lastErr   error
	staging   []float32
	committed map[int]bool // steps this saver committed
}

// supersedeGrace is how long a Save lets rank 0's commit of the previous checkpoint go on
// waiting for the other ranks' shards before it abandons that checkpoint. Under load (more
// processes than cores) a rank's shard of a small model can take longer to land than ten
// fast steps, and the older checkpoint was lost.
const supersedeGrace = 2 * time.Second

// errSuperseded is the cause that ends a commit still waiting for shards when a newer Save
// arrives.
var errSuperseded = errors.New("checkpoint: superseded by a newer checkpoint before every rank's shard arrived")

// NewSaver returns a saver writing to loc.
func NewSaver(loc Location, opts SaverOptions) *Saver {
	if opts.CommitTimeout <= 0 {
		opts.CommitTimeout = 10 * time.Minute
	}
	if opts.Attempt == "" {
		opts.Attempt = NewAttempt()
	}
	return &Saver{loc: loc, opts: opts, committed: map[int]bool{}}
}

// Attempt returns the attempt that names this saver's shards.
func (s *Saver) Attempt() string { return s.opts.Attempt }

func (s *Saver) logf(format string, a ...any) {
	if s.opts.Log != nil {
		s.opts.Log(fmt.Sprintf(format, a...))
	}
}

func (s *Saver) fail(name string, step int) {
	if s.opts.Failpoint != nil {
		s.opts.Failpoint(name, step)
	}
}

// Save starts writing req and returns at once, after waiting only for a previous save that
// is still uploading (back-pressure: one save in flight). A background goroutine first copies
// the rank's range of req.State into the staging buffer, then uploads it. The caller must
// leave req.State unchanged until that copy is done: WaitSnapshot blocks until then. A
// training loop calls it just before the optimizer step, so the copy overlaps the next
// forward and backward pass, which only read the parameters. Save returns how long it held
// the caller and the error of the previous save, if that one failed.
func (s *Saver) Save(ctx context.Context, req SaveRequest) (time.Duration, error) {
	start := time.Now()
	s.mu.Lock()
	if s.awaiting && s.abandon != nil {
		// Every rank has trained past the older checkpoint, so each one's shard of it is
		// written, being written, or failed: a moment settles which before giving it up.
		busy := s.busy
		s.mu.Unlock()
		select {
		case <-busy:
		case <-time.After(supersedeGrace):
		}
		s.mu.Lock()
		if s.awaiting && s.abandon != nil {
			s.abandon(errSuperseded)
		}
	}
	s.mu.Unlock()
	prevErr := s.Wait()
	spans, err := req.spans()
	if err != nil {
		return time.Since(start), err
	}
	var count int64
	for _, sp := range spans {
		count += int64(len(sp.Params))
	}
	if cap(s.staging) < int(3*count) {
		s.staging = make([]float32, 3*count)
	}
	stage := s.staging[:3*count]
	done, snap := make(chan struct{}), make(chan struct{})
	wctx, abandon := context.WithCancelCause(ctx)
	s.mu.Lock()
	s.busy, s.snap, s.abandon, s.awaiting = done, snap, abandon, false
	s.mu.Unlock()
	go func() {
		stageSpans(stage, spans, count)
		close(snap)
		began := time.Now()
		err := s.write(wctx, req, spans, count, stage)
		if s.opts.OnSaved != nil {
			s.opts.OnSaved(req.Step, time.Since(began), err)
		}
		if cause := context.Cause(wctx); err != nil && errors.Is(cause, errSuperseded) {
			err = fmt.Errorf("checkpoint: step %d: %w (%v)", req.Step, cause, err)
		}
		abandon(nil)
		s.mu.Lock()
		s.lastErr = err
		s.mu.Unlock()
		close(done)
	}()
	return time.Since(start), prevErr
}

// WaitSnapshot blocks until the state of the last Save has been copied to staging, so the
// caller may change it, and returns how long it waited.
func (s *Saver) WaitSnapshot() time.Duration {
	s.mu.Lock()
	snap := s.snap
	s.mu.Unlock()
	if snap == nil {
		return 0
	}
	start := time.Now()
	<-snap
	return time.Since(start)
}

// Wait blocks until no save is in flight and returns the error of the last one.
func (s *Saver) Wait() error {
	s.mu.Lock()
	busy := s.busy
	s.mu.Unlock()
	if busy != nil {
		<-busy
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.busy = nil
	err := s.lastErr
	s.lastErr = nil
	return err
}

// spans returns the ranges the request writes, checking their buffers.
func (r SaveRequest) spans() ([]Span, error) {
	elems := r.size()
	if r.Spans != nil {
		for i, sp := range r.Spans {
			n := int64(len(sp.Params))
			if int64(len(sp.M)) != n || int64(len(sp.V)) != n || sp.Offset < 0 || sp.Offset+n > elems {
				return nil, fmt.Errorf("checkpoint: span %d at %d: %d params, %d adam_m, %d adam_v values in %d elements", i, sp.Offset, n, len(sp.M), len(sp.V), elems)
			}
		}
		return r.Spans, nil
	}
	for i, b := range r.State.buffers() {
		if int64(len(b)) != elems {
			return nil, fmt.Errorf("checkpoint: %s has %d elements, params %d", Buffers[i], len(b), elems)
		}
	}
	off, count := Partition(elems, r.World, r.Rank)
	return []Span{{Offset: off, Params: r.State.Params[off : off+count], M: r.State.M[off : off+count], V: r.State.V[off : off+count]}}, nil
}

// size returns the number of elements of the flat buffers.
func (r SaveRequest) size() int64 {
	if r.Spans != nil {
		return r.Elems
	}
	return int64(len(r.State.Params))
}

// stageSpans copies each buffer's values of every span into consecutive thirds of stage, in
// the shard's order (all of params, then adam_m, then adam_v), split across the cores: the
// copy is the only part of a save the step loop waits for.
func stageSpans(stage []float32, spans []Span, count int64) {
	const chunk = 1 << 20
	type job struct {
		dst, src []float32
	}
	var wg sync.WaitGroup
	work := make(chan job, 64)
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range work {
				copy(j.dst, j.src)
			}
		}()
	}
	for i := 0; i < 3; i++ {
		at := int64(i) * count
		for _, sp := range spans {
			src := [][]float32{sp.Params, sp.M, sp.V}[i]
			for lo := 0; lo < len(src); lo += chunk {
				hi := min(lo+chunk, len(src))
				work <- job{stage[at+int64(lo) : at+int64(hi)], src[lo:hi]}
			}
			at += int64(len(src))
		}
	}
	close(work)
	wg.Wait()
}

// doneRecord is the content of a shard's .done object: the manifest's entry of the shard.
type doneRecord = Shard

func (s *Saver) write(ctx context.Context, req SaveRequest, spans []Span, count int64, stage []float32) error {
	dir := StepDir(req.Step)
	key := ShardKey(req.Rank, req.World, s.opts.Attempt)
	data := floatBytes(stage)
	// Hash on another core while the store writes: a bytes.Reader also lets the S3 store
	// upload parts in parallel (it needs ReaderAt), which a hashing TeeReader would hide.
	sum := make(chan []byte, 1)
	go func() {
		h := sha256.New()
		h.Write(data)
		sum <- h.Sum(nil)
	}()
	err := s.loc.Store.Put(ctx, s.loc.key(dir, key), bytes.NewReader(data), int64(len(data)))
	digest := <-sum
	if err != nil {
		return fmt.Errorf("checkpoint: writing %s: %w", s.loc.key(dir, key), err)
	}
	s.fail("after-shard", req.Step)
	rec := doneRecord{Key: key, Rank: req.Rank, Count: count, Bytes: int64(len(data)), SHA256: hex.EncodeToString(digest)}
	if len(spans) == 1 {
		rec.Offset = spans[0].Offset
	} else {
		for _, sp := range spans {
			rec.Ranges = append(rec.Ranges, Range{Offset: sp.Offset, Count: int64(len(sp.Params))})
		}
	}
	raw, _ := json.Marshal(rec)
	dk := s.loc.key(dir, doneKey(key))
	if err := s.loc.Store.Put(ctx, dk, bytes.NewReader(raw), int64(len(raw))); err != nil {
		return fmt.Errorf("checkpoint: writing %s: %w", dk, err)
	}
	if req.Rank != 0 {
		return nil
	}
	s.mu.Lock()
	s.awaiting = true
	s.mu.Unlock()
	shards, err := s.awaitShards(ctx, dir, req.World)
	s.mu.Lock()
	s.awaiting = false
	s.mu.Unlock()
	if err != nil {
		return err
	}
	m := Manifest{Version: ManifestVersion, Step: req.Step, World: req.World, Elems: req.size(),
		DType: "float32", Cursor: req.Cursor, Config: req.Config, TokenizerHash: req.TokenizerHash, Layout: req.Layout,
		Shards: shards, Attempt: s.opts.Attempt}
	if err := m.validate(); err != nil {
		return fmt.Errorf("checkpoint: step %d: %w", req.Step, err)
	}
	for name, data := range req.Extra {
		if err := s.loc.Store.Put(ctx, s.loc.key(dir, name), bytes.NewReader(data), int64(len(data))); err != nil {
			return fmt.Errorf("checkpoint: writing %s: %w", s.loc.key(dir, name), err)
		}
	}
	s.fail("before-manifest", req.Step)
	if s.opts.Lease != nil {
		if err := s.opts.Lease.Check(); err != nil {
			return fmt.Errorf("checkpoint: not committing step %d: %w", req.Step, err)
		}
	}
	mraw, _ := json.MarshalIndent(m, "", "  ")
	if err := s.loc.Store.Put(ctx, s.loc.key(dir, ManifestName), bytes.NewReader(mraw), int64(len(mraw))); err != nil {
		return fmt.Errorf("checkpoint: committing %s: %w", s.loc.key(dir, ManifestName), err)
	}
	s.mu.Lock()
	s.committed[req.Step] = true
	s.mu.Unlock()
	s.fail("after-manifest", req.Step)
	if s.opts.OnCommit != nil {
		s.opts.OnCommit(req.Step)
	}
	s.logf("checkpoint: committed %s (%d shards, %.1f MiB each)", s.loc.key(dir), req.World, float64(len(data))/(1<<20))
	// The checkpoint is committed: what follows is housekeeping, whose failure is reported
	// and retried after the next commit, not a failed save.
	if err := s.loc.Store.Put(ctx, s.loc.key(LatestName), strings.NewReader(dir), int64(len(dir))); err != nil {
		s.logf("checkpoint: committed %s, but updating %s failed: %v", s.loc.key(dir), s.loc.key(LatestName), err)
	}
	if err := s.retain(ctx, req.Step); err != nil {
		s.logf("checkpoint: committed %s, but cleaning up older checkpoints failed (retried after the next commit): %v", s.loc.key(dir), err)
	}
	return nil
}

// awaitShards waits until every rank's .done record of dir exists and returns the shards.
func (s *Saver) awaitShards(ctx context.Context, dir string, world int) ([]Shard, error) {
	deadline := time.Now().Add(s.opts.CommitTimeout)
	missing := -1 // the first rank whose record the last pass did not find
	for {
		shards := make([]Shard, 0, world)
		for r := 0; r < world; r++ {
			k := s.loc.key(dir, doneKey(ShardKey(r, world, s.opts.Attempt)))
			raw, err := getAll(ctx, s.loc.Store, k)
			if errors.Is(err, ErrNotFound) {
				break
			}
			if ctx.Err() != nil {
				if missing < 0 {
					missing = r
				}
				return nil, fmt.Errorf("checkpoint: %s: waiting for rank %d's shard: %w", s.loc.key(dir), missing, ctx.Err())
			}
			if err != nil {
				return nil, err
			}
			var rec doneRecord
			if err := json.Unmarshal(raw, &rec); err != nil {
				return nil, fmt.Errorf("%w %s: %v", ErrManifest, k, err)
			}
			shards = append(shards, rec)
		}
		if len(shards) == world {
			return shards, nil
		}
		missing = len(shards)
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("checkpoint: %s: only %d of %d ranks finished their shards within %s (rank %d is missing)", s.loc.key(dir), len(shards), world, s.opts.CommitTimeout, len(shards))
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return nil, fmt.Errorf("checkpoint: %s: waiting for rank %d's shard: %w", s.loc.key(dir), len(shards), err)
		}
	}
}

// retain runs after each commit. It deletes, in this order: the step directories of an
// abandoned timeline (after Base, not written by this run; a stale lease-less shard there
// must never be mistaken for one of this run's), shards of other attempts inside the
// directories this run committed, uncommitted directories older than the newest commit
// (shards of a save that died before its manifest), and the committed checkpoints that the
// retention policy drops. A manifest is always deleted before the shards it lists, so a crash
// midway leaves no commit pointing at missing shards.
func (s *Saver) retain(ctx context.Context, newest int) error {
	steps, err := ListSteps(ctx, s.loc)
	if err != nil {
		return err
	}
	s.mu.Lock()
	mine := maps.Clone(s.committed)
	s.mu.Unlock()
	var committed []int
	for _, st := range steps {
		if st.Step > s.opts.Base {
			if err := s.dropForeign(ctx, st, mine[st.Step]); err != nil {
				return err
			}
			if !mine[st.Step] {
				continue
			}
		}
		if st.Committed {
			committed = append(committed, st.Step)
		}
	}
	keep := map[int]bool{newest: true}
	for i := range committed {
		if s.opts.KeepLast <= 0 || i >= len(committed)-s.opts.KeepLast {
			keep[committed[i]] = true
		}
		if s.opts.KeepEvery > 0 && committed[i]%s.opts.KeepEvery == 0 {
			keep[committed[i]] = true
		}
	}
	for _, st := range steps {
		if st.Step > s.opts.Base && !mine[st.Step] {
			continue // handled above
		}
		drop := (st.Committed && !keep[st.Step]) || (!st.Committed && st.Step < newest)
		if !drop {
			continue
		}
		if err := s.deleteKeys(ctx, st.Keys); err != nil {
			return err
		}
		what := "old checkpoint"
		if !st.Committed {
			what = "uncommitted shards of"
		}
		s.logf("checkpoint: deleted %s %s", what, s.loc.key(StepDir(st.Step)))
	}
	return nil
}

// dropForeign deletes what does not belong to this run in the directory of a step after
// Base: everything but this attempt's shards (which another rank may be writing right now)
// when this run did not commit it, and other attempts' shards when it did.
func (s *Saver) dropForeign(ctx context.Context, st StepInfo, committedByMe bool) error {
	var drop []string
	for _, k := range st.Keys {
		name := path.Base(k)
		attempt, isShard := keyAttempt(name)
		switch {
		case isShard && attempt == s.opts.Attempt:
		case !isShard && committedByMe:
		default:
			drop = append(drop, k)
		}
	}
	if len(drop) == 0 {
		return nil
	}
	if err := s.deleteKeys(ctx, drop); err != nil {
		return err
	}
	if committedByMe {
		s.logf("checkpoint: deleted %d stale objects of an earlier attempt in %s", len(drop), s.loc.key(StepDir(st.Step)))
	} else {
		s.logf("checkpoint: deleted %s, left by an abandoned run after the resumed step %d", s.loc.key(StepDir(st.Step)), s.opts.Base)
	}
	return nil
}

// deleteKeys deletes keys, a manifest first.
func (s *Saver) deleteKeys(ctx context.Context, keys []string) error {
	sorted := slices.Clone(keys)
	slices.SortStableFunc(sorted, func(a, b string) int {
		am, bm := path.Base(a) == ManifestName, path.Base(b) == ManifestName
		switch {
		case am && !bm:
			return -1
		case bm && !am:
			return 1
		}
		return 0
	})
	for _, k := range sorted {
		if err := s.loc.Store.Delete(ctx, k); err != nil {
			return fmt.Errorf("checkpoint: deleting %s: %w", k, err)
		}
	}
	return nil
}

// StepInfo describes one step directory of a checkpoint location.
type StepInfo struct {
	Step      int
	Committed bool     // manifest.json exists
	Keys      []string // every object under it
}

// ListSteps returns the step directories of loc, oldest first.
func ListSteps(ctx context.Context, loc Location) ([]StepInfo, error) {
	prefix := loc.key("step-")
	objs, err := loc.Store.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: listing %s: %w", prefix, err)
	}
	byStep := map[int]*StepInfo{}
	base := loc.key("")
	for _, o := range objs {
		rel := strings.TrimPrefix(strings.TrimPrefix(o.Key, base), "/")
		dir, file, ok := strings.Cut(rel, "/")
		step, isStep := ParseStepDir(dir)
		if !ok || !isStep {
			continue
		}
		st := byStep[step]
		if st == nil {
			st = &StepInfo{Step: step}
			byStep[step] = st
		}
		st.Keys = append(st.Keys, o.Key)
		if file == ManifestName {
			st.Committed = true
		}
	}
	out := make([]StepInfo, 0, len(byStep))
	for _, st := range byStep {
		out = append(out, *st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Step < out[j].Step })
	return out, nil
}

// ReadObject reads a small object of the checkpoint after step, such as one of its Extra files.
func ReadObject(ctx context.Context, loc Location, step int, name string) ([]byte, error) {
	k := loc.key(StepDir(step), name)
	raw, err := getAll(ctx, loc.Store, k)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: reading %s: %w", k, err)
	}
	return raw, nil
}

// ReadManifest reads and validates the manifest of the checkpoint after step.
func ReadManifest(ctx context.Context, loc Location, step int) (*Manifest, error) {
	k := loc.key(StepDir(step), ManifestName)
	raw, err := getAll(ctx, loc.Store, k)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: reading %s: %w", k, err)
	}
	return ParseManifest(k, raw)
}

// LoadState reads every shard of m into dst (full flat buffers of m.Elems each), verifying
// each object's size and sha256. Any world size can load any checkpoint: a rank's buffers are
// assembled from the ranges of all shards.
//
// Damage, and only damage, fails with an error wrapping ErrNotFound (a shard the manifest
// lists is missing) or ErrChecksum (a shard of the wrong size, or whose sha256 differs from
// the manifest's on two reads in a row). A store that cannot be read fails with its own
// error (ErrUnavailable once retries are spent): an I/O error is never taken for damage.
func LoadState(ctx context.Context, loc Location, m *Manifest, dst State) error {
	for i, b := range dst.buffers() {
		if int64(len(b)) != m.Elems {
			return fmt.Errorf("checkpoint: %s of %d elements cannot hold a checkpoint of %d", Buffers[i], len(b), m.Elems)
		}
	}
	dir := loc.key(StepDir(m.Step)) + "/"
	objs, err := loc.Store.List(ctx, dir)
	if err != nil {
		return fmt.Errorf("checkpoint: listing %s: %w", dir, err)
	}
	sizes := make(map[string]int64, len(objs))
	for _, o := range objs {
		sizes[o.Key] = o.Size
	}
	for _, sh := range m.Shards {
		k := loc.key(StepDir(m.Step), sh.Key)
		size, ok := sizes[k]
		switch {
		case !ok:
			return fmt.Errorf("%w: %s, listed by the manifest of step %d, is missing", ErrNotFound, k, m.Step)
		case size != sh.Bytes:
			return fmt.Errorf("%w: %s has %d bytes, the manifest says %d", ErrChecksum, k, size, sh.Bytes)
		}
		var got string
		for try := 0; try < 2; try++ {
			if got, err = loadShard(ctx, loc.Store, k, sh, dst); err != nil {
				return err
			}
			if got == sh.SHA256 {
				break
			}
		}
		if got != sh.SHA256 {
			return fmt.Errorf("%w: %s has sha256 %s (twice), the manifest says %s", ErrChecksum, k, got, sh.SHA256)
		}
	}
	return nil
}

// loadShard reads the shard object k into its ranges of dst and returns its sha256.
func loadShard(ctx context.Context, st ObjectStore, k string, sh Shard, dst State) (string, error) {
	rc, err := st.Get(ctx, k, 0, sh.Bytes)
	if err != nil {
		return "", fmt.Errorf("checkpoint: reading %s: %w", k, err)
	}
	defer rc.Close()
	h := sha256.New()
	if err := readShard(io.TeeReader(rc, h), sh, dst); err != nil {
		return "", fmt.Errorf("checkpoint: reading %s: %w", k, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// readShard decodes sh.Bytes bytes of r into dst: for each buffer, each of the shard's ranges.
func readShard(r io.Reader, sh Shard, dst State) error {
	buf := make([]byte, 1<<20)
	for i, b := range dst.buffers() {
		for _, rg := range sh.ranges() {
			out := b[rg.Offset : rg.Offset+rg.Count]
			for len(out) > 0 {
				n := min(len(out), len(buf)/4)
				if _, err := io.ReadFull(r, buf[:4*n]); err != nil {
					if err == io.EOF {
						err = io.ErrUnexpectedEOF
					}
					return fmt.Errorf("%s: %w", Buffers[i], err)
				}
				for j := range out[:n] {
					out[j] = math.Float32frombits(binary.LittleEndian.Uint32(buf[4*j:]))
				}
				out = out[n:]
			}
		}
	}
	return nil
}

// Damaged reports whether err says that a checkpoint is damaged (a manifest that does not
// parse or validate, a shard missing, of the wrong size or with the wrong checksum), as
// opposed to a store that could not be read or a checkpoint of another model.
func Damaged(err error) bool {
	return errors.Is(err, ErrManifest) || errors.Is(err, ErrChecksum) || errors.Is(err, ErrNotFound)
}

// LoadLatest loads the newest committed checkpoint of loc that verifies, falling back to
// older commits when one is damaged (each fallback is logged). Any other error, a store that
// stays unreachable in particular, ends the load: a checkpoint that could not be read is not
// a damaged one. alloc returns the buffers to fill for a manifest, after checking it fits
// the model.
func LoadLatest(ctx context.Context, loc Location, alloc func(*Manifest) (State, error), log func(string)) (*Manifest, error) {
	steps, err := ListSteps(ctx, loc)
	if err != nil {
		return nil, err
	}
	var lastErr error
	for i := len(steps) - 1; i >= 0; i-- {
		if !steps[i].Committed {
			continue
		}
		m, err := LoadStep(ctx, loc, steps[i].Step, alloc)
		if err == nil {
			return m, nil
		}
		if !Damaged(err) {
			return nil, err
		}
		if log != nil {
			log(fmt.Sprintf("checkpoint: %v; falling back to the previous commit", err))
		}
		lastErr = err
	}
	if lastErr != nil {
		return nil, fmt.Errorf("%w in %v: %w", ErrNoCommit, loc, lastErr)
	}
	return nil, fmt.Errorf("%w in %v", ErrNoCommit, loc)
}

// LoadStep loads the committed checkpoint of loc after step, with no fallback: damage and
// I/O errors are returned as LoadState returns them.
func LoadStep(ctx context.Context, loc Location, step int, alloc func(*Manifest) (State, error)) (*Manifest, error) {
	m, err := ReadManifest(ctx, loc, step)
	if err != nil {
		return nil, err
	}
	st, err := alloc(m)
	if err != nil {
		return nil, err
	}
	if err := LoadState(ctx, loc, m, st); err != nil {
		return nil, err
	}
	return m, nil
}

func getAll(ctx context.Context, st ObjectStore, key string) ([]byte, error) {
	rc, err := st.Get(ctx, key, 0, -1)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// floatBytes views float32 values as their little-endian bytes without copying.
func floatBytes(v []float32) []byte {
	if len(v) == 0 {
		return nil
	}
	if !nativeLittleEndian() {
		b := make([]byte, 4*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
		}
		return b
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v))
}
