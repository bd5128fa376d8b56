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
	"strconv"
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
	ppl          pplOptions
	lineDedupMB  int
	nearDupMB    int
	splitDigits  bool
	report       *prepReport // collects what --report shows; nil without --report
}

// pplOptions configures the perplexity filters (--reference and the --ppl flags) and the
// classifier filters (--positive, --negative and the --classifier flags).
type pplOptions struct {
	refs   map[string]string // source name: reference path
	refMB  int
	cuts   []float64 // the head and tail quantiles
	keep   []string
	sample int

	pos, neg  map[string]string // source name: positive and negative examples
	threshold float64
	clsDocs   int
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
	fs.StringVar(&o.tokenizer, "tokenizer", "", "reuse this tokenizer.json instead of training one: herd's own, or LLaMA's SentencePiece-style one (byte_fallback BPE; documents are then written as <s> text </s>, as its post-processor asks)")
	fs.Float64Var(&o.heldOut, "held-out", 0.01, "share of each source's documents kept out of training for validation (0..0.5)")
	fs.IntVar(&o.minBytes, "min-bytes", 32, "drop documents shorter than this many bytes (>= 1)")
	fs.Float64Var(&o.maxNonText, "max-nontext", 0.1, "drop documents whose share of control bytes and invalid UTF-8 exceeds this (0..1)")
	fs.BoolVar(&o.splitDigits, "split-digits", false, "train a tokenizer that makes every digit a token of its own, as LLaMA's does (tokenizer.json: a Digits pre-tokenizer with individual_digits before ByteLevel)")
	fs.IntVar(&o.sampleMB, "tokenizer-sample-mb", 16, "MiB of text, split across sources by weight, to train the tokenizer on")
	fs.Int64Var(&o.maxShardToks, "max-shard-tokens", 1<<28, "most tokens in one shard file")
	var filters multiFlag
	fs.Var(&filters, "filter", "LLaMA's quality filters for a source, as NAME=FILTER[,FILTER...] (repeatable): "+
		"lines (CCNet line dedup: a line whose normalized form was seen before, in any source that asks for it, is removed), "+
		"near-dup (documents whose word shingles overlap a kept one's by --near-dup-threshold, found by MinHash with LSH), "+
		"code (files marked generated, declaring a licence not in --code-licences, with a line over --code-max-line bytes or "+
		"under --code-min-alnum letters and digits are dropped; leading copyright and licence comment blocks are removed)")
	fs.IntVar(&o.lineDedupMB, "line-dedup-mb", 0, "lines: the most MiB line dedup may hold in memory; a corpus whose distinct lines need more is deduplicated in two passes "+
		"with the line hashes on disk beside --out (0: in memory, one pass, about 48 bytes per distinct line)")
	fs.IntVar(&o.nearDupMB, "near-dup-mb", 0, "near-dup: the most MiB near-duplicate detection may hold in memory; with it, a first pass runs the filters before near-dup over every source "+
		"and writes signatures and band keys beside --out, decided bucket by bucket, then the sources are read again (same verdicts; 0: an index in memory, about 3 KiB of resident memory per kept document)")
	var langs multiFlag
	fs.Var(&langs, "lang", "keep only the documents of a source written in the given languages, as NAME=CODE[,CODE...] with ISO 639-1 codes (repeatable; for example web=en,de): "+
		"language identification with lingua-go over the 75 languages it knows, on each document's first KiB, after the other filters")
	langConf := fs.Float64("lang-confidence", shard.DefaultLangConfidence, "lang: the least confidence with which a document must be in one of its source's languages (0..1)")
	var refs multiFlag
	fs.Var(&refs, "reference", "CCNet's perplexity filter for a source, as NAME=PATH (repeatable; for example web=wiki/): a 5-gram Kneser-Ney model over bytes, "+
		"trained on the first --reference-mb MiB of PATH (text like the one to keep), scores each document in bits per byte; the source's documents "+
		"fall into head, middle and tail at the --ppl-cuts quantiles of its first --ppl-sample documents' scores, and the --ppl-keep buckets are kept")
	fs.IntVar(&o.ppl.refMB, "reference-mb", 16, "perplexity: MiB of each reference to train its model on (1..4096; the model takes about 100 bytes per distinct 5-gram)")
	cuts := fs.String("ppl-cuts", "0.33,0.66", "perplexity: the quantiles of a source's scores that separate head from middle and middle from tail (CCNet's tertiles)")
	keep := fs.String("ppl-keep", "head,middle", "perplexity: the buckets kept, from head, middle and tail")
	fs.IntVar(&o.ppl.sample, "ppl-sample", 1000, "perplexity: how many of a source's first documents set its bucket thresholds (>= 10)")
	var pos, neg multiFlag
	fs.Var(&pos, "positive", "LLaMA's reference-page classifier for a source, as NAME=PATH (repeatable): documents like those under PATH (for example pages that Wikipedia cites), "+
		"against the --negative examples of the same source; a linear classifier over hashed word unigrams and bigrams keeps the documents it scores at or above --classifier-threshold")
	fs.Var(&neg, "negative", "the classifier's negative examples for a source, as NAME=PATH (repeatable; for example random pages of the crawl)")
	fs.Float64Var(&o.ppl.threshold, "classifier-threshold", 0.5, "classifier: the least score (probability of being like the positive examples) kept (0..1)")
	fs.IntVar(&o.ppl.clsDocs, "classifier-docs", 10000, "classifier: the most documents of each class read to train it (>= 10; a tenth is held out to measure its accuracy)")
	reportPath := fs.String("report", "", "write an HTML page of what each filter dropped (counts, examples, histograms of perplexity and classifier scores) to this file once the dataset is written")
	recipePath := fs.String("recipe", "", "prepare the sources, weights and filters of a recipe file instead of --source and the filter flags; "+
		"\"--recipe llama\" prints LLaMA's mixture as a recipe to fill in with paths. After preparing, it prints the epochs each source will be trained "+
		"for the recipe's token budget beside the paper's")
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
	if *recipePath == "llama" {
		stdout.Write(llamaRecipe)
		fmt.Fprintln(stderr, "herd prepare: this is LLaMA's mixture as a recipe: save it, fill in every path, and run herd prepare --recipe FILE --out DIR")
		return nil
	}
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
	if err := o.ppl.parse(o.sources, refs, *cuts, *keep); err != nil {
		return err
	}
	if err := o.ppl.parseClassifier(o.sources, pos, neg); err != nil {
		return err
	}
	var rec *recipe
	if *recipePath != "" {
		if len(srcs)+len(filters)+len(langs)+len(refs)+len(pos)+len(neg) > 0 || o.builtin {
			return fmt.Errorf("--recipe gives the sources and their filters: it excludes --source, --builtin, --filter, --lang, --reference, --positive and --negative")
		}
		raw, err := os.ReadFile(*recipePath)
		if err != nil {
			return fmt.Errorf("--recipe: %w", err)
		}
		if rec, err = parseRecipe(*recipePath, raw); err != nil {
			return err
		}
		if err := rec.apply(&o, nd, code, *langConf, *cuts, *keep); err != nil {
			return err
		}
	}
	if *reportPath != "" {
		if fi, err := os.Stat(filepath.Dir(*reportPath)); err != nil || !fi.IsDir() {
			return fmt.Errorf("--report %s: its directory does not exist", *reportPath)
		}
		if fi, err := os.Stat(*reportPath); err == nil && fi.IsDir() {
			return fmt.Errorf("--report %s: is a directory", *reportPath)
		}
		o.report = newPrepReport()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	man, err := prepareDataset(ctx, o, stderr)
	if err != nil {
		return err
	}
	if rec != nil {
		rec.summary(stderr, man)
	}
	if o.report != nil {
		if err := o.report.write(*reportPath, man); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "prepare: report written to %s\n", *reportPath)
	}
	return nil
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
	return forSources("--filter", "FILTER[,FILTER...], for example web=lines,near-dup", sources, values, func(s *shard.SourceSpec, list string) error {
		q, err := shard.ParseFilters(list, nd, code)
		s.Quality.LineDedup, s.Quality.NearDup, s.Quality.Code = q.LineDedup, q.NearDup, q.Code
		return err
	})
}

