package main

import (
	"cmp"
	"fmt"
	"html/template"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/herd-llm/herd/shard"
)

// reportExamples is how many dropped documents the report shows per source and reason.
const reportExamples = 3

// reportExcerpt is how much of an example the report shows, in bytes.
const reportExcerpt = 400

// reportScores bounds the scores kept per source and filter for the histograms: past it,
// every other score is kept (the histogram's shape stays, its memory bounded).
const reportScores = 1 << 20

// prepReport collects, while herd prepare runs, what its --report page shows besides the
// manifest's counts: examples of what each filter dropped and the scores of the perplexity
// and classifier filters.
type prepReport struct {
	mu      sync.Mutex
	sources map[string]*sourceReport
}

type sourceReport struct {
	examples map[string][]string // verdict: excerpts
	bpb      scoreSample
	score    scoreSample
}

// scoreSample keeps scores, halving itself when full.
type scoreSample struct {
	vals []float64
	skip int // keep one score in skip
	seen int
}

func (s *scoreSample) add(v float64) {
	s.seen++
	if s.skip > 1 && s.seen%s.skip != 0 {
		return
	}
	s.vals = append(s.vals, v)
	if len(s.vals) >= reportScores {
		half := s.vals[:0]
		for i := 0; i < len(s.vals); i += 2 {
			half = append(half, s.vals[i])
		}
		s.vals, s.skip = half, max(2, 2*s.skip)
	}
}

func newPrepReport() *prepReport { return &prepReport{sources: map[string]*sourceReport{}} }

// observe is shard.PrepareConfig.OnDocument.
func (r *prepReport) observe(v shard.DocumentVerdict) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.sources[v.Source]
	if s == nil {
		s = &sourceReport{examples: map[string][]string{}}
		r.sources[v.Source] = s
	}
	if v.BitsPerByte != nil {
		s.bpb.add(*v.BitsPerByte)
	}
	if v.Score != nil {
		s.score.add(*v.Score)
	}
	if v.Verdict != shard.Keep {
		k := v.Verdict.String()
		if v.Verdict == shard.OtherLanguage && v.Lang != "" {
			k += " (" + v.Lang + ")"
		}
		if ex := s.examples[v.Verdict.String()]; len(ex) < reportExamples {
			s.examples[v.Verdict.String()] = append(ex, excerpt(v.Doc, k))
		}
	}
}

// excerpt is the start of doc, cut at a character, marked with the reason.
func excerpt(doc []byte, reason string) string {
	cut := min(len(doc), reportExcerpt)
	for cut > 0 && cut < len(doc) && !utf8.RuneStart(doc[cut]) {
		cut--
	}
	s := strings.ToValidUTF8(string(doc[:cut]), "\uFFFD")
	if cut < len(doc) {
		s += fmt.Sprintf(" … (%d bytes)", len(doc))
	}
	if strings.Contains(reason, "(") {
		s = "[" + reason + "] " + s
	}
	return s
}

// reportRow is one line of a source's table of verdicts.
type reportRow struct {
	Reason     string
	Docs       int64
	Bytes      string
	Share      string
	Examples   []string
	KeptOrSeen bool
}

// reportHist is a histogram drawn as SVG bars, with the thresholds as lines.
type reportHist struct {
	Title  string
	N      int
	Bars   []reportBar
	Lines  []reportLine
	Labels []reportLabel
	Width  int
	Height int
}

type reportBar struct{ X, Y, W, H float64 }
type reportLine struct {
	X     float64
	Label string
}
type reportLabel struct {
	X    float64
	Text string
}

type reportSource struct {
	Name    string
	Filters string
	Rows    []reportRow
	Extra   []string
	Hists   []reportHist
}

