package shard

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
)

// PrepareConfig configures Prepare. Start from DefaultPrepareConfig.
type PrepareConfig struct {
	// Sources are read in order; deduplication keeps the first copy, so an
	// earlier source wins over a later one.
	Sources []SourceSpec
	// Out is the dataset directory. It must not hold a manifest.json yet.
	Out string
	// Encoder tokenizes documents.
	Encoder Encoder
	// HeldOutFraction of each source's documents (chosen by hash) go to the
	// held-out split, at least one when the source has two or more; 0..0.5.
	HeldOutFraction float64
	// MaxShardTokens caps the tokens of one shard file.
	MaxShardTokens int64
	// Filter holds the quality thresholds.
	Filter Filter
	// MaxDocBytes is the largest text file read as one document; 0 means DefaultMaxDocBytes.
	MaxDocBytes int
	// Workers is the number of concurrent Encode calls; 0 means GOMAXPROCS.
	Workers int
	// LineDedupMemory bounds the memory of line dedup's set of line hashes, in bytes: a
	// corpus whose distinct lines need more is deduplicated in two passes, with the hashes on
	// disk in Out (linespill.go). 0 keeps the whole set in memory.
	LineDedupMemory int64
	// NearDupMemory bounds the memory of near-duplicate detection, in bytes: its index is
	// replaced by a first pass that records signatures and band keys on disk in Out and
	// decides bucket by bucket (neardupspill.go), with the same verdicts. 0 keeps the index
	// in memory.
	NearDupMemory int64
	// NearDupPlanned, when set, is told what near-dup's first pass found, per setting.
	NearDupPlanned func(NearDup, NearDupPlanned)
	// OnDocument, when set, is told the verdict on every document that passed reading, from
	// the goroutine that reads (documents dropped before the language, perplexity, classifier
	// and near-duplicate filters) or the one that writes (the others): it must be safe for
	// concurrent use, and must not keep Doc.
	OnDocument func(DocumentVerdict)
	// LineDedupPlanned, when set, is told what line dedup's first pass found: the lines it
	// will compare, the buckets it spread them over, and the most distinct hashes one bucket
	// held in memory.
	LineDedupPlanned func(lines int64, buckets int, maxSet int64)
	// Progress, when set, is called from one goroutine as documents are
	// written and once with Done when a source is finished.
	Progress func(ProgressEvent)

	// failpoint, when set, is called at named points and fails Prepare
	// there when it returns an error. Tests use it to check that a failed
	// run leaves nothing behind.
	failpoint func(name string) error
}

// DocumentVerdict is what Prepare decided about one document (PrepareConfig.OnDocument).
type DocumentVerdict struct {
	Source  string
	Verdict Verdict
	Doc     []byte // as read when dropped before the language filter; as filtered after
	// The scores of the filters that scored it (nil: not scored), and the language found.
	BitsPerByte *float64
	Score       *float64
	Lang        string
}

// ProgressEvent reports how far Prepare is with one source.
type ProgressEvent struct {
	Source string // source name
	Docs   int64  // documents written so far (train and held-out)
	Bytes  int64  // their size before tokenization
	Tokens int64  // tokens written so far, EOS included
	Done   bool   // the source is finished
}

// progressEvery is how many documents pass between progress events.
const progressEvery = 1024

// DefaultPrepareConfig holds 1% of documents out, caps shard files at 2^28
// tokens and uses DefaultFilter.
func DefaultPrepareConfig() PrepareConfig {
	return PrepareConfig{
		HeldOutFraction: 0.01,
		MaxShardTokens:  1 << 28,
		Filter:          DefaultFilter(),
		MaxDocBytes:     DefaultMaxDocBytes,
	}
}

