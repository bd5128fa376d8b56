package shard

import (
	"bytes"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Quality is the part of LLaMA's data pipeline (arXiv 2302.13971, section 2.1) a source asks
// for on top of Filter: CCNet's line-level deduplication, near-duplicate documents found by
// MinHash with LSH, and the heuristics the paper applied to GitHub code. A zero Quality
// applies none of them.
type Quality struct {
	// LineDedup drops every line whose normalized form (NormalizeLine) was seen before, in
	// this document or an earlier one of any source that asks for it: the first copy stays.
	LineDedup bool `json:"line_dedup,omitempty"`
	// NearDup drops documents whose word shingles overlap a kept document's by at least a
	// Jaccard threshold.
	NearDup *NearDup `json:"near_dup,omitempty"`
	// Code applies the code heuristics.
	Code *CodeFilter `json:"code,omitempty"`
	// Lang keeps documents in the languages it names.
	Lang *LangFilter `json:"lang,omitempty"`
	// Perplexity keeps documents by their perplexity under a model of reference text.
	Perplexity *PerplexityFilter `json:"perplexity,omitempty"`
	// Classifier keeps documents a classifier scores as like its positive examples.
	Classifier *ClassifierFilter `json:"classifier,omitempty"`
}

// Enabled reports whether q applies any filter.
func (q Quality) Enabled() bool {
	return q.LineDedup || q.NearDup != nil || q.Code != nil || q.Lang != nil || q.Perplexity != nil || q.Classifier != nil
}

// Validate checks the ranges of q's fields.
func (q Quality) Validate() error {
	if q.Lang != nil {
		if err := q.Lang.Validate(); err != nil {
			return err
		}
	}
	if q.Perplexity != nil {
		if err := q.Perplexity.Validate(); err != nil {
			return err
		}
	}
	if q.Classifier != nil {
		if err := q.Classifier.Validate(); err != nil {
			return err
		}
	}
	if q.NearDup != nil {
		if err := q.NearDup.Validate(); err != nil {
			return err
		}
	}
	if q.Code != nil {
		return q.Code.Validate()
	}
	return nil
}

// String names the filters q applies, as --filter takes them ("lines,near-dup,code").
func (q Quality) String() string {
	var f []string
	if q.LineDedup {
		f = append(f, FilterLines)
	}
	if q.NearDup != nil {
		f = append(f, FilterNearDup)
	}
	if q.Code != nil {
		f = append(f, FilterCode)
	}
	if q.Lang != nil {
		f = append(f, "lang "+strings.Join(q.Lang.Langs, "+"))
	}
	if q.Perplexity != nil {
		f = append(f, "perplexity "+strings.Join(q.Perplexity.Keep, "+"))
	}
	if q.Classifier != nil {
		f = append(f, fmt.Sprintf("classifier >= %g", q.Classifier.Threshold))
	}
	return strings.Join(f, ",")
}

// The names of the quality filters in ParseFilters.
const (
	FilterLines   = "lines"
	FilterNearDup = "near-dup"
	FilterCode    = "code"
)

// ParseFilters sets the filters a comma-separated list names on q, with nd and code as the
// settings of near-dup and code.
func ParseFilters(list string, nd NearDup, code CodeFilter) (Quality, error) {
	var q Quality
	for _, f := range strings.Split(list, ",") {
		switch strings.TrimSpace(f) {
		case FilterLines:
			q.LineDedup = true
		case FilterNearDup:
			q.NearDup = &nd
		case FilterCode:
			q.Code = &code
		default:
			return Quality{}, fmt.Errorf("unknown filter %q (the filters are %s, %s and %s)", f, FilterLines, FilterNearDup, FilterCode)
		}
	}
	return q, q.Validate()
}

// NearDup configures near-duplicate detection.
type NearDup struct {
	// Threshold is the Jaccard similarity of word shingle sets at and above which a document
	// is a near-duplicate of one kept before.
	Threshold float64 `json:"threshold"`
	// Shingle is the number of consecutive words in a shingle.
	Shingle int `json:"shingle"`
}

// DefaultNearDup drops documents sharing 80% of their 5-word shingles with a kept one.
func DefaultNearDup() NearDup { return NearDup{Threshold: 0.8, Shingle: 5} }

// Validate checks the ranges of n's fields.
func (n NearDup) Validate() error {
	if !(n.Threshold >= 0.3 && n.Threshold <= 1) {
		return fmt.Errorf("%w: near-dup threshold is %v, want 0.3..1 (below 0.3 the LSH bands cannot reach it)", ErrConfig, n.Threshold)
	}
	if n.Shingle < 1 || n.Shingle > 32 {
		return fmt.Errorf("%w: near-dup shingle is %d words, want 1..32", ErrConfig, n.Shingle)
	}
	return nil
}

// CodeFilter holds the heuristics LLaMA applied to GitHub files.
type CodeFilter struct {
	// Licences lists the SPDX identifiers a file may declare (in an SPDX-License-Identifier
	// line or a licence header detectLicence recognizes). A file that declares none is kept:
	// its licence is its repository's.
	Licences []string `json:"licences"`
	// MaxLineBytes drops files with a longer line (minified or generated data).
	MaxLineBytes int `json:"max_line_bytes"`
	// MinAlnum drops files whose share of letters and digits among their characters is lower.
	MinAlnum float64 `json:"min_alnum"`
}

// DefaultCodeFilter keeps the permissive licences the paper names (Apache, BSD, MIT), lines
// up to 1000 bytes, and files with at least 25% letters and digits.
func DefaultCodeFilter() CodeFilter {
	return CodeFilter{Licences: []string{"Apache-2.0", "BSD-2-Clause", "BSD-3-Clause", "MIT"}, MaxLineBytes: 1000, MinAlnum: 0.25}
}

// Validate checks the ranges of c's fields.
func (c CodeFilter) Validate() error {
	switch {
	case c.MaxLineBytes < 1:
		return fmt.Errorf("%w: code max line is %d bytes, want >= 1", ErrConfig, c.MaxLineBytes)
	case !(c.MinAlnum >= 0 && c.MinAlnum <= 1):
		return fmt.Errorf("%w: code min alnum share is %v, want 0..1", ErrConfig, c.MinAlnum)
	}
	for _, l := range c.Licences {
		if !slices.Contains(KnownLicences, l) {
			return fmt.Errorf("%w: licence %q is not one the code filter recognizes (%s)", ErrConfig, l, strings.Join(KnownLicences, ", "))
		}
	}
	return nil
}

// KnownLicences are the SPDX identifiers detectLicence recognizes in a file's header.
var KnownLicences = []string{"AGPL-3.0", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause", "GPL-2.0", "GPL-3.0", "LGPL", "MIT", "MPL-2.0"}

// licenceTexts maps phrases of licence headers, in the form licenceWords gives them, to their
// SPDX identifiers, the more specific phrase first.
var licenceTexts = []struct{ phrase, id string }{
	{"gnu affero general public license", "AGPL-3.0"},
	{"gnu lesser general public license", "LGPL"},
	{"gnu library general public license", "LGPL"},
	{"gnu general public license", "GPL"},
	{"licensed under the apache license", "Apache-2.0"},
	{"apache license version 2 0", "Apache-2.0"},
	{"mozilla public license", "MPL-2.0"},
	{"permission is hereby granted free of charge", "MIT"},
	{"redistribution and use in source and binary forms", "BSD"},
}

// headerWindow is how much of a file's start licence and generated-file markers are looked for in.
const headerWindow = 4096

var (
	spdxRE      = regexp.MustCompile(`SPDX-License-Identifier:\s*([A-Za-z0-9.+-]+)`)
	generatedRE = regexp.MustCompile(`(?i)(code generated .* do not edit|@generated|\bauto-?generated\b|generated by .* do not edit)`)
	gplVersion  = regexp.MustCompile(`version ([23])`)
)

// licenceWords is text as licence phrases are matched: lower-case letters and digits, every
// other run of characters (spaces, comment markers, punctuation) one space.
func licenceWords(b []byte) string {
	var sb strings.Builder
	space := false
	for _, r := range string(b) {
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			if space && sb.Len() > 0 {
				sb.WriteByte(' ')
			}
			space = false
			sb.WriteRune(unicode.ToLower(r))
			continue
		}
		space = true
	}
	return sb.String()
}

// detectLicence returns the SPDX identifier a file's header declares, or "".
func detectLicence(doc []byte) string {
	head := doc[:min(len(doc), headerWindow)]
	return licenceIn(head, bytes.ToLower(head))
}

// licenceIn is detectLicence on a header and its lower-case form.
func licenceIn(head, lower []byte) string {
	if !bytes.Contains(lower, []byte("licen")) && !bytes.Contains(lower, []byte("permission")) &&
		!bytes.Contains(lower, []byte("redistribution")) {
		return "" // every phrase below has one of these
	}
	if m := spdxRE.FindSubmatch(head); m != nil {
		id := strings.TrimSuffix(strings.TrimSuffix(string(m[1]), "-only"), "-or-later")
		id = strings.TrimSuffix(id, "+")
		if strings.HasPrefix(id, "LGPL") {
			return "LGPL"
		}
		return id
	}
	low := licenceWords(head)
	for _, t := range licenceTexts {
		i := strings.Index(low, t.phrase)
		if i < 0 {
			continue
		}
		switch t.id {
		case "GPL":
			if m := gplVersion.FindStringSubmatch(low[i:min(len(low), i+300)]); m != nil {
				return "GPL-" + m[1] + ".0"
			}
			return "GPL-2.0"
		case "BSD":
			if strings.Contains(low, "neither the name") {
				return "BSD-3-Clause"
			}
			return "BSD-2-Clause"
		}
		return t.id
	}
	return ""
}

// commentLine reports whether line (without its newline) is a comment line or a blank one in
// the common comment syntaxes.
func commentLine(line []byte) bool {
	t := bytes.TrimSpace(line)
	if len(t) == 0 {
		return true
	}
	for _, p := range []string{"//", "#", "/*", "*", "--", ";", "%", "<!--", "-->", "\"\"\"", "'''", "rem ", "REM "} {
		if bytes.HasPrefix(t, []byte(p)) {
			return true
		}
	}
	return false
}

// headerEnd returns the length of doc's leading comment block when it is boilerplate (it
// names a copyright or a licence), 0 otherwise. A "#!" line before it stays.
func headerEnd(doc []byte) (start, end int) {
	if bytes.HasPrefix(doc, []byte("#!")) {
		if i := bytes.IndexByte(doc, '\n'); i >= 0 {
			start = i + 1
		} else {
			return 0, 0
		}
	}
	end = start
	for end < len(doc) {
		nl := bytes.IndexByte(doc[end:], '\n')
		line := doc[end:]
		if nl >= 0 {
			line = doc[end : end+nl]
		}
		if !commentLine(line) {
			break
		}
		if nl < 0 {
			end = len(doc)
			break
		}
		end += nl + 1
	}
	low := bytes.ToLower(doc[start:end])
	if !bytes.Contains(low, []byte("copyright")) && !bytes.Contains(low, []byte("licen")) {
		return 0, 0
	}
	return start, end
}

// check applies c to doc: the verdict, and the document with its boilerplate header
// removed when kept.
func (c *CodeFilter) check(doc []byte) (Verdict, []byte) {
	head := doc[:min(len(doc), headerWindow)]
	lower := bytes.ToLower(head)
	if bytes.Contains(lower, []byte("generated")) && generatedRE.Match(head) {
		return Generated, nil
	}
	if id := licenceIn(head, lower); id != "" && !slices.Contains(c.Licences, id) {
		return Licence, nil
	}
	longest, line := 0, 0
	alnum, chars := 0, 0
	for i := 0; i < len(doc); {
		if b := doc[i]; b < utf8.RuneSelf { // ASCII
			switch {
			case b == '\n':
				longest, line = max(longest, line), 0
				i++
				continue
			case b == ' ' || b == '\t' || b == '\r' || b == '\v' || b == '\f':
			case b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9':
				chars++
				alnum++
			default:
				chars++
			}
			line++
			i++
			continue
		}
		r, w := utf8.DecodeRune(doc[i:])
		line += w
		if !unicode.IsSpace(r) {
			chars++
			if unicode.IsLetter(r) || unicode.IsDigit(r) {
				alnum++
			}
		}
		i += w
	}
	longest = max(longest, line)
	if longest > c.MaxLineBytes {
		return LongLines, nil
	}
	if chars == 0 || float64(alnum)/float64(chars) < c.MinAlnum {
		return LowAlnum, nil
	}
	if s, e := headerEnd(doc); e > s {
		out := make([]byte, 0, len(doc)-(e-s))
		out = append(append(out, doc[:s]...), doc[e:]...)
		return Keep, out
	}
	return Keep, doc
}

// NormalizeLine is a line as CCNet compares lines for deduplication: lower case, every digit
// 0, punctuation and symbols removed, runs of white space one space, trimmed.
func NormalizeLine(line []byte) []byte {
	out := make([]byte, 0, len(line))
	space := false
	for i := 0; i < len(line); {
		r, w := rune(line[i]), 1
		if r >= utf8.RuneSelf {
			r, w = utf8.DecodeRune(line[i:])
		}
		i += w
		switch {
		case unicode.IsSpace(r):
			space = len(out) > 0
			continue
		case unicode.IsDigit(r):
			r = '0'
		case unicode.IsPunct(r) || unicode.IsSymbol(r) || r == utf8.RuneError:
			continue
		default:
			r = unicode.ToLower(r)
		}
		if space {
			out = append(out, ' ')
			space = false
		}
		out = utf8.AppendRune(out, r)
	}
	return out
}

// lineDeduper remembers the normalized lines it has seen, by a 64-bit hash: a line is dropped
// wrongly only on a hash collision, with probability about n*n/2^65 among n distinct lines
// (3e-8 for a million, 3e-4 for a hundred million). It holds 8 bytes per distinct line plus
// the map's overhead in memory, or, with spill, reads the verdicts a first pass wrote to disk
// (linespill.go).
type lineDeduper struct {
	seen  map[uint64]struct{}
	spill *lineBits
	err   error // the first error reading spill
}

func newLineDeduper() *lineDeduper { return &lineDeduper{seen: map[uint64]struct{}{}} }

// apply returns doc without the lines seen before, and the number and bytes of lines dropped;
// hashes are its lines' hashes from lineHashes. Lines that normalize to nothing (blank, or
// only punctuation) are kept and not remembered.
func (d *lineDeduper) apply(doc []byte, hashes []uint64) (out []byte, lines int64, dropped int64) {
	out = make([]byte, 0, len(doc))
	k := 0
	forEachLine(doc, func(line []byte) {
		h := hashes[k]
		k++
		if h == 0 || d.first(h) {
			out = append(out, line...)
			return
		}
		lines++
		dropped += int64(len(line))
	})
	return out, lines, dropped
}

// first reports whether a line of hash h is the first of its hash, and remembers it.
func (d *lineDeduper) first(h uint64) bool {
	if d.spill != nil {
		ok, err := d.spill.next(h)
		if err != nil && d.err == nil {
			d.err = err
		}
		return ok || err != nil
	}
	if _, dup := d.seen[h]; dup {
		return false
	}
	d.seen[h] = struct{}{}
	return true
}

// hash64 is FNV-1a over b, finished with a 64-bit mixer: stable across runs and machines.
func hash64(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return mix64(h)
}

// QualityFilters applies the sources' Quality filters across one preparation: the lines and
// documents earlier sources kept count for later ones. It is not safe for concurrent use.
type QualityFilters struct {
	min   int // Filter.MinBytes: a document line dedup shortens below it is dropped
	lines *lineDeduper
	near  map[NearDup]*nearDupIndex
}

// NewQualityFilters returns filters that drop what line dedup leaves shorter than f.MinBytes.
func NewQualityFilters(f Filter) *QualityFilters {
	return &QualityFilters{min: f.MinBytes, near: map[NearDup]*nearDupIndex{}}
}

// Check applies q to doc, a document the Cleaner kept: code heuristics, line dedup, language,
// perplexity, classifier, then near-duplicates. It returns the verdict and the document to keep, and counts the lines,
// headers and languages it saw in r.
func (qf *QualityFilters) Check(q Quality, doc []byte, r *FilterReport) (Verdict, []byte) {
	v, doc := qf.early(q, doc, r)
	if v != Keep {
		return v, nil
	}
	var a lateAnalysis
	x := qf.index(q)
	a.analyze(q, x, doc)
	return late(q, x, a, r), doc
}

// early applies the filters whose verdict depends on the documents before this one, or that
// change the document: the code heuristics (which remove licence headers) and line dedup.
func (qf *QualityFilters) early(q Quality, doc []byte, r *FilterReport) (Verdict, []byte) {
	return qf.earlyDecide(q, analyzeEarly(q, doc), r)
}

// earlyAnalysis is the costly part of the early filters, which depends on the document
// alone and so runs on any goroutine (analyzeEarly), ahead of the decision, which runs in
// reading order (earlyDecide): the code heuristics' verdict and the document without its
// licence header, and the hash of each of its lines.
type earlyAnalysis struct {
	code    Verdict
	doc     []byte   // after the code heuristics
	headers int      // bytes of licence header removed
	lines   []uint64 // line dedup: each line's hash in order (0: a line that is not compared)
}

// analyzeEarly does the early filters' work on doc that needs no other document.
func analyzeEarly(q Quality, doc []byte) earlyAnalysis {
	a := earlyAnalysis{code: Keep, doc: doc}
	if q.Code != nil {
		v, out := q.Code.check(doc)
		if v != Keep {
			a.code, a.doc = v, nil
			return a
		}
		a.headers, a.doc = len(doc)-len(out), out
	}
	if q.LineDedup {
		lineHashes(a.doc, func(h uint64, _ []byte) { a.lines = append(a.lines, h) })
	}
	return a
}

// earlyDecide decides on a document from its early analysis, in reading order.
func (qf *QualityFilters) earlyDecide(q Quality, a earlyAnalysis, r *FilterReport) (Verdict, []byte) {
	if a.code != Keep {
		return a.code, nil
	}
	if a.headers > 0 {
		r.Headers.add(a.headers)
	}
	doc := a.doc
	if q.LineDedup {
		if qf.lines == nil {
			qf.lines = newLineDeduper()
		}
		out, lines, bytes := qf.lines.apply(doc, a.lines)
		r.DupLines.Docs += lines
		r.DupLines.Bytes += bytes
		if len(out) < qf.min {
			return LineDuplicates, nil
		}
		doc = out
	}
	return Keep, doc
}

// err returns the first error of the filters' disk state (line dedup's spilled verdicts).
func (qf *QualityFilters) err() error {
	if qf.lines != nil {
		return qf.lines.err
	}
	return nil
}

// index returns the near-duplicate index of q's settings (nil without near-dup).
func (qf *QualityFilters) index(q Quality) *nearDupIndex {
	if q.NearDup == nil {
		return nil
	}
	x := qf.near[*q.NearDup]
	if x == nil {
		x = newNearDupIndex(*q.NearDup)
		qf.near[*q.NearDup] = x
	}
	return x
}

// lateAnalysis is what the language and near-duplicate filters need to know of a document:
// the costly part of their work, which depends on the document alone and so runs on any
// goroutine (analyze), ahead of the verdict, which runs in reading order (late).
type lateAnalysis struct {
	lang   string   // the language found ("" none)
	langOK bool     // it is one the source asks for
	bpb    float64  // bits per byte under the perplexity filter's model
	score  float64  // the classifier's score
	sig    []uint32 // the MinHash signature (nil: no words, or no near-dup)
}

// analyze fills a from doc; x is q's near-duplicate index (nil without near-dup), whose
// hash functions it only reads.
func (a *lateAnalysis) analyze(q Quality, x *nearDupIndex, doc []byte) {
	if q.Lang != nil {
		a.langOK, a.lang = q.Lang.check(doc)
		if !a.langOK {
			return // dropped: nothing else to know
		}
	}
	if q.Perplexity != nil {
		a.bpb = q.Perplexity.Model.BitsPerByte(doc)
	}
	var words [][]byte // normalized once for the classifier and near-dup
	if q.Classifier != nil || x != nil {
		words = docWords(doc)
	}
	if q.Classifier != nil {
		a.score = q.Classifier.Model.scoreWords(words)
	}
	if x != nil {
		a.sig = x.signatureOf(words)
	}
}

// dropped reports whether late will drop the document for its language, perplexity bucket
// or classifier score, which its analysis alone decides (near-duplicates depend on the
// documents kept before): the encoders need not encode it.
func (a *lateAnalysis) dropped(q Quality) bool {
	return q.Lang != nil && !a.langOK ||
		q.Perplexity != nil && !slices.Contains(q.Perplexity.Keep, q.Perplexity.bucket(a.bpb)) ||
		q.Classifier != nil && a.score < q.Classifier.Threshold
}

// late decides on a document from its analysis, counting the language found in r: a
// document in another language goes; one that is not a near-duplicate of a document kept
// before (in x, q's index) is indexed and kept. Calls on one index must be in reading order,
// on one goroutine at a time.
func late(q Quality, x *nearDupIndex, a lateAnalysis, r *FilterReport) Verdict {
	if q.Lang != nil {
		lang := a.lang
		if lang == "" {
			lang = "none"
		}
		if r.Languages == nil {
			r.Languages = map[string]int64{}
		}
		r.Languages[lang]++
		if !a.langOK {
			return OtherLanguage
		}
	}
	if f := q.Perplexity; f != nil {
		b := f.bucket(a.bpb)
		if r.Buckets == nil {
			r.Buckets = map[string]int64{}
		}
		r.Buckets[b]++
		if !slices.Contains(f.Keep, b) {
			return PerplexityBucket
		}
	}
	if q.Classifier != nil && a.score < q.Classifier.Threshold {
		return LowScore
	}
	if x != nil && x.checkSignature(a.sig) {
		return NearDuplicate
	}
	return Keep
}
