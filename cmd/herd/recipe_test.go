package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// herd prepare --recipe llama prints LLaMA's mixture as a recipe; filled in with paths (here
// small corpora made by the test, and the filters whose inputs it has), herd prepare --recipe
// prepares it and prints each source's planned epochs beside the paper's. A recipe with a typo,
// an empty path or a filter without its inputs is refused before any work, naming the line.
func TestPrepareRecipe(t *testing.T) {
	bin := herdBinary(t)
	dir := t.TempDir()
	tmpl, err := exec.Command(bin, "prepare", "--recipe", "llama").Output()
	if err != nil {
		t.Fatalf("--recipe llama: %v", err)
	}
	for _, want := range []string{"name: commoncrawl", "weight: 0.67", "paper_epochs: 1.10", "name: stackexchange", "near_dup_threshold: 0.9", "filters: [lines, near-dup, perplexity, classifier]"} {
		if !strings.Contains(string(tmpl), want) {
			t.Errorf("the llama recipe lacks %q", want)
		}
	}
	// Fill in every path with a small corpus of its own.
	rng := rand.New(rand.NewPCG(6, 6))
	filled := string(tmpl)
	names := regexp.MustCompile(`(?m)^  - name: (\S+)`).FindAllStringSubmatch(filled, -1)
	if len(names) != 7 {
		t.Fatalf("%d sources in the llama recipe, want 7", len(names))
	}
	for i, n := range names {
		src := filepath.Join(dir, n[1])
		os.MkdirAll(src, 0o755)
		for j := range 12 {
			os.WriteFile(filepath.Join(src, fmt.Sprintf("d%02d.txt", j)), []byte(fmt.Sprintf("%s %d: %s", n[1], j, paragraph(rng, 3+i))), 0o644)
		}
		filled = strings.Replace(filled, `path: ""`, "path: "+src, 1)
	}
	filled = strings.Replace(filled, "filters: [lines, near-dup, perplexity, classifier]", "filters: [lines, near-dup]", 1)
	filled = strings.Replace(filled, "    lang: [en]\n", "", -1) // the test's prose is English, but short texts are not the point here
	path := filepath.Join(dir, "recipe.yaml")
	os.WriteFile(path, []byte(filled), 0o644)
	m, out := prepareManifest(t, bin, filepath.Join(dir, "ds"), "--recipe", path, "--vocab", "300", "--held-out", "0")
	if len(m.Sources) != 7 || m.Sources[0].Name != "commoncrawl" || m.Sources[0].Weight != 0.67 || m.Sources[2].Quality.String() != "near-dup,code" ||
		m.Sources[4].Quality.NearDup.Threshold != 0.9 {
		t.Errorf("manifest sources: %+v", m.Sources)
	}
	mustContain(t, out, "mixture llama for 1.4e+12 training tokens:", "paper share", "commoncrawl         67.0%", "67.0%         1.10", "stackexchange")

	// Bad recipes: refused before anything is read or written.
	for _, tc := range []struct{ edit, want string }{
		{strings.Replace(filled, "weight: 0.15", "wieght: 0.15", 1), "line 23: field wieght not found"},
		{string(tmpl), "line 13: sources[0] (commoncrawl).path: empty: fill in where this source's text is"},
		{strings.Replace(strings.Replace(filled, "filters: [lines, near-dup]", "filters: [lines, perplexity]", 1), "reference: \"\"", "reference: \"\"", 1), "sources[0] (commoncrawl).reference: the perplexity filter needs a reference"},
		{strings.Replace(filled, "filters: [code, near-dup]", "filters: [code, minhash]", 1), `sources[2] (github).filters: unknown filter "minhash"`},
		{strings.Replace(filled, "weight: 0.045", "weight: 0", 1), "sources[2] (github).weight: 0, must be > 0"},
		{strings.Replace(filled, "[bg, ca,", "[bg, xx,", 1), `--lang wikipedia=bg,xx,`},
	} {
		bad := filepath.Join(dir, "bad.yaml")
		os.WriteFile(bad, []byte(tc.edit), 0o644)
		out := runFail(t, bin, nil, "prepare", "--recipe", bad, "--out", filepath.Join(dir, "bad"))
		mustContain(t, out, tc.want)
	}
	out2 := runFail(t, bin, nil, "prepare", "--recipe", path, "--source", "x="+dir+":1", "--out", filepath.Join(dir, "bad"))
	mustContain(t, out2, "--recipe gives the sources and their filters: it excludes --source")
	if _, err := os.Stat(filepath.Join(dir, "bad")); err == nil {
		t.Error("a refused recipe created --out")
	}
}
