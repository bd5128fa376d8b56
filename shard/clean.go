package shard

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"unicode/utf8"
)

// Filter holds the quality thresholds applied to every document.
type Filter struct {
	// MinBytes drops documents shorter than this many bytes.
	MinBytes int `json:"min_bytes"`
	// MaxNonText drops documents whose share of non-text bytes (control
	// bytes other than \t \n \r, DEL, and bytes of invalid UTF-8) is above it.
	MaxNonText float64 `json:"max_non_text"`
}

// DefaultFilter drops documents under 32 bytes or with more than 10% non-text bytes.
func DefaultFilter() Filter { return Filter{MinBytes: 32, MaxNonText: 0.1} }

// Validate checks the ranges of f's fields.
func (f Filter) Validate() error {
	if f.MinBytes < 1 {
		return fmt.Errorf("%w: Filter.MinBytes is %d, want >= 1", ErrConfig, f.MinBytes)
	}
	if !(f.MaxNonText >= 0 && f.MaxNonText <= 1) {
		return fmt.Errorf("%w: Filter.MaxNonText is %v, want 0..1", ErrConfig, f.MaxNonText)
	}
	return nil
}

// Verdict is what the cleaner decided about one document.
type Verdict int

const (
	Keep      Verdict = iota // the document is used
	TooShort                 // fewer than Filter.MinBytes bytes
	NonText                  // too many non-text bytes
	Duplicate                // the same bytes were kept before
	// The verdicts of the quality filters a source asks for (Quality).
	Generated        // code: marked as generated ("Code generated ... DO NOT EDIT", "@generated")
	Licence          // code: declares a licence not on the allow-list
	LongLines        // code: a line longer than CodeFilter.MaxLineBytes
	LowAlnum         // code: too few letters and digits
	LineDuplicates   // line dedup left fewer than Filter.MinBytes bytes
	NearDuplicate    // near-dup: shares most shingles with a document kept before
	OtherLanguage    // lang: not in the languages the source asks for
	PerplexityBucket // perplexity: in a bucket the source does not keep
	LowScore         // classifier: scored below the threshold
)

func (v Verdict) String() string {
	switch v {
	case Keep:
		return "keep"
	case TooShort:
		return "too short"
	case NonText:
		return "non-text"
	case Duplicate:
		return "duplicate"
	case Generated:
		return "generated"
	case Licence:
		return "licence"
	case LongLines:
		return "long lines"
	case LowAlnum:
		return "low alphanumeric share"
	case LineDuplicates:
		return "duplicate lines"
	case NearDuplicate:
		return "near-duplicate"
	case OtherLanguage:
		return "other language"
	case PerplexityBucket:
		return "perplexity bucket"
	case LowScore:
		return "low classifier score"
	}
	return fmt.Sprintf("Verdict(%d)", int(v))
}

// Count is a number of documents and their total size.
type Count struct {
	Docs  int64 `json:"docs"`
	Bytes int64 `json:"bytes"`
}

func (c *Count) add(n int) {
	c.Docs++
	c.Bytes += int64(n)
}

// FilterReport counts the cleaner's verdicts for one source, each document with the size it
// was read with: Seen equals the sum of Kept and the drops. The quality filters' counts are
// absent from the manifest when zero. Kept documents that lost lines or a header are counted
// in DupLines and Headers as well.
type FilterReport struct {
	Seen      Count `json:"seen"`
	Kept      Count `json:"kept"`
	TooShort  Count `json:"too_short"`
	NonText   Count `json:"non_text"`
	Duplicate Count `json:"duplicate"`

	Generated      Count `json:"generated,omitzero"`
	Licence        Count `json:"licence,omitzero"`
	LongLines      Count `json:"long_lines,omitzero"`
	LowAlnum       Count `json:"low_alnum,omitzero"`
	LineDuplicates Count `json:"line_duplicates,omitzero"`
	NearDuplicate  Count `json:"near_duplicate,omitzero"`
	OtherLanguage  Count `json:"other_language,omitzero"`
	Perplexity     Count `json:"perplexity,omitzero"`
	LowScore       Count `json:"classifier,omitzero"`
	// Buckets counts the documents the perplexity filter scored by their bucket, kept or not.
	Buckets map[string]int64 `json:"perplexity_buckets,omitempty"`
	// Languages counts the documents the language filter saw by the language it found
	// (ISO 639-1; "none" when it found none), kept or not.
	Languages map[string]int64 `json:"languages,omitempty"`
	// DupLines counts the lines line dedup removed (Docs is lines here) and their bytes,
	// from kept documents and from those it emptied.
	DupLines Count `json:"dup_lines,omitzero"`
	// Headers counts the kept code files whose boilerplate header (a leading comment block
	// naming a copyright or licence) was removed, and the bytes removed.
	Headers Count `json:"headers,omitzero"`
}

