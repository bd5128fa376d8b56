package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/herd-llm/herd/checkpoint"
	"github.com/herd-llm/herd/checkpoint/hf"
	"github.com/herd-llm/herd/model"
	"github.com/herd-llm/herd/worker"
)

func runExport(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	uri := fs.String("checkpoint", "", "checkpoint location (directory, file:///path or s3://bucket/prefix) whose newest good commit to export (required)")
	format := fs.String("format", "hf", "output format: hf (Hugging Face LlamaForCausalLM directory)")
	out := fs.String("out", "", "directory to create, absent or empty, with config.json, generation_config.json, model.safetensors, tokenizer.json and tokenizer_config.json (required)")
	shardBytes := fs.Int64("max-shard-bytes", 0, "split model.safetensors into files of at most this many bytes with an index (0: one file)")
	s3 := s3Flags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: herd export --checkpoint URI --out DIR [--format hf]")
		fmt.Fprintln(stderr, "\nWrites a checkpoint's weights, config and tokenizer in Hugging Face's LLaMA layout (q and k")
		fmt.Fprintln(stderr, "rows permuted for its rotary layout), so transformers' LlamaForCausalLM loads them.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *uri == "":
		return fmt.Errorf("--checkpoint: a checkpoint location is required")
	case *out == "":
		return fmt.Errorf("--out: an output directory is required")
	case *format != "hf":
		return fmt.Errorf("--format %q: the only format is hf", *format)
	}
	if err := checkOut(*out); err != nil {
		return err
	}
	ctx := context.Background()
	loc, err := checkpoint.OpenLocation(ctx, *uri, checkpoint.StoreOptions{S3: s3.config(), Existing: true,
		Retry: checkpoint.RetryPolicy{Log: func(line string) { fmt.Fprintln(stderr, line) }}})
	if err != nil {
		return fmt.Errorf("--checkpoint: %w", err)
	}
	var st checkpoint.State
	man, err := checkpoint.LoadLatest(ctx, loc, func(m *checkpoint.Manifest) (checkpoint.State, error) {
		st = checkpoint.State{Params: make([]float32, m.Elems), M: make([]float32, m.Elems), V: make([]float32, m.Elems)}
		return st, nil
	}, func(s string) { fmt.Fprintln(stderr, s) })
	if err != nil {
		return err
	}
	rc, tok, err := worker.CheckpointModel(ctx, loc, man)
	if err != nil {
		return err
	}
	layout := model.NewLayout(rc.Model)
	if int64(layout.Size) != man.Elems {
		return fmt.Errorf("checkpoint step %d: %d parameters, its config describes %d", man.Step, man.Elems, layout.Size)
	}
	params := func(s model.ParamSpec) ([]float32, error) { return st.Params[s.Offset : s.Offset+s.Size], nil }
	stage, err := newStaging(*out, "export", stderr)
	if err != nil {
		return err
	}
	defer stage.discard()
	if err := hf.Export(stage.dir, rc.Model, params, tok, hf.ExportOptions{MaxShardBytes: *shardBytes}); err != nil {
		return err
	}
	if err := stage.commit(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "exported step %d of %s (%d parameters) to %s\n", man.Step, *uri, man.Elems, *out)
	return nil
}

func runImport(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("import", flag.ContinueOnError)
	fs.SetOutput(stderr)
	from := fs.String("from", "", "Hugging Face LlamaForCausalLM directory (config.json, model.safetensors, tokenizer.json) (required)")
	out := fs.String("out", "", "checkpoint location to create: directory, file:///path or s3://bucket/prefix (required)")
	s3 := s3Flags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: herd import --from DIR --out URI")
		fmt.Fprintln(stderr, "\nTurns a Hugging Face LLaMA directory into a herd checkpoint at step 0 (AdamW moments zero).\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *from == "" || *out == "" {
		return fmt.Errorf("--from and --out are required")
	}
	// Check the destination first, and hold it while writing: a location that already holds
	// checkpoints is refused before the weights are read, one that another job writes before
	// anything is written.
	ctx := context.Background()
	loc, err := checkpoint.OpenLocation(ctx, *out, checkpoint.StoreOptions{S3: s3.config(),
		Retry: checkpoint.RetryPolicy{Log: func(line string) { fmt.Fprintln(stderr, line) }}})
	if err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	if steps, err := checkpoint.ListSteps(ctx, loc); err != nil {
		return err
	} else if len(steps) > 0 {
		return fmt.Errorf("--out %s already holds checkpoints (step %d and more): import into an empty location", *out, steps[0].Step)
	}
	// At its peak the import holds the parameters, one zero buffer that serves as both AdamW
	// moments, and the saver's staging copy of params, m and v: four buffers of the
	// parameters' size beside them, which hf.Import counts in its memory check before it
	// allocates anything of that size.
	im, err := hf.Import(*from, hf.ImportOptions{ExtraBuffers: 4})
	if err != nil {
		return err
	}
	lease, err := checkpoint.AcquireLease(ctx, loc, checkpoint.ThisProcess("herd import --out "+*out), checkpoint.LeaseOptions{})
	if err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	defer lease.Release(ctx)
	layout := model.NewLayout(im.Config)
	rc := worker.RunConfig{Model: im.Config, TokenizerHash: im.Tokenizer.Hash(), World: 1}
	raw, _ := json.Marshal(rc)
	tokJSON, err := im.Tokenizer.Marshal()
	if err != nil {
		return err
	}
	n := len(im.Params)
	zeros := make([]float32, n) // both moments: Save only reads the state
	ranges := make([]checkpoint.TensorRange, len(layout.Specs))
	for i, s := range layout.Specs {
		ranges[i] = checkpoint.TensorRange{Name: s.Name, Shape: s.Shape, Offset: int64(s.Offset), Size: int64(s.Size)}
	}
	saver := checkpoint.NewSaver(loc, checkpoint.SaverOptions{Lease: lease})
	if _, err := saver.Save(ctx, checkpoint.SaveRequest{Step: 0, Rank: 0, World: 1,
		State:  checkpoint.State{Params: im.Params, M: zeros, V: zeros},
		Config: raw, TokenizerHash: im.Tokenizer.Hash(), Layout: ranges,
		Extra: map[string][]byte{worker.TokenizerName: tokJSON}}); err != nil {
		return err
	}
	if err := saver.Wait(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "imported %s (%d parameters) as %s/%s\n", *from, n, *out, checkpoint.StepDir(0))
	return nil
}
