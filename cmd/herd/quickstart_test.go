package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

// The quickstart learns: on the built-in corpus, a short run of the README's training
// command already ends with held-out bits per byte below a smoothed byte trigram model fitted
// on the same training text, which the run computes itself and prints beside its own figure.
// HERD_QUICKSTART_STEPS overrides the shortened step count (the README's run uses 1000).
func TestQuickstartBeatsTrigram(t *testing.T) {
	if testing.Short() {
		t.Skip("trains for about a minute")
	}
	steps := "300"
	if s := os.Getenv("HERD_QUICKSTART_STEPS"); s != "" {
		steps = s
	}
	bin := herdBinary(t)
	dir := t.TempDir()
	cmd := exec.Command(bin, "train", "--out", filepath.Join(dir, "run"), "--steps", steps, "--eval-every", "0", "--sample-every", "0")
	cmd.Env = append(os.Environ(), "XDG_CACHE_HOME="+filepath.Join(dir, "cache"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("herd train: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`held-out bits/byte: model ([0-9.]+), byte trigram baseline ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no bits/byte comparison in the output:\n%s", out)
	}
	model, _ := strconv.ParseFloat(string(m[1]), 64)
	tri, _ := strconv.ParseFloat(string(m[2]), 64)
	t.Logf("%s steps: held-out bits/byte model %.4f, byte trigram %.4f", steps, model, tri)
	if !(model < tri) {
		t.Errorf("model %.4f bits/byte does not beat the byte trigram's %.4f", model, tri)
	}
}
