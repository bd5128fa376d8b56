package main

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"

	"github.com/herd-llm/herd/checkpoint"
	"github.com/herd-llm/herd/shard"
	"github.com/herd-llm/herd/worker"
)

// evalReport is what `herd eval --json` prints.
type evalReport struct {
	Run    string             `json:"run"`
	Source string             `json:"source"`
	Result worker.EvalResult  `json:"result"`
	Seqs   int                `json:"sequences"`
	Seq    int                `json:"seq"`
	Logits *logitsDescription `json:"logits,omitempty"`
}

// logitsDescription documents a --dump-logits file: rows x vocab float32 values, little-endian,
// row-major; row i holds the logits that predict token i+1 of the first sequence from its
// tokens 0..i. Tokens lists the first sequence's input ids.
type logitsDescription struct {
	File   string  `json:"file"`
	Rows   int     `json:"rows"`
	Vocab  int     `json:"vocab"`
	DType  string  `json:"dtype"`
	Order  string  `json:"order"`
	Tokens []int32 `json:"tokens"`
}

func runEval(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("eval", flag.ContinueOnError)
	fs.SetOutput(stderr)
	run := fs.String("run", "", "run directory written by herd train (required)")
	text := fs.String("text", "", "text file to evaluate")
	heldOut := fs.Bool("held-out", false, "evaluate the held-out split of the run's dataset, exactly as training validated")
	batch := fs.Int("batch", 8, "sequences per forward pass")
	asJSON := fs.Bool("json", false, "print JSON")
	dump := fs.String("dump-logits", "", "write the logits of the first sequence to this file (float32 little-endian, [seq, vocab] row-major)")
	backend := backendFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: herd eval --run DIR (--text FILE | --held-out) [flags]")
		fmt.Fprintln(stderr, "\nPrints the loss (nats per token) and bits per byte of a trained model on a text.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *run == "":
		return fmt.Errorf("--run: a run directory is required")
	case (*text == "") == !*heldOut:
		return fmt.Errorf("give exactly one of --text FILE and --held-out")
	case *batch <= 0:
		return fmt.Errorf("--batch = %d, must be > 0", *batch)
	}
	r, err := worker.OpenRun(*run)
	if err != nil {
		return err
	}
	seq := r.Config.Seq
	var es *worker.EvalSet
	source := *text
	if *heldOut {
		ds, err := shard.LoadDataset(r.Config.Data, r.Config.TokenizerHash)
		if err != nil {
			return fmt.Errorf("the run's dataset: %w", err)
		}
		es = worker.NewEvalSet(ds.HeldOut, seq, r.Config.EvalSeqs, r.Tokenizer)
		source = r.Config.Data + " (held-out)"
	} else {
		raw, err := os.ReadFile(*text)
		if err != nil {
			return fmt.Errorf("--text: %w", err)
		}
		es = worker.NewEvalSet([][]int32{r.Tokenizer.Encode(raw)}, seq, math.MaxInt, r.Tokenizer)
	}
	if len(es.Inputs) == 0 {
		return fmt.Errorf("%s has fewer than 2 tokens", source)
	}
	m, release, err := loadModel(r, backend())
	if err != nil {
		return err
	}
	defer release()
	res, err := worker.Evaluate(m, es, *batch)
	if err != nil {
		return err
	}
	rep := evalReport{Run: *run, Source: source, Result: res, Seqs: len(es.Inputs), Seq: seq}
	if *dump != "" {
		rows := 0
		for _, t := range es.Targets[0] {
			if t >= 0 {
				rows++
			}
		}
		logits, err := m.Logits(es.Inputs[0][:rows], 1, rows)
		if err != nil {
			return err
		}
		err = checkpoint.WriteFileAtomic(*dump, func(w io.Writer) error { return binary.Write(w, binary.LittleEndian, logits) })
		if err != nil {
			return err
		}
		rep.Logits = &logitsDescription{File: *dump, Rows: rows, Vocab: m.Cfg.Vocab, DType: "float32", Order: "row-major [rows, vocab], little-endian", Tokens: es.Inputs[0][:rows]}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	fmt.Fprintf(stdout, "%s: loss %.4f nats/token, %.4f bits/byte over %d tokens (%d bytes, %d sequences of %d)\n",
		source, res.Loss, res.BitsPerByte, res.Tokens, res.Bytes, len(es.Inputs), seq)
	if rep.Logits != nil {
		fmt.Fprintf(stdout, "logits of the first sequence: %s, %d x %d float32 little-endian, row-major\n", *dump, rep.Logits.Rows, rep.Logits.Vocab)
	}
	return nil
}
