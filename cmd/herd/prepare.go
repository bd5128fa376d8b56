package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
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
	fs.StringVar(&o.out, "out", "", "dataset directory to create (required)")
	fs.IntVar(&o.vocab, "vocab", 4096, "vocabulary size of the byte-level BPE tokenizer to train")
	fs.StringVar(&o.tokenizer, "tokenizer", "", "reuse this tokenizer.json instead of training one")
	fs.Float64Var(&o.heldOut, "held-out", 0.01, "share of each source's documents kept out of training for validation (0..0.5)")
	fs.IntVar(&o.minBytes, "min-bytes", 32, "drop documents shorter than this many bytes")
	fs.Float64Var(&o.maxNonText, "max-nontext", 0.1, "drop documents whose share of control bytes and invalid UTF-8 exceeds this")
	fs.IntVar(&o.sampleMB, "tokenizer-sample-mb", 16, "MiB of text, split across sources by weight, to train the tokenizer on")
	fs.Int64Var(&o.maxShardToks, "max-shard-tokens", 1<<28, "most tokens in one shard file")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: herd prepare (--source NAME=PATH:WEIGHT ... | --builtin) --out DIR [flags]")
		fmt.Fprintln(stderr, "\nReads the sources, removes exact duplicates, filters short and binary-looking documents,")
		fmt.Fprintln(stderr, "trains (or reuses) a tokenizer, and writes token shards, tokenizer.json and manifest.json.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var err error
	if o.sources, err = shard.ParseSourceSpecs(srcs); err != nil {
		return err
	}
	switch {
	case o.out == "":
		return fmt.Errorf("--out: a dataset directory is required")
	case o.builtin && len(o.sources) > 0:
		return fmt.Errorf("--builtin and --source exclude each other")
	case !o.builtin && len(o.sources) == 0:
		return fmt.Errorf("no data: give --source NAME=PATH:WEIGHT (repeatable) or --builtin")
	}
	_, err = prepareDataset(context.Background(), o, stderr)
	return err
}

// prepareDataset builds a dataset in o.out and returns its manifest.
func prepareDataset(ctx context.Context, o prepareOptions, log io.Writer) (*shard.Manifest, error) {
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return nil, err
	}
	if o.builtin {
		fmt.Fprintln(log, "prepare: copying the built-in corpus from the Go toolchain")
		var err error
		if o.sources, err = materializeBuiltin(filepath.Join(o.out, "corpus")); err != nil {
			return nil, err
		}
	}
	var tok *tokenizer.Tokenizer
	var err error
	if o.tokenizer != "" {
		if tok, err = tokenizer.Load(o.tokenizer); err != nil {
			return nil, fmt.Errorf("--tokenizer: %w", err)
		}
	} else if tok, err = trainTokenizer(ctx, o, log); err != nil {
		return nil, err
	}
	cfg := shard.DefaultPrepareConfig()
	cfg.Sources, cfg.Out, cfg.Encoder = o.sources, o.out, tok
	cfg.HeldOutFraction = o.heldOut
	cfg.Filter.MinBytes, cfg.Filter.MaxNonText = o.minBytes, o.maxNonText
	cfg.MaxShardTokens = o.maxShardToks
	start := time.Now()
	cfg.Progress = func(ev shard.ProgressEvent) {
		if ev.Done {
			fmt.Fprintf(log, "prepare: %s: %d documents, %.1f MiB, %d tokens\n", ev.Source, ev.Docs, float64(ev.Bytes)/(1<<20), ev.Tokens)
		} else {
			fmt.Fprintf(log, "prepare: %s: %d documents, %.1f MiB, %d tokens (%.0fs)\n", ev.Source, ev.Docs, float64(ev.Bytes)/(1<<20), ev.Tokens, time.Since(start).Seconds())
		}
	}
	if err := tok.Save(filepath.Join(o.out, worker.TokenizerName)); err != nil {
		return nil, err
	}
	man, err := shard.Prepare(ctx, cfg)
	if err != nil {
		return nil, err
	}
	for _, s := range man.Sources {
		f := s.Filter
		fmt.Fprintf(log, "prepare: %s: kept %d of %d documents (dropped: %d too short, %d non-text, %d duplicates; %d bad lines); %d train / %d held-out tokens\n",
			s.Name, f.Kept.Docs, f.Seen.Docs, f.TooShort.Docs, f.NonText.Docs, f.Duplicate.Docs, s.Read.BadLines, s.TrainTokens, s.HeldOutTokens)
		for _, b := range s.Read.BadLineSamples {
			fmt.Fprintf(log, "prepare: %s: bad line %s\n", s.Name, b)
		}
	}
	fmt.Fprintf(log, "prepare: dataset written to %s in %s\n", o.out, time.Since(start).Round(time.Millisecond))
	return man, nil
}

// trainTokenizer trains a BPE vocabulary on a sample of the sources, each contributing in
// proportion to its weight.
func trainTokenizer(ctx context.Context, o prepareOptions, log io.Writer) (*tokenizer.Tokenizer, error) {
	var total float64
	for _, s := range o.sources {
		total += s.Weight
	}
	var docs [][]byte
	var sampled int64
	errFull := errors.New("budget reached")
	for _, s := range o.sources {
		budget := int64(float64(o.sampleMB<<20) * s.Weight / total)
		var got int64
		_, err := shard.ReadDocuments(ctx, s.Path, shard.ReadOptions{}, func(doc []byte) error {
			docs = append(docs, doc)
			got += int64(len(doc))
			if got >= budget {
				return errFull
			}
			return nil
		})
		if err != nil && !errors.Is(err, errFull) {
			return nil, fmt.Errorf("--source %s: %w", s.Name, err)
		}
		sampled += got
	}
	fmt.Fprintf(log, "prepare: training a %d-token tokenizer on %.1f MiB\n", o.vocab, float64(sampled)/(1<<20))
	start := time.Now()
	last := time.Now()
	tok, err := tokenizer.TrainDocs(docs, o.vocab, tokenizer.Options{Progress: func(done, total int) {
		if time.Since(last) > 2*time.Second {
			fmt.Fprintf(log, "prepare: tokenizer merges %d/%d\n", done, total)
			last = time.Now()
		}
	}})
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "prepare: tokenizer trained in %s\n", time.Since(start).Round(time.Millisecond))
	return tok, nil
}
