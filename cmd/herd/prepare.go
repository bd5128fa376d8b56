package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/herd-llm/herd/shard"
	"github.com/herd-llm/herd/tokenizer"
	"github.com/herd-llm/herd/worker"
)

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ", ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

type prepareOptions struct {
	sources      []shard.SourceSpec
	builtin      bool
	out          string
	vocab        int
	tokenizer    string
	heldOut      float64
	minBytes     int
	maxNonText   float64
	sampleMB     int
	maxShardToks int64
}

func runPrepare(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("prepare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var srcs multiFlag
	fs.Var(&srcs, "source", "a source as NAME=PATH:WEIGHT (repeatable); PATH is a text file, directory, .gz or .jsonl[.gz] with a \"text\" field")
	o := prepareOptions{}
	fs.BoolVar(&o.builtin, "builtin", false, "use the built-in corpus (English text and Go source shipped with the Go toolchain) instead of --source")
	fs.StringVar(&o.out, "out", "", "dataset directory to create; it must not exist or be empty (required)")
	fs.IntVar(&o.vocab, "vocab", 4096, "vocabulary size of the byte-level BPE tokenizer to train")
	fs.StringVar(&o.tokenizer, "tokenizer", "", "reuse this tokenizer.json instead of training one")
	fs.Float64Var(&o.heldOut, "held-out", 0.01, "share of each source's documents kept out of training for validation (0..0.5)")
	fs.IntVar(&o.minBytes, "min-bytes", 32, "drop documents shorter than this many bytes (>= 1)")
	fs.Float64Var(&o.maxNonText, "max-nontext", 0.1, "drop documents whose share of control bytes and invalid UTF-8 exceeds this (0..1)")
	fs.IntVar(&o.sampleMB, "tokenizer-sample-mb", 16, "MiB of text, split across sources by weight, to train the tokenizer on")
	fs.Int64Var(&o.maxShardToks, "max-shard-tokens", 1<<28, "most tokens in one shard file")
	var filters multiFlag
	fs.Var(&filters, "filter", "LLaMA's quality filters for a source, as NAME=FILTER[,FILTER...] (repeatable): "+
		"lines (CCNet line dedup: a line whose normalized form was seen before, in any source that asks for it, is removed), "+
		"near-dup (documents whose word shingles overlap a kept one's by --near-dup-threshold, found by MinHash with LSH), "+
		"code (files marked generated, declaring a licence not in --code-licences, with a line over --code-max-line bytes or "+
		"under --code-min-alnum letters and digits are dropped; leading copyright and licence comment blocks are removed)")
	var langs multiFlag
	fs.Var(&langs, "lang", "keep only the documents of a source written in the given languages, as NAME=CODE[,CODE...] with ISO 639-1 codes (repeatable; for example web=en,de): "+
		"language identification with lingua-go over the 75 languages it knows, on each document's first KiB, after the other filters")
	langConf := fs.Float64("lang-confidence", shard.DefaultLangConfidence, "lang: the least confidence with which a document must be in one of its source's languages (0..1)")
	nd, code := shard.DefaultNearDup(), shard.DefaultCodeFilter()
	fs.Float64Var(&nd.Threshold, "near-dup-threshold", nd.Threshold, "near-dup: the Jaccard similarity of shingle sets at which a document is a near-duplicate (0.3..1)")
	fs.IntVar(&nd.Shingle, "near-dup-shingle", nd.Shingle, "near-dup: words per shingle (1..32)")
	licences := fs.String("code-licences", strings.Join(code.Licences, ","), "code: the SPDX identifiers a file may declare, comma-separated, from "+strings.Join(shard.KnownLicences, ", ")+" (a file that declares none is kept)")
	fs.IntVar(&code.MaxLineBytes, "code-max-line", code.MaxLineBytes, "code: drop files with a longer line, in bytes (>= 1)")
	fs.Float64Var(&code.MinAlnum, "code-min-alnum", code.MinAlnum, "code: drop files whose share of letters and digits among non-space characters is lower (0..1)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: herd prepare (--source NAME=PATH:WEIGHT ... | --builtin) --out DIR [flags]")
		fmt.Fprintln(stderr, "\nReads the sources, removes exact duplicates, filters short and binary-looking documents")
		fmt.Fprintln(stderr, "and, for the sources named in --filter, applies LLaMA's quality filters; then")
		fmt.Fprintln(stderr, "trains (or reuses) a tokenizer, and writes token shards, tokenizer.json and manifest.json.")
		fmt.Fprintln(stderr, "The dataset is written into a hidden directory beside --out and moved into place when whole:")
		fmt.Fprintln(stderr, "a preparation that fails or is interrupted leaves --out as it was.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var err error
	if o.sources, err = shard.ParseSourceSpecs(srcs); err != nil {
		return err
	}
	code.Licences = nil
	for _, l := range strings.Split(*licences, ",") {
		if l = strings.TrimSpace(l); l != "" {
			code.Licences = append(code.Licences, l)
		}
	}
	if err := applyFilters(o.sources, filters, nd, code); err != nil {
		return err
	}
	if err := applyLangs(o.sources, langs, *langConf); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	_, err = prepareDataset(ctx, o, stderr)
	return err
}

// applyFilters sets the quality filters each --filter value names on its source, checking
// the filters' settings first.
func applyFilters(sources []shard.SourceSpec, values []string, nd shard.NearDup, code shard.CodeFilter) error {
	if len(values) == 0 {
		return nil
	}
	if err := nd.Validate(); err != nil {
		return fmt.Errorf("--near-dup-threshold %v, --near-dup-shingle %d: %w", nd.Threshold, nd.Shingle, err)
	}
	if err := code.Validate(); err != nil {
		return fmt.Errorf("--code-licences, --code-max-line, --code-min-alnum: %w", err)
	}
	given := map[string]bool{}
	for _, v := range values {
		name, list, ok := strings.Cut(v, "=")
		if !ok || list == "" {
			return fmt.Errorf("--filter %q: want NAME=FILTER[,FILTER...], for example web=lines,near-dup", v)
		}
		i := slices.IndexFunc(sources, func(s shard.SourceSpec) bool { return s.Name == name })
		if i < 0 {
			return fmt.Errorf("--filter %s: no --source is named %q", v, name)
		}
		if given[name] {
			return fmt.Errorf("--filter %s: source %q has filters already; list them all in one --filter", v, name)
		}
		given[name] = true
		q, err := shard.ParseFilters(list, nd, code)
		if err != nil {
			return fmt.Errorf("--filter %s: %w", v, err)
		}
		sources[i].Quality = q
	}
	return nil
}

// applyLangs sets the language filter each --lang value names on its source.
func applyLangs(sources []shard.SourceSpec, values []string, conf float64) error {
	given := map[string]bool{}
	for _, v := range values {
		name, codes, ok := strings.Cut(v, "=")
		if !ok || codes == "" {
			return fmt.Errorf("--lang %q: want NAME=CODE[,CODE...], for example web=en,de", v)
		}
		i := slices.IndexFunc(sources, func(s shard.SourceSpec) bool { return s.Name == name })
		if i < 0 {
			return fmt.Errorf("--lang %s: no --source is named %q", v, name)
		}
		if given[name] {
			return fmt.Errorf("--lang %s: source %q has languages already; list them all in one --lang", v, name)
		}
		given[name] = true
		f, err := shard.ParseLangFilter(codes, conf)
		if err != nil {
			return fmt.Errorf("--lang %s, --lang-confidence %v: %w", v, conf, err)
		}
		sources[i].Quality.Lang = f
	}
	return nil
}

// maxSampleMB bounds --tokenizer-sample-mb (1 TiB); the sample is held in memory.
const maxSampleMB = 1 << 20

// validate checks the options before anything is read or written. Errors name
// the flag and its allowed range.
func (o prepareOptions) validate() error {
	switch {
	case o.out == "":
		return fmt.Errorf("--out: a dataset directory is required")
	case o.builtin && len(o.sources) > 0:
		return fmt.Errorf("--builtin and --source exclude each other")
	case !o.builtin && len(o.sources) == 0:
		return fmt.Errorf("no data: give --source NAME=PATH:WEIGHT (repeatable) or --builtin")
	case o.vocab < tokenizer.MinVocabSize || o.vocab > tokenizer.MaxVocabSize:
		return fmt.Errorf("--vocab = %d, must be in %d..%d", o.vocab, tokenizer.MinVocabSize, tokenizer.MaxVocabSize)
	case !(o.heldOut >= 0 && o.heldOut <= 0.5):
		return fmt.Errorf("--held-out = %v, must be in 0..0.5", o.heldOut)
	case o.minBytes < 1:
		return fmt.Errorf("--min-bytes = %d, must be >= 1", o.minBytes)
	case !(o.maxNonText >= 0 && o.maxNonText <= 1):
		return fmt.Errorf("--max-nontext = %v, must be in 0..1", o.maxNonText)
	case o.sampleMB < 1 || o.sampleMB > maxSampleMB:
		return fmt.Errorf("--tokenizer-sample-mb = %d, must be in 1..%d", o.sampleMB, maxSampleMB)
	case o.maxShardToks < 1:
		return fmt.Errorf("--max-shard-tokens = %d, must be >= 1", o.maxShardToks)
	}
	return nil
}

// prepareDataset builds a dataset in o.out and returns its manifest. It refuses
// at once an o.out that is anything but absent or an empty directory, writes
// everything into a staging directory beside it and renames that into place
// last: when it fails or ctx ends, o.out is as it was and the staging
// directory is gone.
func prepareDataset(ctx context.Context, o prepareOptions, log io.Writer) (*shard.Manifest, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	o.out = filepath.Clean(o.out)
	if err := checkOut(o.out); err != nil {
		return nil, err
	}
	var tok *tokenizer.Tokenizer
	if o.tokenizer != "" {
		var err error
		if tok, err = tokenizer.Load(o.tokenizer); err != nil {
			return nil, fmt.Errorf("--tokenizer: %w", err)
		}
	}
	st, err := newStaging(o.out, "prepare", log)
	if err != nil {
		return nil, err
	}
	defer st.discard()
	man, err := prepareStaged(ctx, o, tok, st, log)
	if err != nil && ctx.Err() != nil {
		return nil, fmt.Errorf("interrupted; --out %s is as it was: %w", o.out, err)
	}
	return man, err
}

// prepareStaged writes the dataset into st and commits it.
func prepareStaged(ctx context.Context, o prepareOptions, tok *tokenizer.Tokenizer, st *staging, log io.Writer) (*shard.Manifest, error) {
	failpoint := prepareFailpoint(ctx)
	if o.builtin {
		fmt.Fprintln(log, "prepare: copying the built-in corpus from the Go toolchain")
		var err error
		if o.sources, err = materializeBuiltin(ctx, filepath.Join(st.dir, "corpus")); err != nil {
			return nil, err
		}
	}
	tok, err := sourceTokenizer(ctx, o, tok, failpoint, log)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	man, err := writeShards(ctx, o, tok, st.dir, failpoint, log)
	if err != nil {
		return nil, err
	}
	failpoint("before-commit")
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := st.commit(); err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "prepare: dataset written to %s in %s\n", o.out, time.Since(start).Round(time.Millisecond))
	return man, nil
}

// sourceTokenizer returns tok, or when it is nil one trained on a sample of the
// sources. Either way it first checks that every source has a usable document.
func sourceTokenizer(ctx context.Context, o prepareOptions, tok *tokenizer.Tokenizer, failpoint func(string), log io.Writer) (*tokenizer.Tokenizer, error) {
	budget := int64(1) // nothing to train: stop at each source's first usable document
	if tok == nil {
		budget = int64(o.sampleMB) << 20
		fmt.Fprintf(log, "prepare: reading a tokenizer sample of up to %d MiB from %s\n", o.sampleMB, plural(len(o.sources), "source"))
	} else {
		fmt.Fprintf(log, "prepare: checking that each of %s has a usable document\n", plural(len(o.sources), "source"))
	}
	sample, err := sampleSources(ctx, o, budget)
	if err != nil {
		return nil, err
	}
	failpoint("sampled")
	if tok != nil {
		return tok, nil
	}
	return trainTokenizer(ctx, o, sample, log)
}

// writeShards writes tokenizer.json, the token shards and the manifest into dir.
func writeShards(ctx context.Context, o prepareOptions, tok *tokenizer.Tokenizer, dir string, failpoint func(string), log io.Writer) (*shard.Manifest, error) {
	cfg := shard.DefaultPrepareConfig()
	cfg.Sources, cfg.Out, cfg.Encoder = o.sources, dir, tok
	cfg.HeldOutFraction = o.heldOut
	cfg.Filter.MinBytes, cfg.Filter.MaxNonText = o.minBytes, o.maxNonText
	cfg.MaxShardTokens = o.maxShardToks
	start := time.Now()
	cfg.Progress = func(ev shard.ProgressEvent) {
		if ev.Done {
			fmt.Fprintf(log, "prepare: %s: %d documents, %.1f MiB, %d tokens\n", ev.Source, ev.Docs, float64(ev.Bytes)/(1<<20), ev.Tokens)
			failpoint("source-done")
		} else {
			fmt.Fprintf(log, "prepare: %s: %d documents, %.1f MiB, %d tokens (%.0fs)\n", ev.Source, ev.Docs, float64(ev.Bytes)/(1<<20), ev.Tokens, time.Since(start).Seconds())
		}
	}
	tokPath := filepath.Join(dir, worker.TokenizerName)
	if err := tok.Save(tokPath); err != nil {
		return nil, err
	}
	if err := syncPath(tokPath); err != nil {
		return nil, fmt.Errorf("%s: %w", tokPath, err)
	}
	man, err := shard.Prepare(ctx, cfg)
	if err != nil {
		return nil, sourceError(err)
	}
	for _, s := range man.Sources {
		f := s.Filter
		fmt.Fprintf(log, "prepare: %s: kept %d of %d documents (dropped: %d too short, %d non-text, %d duplicates; %d bad lines); %d train / %d held-out tokens\n",
			s.Name, f.Kept.Docs, f.Seen.Docs, f.TooShort.Docs, f.NonText.Docs, f.Duplicate.Docs, s.Read.BadLines, s.TrainTokens, s.HeldOutTokens)
		if q := s.Quality; q != nil {
			fmt.Fprintf(log, "prepare: %s: filters %s dropped %s\n", s.Name, q, qualityCounts(f))
		}
		for _, b := range s.Read.BadLineSamples {
			fmt.Fprintf(log, "prepare: %s: bad line %s\n", s.Name, b)
		}
	}
	return man, nil
}

// sourceError restates a source without usable documents in the terms of the --source flag.
func sourceError(err error) error {
	var e *shard.EmptySourceError
	if errors.As(err, &e) {
		return fmt.Errorf("--source %s (%s): no usable documents: %s", e.Name, e.Path, e.Reasons())
	}
	return err
}

// tokenizerSample holds the documents the tokenizer learns from.
type tokenizerSample struct {
	docs    [][]byte
	bytes   int64
	sources int
	cut     bool // some source held more than its share of the budget
}

// sampleSources reads each source until the documents the dataset's filters keep (as
// they leave them; duplicates dropped) add up to its share of budget bytes, by weight, so
// that the tokenizer never learns from text the dataset drops.
// A source with no usable document fails, with what was rejected and why.
func sampleSources(ctx context.Context, o prepareOptions, budget int64) (*tokenizerSample, error) {
	var total float64
	for _, s := range o.sources {
		total += s.Weight
	}
	limits := shard.Filter{MinBytes: o.minBytes, MaxNonText: o.maxNonText}
	cleaner, quality := shard.NewCleaner(limits), shard.NewQualityFilters(limits)
	smp := &tokenizerSample{sources: len(o.sources)}
	var empty []error
	for _, s := range o.sources {
		read, filt, err := smp.add(ctx, s, max(1, int64(float64(budget)*s.Weight/total)), cleaner, quality)
		if err != nil {
			return nil, fmt.Errorf("--source %s: %w", s.Name, err)
		}
		if filt.Kept.Docs == 0 {
			empty = append(empty, sourceError(&shard.EmptySourceError{Name: s.Name, Path: s.Path, Read: read, Filter: filt, Limits: limits}))
		}
	}
	if len(empty) > 0 {
		return nil, errors.Join(empty...)
	}
	return smp, nil
}

// errSampleFull stops reading a source whose share of the sample is full.
var errSampleFull = errors.New("sample share reached")

// add reads documents of s that the cleaner keeps until they reach share bytes.
func (smp *tokenizerSample) add(ctx context.Context, s shard.SourceSpec, share int64, cleaner *shard.Cleaner, quality *shard.QualityFilters) (shard.ReadReport, shard.FilterReport, error) {
	var got int64
	var filt shard.FilterReport
	read, err := shard.ReadDocuments(ctx, s.Path, shard.ReadOptions{}, func(doc []byte) error {
		v, _ := cleaner.Check(doc)
		n := len(doc)
		if v == shard.Keep && s.Quality.Enabled() {
			v, doc = quality.Check(s.Quality, doc, &filt)
		}
		filt.Add(v, n)
		if v != shard.Keep {
			return nil
		}
		smp.docs = append(smp.docs, doc)
		if got += int64(len(doc)); got >= share {
			return errSampleFull
		}
		return nil
	})
	smp.bytes += got
	if errors.Is(err, errSampleFull) {
		smp.cut, err = true, nil
	}
	return read, filt, err
}

// trainTokenizer trains a BPE vocabulary on the sample. When ctx ends it
// returns at once, leaving the training goroutine to end with the process.
func trainTokenizer(ctx context.Context, o prepareOptions, smp *tokenizerSample, log io.Writer) (*tokenizer.Tokenizer, error) {
	fmt.Fprintf(log, "prepare: training a %d-token tokenizer on %.1f MiB\n", o.vocab, float64(smp.bytes)/(1<<20))
	start := time.Now()
	type result struct {
		tok *tokenizer.Tokenizer
		err error
	}
	done := make(chan result, 1)
	go func() {
		last := time.Now()
		tok, err := tokenizer.TrainDocs(smp.docs, o.vocab, tokenizer.Options{Progress: func(n, total int) {
			if time.Since(last) > 2*time.Second && ctx.Err() == nil {
				fmt.Fprintf(log, "prepare: tokenizer merges %d/%d\n", n, total)
				last = time.Now()
			}
		}})
		done <- result{tok, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if errors.Is(r.err, tokenizer.ErrSmallCorpus) {
		what, fix := "the sources hold", "give a smaller --vocab, or more text"
		if smp.cut {
			what, fix = fmt.Sprintf("the tokenizer sample (--tokenizer-sample-mb %d) holds", o.sampleMB), "give a smaller --vocab or a larger --tokenizer-sample-mb"
		}
		return nil, fmt.Errorf("--vocab %d is more than this text can train: %s %s of usable text in %s from %s (%v); %s",
			o.vocab, what, humanBytes(smp.bytes), plural(len(smp.docs), "document"), plural(smp.sources, "source"), r.err, fix)
	}
	if r.err != nil {
		return nil, r.err
	}
	fmt.Fprintf(log, "prepare: tokenizer trained in %s\n", time.Since(start).Round(time.Millisecond))
	return r.tok, nil
}

// plural is "1 source", "2 sources".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// prepareFailpoint returns the failure point named by HERD_PREPARE_FAILPOINT,
// as POINT or POINT:interrupt. At that point the process kills itself with
// SIGKILL, as a crash or the out-of-memory killer would, or with :interrupt
// sends itself SIGINT, as Ctrl-C would, and waits for ctx to end. The points:
// sampled (the tokenizer sample is read), source-done (the first source's
// shards are written) and before-commit (the dataset is whole in its staging
// directory). Tests use it to check that nothing is lost.
func prepareFailpoint(ctx context.Context) func(point string) {
	spec := os.Getenv("HERD_PREPARE_FAILPOINT")
	if spec == "" {
		return func(string) {}
	}
	name, action, _ := strings.Cut(spec, ":")
	return func(point string) {
		if point != name {
			return
		}
		if action == "interrupt" {
			syscall.Kill(os.Getpid(), syscall.SIGINT)
			<-ctx.Done()
			return
		}
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
}

// qualityCounts says what the quality filters did to a source.
func qualityCounts(f shard.FilterReport) string {
	var parts []string
	for _, c := range []struct {
		n    int64
		what string
	}{
		{f.Generated.Docs, "generated"}, {f.Licence.Docs, "with another licence"}, {f.LongLines.Docs, "with long lines"},
		{f.LowAlnum.Docs, "with few letters and digits"}, {f.LineDuplicates.Docs, "emptied by line dedup"},
		{f.NearDuplicate.Docs, "near-duplicates"}, {f.OtherLanguage.Docs, "in other languages"},
	} {
		if c.n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", c.n, c.what))
		}
	}
	s := "no document"
	if len(parts) > 0 {
		s = strings.Join(parts, ", ") + " (documents)"
	}
	if f.DupLines.Docs > 0 {
		s += fmt.Sprintf("; removed %d repeated lines (%.1f KiB)", f.DupLines.Docs, float64(f.DupLines.Bytes)/1024)
	}
	if len(f.Languages) > 0 {
		langs := make([]string, 0, len(f.Languages))
		for l := range f.Languages {
			langs = append(langs, l)
		}
		slices.SortFunc(langs, func(a, b string) int {
			if d := f.Languages[b] - f.Languages[a]; d != 0 {
				return int(d)
			}
			return strings.Compare(a, b)
		})
		for i, l := range langs {
			langs[i] = fmt.Sprintf("%s %d", l, f.Languages[l])
		}
		s += "; languages found: " + strings.Join(langs, ", ")
	}
	if f.Headers.Docs > 0 {
		s += fmt.Sprintf("; removed the licence header of %d files (%.1f KiB)", f.Headers.Docs, float64(f.Headers.Bytes)/1024)
	}
	return s
}