// Validate checks every field; the error names the field and its range.
func (c PrepareConfig) Validate() error {
	if len(c.Sources) == 0 {
		return fmt.Errorf("%w: Sources is empty", ErrConfig)
	}
	seen := map[string]int{}
	for i, s := range c.Sources {
		if err := checkName(s.Name); err != nil {
			return fmt.Errorf("%w: Sources[%d]: %v", ErrConfig, i, err)
		}
		if j, dup := seen[s.Name]; dup {
			return fmt.Errorf("%w: Sources[%d].Name %q repeats Sources[%d]", ErrConfig, i, s.Name, j)
		}
		seen[s.Name] = i
		if s.Path == "" {
			return fmt.Errorf("%w: Sources[%d].Path is empty", ErrConfig, i)
		}
		if err := checkWeight(s.Weight); err != nil {
			return fmt.Errorf("%w: Sources[%d]: %v", ErrConfig, i, err)
		}
		if err := s.Quality.Validate(); err != nil {
			return fmt.Errorf("Sources[%d] (%s): %w", i, s.Name, err)
		}
	}
	if c.Out == "" {
		return fmt.Errorf("%w: Out is empty", ErrConfig)
	}
	if err := checkEncoder(c.Encoder); err != nil {
		return err
	}
	switch {
	case !(c.HeldOutFraction >= 0 && c.HeldOutFraction <= 0.5):
		return fmt.Errorf("%w: HeldOutFraction is %v, want 0..0.5", ErrConfig, c.HeldOutFraction)
	case c.MaxShardTokens < 1:
		return fmt.Errorf("%w: MaxShardTokens is %d, want >= 1", ErrConfig, c.MaxShardTokens)
	case c.MaxDocBytes < 0:
		return fmt.Errorf("%w: MaxDocBytes is %d, want >= 0", ErrConfig, c.MaxDocBytes)
	case c.Workers < 0:
		return fmt.Errorf("%w: Workers is %d, want >= 0", ErrConfig, c.Workers)
	case c.LineDedupMemory < 0:
		return fmt.Errorf("%w: LineDedupMemory is %d, want >= 0", ErrConfig, c.LineDedupMemory)
	case c.NearDupMemory < 0:
		return fmt.Errorf("%w: NearDupMemory is %d, want >= 0", ErrConfig, c.NearDupMemory)
	}
	return c.Filter.Validate()
}

func checkEncoder(e Encoder) error {
	if e == nil {
		return fmt.Errorf("%w: Encoder is nil", ErrConfig)
	}
	v, eos, h := e.VocabSize(), e.EOS(), e.Hash()
	switch {
	case v < 1 || v > MaxVocab:
		return fmt.Errorf("%w: Encoder.VocabSize() is %d, want 1..%d", ErrConfig, v, MaxVocab)
	case eos < 0 || int64(eos) >= int64(v):
		return fmt.Errorf("%w: Encoder.EOS() is %d, want 0..%d", ErrConfig, eos, v-1)
	case len(h) == 0 || len(h) > MaxHashLen:
		return fmt.Errorf("%w: Encoder.Hash() has %d bytes, want 1..%d", ErrConfig, len(h), MaxHashLen)
	}
	if ds, ok := e.(DocumentStarter); ok {
		if id, ok := ds.DocumentStart(); ok && (id < 0 || int64(id) >= int64(v)) {
			return fmt.Errorf("%w: Encoder.DocumentStart() is %d, want 0..%d", ErrConfig, id, v-1)
		}
	}
	return nil
}