// histogram bins vals into 40 bars over their range, with a line at each threshold.
func histogram(title string, vals []float64, thresholds map[string]float64) reportHist {
	const w, h, bins = 640.0, 160.0, 40
	hist := reportHist{Title: title, N: len(vals), Width: w, Height: h + 20}
	if len(vals) == 0 {
		return hist
	}
	lo, hi := slices.Min(vals), slices.Max(vals)
	for _, t := range thresholds {
		lo, hi = math.Min(lo, t), math.Max(hi, t)
	}
	if hi == lo {
		hi = lo + 1
	}
	counts := make([]int, bins)
	for _, v := range vals {
		counts[min(bins-1, int((v-lo)/(hi-lo)*bins))]++
	}
	top := slices.Max(counts)
	for i, c := range counts {
		bh := h * float64(c) / float64(top)
		hist.Bars = append(hist.Bars, reportBar{X: w * float64(i) / bins, Y: h - bh, W: w/bins - 1, H: bh})
	}
	x := func(v float64) float64 { return w * (v - lo) / (hi - lo) }
	for name, t := range thresholds {
		hist.Lines = append(hist.Lines, reportLine{X: x(t), Label: fmt.Sprintf("%s %.3g", name, t)})
	}
	slices.SortFunc(hist.Lines, func(a, b reportLine) int { return cmp.Compare(a.X, b.X) })
	hist.Labels = []reportLabel{{0, fmt.Sprintf("%.3g", lo)}, {w - 40, fmt.Sprintf("%.3g", hi)}}
	return hist
}

// write renders the report of a prepared dataset into path (a temporary file renamed into
// place, so a reader never sees half a page).
func (r *prepReport) write(path string, m *shard.Manifest) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var srcs []reportSource
	for _, sm := range m.Sources {
		f := sm.Filter
		rs := reportSource{Name: sm.Name, Filters: "none"}
		if sm.Quality != nil {
			rs.Filters = sm.Quality.String()
		}
		sr := r.sources[sm.Name]
		if sr == nil {
			sr = &sourceReport{examples: map[string][]string{}}
		}
		share := func(c shard.Count) string {
			if f.Seen.Docs == 0 {
				return "-"
			}
			return fmt.Sprintf("%.1f%%", 100*float64(c.Docs)/float64(f.Seen.Docs))
		}
		rs.Rows = append(rs.Rows, reportRow{Reason: "read", Docs: f.Seen.Docs, Bytes: mib(f.Seen.Bytes), Share: "100%", KeptOrSeen: true},
			reportRow{Reason: "kept", Docs: f.Kept.Docs, Bytes: mib(f.Kept.Bytes), Share: share(f.Kept), KeptOrSeen: true})
		for _, d := range []struct {
			v shard.Verdict
			c shard.Count
		}{
			{shard.TooShort, f.TooShort}, {shard.NonText, f.NonText}, {shard.Duplicate, f.Duplicate}, {shard.Generated, f.Generated},
			{shard.Licence, f.Licence}, {shard.LongLines, f.LongLines}, {shard.LowAlnum, f.LowAlnum}, {shard.LineDuplicates, f.LineDuplicates},
			{shard.OtherLanguage, f.OtherLanguage}, {shard.PerplexityBucket, f.Perplexity}, {shard.LowScore, f.LowScore}, {shard.NearDuplicate, f.NearDuplicate},
		} {
			if d.c.Docs > 0 {
				rs.Rows = append(rs.Rows, reportRow{Reason: "dropped: " + d.v.String(), Docs: d.c.Docs, Bytes: mib(d.c.Bytes), Share: share(d.c),
					Examples: sr.examples[d.v.String()]})
			}
		}
		if f.DupLines.Docs > 0 {
			rs.Extra = append(rs.Extra, fmt.Sprintf("line dedup removed %d repeated lines (%s) from the documents it kept", f.DupLines.Docs, mib(f.DupLines.Bytes)))
		}
		if f.Headers.Docs > 0 {
			rs.Extra = append(rs.Extra, fmt.Sprintf("the code filter removed the licence header of %d files (%s)", f.Headers.Docs, mib(f.Headers.Bytes)))
		}
		if len(f.Languages) > 0 {
			rs.Extra = append(rs.Extra, "languages found: "+shard.FormatCounts(f.Languages))
		}
		if q := sm.Quality; q != nil && q.Perplexity != nil {
			rs.Hists = append(rs.Hists, histogram(fmt.Sprintf("perplexity, bits per byte under the model of %s (kept: %s)", q.Perplexity.Reference, strings.Join(q.Perplexity.Keep, ", ")),
				sr.bpb.vals, map[string]float64{"head ≤": q.Perplexity.HeadMax, "tail >": q.Perplexity.TailMin}))
		}
		if q := sm.Quality; q != nil && q.Classifier != nil {
			rs.Extra = append(rs.Extra, fmt.Sprintf("classifier: trained on %d positive (%s) and %d negative (%s) documents; held-out accuracy %.3f on %d",
				q.Classifier.TrainPositive, q.Classifier.Positive, q.Classifier.TrainNegative, q.Classifier.Negative, q.Classifier.Accuracy, q.Classifier.HeldOut))
			rs.Hists = append(rs.Hists, histogram("classifier score (probability of being like the positive examples)",
				sr.score.vals, map[string]float64{"threshold": q.Classifier.Threshold}))
		}
		srcs = append(srcs, rs)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("--report: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := reportPage.Execute(tmp, struct {
		Sources []reportSource
	}{srcs}); err != nil {
		tmp.Close()
		return fmt.Errorf("--report %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("--report %s: %w", path, err)
	}
	return os.Rename(tmp.Name(), path)
}

