package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/herd-llm/herd/internal/llamajs"
	"github.com/herd-llm/herd/shard"
	"github.com/herd-llm/herd/tokenizer"
)

// llamaTokenizerConfig is LLaMA's tokenizer_config.json as its Hugging Face directories ship
// it: BOS before every input, no EOS, no padding token.
const llamaTokenizerConfig = `{
  "add_bos_token": true,
  "add_eos_token": false,
  "bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": false, "normalized": false, "rstrip": false, "single_word": false},
  "clean_up_tokenization_spaces": false,
  "eos_token": {"__type": "AddedToken", "content": "</s>", "lstrip": false, "normalized": false, "rstrip": false, "single_word": false},
  "legacy": true,
  "model_max_length": 1000000000000000019884624838656,
  "pad_token": null,
  "sp_model_kwargs": {},
  "tokenizer_class": "LlamaTokenizer",
  "unk_token": {"__type": "AddedToken", "content": "<unk>", "lstrip": false, "normalized": false, "rstrip": false, "single_word": false}
}
`

// Training continues on LLaMA's own tokenizer: herd prepare --tokenizer with LLaMA's
// tokenizer.json writes <s>, the text's ids and </s> for every document; a model trained on
// it exports a tokenizer.json equal to LLaMA's and a tokenizer_config.json that asks for BOS;
// the directory, with LLaMA's own tokenizer_config.json put in, imports with herd import, and
// training resumes from the import on the same dataset.
func TestLlamaTokenizerContinuesTraining(t *testing.T) {
	dir := t.TempDir()
	llamajs.Run(t, dir, nil)
	llama := filepath.Join(dir, "tokenizer.json")
	bin := herdBinary(t)
	textDir, _ := writeCorpus(t, dir)
	ds := filepath.Join(dir, "ds")
	runBin(t, bin, "prepare", "--source", "prose="+textDir+":1", "--tokenizer", llama, "--out", ds)

	tok, err := tokenizer.Load(llama)
	if err != nil {
		t.Fatal(err)
	}
	dsTok, err := tokenizer.Load(filepath.Join(ds, "tokenizer.json"))
	if err != nil || dsTok.Hash() != tok.Hash() {
		t.Fatalf("the dataset's tokenizer (%v) is not LLaMA's", err)
	}
	// Every document is <s> text </s>: as many BOS as EOS, a BOS after every EOS, and the
	// text between them LLaMA's ids for the document.
	files, _ := filepath.Glob(filepath.Join(ds, "prose", "*.tok"))
	var stream []int32
	for _, f := range files {
		toks, _, err := shard.ReadFile(f, shard.OpenOptions{Hash: tok.Hash()})
		if err != nil {
			t.Fatal(err)
		}
		stream = append(stream, toks...)
	}
	docs, starts := 0, 0
	for i, id := range stream {
		if id == tok.BOS() {
			starts++
		}
		if id == tok.EOS() {
			docs++
			if i+1 < len(stream) && stream[i+1] != tok.BOS() {
				t.Fatalf("token %d after an EOS is %d, want <s> (%d)", i+1, stream[i+1], tok.BOS())
			}
		}
	}
	if len(files) == 0 || docs == 0 || starts != docs || stream[0] != tok.BOS() || stream[len(stream)-1] != tok.EOS() {
		t.Fatalf("%d shard files, %d documents, %d <s>, first %d, last %d", len(files), docs, starts, stream[0], stream[len(stream)-1])
	}
	first, _ := os.ReadFile(filepath.Join(textDir, "doc00.txt"))
	if want := tok.Encode([]byte(strings.TrimSpace(string(first)))); !containsRun(stream, want) {
		t.Errorf("the dataset does not hold LLaMA's ids of doc00.txt")
	}

	run := filepath.Join(dir, "run")
	runBin(t, bin, "train", "--data", ds, "--out", run, "--seq", "32", "--batch", "4", "--micro-batch", "2",
		"--steps", "3", "--eval-every", "0", "--sample-every", "0", "--baseline=false")
	hfDir := filepath.Join(dir, "hf")
	runBin(t, bin, "export", "--checkpoint", filepath.Join(run, "checkpoints"), "--out", hfDir)
	if !reflect.DeepEqual(readJSONObject(t, llama), readJSONObject(t, filepath.Join(hfDir, "tokenizer.json"))) {
		t.Error("the exported tokenizer.json differs from LLaMA's")
	}
	cfg, tcfg := readJSONObject(t, filepath.Join(hfDir, "config.json")), readJSONObject(t, filepath.Join(hfDir, "tokenizer_config.json"))
	if cfg["vocab_size"] != 32000.0 || cfg["pad_token_id"] != nil || tcfg["add_bos_token"] != true || tcfg["pad_token"] != nil {
		t.Errorf("config.json vocab_size %v pad_token_id %v; tokenizer_config.json add_bos_token %v pad_token %v",
			cfg["vocab_size"], cfg["pad_token_id"], tcfg["add_bos_token"], tcfg["pad_token"])
	}

	if err := os.WriteFile(filepath.Join(hfDir, "tokenizer_config.json"), []byte(llamaTokenizerConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	imported := filepath.Join(dir, "imported")
	runBin(t, bin, "import", "--from", hfDir, "--out", imported)
	run2 := filepath.Join(dir, "run2")
	runBin(t, bin, "train", "--data", ds, "--out", run2, "--resume", imported, "--seq", "32", "--batch", "4",
		"--micro-batch", "2", "--steps", "2", "--eval-every", "0", "--sample-every", "0", "--baseline=false")
	steps, _ := readMetrics(t, filepath.Join(run2, "metrics.jsonl"))
	if len(steps) != 2 {
		t.Errorf("resumed from the import: %d steps logged, want 2", len(steps))
	}

	// A LLaMA tokenizer_config.json that turns BOS off disagrees with tokenizer.json.
	off := strings.Replace(llamaTokenizerConfig, `"add_bos_token": true`, `"add_bos_token": false`, 1)
	if err := os.WriteFile(filepath.Join(hfDir, "tokenizer_config.json"), []byte(off), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "import", "--from", hfDir, "--out", filepath.Join(dir, "imported2")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), `"add_bos_token"`) {
		t.Errorf("import with add_bos_token false: %v\n%s", err, out)
	}
}

func containsRun(s, run []int32) bool {
	for i := 0; i+len(run) <= len(s); i++ {
		if slices.Equal(s[i:i+len(run)], run) {
			return true
		}
	}
	return false
}
