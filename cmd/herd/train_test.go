package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// writeCorpus makes a small two-source corpus: a directory of English-like text files and a
// JSONL file with one bad line.
func writeCorpus(t *testing.T, dir string) (textDir, jsonl string) {
	t.Helper()
	textDir = filepath.Join(dir, "text")
	os.MkdirAll(textDir, 0o755)
	words := strings.Fields("the light of the sun is refracted by the prism into colours which are " +
		"separated and reflected by bodies according to their nature and the experiments show it")
	for f := 0; f < 40; f++ {
		var b strings.Builder
		for i := 0; i < 300; i++ {
			b.WriteString(words[(i*7+f*3)%len(words)])
			if i%12 == 11 {
				b.WriteString(".\n")
			} else {
				b.WriteByte(' ')
			}
		}
		os.WriteFile(filepath.Join(textDir, fmt.Sprintf("doc%02d.txt", f)), []byte(b.String()), 0o644)
	}
	jsonl = filepath.Join(dir, "code.jsonl")
	var j strings.Builder
	for i := 0; i < 40; i++ {
		doc := fmt.Sprintf("func f%d(x int) int {\n\tif x > %d {\n\t\treturn x - %d\n\t}\n\treturn f%d(x + 1)\n}\n", i, i, i, i)
		enc, _ := json.Marshal(map[string]string{"text": doc})
		j.Write(enc)
		j.WriteByte('\n')
		if i == 7 {
			j.WriteString("{not json\n")
		}
	}
	os.WriteFile(jsonl, []byte(j.String()), 0o644)
	return textDir, jsonl
}

func runBin(t *testing.T, bin string, args ...string) (stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		t.Fatalf("herd %s: %v\nstderr:\n%s", strings.Join(args, " "), err, e.String())
	}
	return o.String(), e.String()
}

func readMetrics(t *testing.T, path string) (steps []map[string]any, evals []map[string]any) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("metrics line %q: %v", sc.Text(), err)
		}
		if _, ok := m["val"]; ok {
			evals = append(evals, m)
		} else {
			steps = append(steps, m)
		}
	}
	return steps, evals
}

// prepare -> train -> eval -> sample over the built binary.
func TestTrainEndToEnd(t *testing.T) {
	bin := herdBinary(t)
	dir := t.TempDir()
	textDir, jsonl := writeCorpus(t, dir)
	ds, run := filepath.Join(dir, "ds"), filepath.Join(dir, "run")

	_, log := runBin(t, bin, "prepare", "--source", "prose="+textDir+":0.6", "--source", "code="+jsonl+":0.4",
		"--vocab", "320", "--held-out", "0.1", "--out", ds)
	if !strings.Contains(log, "code.jsonl:9") || !strings.Contains(log, "1 bad lines") {
		t.Errorf("prepare did not report the bad JSONL line with file:line:\n%s", log)
	}
	for _, f := range []string{"manifest.json", "tokenizer.json"} {
		if _, err := os.Stat(filepath.Join(ds, f)); err != nil {
			t.Errorf("dataset lacks %s", f)
		}
	}

	_, log = runBin(t, bin, "train", "--data", ds, "--out", run, "--preset", "tiny", "--steps", "40", "--seq", "32",
		"--batch", "8", "--micro-batch", "4", "--eval-every", "20", "--lr", "3e-3", "--sample-tokens", "8")
	for _, want := range []string{"step 40/40", "val loss", "sample:", "held-out bits/byte: model", "byte trigram baseline"} {
		if !strings.Contains(log, want) {
			t.Errorf("train output lacks %q:\n%s", want, log)
		}
	}
	steps, evals := readMetrics(t, filepath.Join(run, "metrics.jsonl"))
	if len(steps) != 40 || len(evals) < 2 {
		t.Fatalf("metrics: %d steps, %d validations", len(steps), len(evals))
	}
	first, last := steps[0]["loss"].(float64), steps[39]["loss"].(float64)
	if !(last < first-1) {
		t.Errorf("loss %.3f -> %.3f: not learning", first, last)
	}
	finalVal := evals[len(evals)-1]["val"].(map[string]any)["loss"].(float64)

	// Evaluating the held-out split afterwards reproduces the validation loss of training.
	out, _ := runBin(t, bin, "eval", "--run", run, "--held-out", "--batch", "4", "--json")
	var rep struct {
		Result struct {
			Loss float64 `json:"loss"`
			BPB  float64 `json:"bits_per_byte"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("eval --json: %v\n%s", err, out)
	}
	if math.Abs(rep.Result.Loss-finalVal) > 1e-6*finalVal {
		t.Errorf("eval --held-out loss %.9f, training reported %.9f", rep.Result.Loss, finalVal)
	}

	// Logits dump: rows x vocab float32.
	dump := filepath.Join(dir, "logits.f32")
	out, _ = runBin(t, bin, "eval", "--run", run, "--text", filepath.Join(textDir, "doc03.txt"), "--dump-logits", dump, "--json")
	var rep2 struct {
		Logits struct {
			Rows, Vocab int
		} `json:"logits"`
	}
	json.Unmarshal([]byte(out), &rep2)
	if st, err := os.Stat(dump); err != nil || rep2.Logits.Rows == 0 || st.Size() != int64(4*rep2.Logits.Rows*rep2.Logits.Vocab) {
		t.Errorf("logits dump: %v, described %+v", err, rep2.Logits)
	}

	// Greedy sampling is deterministic.
	a, _ := runBin(t, bin, "sample", "--run", run, "--prompt", "the light", "--tokens", "16", "--temperature", "0")
	b, _ := runBin(t, bin, "sample", "--run", run, "--prompt", "the light", "--tokens", "16", "--temperature", "0", "--seed", "9")
	if a != b || !strings.HasPrefix(a, "the light") {
		t.Errorf("greedy samples differ or lack the prompt: %q vs %q", a, b)
	}

	// A second train into the same run directory is refused rather than overwriting it.
	cmd := exec.Command(bin, "train", "--data", ds, "--out", run, "--steps", "1")
	if o, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(o), "already holds a finished run") {
		t.Errorf("retraining into a finished run: %v\n%s", err, o)
	}
}

func TestTrainFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"train", "--steps", "5"}, "--out: a run directory is required"},
		{[]string{"train", "--out", "x", "--preset", "big"}, `unknown preset "big"`},
		{[]string{"train", "--out", "x", "--remat", "some"}, `unknown remat policy "some"`},
		{[]string{"train", "--out", "x", "--backend", "tpu"}, `--backend = "tpu", allowed: cpu, cuda`},
		{[]string{"train", "--out", "x", "--collective", "mpi"}, `--collective = "mpi", allowed: auto, ring, nccl`},
		{[]string{"train", "--out", "x", "--collective", "nccl"}, "--collective nccl needs --backend cuda"},
		{[]string{"prepare", "--out", "x"}, "no data: give --source"},
		{[]string{"prepare", "--out", "x", "--source", "bad"}, "bad"},
		{[]string{"sample", "--run", "x", "--top-p", "2"}, "--top-p = 2, must be in (0, 1]"},
		{[]string{"eval", "--run", "x"}, "exactly one of --text FILE and --held-out"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(tc.args, &stdout, &stderr); code == 0 {
			t.Errorf("%v: exit 0", tc.args)
		}
		if !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: stderr %q, want %q", tc.args, stderr.String(), tc.want)
		}
	}
}
