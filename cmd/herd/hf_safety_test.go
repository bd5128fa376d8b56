package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// readJSONObject reads a JSON object file of an exported directory.
func readJSONObject(t *testing.T, path string) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m
}

// An exported tiny run whose config.json is edited to claim LLaMA-2 70B's shape: herd import
// must fail with an error naming the tensor and both shapes, without running out of memory
// (a runtime crash prints "fatal error" and goroutine stacks) and without leaving a
// checkpoint behind. The export carries tokenizer_config.json, which tells transformers not
// to put BOS before inputs.
func TestImportRefusesConfigClaimingMoreThanWeights(t *testing.T) {
	e := newCkptEnv(t)
	run := filepath.Join(e.dir, "run")
	if out, ok := e.train(t, run, nil, "--steps", "2"); !ok {
		t.Fatal(out)
	}
	hfDir := filepath.Join(e.dir, "hf")
	runBin(t, e.bin, "export", "--checkpoint", filepath.Join(run, "checkpoints"), "--out", hfDir)

	cfg := readJSONObject(t, filepath.Join(hfDir, "config.json"))
	tc := readJSONObject(t, filepath.Join(hfDir, "tokenizer_config.json"))
	if tc["add_bos_token"] != false || tc["tokenizer_class"] != "PreTrainedTokenizerFast" {
		t.Errorf("tokenizer_config.json: add_bos_token %v, tokenizer_class %v; want false, PreTrainedTokenizerFast", tc["add_bos_token"], tc["tokenizer_class"])
	}
	if tc["model_max_length"] != cfg["max_position_embeddings"] {
		t.Errorf("tokenizer_config.json model_max_length %v, config.json max_position_embeddings %v", tc["model_max_length"], cfg["max_position_embeddings"])
	}

	claimed := filepath.Join(e.dir, "hf-70b")
	if err := os.CopyFS(claimed, os.DirFS(hfDir)); err != nil {
		t.Fatal(err)
	}
	big := map[string]any{"hidden_size": 8192, "num_hidden_layers": 80, "vocab_size": 32000, "intermediate_size": 28672,
		"num_attention_heads": 64, "num_key_value_heads": 64, "head_dim": 128}
	edited := readJSONObject(t, filepath.Join(hfDir, "config.json"))
	for k, v := range big {
		edited[k] = v
	}
	raw, _ := json.Marshal(edited)
	if err := os.WriteFile(filepath.Join(claimed, "config.json"), raw, 0o644); err != nil {
		t.Fatal(err)
	}

	dest := filepath.Join(e.dir, "imported")
	cmd := exec.Command(e.bin, "import", "--from", claimed, "--out", dest)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("herd import of a config.json claiming 70B: %v, want a non-zero exit\n%s", err, stderr.String())
	}
	out := stderr.String()
	found := fmt.Sprintf("[%v %v]", cfg["vocab_size"], cfg["hidden_size"])
	for _, s := range []string{"model.embed_tokens.weight", found, "[32000 8192]", filepath.Join(claimed, "model.safetensors")} {
		if !strings.Contains(out, s) {
			t.Errorf("herd import output does not mention %q:\n%s", s, out)
		}
	}
	for _, s := range []string{"fatal error", "goroutine ", "out of memory"} {
		if strings.Contains(out, s) {
			t.Errorf("herd import crashed (%q in its output):\n%s", s, out)
		}
	}
	entries, err := os.ReadDir(dest)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	if len(entries) > 0 {
		t.Errorf("failed import left %d entries in %s, the first %s", len(entries), dest, entries[0].Name())
	}
}