// applyLangs sets the language filter each --lang value names on its source.
func applyLangs(sources []shard.SourceSpec, values []string, conf float64) error {
	return forSources("--lang", "CODE[,CODE...], for example web=en,de", sources, values, func(s *shard.SourceSpec, codes string) error {
		f, err := shard.ParseLangFilter(codes, conf)
		if err != nil {
			return fmt.Errorf("--lang-confidence %v: %w", conf, err)
		}
		s.Quality.Lang = f
		return nil
	})
}

// parse reads the perplexity flags and checks them and the references' paths.
func (p *pplOptions) parse(sources []shard.SourceSpec, refs []string, cuts, keep string) error {
	if len(refs) == 0 {
		return nil
	}
	if p.refMB < 1 || p.refMB > 4096 {
		return fmt.Errorf("--reference-mb = %d, must be in 1..4096", p.refMB)
	}
	if p.sample < 10 {
		return fmt.Errorf("--ppl-sample = %d, must be >= 10", p.sample)
	}
	p.cuts = nil
	for _, c := range strings.Split(cuts, ",") {
		q, err := strconv.ParseFloat(strings.TrimSpace(c), 64)
		if err != nil || !(q > 0 && q < 1) {
			return fmt.Errorf("--ppl-cuts %q: want two quantiles in (0, 1), head's first, for example 0.33,0.66", cuts)
		}
		p.cuts = append(p.cuts, q)
	}
	if len(p.cuts) != 2 || p.cuts[0] > p.cuts[1] {
		return fmt.Errorf("--ppl-cuts %q: want two quantiles in (0, 1), head's first, for example 0.33,0.66", cuts)
	}
	var err error
	if p.keep, err = shard.ParseBuckets(keep); err != nil {
		return fmt.Errorf("--ppl-keep %q: %w", keep, err)
	}
	p.refs = map[string]string{}
	return forSources("--reference", "PATH, for example web=wiki/", sources, refs, func(s *shard.SourceSpec, path string) error {
		if _, err := os.Stat(path); err != nil {
			return err
		}
		p.refs[s.Name] = path
		return nil
	})
}

