//go:build !nolangid

package shard

import (
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/pemistahl/lingua-go"
	"golang.org/x/text/unicode/norm"
)

// langIDBuilt says whether this build identifies languages.
const langIDBuilt = true

// langSample bounds the text identified: a document's language shows in its first KiB,
// and lingua's time grows with the length.
const langSample = 1 << 10

// KnownLangs returns the ISO 639-1 codes of the languages lingua identifies, sorted.
func KnownLangs() []string {
	var out []string
	for _, l := range lingua.AllLanguages() {
		out = append(out, strings.ToLower(l.IsoCode639_1().String()))
	}
	slices.Sort(out)
	return out
}

var (
	detectorOnce sync.Once
	detector     lingua.LanguageDetector
)

// languageDetector is one detector of all the languages lingua knows, in its low-accuracy
// mode (trigram models: about 80 MB where the high-accuracy models take 1.3 GB, for 97.0%
// against 97.9% on the paragraphs of docs/data.md), built on first use.
func languageDetector() lingua.LanguageDetector {
	detectorOnce.Do(func() {
		detector = lingua.NewLanguageDetectorBuilder().FromAllLanguages().WithLowAccuracyMode().Build()
	})
	return detector
}

// DetectLanguage returns the ISO 639-1 code of the language doc is most likely written in
// and lingua's confidence in it, or "" when it finds none (no letters). Text is compared in
// Unicode normal form C, so that decomposed accents read as composed ones.
func DetectLanguage(doc []byte) (string, float64) {
	if len(doc) > langSample {
		cut := langSample
		for cut > 0 && !utf8.RuneStart(doc[cut]) {
			cut--
		}
		doc = doc[:cut]
	}
	vals := languageDetector().ComputeLanguageConfidenceValues(string(norm.NFC.Bytes(doc)))
	if len(vals) == 0 || vals[0].Value() == 0 {
		return "", 0
	}
	return strings.ToLower(vals[0].Language().IsoCode639_1().String()), vals[0].Value()
}

// warmLangID loads the language models now rather than at the first document.
func warmLangID() { languageDetector() }