// Prepare reads, cleans and tokenizes every source and writes a dataset to
// cfg.Out: per source, train and held-out shard files under Out/<name>/,
// then Out/manifest.json. Documents are encoded in parallel and written in
// reading order, each followed by EOS (and preceded by the encoder's document
// start, LLaMA's <s>, when it is a DocumentStarter that has one).
//
// Nothing is lost on failure: shard files appear only whole (temp, fsync,
// rename), the manifest is written last and commits the dataset, Prepare
// refuses a directory that already holds a manifest, and on error it removes
// the shard files it wrote. A source with no document left after cleaning
// fails with an *EmptySourceError.
//
// Paths inside Out that the manifest records (a source copied into the
// dataset directory, its skipped files and bad lines) are recorded relative
// to Out, so the dataset can be prepared in a staging directory and renamed
// into place.
func Prepare(ctx context.Context, cfg PrepareConfig) (*Manifest, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Workers == 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, fmt.Errorf("shard: prepare: %w", err)
	}
	mpath := filepath.Join(cfg.Out, ManifestName)
	if _, err := os.Stat(mpath); err == nil {
		return nil, fmt.Errorf("%w: %s exists", ErrExists, mpath)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("shard: prepare: %w", err)
	}
	p := &preparer{cfg: cfg, cleaner: NewCleaner(cfg.Filter), quality: NewQualityFilters(cfg.Filter)}
	m, err := p.run(ctx)
	if err != nil {
		p.removeWritten()
		return nil, err
	}
	return m, nil
}

type preparer struct {
	cfg     PrepareConfig
	cleaner *Cleaner
	quality *QualityFilters
	plan    bool     // near-dup's first pass (neardupspill.go): run the filters, write nothing
	written []string // shard files renamed into place by this run
	dirs    []string // source directories this run made or used
}

func (p *preparer) run(ctx context.Context) (*Manifest, error) {
	enc := p.cfg.Encoder
	m := &Manifest{
		FormatVersion:   ManifestVersion,
		TokenizerHash:   enc.Hash(),
		VocabSize:       enc.VocabSize(),
		EOS:             enc.EOS(),
		Filter:          p.cfg.Filter,
		HeldOutFraction: p.cfg.HeldOutFraction,
	}
	if p.cfg.LineDedupMemory > 0 && slices.ContainsFunc(p.cfg.Sources, func(s SourceSpec) bool { return s.Quality.LineDedup }) {
		bits, err := planLineDedup(ctx, p.cfg, p.cfg.LineDedupMemory, filepath.Join(p.cfg.Out, ".line-dedup"))
		if err != nil {
			return nil, err
		}
		defer bits.Close()
		p.quality.lines = &lineDeduper{spill: bits}
		if p.cfg.LineDedupPlanned != nil {
			p.cfg.LineDedupPlanned(bits.Lines, bits.Bucket, bits.MaxSet)
		}
	}
	var verdicts []*nearDupVerdicts
	if p.cfg.NearDupMemory > 0 && slices.ContainsFunc(p.cfg.Sources, func(s SourceSpec) bool { return s.Quality.NearDup != nil }) {
		v, err := p.planNearDup(ctx)
		if err != nil {
			return nil, err
		}
		verdicts = v
		defer func() {
			for _, v := range verdicts {
				v.Close()
			}
		}()
	}
	for _, spec := range p.cfg.Sources {
		sm, err := p.source(ctx, spec)
		if err != nil {
			return nil, err
		}
		m.Sources = append(m.Sources, sm)
	}
	for _, v := range verdicts { // every verdict the first pass decided was read
		if v.read != v.n {
			return nil, fmt.Errorf("shard: near-dup: %d documents reached near-dup, the first pass saw %d (the sources changed since?)", v.read, v.n)
		}
	}
	if err := p.fail("before-manifest"); err != nil {
		return nil, err
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("shard: prepare produced a bad manifest: %w", err)
	}
	if err := m.write(p.cfg.Out); err != nil {
		// Prepare refused to start over an existing manifest, so one here is
		// this run's, and it must not outlive the shard files about to go.
		mpath := filepath.Join(p.cfg.Out, ManifestName)
		os.Remove(mpath)
		return nil, fmt.Errorf("shard: write %s: %w", mpath, err)
	}
	return m, nil
}

func (p *preparer) fail(name string) error {
	if p.cfg.failpoint == nil {
		return nil
	}
	return p.cfg.failpoint(name)
}

// removeWritten deletes the shard files of a failed run and the source
// directories it leaves empty.
func (p *preparer) removeWritten() {
	for _, f := range p.written {
		os.Remove(f)
	}
	for _, d := range p.dirs {
		os.Remove(d) // fails, harmlessly, when not empty
	}
}