// parseClassifier reads --positive and --negative: every source with one needs the other.
func (p *pplOptions) parseClassifier(sources []shard.SourceSpec, pos, neg []string) error {
	if len(pos) == 0 && len(neg) == 0 {
		return nil
	}
	if !(p.threshold >= 0 && p.threshold <= 1) {
		return fmt.Errorf("--classifier-threshold = %v, must be in 0..1", p.threshold)
	}
	if p.clsDocs < 10 {
		return fmt.Errorf("--classifier-docs = %d, must be >= 10", p.clsDocs)
	}
	p.pos, p.neg = map[string]string{}, map[string]string{}
	for _, f := range []struct {
		flag   string
		values []string
		m      map[string]string
	}{{"--positive", pos, p.pos}, {"--negative", neg, p.neg}} {
		err := forSources(f.flag, "PATH, for example web=refs/", sources, f.values, func(s *shard.SourceSpec, path string) error {
			if _, err := os.Stat(path); err != nil {
				return err
			}
			f.m[s.Name] = path
			return nil
		})
		if err != nil {
			return err
		}
	}
	for name := range p.pos {
		if _, ok := p.neg[name]; !ok {
			return fmt.Errorf("--positive %s=%s: source %s has no --negative examples to tell them from", name, p.pos[name], name)
		}
	}
	for name := range p.neg {
		if _, ok := p.pos[name]; !ok {
			return fmt.Errorf("--negative %s=%s: source %s has no --positive examples", name, p.neg[name], name)
		}
	}
	return nil
}

// train builds each reference's model and sets the perplexity filter of its source, with
// thresholds from the source's first documents, then trains each source's classifier.
func (p *pplOptions) train(ctx context.Context, sources []shard.SourceSpec, limits shard.Filter, log io.Writer) error {
	for i := range sources {
		s := &sources[i]
		path, ok := p.refs[s.Name]
		if !ok {
			continue
		}
		start := time.Now()
		m, err := shard.TrainReference(ctx, path, int64(p.refMB)<<20)
		if err != nil {
			return fmt.Errorf("--reference %s=%s: %w", s.Name, path, err)
		}
		scores, err := shard.SampleBitsPerByte(ctx, s.Path, m, p.sample, limits)
		if err != nil {
			return fmt.Errorf("--source %s: %w", s.Name, err)
		}
		if len(scores) == 0 {
			return fmt.Errorf("--source %s (%s): no document to set the perplexity thresholds with", s.Name, s.Path)
		}
		s.Quality.Perplexity = &shard.PerplexityFilter{Reference: path, ReferenceBytes: m.Bytes, Model: m, Keep: p.keep,
			HeadMax: shard.Quantile(scores, p.cuts[0]), TailMin: shard.Quantile(scores, p.cuts[1])}
		fmt.Fprintf(log, "prepare: %s: perplexity model of %s (%.1f MiB) in %.1fs; on %d of its documents, head <= %.3f < middle <= %.3f < tail (bits per byte)\n",
			s.Name, path, float64(m.Bytes)/(1<<20), time.Since(start).Seconds(), len(scores), s.Quality.Perplexity.HeadMax, s.Quality.Perplexity.TailMin)
	}
	for i := range sources {
		s := &sources[i]
		pos, ok := p.pos[s.Name]
		if !ok {
			continue
		}
		f, err := shard.TrainClassifierFilter(ctx, pos, p.neg[s.Name], p.clsDocs, p.threshold, limits)
		if err != nil {
			return fmt.Errorf("--positive %s=%s, --negative %s=%s: %w", s.Name, pos, s.Name, p.neg[s.Name], err)
		}
		s.Quality.Classifier = f
		fmt.Fprintf(log, "prepare: %s: classifier trained on %d positive and %d negative documents; held-out accuracy %.3f on %d at threshold %g\n",
			s.Name, f.TrainPositive, f.TrainNegative, f.Accuracy, f.HeldOut, f.Threshold)
	}
	return nil
}