// merge adds o's counts to r's.
func (r *FilterReport) merge(o FilterReport) {
	for _, f := range []struct{ dst, src *Count }{
		{&r.Seen, &o.Seen}, {&r.Kept, &o.Kept}, {&r.TooShort, &o.TooShort}, {&r.NonText, &o.NonText},
		{&r.Duplicate, &o.Duplicate}, {&r.Generated, &o.Generated}, {&r.Licence, &o.Licence},
		{&r.LongLines, &o.LongLines}, {&r.LowAlnum, &o.LowAlnum}, {&r.LineDuplicates, &o.LineDuplicates},
		{&r.NearDuplicate, &o.NearDuplicate}, {&r.OtherLanguage, &o.OtherLanguage}, {&r.DupLines, &o.DupLines},
		{&r.Headers, &o.Headers}, {&r.Perplexity, &o.Perplexity}, {&r.LowScore, &o.LowScore},
	} {
		f.dst.Docs += f.src.Docs
		f.dst.Bytes += f.src.Bytes
	}
	for _, m := range []struct {
		dst *map[string]int64
		src map[string]int64
	}{{&r.Languages, o.Languages}, {&r.Buckets, o.Buckets}} {
		for k, n := range m.src {
			if *m.dst == nil {
				*m.dst = map[string]int64{}
			}
			(*m.dst)[k] += n
		}
	}
}

// Dropped returns the documents dropped for any reason.
func (r *FilterReport) Dropped() Count {
	var c Count
	for _, d := range []Count{r.TooShort, r.NonText, r.Duplicate, r.Generated, r.Licence, r.LongLines, r.LowAlnum, r.LineDuplicates, r.NearDuplicate, r.OtherLanguage, r.Perplexity, r.LowScore} {
		c.Docs += d.Docs
		c.Bytes += d.Bytes
	}
	return c
}

// Add counts a document of n bytes with verdict v.
func (r *FilterReport) Add(v Verdict, n int) {
	r.Seen.add(n)
	switch v {
	case Keep:
		r.Kept.add(n)
	case TooShort:
		r.TooShort.add(n)
	case NonText:
		r.NonText.add(n)
	case Duplicate:
		r.Duplicate.add(n)
	case Generated:
		r.Generated.add(n)
	case Licence:
		r.Licence.add(n)
	case LongLines:
		r.LongLines.add(n)
	case LowAlnum:
		r.LowAlnum.add(n)
	case LineDuplicates:
		r.LineDuplicates.add(n)
	case NearDuplicate:
		r.NearDuplicate.add(n)
	case OtherLanguage:
		r.OtherLanguage.add(n)
	case PerplexityBucket:
		r.Perplexity.add(n)
	case LowScore:
		r.LowScore.add(n)
	}
}

// DocHash is the SHA-256 of a document's bytes.
type DocHash [sha256.Size]byte

// HeldOutKey is the 64-bit number that decides whether a document is held out.
func (h DocHash) HeldOutKey() uint64 { return binary.LittleEndian.Uint64(h[16:]) }

// Cleaner applies the quality filters, then exact deduplication across
// everything it has kept: the first copy of a document wins. Keys are the
// first 128 bits of SHA-256, so a false duplicate needs a 128-bit collision.
// A Cleaner is not safe for concurrent use.
type Cleaner struct {
	f    Filter
	seen map[[16]byte]struct{}
}

// NewCleaner returns a cleaner applying f.
func NewCleaner(f Filter) *Cleaner {
	return &Cleaner{f: f, seen: map[[16]byte]struct{}{}}
}

// Check decides about doc and, when it is kept, remembers it.
// Filters apply in this order: length, non-text share, duplicate.
func (c *Cleaner) Check(doc []byte) (Verdict, DocHash) {
	if len(doc) < c.f.MinBytes {
		return TooShort, DocHash{}
	}
	if NonTextShare(doc) > c.f.MaxNonText {
		return NonText, DocHash{}
	}
	h := DocHash(sha256.Sum256(doc))
	key := [16]byte(h[:16])
	if _, dup := c.seen[key]; dup {
		return Duplicate, h
	}
	c.seen[key] = struct{}{}
	return Keep, h
}

// NonTextShare is the fraction of doc's bytes that are not text: control
// bytes other than tab, newline and carriage return, DEL, and each byte of
// an invalid UTF-8 sequence. It is 0 for an empty document.
func NonTextShare(doc []byte) float64 {
	if len(doc) == 0 {
		return 0
	}
	bad := 0
	for i := 0; i < len(doc); {
		c := doc[i]
		if c < utf8.RuneSelf {
			if c < 0x20 && c != '\t' && c != '\n' && c != '\r' || c == 0x7f {
				bad++
			}
			i++
			continue
		}
		r, n := utf8.DecodeRune(doc[i:])
		if r == utf8.RuneError && n == 1 {
			bad++
		}
		i += n
	}
	return float64(bad) / float64(len(doc))
}

// heldOutThreshold maps a fraction in [0, 1) to the HeldOutKey bound below
// which a document is held out.
func heldOutThreshold(frac float64) uint64 {
	if frac <= 0 {
		return 0
	}
	return uint64(math.Min(frac, 0.5) * (1 << 64))
}