// removeStaleTemps deletes temporary shard files that a killed run left in
// dir. Two runs must not share an Out directory.
func removeStaleTemps(dir string) {
	stale, _ := filepath.Glob(filepath.Join(dir, ".*.tok.tmp-*"))
	for _, f := range stale {
		os.Remove(f)
	}
}

func (p *preparer) newStream(name, split string) *stream {
	enc := p.cfg.Encoder
	return &stream{
		root: p.cfg.Out, rel: name + "/" + split,
		vocab: enc.VocabSize(), hash: enc.Hash(), max: p.cfg.MaxShardTokens,
		done: func(path string) { p.written = append(p.written, path) },
	}
}

// encodeJob is one document on its way through the encoders: kept so far, with the
// language and near-duplicate filters (when its source asks for them) still to decide.
type encodeJob struct {
	doc  []byte
	n    int // its size as read
	hash DocHash
	q    Quality
	x    *nearDupIndex // q's near-duplicate index, or nil
	late lateAnalysis  // filled by the encoder before it sends on out
	out  chan []int32  // receives the tokens; buffered, so encoders never block
}

// earlyFilters reports whether q has filters that run before the late ones: the code
// heuristics and line dedup.
func (q Quality) earlyFilters() bool { return q.Code != nil || q.LineDedup }

// earlyJob is one document on its way through the early filters' analysis.
type earlyJob struct {
	doc []byte
	h   DocHash
	v   Verdict            // the cleaner's
	out chan earlyAnalysis // receives the analysis of a document the cleaner kept; buffered
}

