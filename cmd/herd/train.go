package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/herd-llm/herd/checkpoint"
	"github.com/herd-llm/herd/model"
	"github.com/herd-llm/herd/worker"
)

func runTrain(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("train", flag.ContinueOnError)
	fs.SetOutput(stderr)
	preset := fs.String("preset", "tiny", "model preset: "+strings.Join(model.PresetNames(), ", "))
	remat := fs.String("remat", string(model.RematHybrid), "activation rematerialization: none, hybrid (LLaMA's), full")
	data := fs.String("data", "", "prepared dataset directory (herd prepare); default: the built-in corpus, prepared once into the user cache directory")
	out := fs.String("out", "", "run directory to create: run.json, tokenizer.json, metrics.jsonl, model.safetensors (required)")
	steps := fs.Int("steps", 1000, "optimizer steps")
	seq := fs.Int("seq", 128, "tokens per sequence")
	batch := fs.Int("batch", 16, "sequences per optimizer step")
	micro := fs.Int("micro-batch", 0, "sequences per forward/backward pass in each process; --batch must be a multiple of it times --nproc (default: --batch / --nproc)")
	lr := fs.Float64("lr", 0, "peak learning rate (default: the preset's)")
	warmup := fs.Int("warmup", -1, "warmup steps (default: min(2000, steps/20))")
	wd := fs.Float64("weight-decay", 0.1, "AdamW weight decay on matrices")
	clip := fs.Float64("clip", 1.0, "global gradient norm limit (0 disables)")
	seed := fs.Uint64("seed", 1, "seed of the initial weights and of the data order")
	evalEvery := fs.Int("eval-every", 200, "steps between validations on the held-out split (0: at the end only)")
	evalSeqs := fs.Int("eval-seqs", 32, "held-out sequences per source in a validation")
	evalText := fs.String("eval-text", "", "also report bits per byte on this text file")
	sampleEvery := fs.Int("sample-every", 200, "print a generated sample at each validation (0: never)")
	sampleTokens := fs.Int("sample-tokens", 48, "tokens per generated sample")
	vocab := fs.Int("vocab", 4096, "vocabulary size when preparing the built-in corpus")
	baseline := fs.Bool("baseline", true, "report the byte trigram baseline next to the model's held-out bits per byte at the end")
	backend := fs.String("backend", "cpu", backendUsage)
	collectiveKind := fs.String("collective", "auto", collectiveUsage)
	device := fs.Int("device", 0, "cuda: GPU ordinal; with --nproc, rank r uses GPU (device + r) mod the GPU count")
	pureGo := fs.Bool("pure-go", false, "cpu: use the pure-Go matmul even when a BLAS library is installed")
	tp := fs.Int("tp", 1, "tensor-parallel size: groups of this many processes (of --nproc) split every layer of the model (Megatron's layout: attention heads and feed-forward units, the vocabulary of the embedding and output head); --nproc/--tp data-parallel replicas; cpu backend")
	seqPar := fs.Bool("sequence-parallel", true, "with --tp: split the residual stream, norms and their statistics by sequence over the tensor-parallel ranks, so the activations kept for backward shrink by --tp; --seq must be a multiple of --tp")
	nproc := fs.Int("nproc", 1, "data-parallel processes on this machine; each takes its slice of every global batch and gradients are summed over a TCP ring on 127.0.0.1")
	collTimeout := fs.Duration("collective-timeout", 5*time.Minute, "deadline of one collective operation: a rank that waits longer fails the run, naming the rank that did not answer; it must also cover rank 0's validations, which the other ranks wait for (> 0)")
	zero := fs.Int("zero", 0, "ZeRO stage: 0 keeps the whole training state on every process; 1 shards the AdamW moments across the --nproc processes, 2 the gradients too, 3 the parameters too (gathered unit by unit for each pass); cpu backend")
	checkEvery := fs.Int("check-every", 50, "steps between checks that all processes hold identical parameters (0: only at the end)")
	ckptURI := fs.String("checkpoint", "", "where to write sharded checkpoints: a directory, file:///path or s3://bucket/prefix (default: DIR/checkpoints of --out)")
	ckptEvery := fs.Int("checkpoint-every", 500, "steps between checkpoints, written in the background; the last step always saves (0: only the last)")
	keepLast := fs.Int("keep-last", 3, "committed checkpoints to keep (0: all)")
	keepEvery := fs.Int("keep-every", 0, "also keep every checkpoint whose step is a multiple of this (0: none)")
	resumeFrom := fs.String("resume", "", "continue from a checkpoint: 'latest' (the newest good commit under --checkpoint) or a checkpoint location URI")
	failLimit := fs.Duration("checkpoint-failure-limit", 30*time.Minute, "how long checkpoints may keep failing before the run stops; a failed save is logged and the next checkpoint step saves again, and the last step's is retried until it commits (0: stop at the first failure)")
	storeRetry := fs.Duration("store-retry-for", checkpoint.DefaultRetryFor, "how long one checkpoint store operation retries transient failures (connection refused or reset, timeouts, 5xx) before it fails")
	storeStall := fs.Duration("store-stall-timeout", checkpoint.DefaultStall, "abandon and retry a checkpoint read or write that makes no progress for this long (> 0)")
	s3 := s3Flags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: herd train --out DIR [--preset NAME] [--data DIR] [flags]")
		fmt.Fprintln(stderr, "\nTrains a LLaMA model in this process on the CPU or a GPU (--backend), showing loss, tokens/s, MFU and ETA,")
		fmt.Fprintln(stderr, "validating on the held-out split and printing samples as it learns. With --nproc N it starts")
		fmt.Fprintln(stderr, "N processes that train data-parallel; each is told its rank through HERD_RANK, HERD_WORLD and")
		fmt.Fprintln(stderr, "HERD_PEERS and inherits its listening socket, and only rank 0 writes the run directory. With")
		fmt.Fprintln(stderr, "--tp T as well, groups of T processes split every layer of the model (tensor parallelism) and")
		fmt.Fprintln(stderr, "the N/T groups train data-parallel.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	c, err := model.Preset(*preset)
	if err != nil {
		return fmt.Errorf("--preset: %w", err)
	}
	if c.Remat, err = model.ParseRemat(*remat); err != nil {
		return fmt.Errorf("--remat: %w", err)
	}
	if *nproc < 1 {
		return fmt.Errorf("--nproc = %d, must be >= 1", *nproc)
	}
	if *tp < 1 || *nproc%*tp != 0 {
		return fmt.Errorf("--tp = %d: must be >= 1 and divide --nproc = %d (each tensor-parallel group is --tp processes)", *tp, *nproc)
	}
	if *tp > 1 && *backend != "cpu" {
		return fmt.Errorf("--tp %d with --backend %s: tensor parallelism runs on the cpu backend only so far", *tp, *backend)
	}
	if *tp > 1 && *zero > 0 {
		return fmt.Errorf("--tp with --zero is not supported yet: ZeRO shards the whole network's state, not a tensor-parallel share")
	}
	if *tp > 1 {
		if err := model.CheckTensorParallel(c, *tp); err != nil {
			return fmt.Errorf("--tp: %w", err)
		}
		if *seqPar && *seq%*tp != 0 {
			return fmt.Errorf("--seq = %d: sequence parallelism splits every sequence over the --tp %d ranks, so --tp must divide it (or give --sequence-parallel=false)", *seq, *tp)
		}
	}
	if *zero < 0 || *zero > 3 {
		return fmt.Errorf("--zero = %d: the stages are 0 (replicated state), 1 (AdamW moments sharded), 2 (and gradients), 3 (and parameters)", *zero)
	}
	if *collTimeout <= 0 {
		return fmt.Errorf("--collective-timeout = %v, must be > 0: it is how a hung rank is found", *collTimeout)
	}
	if *storeStall <= 0 || *storeRetry < 0 {
		return fmt.Errorf("--store-stall-timeout = %v must be > 0 and --store-retry-for = %v >= 0", *storeStall, *storeRetry)
	}
	ck := worker.CheckpointConfig{Every: *ckptEvery, KeepLast: *keepLast, KeepEvery: *keepEvery, FailureLimit: *failLimit}
	if err := ck.Validate(); err != nil {
		return err
	}
	if err := checkBackend(*backend); err != nil {
		return err
	}
	if err := checkCollective(*collectiveKind, *backend); err != nil {
		return err
	}
	replicas := *nproc / *tp // data-parallel replicas
	if *micro == 0 {
		*micro = max(1, *batch/replicas)
	}
	if *batch <= 0 || *micro <= 0 || *batch%(*micro*replicas) != 0 {
		if *tp > 1 {
			return fmt.Errorf("--batch = %d must be a positive multiple of --micro-batch = %d times the %d data-parallel replicas (--nproc %d / --tp %d)", *batch, *micro, replicas, *nproc, *tp)
		}
		return fmt.Errorf("--batch = %d must be a positive multiple of --micro-batch = %d times --nproc = %d", *batch, *micro, *nproc)
	}
	if *lr == 0 {
		*lr = c.PeakLR
	}
	if *out == "" {
		return fmt.Errorf("--out: a run directory is required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watchLauncher(cancel)
	ring, err := joinRing(ctx, *collTimeout, stderr)
	if err != nil {
		return err
	}
	if ring != nil {
		defer ring.Close()
	}
	var mesh *worker.Mesh
	if ring != nil && *tp > 1 {
		tpRing, dpRing, err := joinMesh(ctx, ring, *tp, *collTimeout)
		if err != nil {
			return err
		}
		defer tpRing.Close()
		defer dpRing.Close()
		mesh = &worker.Mesh{Size: *tp, Rank: ring.Rank() % *tp, TP: tpRing, DP: dpRing, Sequence: *seqPar}
	}
	if *data == "" {
		if *data, err = builtinDataset(ctx, *vocab, stderr); err != nil {
			return err
		}
	}
	if *nproc > 1 && ring == nil {
		return launchLocal(ctx, *nproc, *tp, append(append([]string{"train"}, args...), "--data", *data), stdout, stderr)
	}
	if *ckptURI == "" {
		*ckptURI = filepath.Join(*out, "checkpoints")
	}
	storeOpts := checkpoint.StoreOptions{S3: s3.config(), Retry: checkpoint.RetryPolicy{For: *storeRetry, Stall: *storeStall,
		Log: func(line string) { fmt.Fprintln(stderr, line) }}}
	if *storeRetry == 0 {
		storeOpts.Retry.For = -1 // no retries
	}
	// A location that is only resumed from must exist: it is never created.
	resumeOpts := storeOpts
	resumeOpts.Existing = true
	saveOpts := storeOpts
	saveOpts.Existing = *resumeFrom == "latest"
	save, err := checkpoint.OpenLocation(ctx, *ckptURI, saveOpts)
	if err != nil {
		if *resumeFrom == "latest" && errors.Is(err, checkpoint.ErrNoCommit) {
			return fmt.Errorf("--resume latest: %w", err)
		}
		return fmt.Errorf("--checkpoint: %w", err)
	}
	ck.Save, ck.Failpoint = &save, failpointFromEnv()
	switch *resumeFrom {
	case "":
	case "latest":
		ck.Resume = ck.Save
	default:
		from, err := checkpoint.OpenLocation(ctx, *resumeFrom, resumeOpts)
		if err != nil {
			return fmt.Errorf("--resume: %w", err)
		}
		ck.Resume = &from
	}
	optim := model.DefaultOptim()
	optim.WeightDecay, optim.ClipNorm = *wd, *clip
	cfg := worker.TrainConfig{
		Model: c, Optim: optim, PeakLR: *lr, WarmupSteps: *warmup, Data: *data, Out: *out, Seed: *seed,
		Seq: *seq, Batch: *batch, MicroBatch: *micro, Steps: *steps, EvalEvery: *evalEvery, EvalSeqs: *evalSeqs,
		EvalText: *evalText, SampleEvery: *sampleEvery, SampleTokens: *sampleTokens, Baseline: *baseline,
		CheckEvery: *checkEvery, Zero: *zero, Checkpoint: ck, Command: "herd train --out " + *out,
	}
	if ring != nil {
		cfg.Comm = ring
	}
	cfg.Tensor = mesh
	bo := backendOptions{name: *backend, pureGo: *pureGo, device: *device}
	if ring != nil {
		bo.rank = ring.Rank()
	}
	be, closeBackend, err := openBackend(bo)
	if err != nil {
		return err
	}
	defer closeBackend()
	if ring != nil {
		red, closeReducer, err := deviceReducer(ctx, *collectiveKind, ring, be, func(s string) {
			if ring.Rank() == 0 {
				fmt.Fprintln(stderr, s)
			}
		})
		if err != nil {
			return err
		}
		defer closeReducer()
		cfg.Reducer = red
	}
	_, err = worker.Train(ctx, cfg, be, stderr)
	if err != nil && ring != nil {
		reportFailure(ring.Rank(), err)
	}
	return err
}
