package shard

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
)

// EmptySourceError reports a source with no usable document: everything read
// from it was skipped or dropped. It carries the counts of what was rejected
// and why, so the operator can tell a wrong path from a wrong format or
// filter. It unwraps to ErrEmptySource.
type EmptySourceError struct {
	Name   string       // source name
	Path   string       // the path the source was read from
	Read   ReadReport   // what reading found
	Filter FilterReport // what the cleaner decided
	Limits Filter       // the thresholds the cleaner applied
}

// Error returns "shard: source has no documents after cleaning: NAME (PATH): REASONS".
func (e *EmptySourceError) Error() string {
	return fmt.Sprintf("%v: %s (%s): %s", ErrEmptySource, e.Name, e.Path, e.Reasons())
}

// Unwrap returns ErrEmptySource.
func (e *EmptySourceError) Unwrap() error { return ErrEmptySource }

// reasonSamples is how many skipped files or bad lines Reasons names.
const reasonSamples = 3

// Reasons lists what was rejected and why, for example "3 files read, 2
// skipped (a.bin: NUL byte in the first 8000 bytes; b.png: binary extension
// .png), 1 document dropped as too short (< 32 bytes)". Only causes that
// occurred are listed; file names are relative to Path.
func (e *EmptySourceError) Reasons() string {
	r, f := e.Read, e.Filter
	parts := []string{plural(r.Files+r.SkippedFiles, "file") + " read"}
	if r.SkippedFiles > 0 {
		names := make([]string, len(r.Skipped))
		for i, s := range r.Skipped {
			names[i] = e.short(s.File) + ": " + s.Reason
		}
		parts = append(parts, fmt.Sprintf("%d skipped (%s)", r.SkippedFiles, samples(names, r.SkippedFiles)))
	}
	if r.BadLines > 0 {
		lines := make([]string, len(r.BadLineSamples))
		for i, b := range r.BadLineSamples {
			lines[i] = fmt.Sprintf("%s:%d: %s", e.short(b.File), b.Line, b.Reason)
		}
		parts = append(parts, fmt.Sprintf("%s without a document (%s)", plural(r.BadLines, "JSONL line"), samples(lines, r.BadLines)))
	}
	if r.BlankLines > 0 {
		parts = append(parts, plural(r.BlankLines, "blank JSONL line"))
	}
	if n := f.TooShort.Docs; n > 0 {
		parts = append(parts, fmt.Sprintf("%s dropped as too short (< %d bytes)", plural(n, "document"), e.Limits.MinBytes))
	}
	if n := f.NonText.Docs; n > 0 {
		parts = append(parts, fmt.Sprintf("%s dropped as non-text (over %g%% control bytes or invalid UTF-8)", plural(n, "document"), 100*e.Limits.MaxNonText))
	}
	if n := f.Duplicate.Docs; n > 0 {
		parts = append(parts, fmt.Sprintf("%s dropped as duplicates of documents kept before", plural(n, "document")))
	}
	for _, q := range []struct {
		n    int64
		what string
	}{
		{f.Generated.Docs, "as generated code"}, {f.Licence.Docs, "for a licence not on the allow-list"},
		{f.LongLines.Docs, "for a line too long"}, {f.LowAlnum.Docs, "for too few letters and digits"},
		{f.LineDuplicates.Docs, "as made of lines seen before"}, {f.NearDuplicate.Docs, "as near-duplicates of documents kept before"},
		{f.OtherLanguage.Docs, "as written in another language" + countsFound(f.Languages)},
		{f.Perplexity.Docs, "for their perplexity bucket" + countsFound(f.Buckets)},
		{f.LowScore.Docs, "for a classifier score below the threshold"},
	} {
		if q.n > 0 {
			parts = append(parts, fmt.Sprintf("%s dropped %s", plural(q.n, "document"), q.what))
		}
	}
	return strings.Join(parts, ", ")
}

// short names file relative to the source path when it lies inside it.
func (e *EmptySourceError) short(file string) string {
	if rel, err := filepath.Rel(e.Path, file); err == nil && rel != "." && filepath.IsLocal(rel) {
		return filepath.ToSlash(rel)
	}
	return filepath.Base(file)
}

// samples joins the first few of items, of total in all, with "; ".
func samples(items []string, total int64) string {
	shown := items[:min(len(items), reasonSamples)]
	s := strings.Join(shown, "; ")
	if more := total - int64(len(shown)); more > 0 {
		s += fmt.Sprintf("; %d more", more)
	}
	return s
}

// plural is "1 file", "2 files".
func plural(n int64, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// countsFound is " (found: de 3, fr 1)" for what a filter found (languages, buckets), or "".
func countsFound(m map[string]int64) string {
	if len(m) == 0 {
		return ""
	}
	return " (found: " + FormatCounts(m) + ")"
}

// FormatCounts lists counts by name, most first, then by name: "de 3, fr 1".
func FormatCounts(m map[string]int64) string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool {
		a, b := names[i], names[j]
		return m[a] > m[b] || m[a] == m[b] && a < b
	})
	for i, k := range names {
		names[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(names, ", ")
}