// forSources hands each NAME=VALUE of a per-source flag to apply with the source it names.
// Every value must name a --source, and a source at most once.
func forSources(flag, want string, sources []shard.SourceSpec, values []string, apply func(s *shard.SourceSpec, value string) error) error {
	given := map[string]bool{}
	for _, v := range values {
		name, val, ok := strings.Cut(v, "=")
		if !ok || val == "" {
			return fmt.Errorf("%s %q: want NAME=%s", flag, v, want)
		}
		i := slices.IndexFunc(sources, func(s shard.SourceSpec) bool { return s.Name == name })
		if i < 0 {
			return fmt.Errorf("%s %s: no --source is named %q", flag, v, name)
		}
		if given[name] {
			return fmt.Errorf("%s %s: source %q is named twice; give it one %s", flag, v, name, flag)
		}
		given[name] = true
		if err := apply(&sources[i], val); err != nil {
			return fmt.Errorf("%s %s: %w", flag, v, err)
		}
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
	case o.splitDigits && (o.tokenizer != "" || o.builtin):
		return fmt.Errorf("--split-digits is for a tokenizer herd prepare trains: not with --tokenizer (whose file says whether it splits digits) or --builtin")
	case o.lineDedupMB < 0:
		return fmt.Errorf("--line-dedup-mb = %d, must be >= 0", o.lineDedupMB)
	case o.nearDupMB < 0:
		return fmt.Errorf("--near-dup-mb = %d, must be >= 0", o.nearDupMB)
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
	if err := o.ppl.train(ctx, o.sources, shard.Filter{MinBytes: o.minBytes, MaxNonText: o.maxNonText}, log); err != nil {
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
		kind := "byte-level BPE"
		if tok.SentencePiece() {
			kind = "SentencePiece-style BPE with byte fallback"
		}
		frame := "</s> after each document"
		if _, ok := tok.DocumentStart(); ok {
			frame = "<s> before and </s> after each document"
		}
		fmt.Fprintf(log, "prepare: tokenizer %s: %s, %d tokens; %s\n", o.tokenizer, kind, tok.VocabSize(), frame)
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
	cfg.LineDedupMemory = int64(o.lineDedupMB) << 20
	cfg.NearDupMemory = int64(o.nearDupMB) << 20
	cfg.NearDupPlanned = func(nd shard.NearDup, st shard.NearDupPlanned) {
		fmt.Fprintf(log, "prepare: near-dup (threshold %g, shingle %d), first pass: %d documents compared in %s of at most %d band entries (%.1f MiB); largest group sharing a key %d; %d similar pairs; %d near-duplicates\n",
			nd.Threshold, nd.Shingle, st.Docs, plural(st.Buckets, "bucket"), st.MaxEntries, float64(st.MaxEntries*16)/(1<<20), st.MaxGroup, st.Edges, st.Dropped)
	}
	if o.report != nil {
		cfg.OnDocument = o.report.observe
	}
	cfg.LineDedupPlanned = func(lines int64, buckets int, maxSet int64) {
		fmt.Fprintf(log, "prepare: line dedup, first pass: %d lines to compare, in %s of at most %d distinct lines (%.1f MiB)\n",
			lines, plural(buckets, "bucket"), maxSet, float64(maxSet*48)/(1<<20))
	}
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
	if o.nearDupMB > 0 && slices.ContainsFunc(o.sources, func(s shard.SourceSpec) bool { return s.Quality.NearDup != nil }) {
		fmt.Fprintf(log, "prepare: near-dup within %d MiB: a first pass runs the filters over every source and writes signatures beside the dataset\n", o.nearDupMB)
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
		tok, err := tokenizer.TrainDocs(smp.docs, o.vocab, tokenizer.Options{SplitDigits: o.splitDigits, Progress: func(n, total int) {
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
		{f.Perplexity.Docs, "in perplexity buckets not kept"}, {f.LowScore.Docs, "scored below the classifier's threshold"},
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
	s += countsFound("languages found", f.Languages)
	s += countsFound("perplexity buckets", f.Buckets)
	if f.Headers.Docs > 0 {
		s += fmt.Sprintf("; removed the licence header of %d files (%.1f KiB)", f.Headers.Docs, float64(f.Headers.Bytes)/1024)
	}
	return s
}

// countsFound is "; LABEL: a 3, b 1" for counts by name, most first ("" when there are none).
func countsFound(label string, m map[string]int64) string {
	if len(m) == 0 {
		return ""
	}
	return "; " + label + ": " + shard.FormatCounts(m)
}
