package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// What the filters are for: a model trained on the filtered mixture reaches lower held-out
// bits per byte on clean text than one trained for the same steps, with the same seed, on the
// unfiltered mixture. The mixture is Newton's Opticks (from the Go toolchain) in documents of
// a few paragraphs, with defects planted as a crawl has them: a navigation line on every page,
// pages copied ten times with a word changed, gibberish, and keyword spam, the junk about half
// of the documents. The last tenth of the book is kept out of both as the clean test text.
func TestFilteredMixtureTrainsBetter(t *testing.T) {
	if testing.Short() {
		t.Skip("trains two models")
	}
	bin := herdBinary(t)
	dir := t.TempDir()
	raw, err := os.ReadFile(filepath.Join(runtime.GOROOT(), "src", "testdata", "Isaac.Newton-Opticks.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var paras []string
	for _, p := range strings.Split(string(raw), "\n\n") {
		if p = strings.TrimSpace(p); len(p) > 200 {
			paras = append(paras, p)
		}
	}
	cut := len(paras) * 9 / 10
	test := filepath.Join(dir, "clean-test.txt")
	os.WriteFile(test, []byte(strings.Join(paras[cut:], "\n\n")), 0o644)
	ref := filepath.Join(dir, "reference.txt") // the perplexity model's reference: the book's first fifth
	os.WriteFile(ref, []byte(strings.Join(paras[:cut/5], "\n\n")), 0o644)

	rng := rand.New(rand.NewPCG(1, 2))
	web := filepath.Join(dir, "web")
	os.MkdirAll(web, 0o755)
	n := 0
	write := func(doc string) {
		os.WriteFile(filepath.Join(web, fmt.Sprintf("d%05d.txt", n)), []byte(doc), 0o644)
		n++
	}
	nav := "Home | Books | Optics | About us | Contact\n"
	var pages []string
	for i := 0; i < cut; i += 3 {
		pages = append(pages, nav+strings.Join(paras[i:min(i+3, cut)], "\n\n")+"\n")
	}
	for i, p := range pages {
		write(p)
		if i%10 == 0 { // copied ten times, a word changed in each copy
			words := strings.Fields(p)
			for range 10 {
				words[rng.IntN(len(words))] = "indeed"
				write(nav + strings.Join(words, " ") + "\n")
			}
		}
		if i%2 == 0 {
			write(gibberishText(rng, 1500))
			write(spamText(rng, 1500))
		}
	}
	train := func(name string, extra ...string) float64 {
		ds, run := filepath.Join(dir, name+"-data"), filepath.Join(dir, name+"-run")
		args := append([]string{"prepare", "--source", "web=" + web + ":1", "--vocab", "1024", "--out", ds}, extra...)
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s: prepare: %v\n%s", name, err, out)
		}
		if out, err := exec.Command(bin, "train", "--data", ds, "--out", run, "--preset", "tiny", "--steps", "300", "--batch", "16", "--seq", "128",
			"--seed", "1", "--eval-every", "0", "--sample-every", "0", "--baseline=false", "--checkpoint-every", "0").CombinedOutput(); err != nil {
			t.Fatalf("%s: train: %v\n%s", name, err, out)
		}
		out, err := exec.Command(bin, "eval", "--run", run, "--text", test, "--json").Output()
		if err != nil {
			t.Fatalf("%s: eval: %v\n%s", name, err, out)
		}
		var r struct {
			Result struct {
				BitsPerByte float64 `json:"bits_per_byte"`
			} `json:"result"`
		}
		if err := json.Unmarshal(out, &r); err != nil || r.Result.BitsPerByte <= 0 {
			t.Fatalf("%s: eval printed %s (%v)", name, out, err)
		}
		return r.Result.BitsPerByte
	}
	plain := train("unfiltered")
	filtered := train("filtered", "--filter", "web=lines,near-dup", "--reference", "web="+ref)
	t.Logf("%d documents; held-out bits per byte on clean text after 300 steps: unfiltered %.4f, filtered %.4f (%.1f%% lower)",
		n, plain, filtered, 100*(plain-filtered)/plain)
	if !(filtered < plain) {
		t.Errorf("the filtered mixture's model is not better on clean text: %.4f against %.4f", filtered, plain)
	}
}

// gibberishText is letters and spaces at random.
func gibberishText(rng *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = "abcdefghijklmnopqrstuvwxyz     "[rng.IntN(31)]
	}
	return string(b)
}

// spamText repeats a few keywords, as pages stuffed for search engines do.
func spamText(rng *rand.Rand, n int) string {
	words := []string{"cheap", "pills", "casino", "bonus", "free", "loans", "win", "online", "best", "price"}
	var sb strings.Builder
	for sb.Len() < n {
		sb.WriteString(words[rng.IntN(len(words))] + " ")
	}
	return sb.String()
}