func mib(b int64) string { return fmt.Sprintf("%.2f MiB", float64(b)/(1<<20)) }

var reportPage = template.Must(template.New("report").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>herd prepare: what the filters did</title>
<style>
body { font-family: sans-serif; margin: 2em; max-width: 60em; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border-bottom: 1px solid #ccc; padding: 0.3em 0.8em; text-align: left; vertical-align: top; }
td.n { text-align: right; }
pre { white-space: pre-wrap; background: #f4f4f4; padding: 0.4em; margin: 0.2em 0; font-size: 85%; max-height: 10em; overflow: auto; }
svg rect { fill: #4a7ab5; } svg line { stroke: #c33; stroke-width: 2; } svg text { font-size: 11px; }
</style></head><body>
<h1>herd prepare: what the filters did</h1>
{{range .Sources}}<section class="source">
<h2>source {{.Name}}</h2>
<p>quality filters: {{.Filters}}</p>
<table><tr><th>documents</th><th>count</th><th>size</th><th>share</th><th>examples</th></tr>
{{range .Rows}}<tr><td>{{.Reason}}</td><td class="n">{{.Docs}}</td><td class="n">{{.Bytes}}</td><td class="n">{{.Share}}</td><td>{{range .Examples}}<pre>{{.}}</pre>{{end}}</td></tr>
{{end}}</table>
{{range .Extra}}<p>{{.}}</p>
{{end}}{{range .Hists}}<h3>{{.Title}}</h3><p>{{.N}} documents</p>
<svg width="{{.Width}}" height="{{.Height}}" role="img">{{range .Bars}}<rect x="{{printf "%.1f" .X}}" y="{{printf "%.1f" .Y}}" width="{{printf "%.1f" .W}}" height="{{printf "%.1f" .H}}"/>{{end}}{{range .Lines}}<line x1="{{printf "%.1f" .X}}" x2="{{printf "%.1f" .X}}" y1="0" y2="160"/><text x="{{printf "%.1f" .X}}" y="12">{{.Label}}</text>{{end}}{{range .Labels}}<text x="{{printf "%.1f" .X}}" y="176">{{.Text}}</text>{{end}}</svg>
{{end}}</section>
{{end}}</body></html>
`))
