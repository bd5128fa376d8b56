package main

import (
	_ "embed"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/herd-llm/herd/internal/yamlpos"
	"github.com/herd-llm/herd/shard"
)

// llamaRecipe is LLaMA's pre-training mixture (arXiv 2302.13971, table 1) as a recipe file
// with its paths left for the user to fill in.
//
//go:embed recipes/llama.yaml
var llamaRecipe []byte

// recipe is a mixture of sources with their filters, read from a file (herd prepare --recipe).
type recipe struct {
	Name    string         `yaml:"name"`
	Tokens  float64        `yaml:"tokens"` // the training budget the summary plans epochs for
	Sources []recipeSource `yaml:"sources"`
}

// recipeSource is one source of a recipe: where its text is, its weight in the mixture, its
// filters, and for comparison the share and epochs the paper gives it.
type recipeSource struct {
	Name        string   `yaml:"name"`
	Path        string   `yaml:"path"`
	Weight      float64  `yaml:"weight"`
	Filters     []string `yaml:"filters"` // lines, near-dup, code, perplexity, classifier
	Lang        []string `yaml:"lang"`
	NearDup     float64  `yaml:"near_dup_threshold"` // 0: --near-dup-threshold
	Reference   string   `yaml:"reference"`          // the perplexity filter's reference text
	Positive    string   `yaml:"positive"`           // the classifier's examples
	Negative    string   `yaml:"negative"`
	PaperShare  float64  `yaml:"paper_share"`
	PaperEpochs float64  `yaml:"paper_epochs"`
}

// parseRecipe decodes a recipe strictly (unknown keys refused with their line) and checks
// every source, naming the file, the line and the field at fault.
func parseRecipe(path string, raw []byte) (*recipe, error) {
	var r recipe
	root, err := yamlpos.DecodeStrict(raw, &r)
	if err != nil {
		return nil, fmt.Errorf("--recipe %s: %v", path, err)
	}
	line := func(i int, key string) int { return yamlpos.Line(root, "sources", strconv.Itoa(i), key) }
	if len(r.Sources) == 0 {
		return nil, fmt.Errorf("--recipe %s: sources: none", path)
	}
	if !(r.Tokens >= 0) {
		return nil, fmt.Errorf("--recipe %s: tokens: %v, must be >= 0", path, r.Tokens)
	}
	for i, s := range r.Sources {
		bad := func(key, format string, a ...any) error {
			return fmt.Errorf("--recipe %s: line %d: sources[%d] (%s).%s: %s", path, line(i, key), i, s.Name, key, fmt.Sprintf(format, a...))
		}
		switch {
		case s.Name == "":
			return nil, bad("name", "missing")
		case s.Path == "":
			return nil, bad("path", "empty: fill in where this source's text is (a file, a directory, .gz or .jsonl)")
		case !(s.Weight > 0):
			return nil, bad("weight", "%v, must be > 0", s.Weight)
		case !(s.NearDup == 0 || s.NearDup >= 0.3 && s.NearDup <= 1):
			return nil, bad("near_dup_threshold", "%v, must be in 0.3..1 (0: --near-dup-threshold)", s.NearDup)
		}
		if _, err := os.Stat(s.Path); err != nil {
			return nil, bad("path", "%v", err)
		}
		for _, f := range s.Filters {
			switch f {
			case shard.FilterLines, shard.FilterNearDup, shard.FilterCode:
			case "perplexity":
				if s.Reference == "" {
					return nil, bad("reference", "the perplexity filter needs a reference: the path of text like the one to keep (the paper used Wikipedia)")
				}
			case "classifier":
				if s.Positive == "" || s.Negative == "" {
					return nil, bad("positive", "the classifier needs positive and negative examples (the paper: pages Wikipedia cites, and random pages)")
				}
			default:
				return nil, bad("filters", "unknown filter %q (lines, near-dup, code, perplexity, classifier)", f)
			}
		}
		for _, p := range []struct{ key, path string }{{"reference", s.Reference}, {"positive", s.Positive}, {"negative", s.Negative}} {
			if p.path == "" {
				continue
			}
			if _, err := os.Stat(p.path); err != nil {
				return nil, bad(p.key, "%v", err)
			}
		}
	}
	return &r, nil
}

// apply turns the recipe into o's sources with their filters, as the flags would.
func (r *recipe) apply(o *prepareOptions, nd shard.NearDup, code shard.CodeFilter, langConf float64, cuts, keep string) error {
	var filters, langs, refs, pos, neg []string
	for _, s := range r.Sources {
		spec, err := shard.ParseSourceSpec(fmt.Sprintf("%s=%s:%g", s.Name, s.Path, s.Weight))
		if err != nil {
			return fmt.Errorf("--recipe: %w", err)
		}
		o.sources = append(o.sources, spec)
		var fs []string
		for _, f := range s.Filters {
			switch f {
			case "perplexity":
				refs = append(refs, s.Name+"="+s.Reference)
			case "classifier":
				pos, neg = append(pos, s.Name+"="+s.Positive), append(neg, s.Name+"="+s.Negative)
			default:
				fs = append(fs, f)
			}
		}
		if len(fs) > 0 {
			filters = append(filters, s.Name+"="+strings.Join(fs, ","))
		}
		if len(s.Lang) > 0 {
			langs = append(langs, s.Name+"="+strings.Join(s.Lang, ","))
		}
	}
	if err := applyFilters(o.sources, filters, nd, code); err != nil {
		return fmt.Errorf("--recipe: %w", err)
	}
	for i, s := range r.Sources {
		if q := &o.sources[i].Quality; s.NearDup > 0 && q.NearDup != nil {
			q.NearDup = &shard.NearDup{Threshold: s.NearDup, Shingle: q.NearDup.Shingle}
		}
	}
	if err := applyLangs(o.sources, langs, langConf); err != nil {
		return fmt.Errorf("--recipe: %w", err)
	}
	if err := o.ppl.parse(o.sources, refs, cuts, keep); err != nil {
		return fmt.Errorf("--recipe: %w", err)
	}
	return o.ppl.parseClassifier(o.sources, pos, neg)
}

// summary prints, for the recipe's token budget, the epochs each source will be trained
// for (its share of the budget over its tokens) beside the paper's share and epochs.
func (r *recipe) summary(w io.Writer, m *shard.Manifest) {
	var total float64
	for _, s := range r.Sources {
		total += s.Weight
	}
	fmt.Fprintf(w, "mixture %s for %.3g training tokens:\n", r.Name, r.Tokens)
	fmt.Fprintf(w, "  %-16s %8s %14s %12s   %11s %12s\n", "source", "share", "train tokens", "epochs", "paper share", "paper epochs")
	for _, s := range r.Sources {
		i := slices.IndexFunc(m.Sources, func(ms shard.SourceManifest) bool { return ms.Name == s.Name })
		if i < 0 {
			continue
		}
		tok := m.Sources[i].TrainTokens
		share := s.Weight / total
		epochs := share * r.Tokens / float64(tok)
		paper := "-"
		if s.PaperShare > 0 {
			paper = fmt.Sprintf("%10.1f%% %12.2f", 100*s.PaperShare, s.PaperEpochs)
		}
		fmt.Fprintf(w, "  %-16s %7.1f%% %14d %12.2f   %s\n", s.Name, 100*share, tok, epochs, paper)
	}
}
