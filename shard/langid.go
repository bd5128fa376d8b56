package shard

import (
	"fmt"
	"slices"
	"strings"
)

// LangFilter keeps documents written in one of Langs: language identification as CCNet does
// it (fastText there; lingua-go here, which measured better than whatlanggo, see docs/data.md).
type LangFilter struct {
	// Langs are ISO 639-1 codes ("en", "de").
	Langs []string `json:"langs"`
	// MinConfidence is the least confidence, among the 75 languages lingua knows, with which
	// a document must be in one of Langs.
	MinConfidence float64 `json:"min_confidence"`
}

// DefaultLangConfidence is CCNet's threshold.
const DefaultLangConfidence = 0.5

// ParseLangFilter parses a comma-separated list of ISO 639-1 codes.
func ParseLangFilter(codes string, minConfidence float64) (*LangFilter, error) {
	if !langIDBuilt {
		return nil, fmt.Errorf("%w: language identification is not in this build of herd (built with -tags nolangid, which leaves lingua-go's 120 MB of language models out)", ErrConfig)
	}
	if !(minConfidence >= 0 && minConfidence <= 1) {
		return nil, fmt.Errorf("%w: language confidence is %v, want 0..1", ErrConfig, minConfidence)
	}
	f := &LangFilter{MinConfidence: minConfidence}
	for _, c := range strings.Split(codes, ",") {
		c = strings.ToLower(strings.TrimSpace(c))
		if !slices.Contains(KnownLangs(), c) {
			return nil, fmt.Errorf("%w: unknown language code %q (ISO 639-1, one of %s)", ErrConfig, c, strings.Join(KnownLangs(), " "))
		}
		if !slices.Contains(f.Langs, c) {
			f.Langs = append(f.Langs, c)
		}
	}
	return f, nil
}

// Validate checks f's codes and threshold.
func (f *LangFilter) Validate() error {
	if len(f.Langs) == 0 {
		return fmt.Errorf("%w: the language filter names no language", ErrConfig)
	}
	_, err := ParseLangFilter(strings.Join(f.Langs, ","), f.MinConfidence)
	return err
}

// check reports whether doc is in one of f's languages, and the language found.
func (f *LangFilter) check(doc []byte) (bool, string) {
	lang, conf := DetectLanguage(doc)
	return lang != "" && conf >= f.MinConfidence && slices.Contains(f.Langs, lang), lang
}