// readEarly reads a source whose documents go through the early filters: the reader cleans
// them in order, analyzers (one per worker) do the early filters' work on each in parallel,
// and a sequencer decides in reading order (line dedup compares each line with the lines
// before), counting in filt, and hands each verdict to decide.
func (p *preparer) readEarly(ctx context.Context, cancel context.CancelFunc, spec SourceSpec, opts ReadOptions, filt *FilterReport, decide func(Verdict, []byte, []byte, DocHash) error) (ReadReport, error) {
	jobs := make(chan *earlyJob)
	order := make(chan *earlyJob, 4*p.cfg.Workers)
	var analyzers sync.WaitGroup
	for range p.cfg.Workers {
		analyzers.Go(func() {
			for j := range jobs {
				j.out <- analyzeEarly(spec.Quality, j.doc)
			}
		})
	}
	seqErr := make(chan error, 1)
	go func() {
		var err error
		for j := range order {
			if err != nil {
				continue // drain, so the reader never blocks
			}
			v, doc := j.v, j.doc
			if v == Keep {
				select {
				case a := <-j.out:
					v, doc = p.quality.earlyDecide(spec.Quality, a, filt)
				case <-ctx.Done():
					err = ctx.Err()
					continue
				}
				if err = p.quality.err(); err != nil {
					cancel()
					continue
				}
			}
			if err = decide(v, doc, j.doc, j.h); err != nil {
				cancel()
			}
		}
		seqErr <- err
	}()
	read, err := ReadDocuments(ctx, spec.Path, opts, func(doc []byte) error {
		v, h := p.cleaner.Check(doc)
		j := &earlyJob{doc: doc, h: h, v: v}
		chans := []chan *earlyJob{order}
		if v == Keep {
			j.out = make(chan earlyAnalysis, 1)
			chans = append(chans, jobs)
		}
		for _, ch := range chans {
			select {
			case ch <- j:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	close(jobs)
	close(order)
	if serr := <-seqErr; serr != nil && (err == nil || errors.Is(err, context.Canceled)) {
		err = serr // the sequencer's failure, not the cancellation it caused
	}
	analyzers.Wait()
	return read, err
}

// lateFilters reports whether q has filters that the encoders analyze for (language,
// perplexity, classifier, near-duplicates).
func (q Quality) lateFilters() bool {
	return q.Lang != nil || q.Perplexity != nil || q.Classifier != nil || q.NearDup != nil
}

// source prepares one source. A reader goroutine reads and cleans
// documents in order and hands each to the encoders and, in the same order,
// to this goroutine, which waits for each result in turn and writes it.
func (p *preparer) source(parent context.Context, spec SourceSpec) (SourceManifest, error) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	if !p.plan {
		dir := filepath.Join(p.cfg.Out, spec.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return SourceManifest{}, fmt.Errorf("shard: prepare %s: %w", spec.Name, err)
		}
		p.dirs = append(p.dirs, dir)
		removeStaleTemps(dir)
	}
	jobs := make(chan *encodeJob)
	order := make(chan *encodeJob, 4*p.cfg.Workers)
	start, hasStart := int32(0), false
	if ds, ok := p.cfg.Encoder.(DocumentStarter); ok {
		start, hasStart = ds.DocumentStart()
	}
	var encoders sync.WaitGroup
	for range p.cfg.Workers {
		encoders.Go(func() {
			for j := range jobs {
				if j.q.lateFilters() {
					j.late.analyze(j.q, j.x, j.doc)
					if j.late.dropped(j.q) {
						j.out <- nil // not encoded: the collector drops it
						continue
					}
				}
				if p.plan {
					j.out <- nil // near-dup's first pass writes nothing
					continue
				}
				toks := p.cfg.Encoder.Encode(j.doc)
				if hasStart {
					toks = slices.Insert(toks, 0, start)
				}
				j.out <- toks
			}
		})
	}
	var (
		read    ReadReport
		filt    FilterReport
		readErr error
	)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		defer close(order)
		defer close(jobs)
		x := p.quality.index(spec.Quality)
		// decide counts a document's verdict so far and sends a kept one on to the encoders
		// and, in the same order, to the collector, which counts the documents it gets: kept,
		// or dropped by the late filters, which decide in reading order on what the encoders
		// found in parallel. It runs on one goroutine at a time, in reading order.
		decide := func(v Verdict, doc, orig []byte, h DocHash) error {
			if v != Keep {
				filt.Add(v, len(orig))
				if p.cfg.OnDocument != nil && !p.plan {
					p.cfg.OnDocument(DocumentVerdict{Source: spec.Name, Verdict: v, Doc: orig})
				}
				return nil
			}
			j := &encodeJob{doc: doc, n: len(orig), hash: h, q: spec.Quality, x: x, out: make(chan []int32, 1)}
			for _, ch := range []chan *encodeJob{order, jobs} {
				select {
				case ch <- j:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		}
		opts := ReadOptions{MaxDocBytes: p.cfg.MaxDocBytes}
		if !spec.Quality.earlyFilters() {
			read, readErr = ReadDocuments(ctx, spec.Path, opts, func(doc []byte) error {
				v, h := p.cleaner.Check(doc)
				return decide(v, doc, doc, h)
			})
			return
		}
		read, readErr = p.readEarly(ctx, cancel, spec, opts, &filt, decide)
	}()
	sp := &splitter{
		threshold: heldOutThreshold(p.cfg.HeldOutFraction),
		train:     p.newStream(spec.Name, "train"),
		held:      p.newStream(spec.Name, "heldout"),
	}
	var decided FilterReport
	err := p.collect(ctx, spec.Name, order, sp, &decided)
	if err != nil {
		cancel()
	}
	<-readDone
	filt.merge(decided)
	encoders.Wait()
	if err == nil || errors.Is(err, context.Canceled) && readErr != nil && parent.Err() == nil {
		err = readErr // the reading side's failure, not the cancellation it caused
	}
	if err == nil && p.plan {
		return SourceManifest{}, nil
	}
	if err == nil {
		err = p.finishSource(sp)
	}
	if err != nil {
		sp.train.abort()
		sp.held.abort()
		return SourceManifest{}, err
	}
	return p.sourceManifest(spec, sp, read, filt)
}

// collect decides on the documents the language and near-duplicate filters still had to,
// counting every document it gets in r, and writes the kept ones in reading order.
func (p *preparer) collect(ctx context.Context, name string, order <-chan *encodeJob, sp *splitter, r *FilterReport) error {
	eos := p.cfg.Encoder.EOS()
	ev := ProgressEvent{Source: name}
	for j := range order {
		var toks []int32
		select {
		case toks = <-j.out:
		case <-ctx.Done():
			return ctx.Err()
		}
		v := Keep
		if j.q.lateFilters() {
			v = late(j.q, j.x, j.late, r)
			if j.x != nil {
				if err := j.x.err(); err != nil {
					return err
				}
			}
		}
		r.Add(v, j.n)
		if p.plan {
			continue // near-dup's first pass: nothing is written
		}
		if p.cfg.OnDocument != nil {
			dv := DocumentVerdict{Source: name, Verdict: v, Doc: j.doc, Lang: j.late.lang}
			if j.q.Lang == nil || j.late.langOK {
				if j.q.Perplexity != nil {
					dv.BitsPerByte = &j.late.bpb
				}
				if j.q.Classifier != nil {
					dv.Score = &j.late.score
				}
			}
			p.cfg.OnDocument(dv)
		}
		if v != Keep {
			continue
		}
		toks = append(toks, eos)
		if err := sp.add(toks, j.hash.HeldOutKey()); err != nil {
			return err
		}
		ev.Docs++
		ev.Bytes += int64(len(j.doc))
		ev.Tokens += int64(len(toks))
		if p.cfg.Progress != nil && ev.Docs%progressEvery == 0 {
			p.cfg.Progress(ev)
		}
	}
	if p.cfg.Progress != nil {
		ev.Done = true
		p.cfg.Progress(ev)
	}
	return nil
}

func (p *preparer) finishSource(sp *splitter) error {
	if err := sp.finish(); err != nil {
		return err
	}
	if err := sp.train.finish(); err != nil {
		return err
	}
	if err := sp.held.finish(); err != nil {
		return err
	}
	return p.fail("after-source")
}

func (p *preparer) sourceManifest(spec SourceSpec, sp *splitter, read ReadReport, filt FilterReport) (SourceManifest, error) {
	if sp.trainDocs == 0 {
		return SourceManifest{}, &EmptySourceError{Name: spec.Name, Path: spec.Path, Read: read, Filter: filt, Limits: p.cfg.Filter}
	}
	for i := range read.Skipped {
		read.Skipped[i].File = p.recordedPath(read.Skipped[i].File)
	}
	for i := range read.BadLineSamples {
		read.BadLineSamples[i].File = p.recordedPath(read.BadLineSamples[i].File)
	}
	var quality *Quality
	if spec.Quality.Enabled() {
		quality = &spec.Quality
	}
	nonNil := func(f []FileEntry) []FileEntry {
		if f == nil {
			return []FileEntry{}
		}
		return f
	}
	return SourceManifest{
		Name:          spec.Name,
		Weight:        spec.Weight,
		Input:         p.recordedPath(spec.Path),
		TrainFiles:    sp.train.files,
		HeldOutFiles:  nonNil(sp.held.files),
		TrainTokens:   sp.train.tokens,
		HeldOutTokens: sp.held.tokens,
		TrainDocs:     sp.trainDocs,
		HeldOutDocs:   sp.heldDocs,
		Read:          read,
		Filter:        filt,
		Quality:       quality,
	}, nil
}

// recordedPath is how the manifest names a path that documents were read
// from: relative to the dataset directory, with '/' separators, when it lies
// inside it (a corpus copied into the dataset), so the manifest stays true
// when the directory is renamed or moved; as given otherwise.
func (p *preparer) recordedPath(path string) string {
	out, err1 := filepath.Abs(p.cfg.Out)
	abs, err2 := filepath.Abs(path)
	if err1 != nil || err2 != nil {
		return path
	}
	if rel, err := filepath.Rel(out, abs); err == nil && filepath.IsLocal(rel) {
		return filepath.ToSlash(rel)
	}
	return path
}
