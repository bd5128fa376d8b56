package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/herd-llm/herd/checkpoint"
	"github.com/herd-llm/herd/cluster"
	"github.com/herd-llm/herd/coordinator"
)

// upJob is the job `herd up` runs without --job: the quickstart's model and data as a
// cluster job.
const upJob = `name: up
model:
  preset: tiny
dataset: %s
batch: 16
seq: 128
steps: %d
checkpoint:
  uri: %s
  every: 200
workers:
  min: 1
  max: %d
  last_call: 2s
`

func runUp(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	fs.SetOutput(stderr)
	workers := fs.Int("workers", 2, "CPU workers to start on this machine")
	jobPath := fs.String("job", "", "job file (default: the tiny preset on the built-in corpus, checkpoints in --out)")
	out := fs.String("out", "runs/up", "directory for the coordinator's state, metrics.jsonl and (without --job) the checkpoints")
	steps := fs.Int("steps", 1000, "optimizer steps of the default job")
	vocab := fs.Int("vocab", 4096, "vocabulary size when preparing the built-in corpus")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: herd up [--workers N] [--job JOB.yaml] [--out DIR]")
		fmt.Fprintln(stderr, "\nRuns a whole cluster on this machine: an embedded etcd and a coordinator in this process, and N")
		fmt.Fprintln(stderr, "worker processes on 127.0.0.1 that join it and train. Kill a worker (its pid is printed) to see")
		fmt.Fprintln(stderr, "the job recover without losing a step; `herd status --coordinator ADDR` shows the job.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *workers < 1 || *workers > 64 {
		return fmt.Errorf("--workers = %d, must be in [1, 64]", *workers)
	}
	if *steps <= 0 {
		return fmt.Errorf("--steps = %d, must be > 0", *steps)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var spec *cluster.JobSpec
	var err error
	if *jobPath != "" {
		if spec, err = cluster.LoadJobSpec(*jobPath); err != nil {
			return err
		}
	} else {
		ds, err := builtinDataset(ctx, *vocab, stderr)
		if err != nil {
			return err
		}
		ck, _ := filepath.Abs(filepath.Join(*out, "checkpoints"))
		if spec, err = cluster.ParseJobSpec(fmt.Appendf(nil, upJob, ds, *steps, ck, *workers)); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	c, err := coordinator.Start(ctx, coordinator.Config{Job: spec, DataDir: filepath.Join(*out, "coordinator"), Listen: "127.0.0.1:0",
		Etcd: coordinator.EtcdConfig{Listen: "127.0.0.1:0"}, Logger: consoleLogger(stderr, zapcore.WarnLevel), Out: stderr,
		Checkpoint: func(ctx context.Context) (checkpoint.Location, error) {
			return checkpoint.OpenLocation(ctx, spec.Checkpoint.URI, checkpoint.StoreOptions{})
		}})
	if err != nil {
		return err
	}
	defer c.Close()
	select {
	case <-c.Ready():
	case err := <-c.Err():
		return err
	case <-time.After(30 * time.Second):
		return errors.New("the coordinator did not become ready within 30s")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	token := c.State().Token
	fmt.Fprintf(stderr, "up: coordinator on %s; starting %d workers (herd status --coordinator %s)\n", c.Addr(), *workers, c.Addr())
	var mu sync.Mutex
	var procs []*exec.Cmd
	for i := 0; i < *workers; i++ {
		cmd := exec.Command(self, "worker", "--join", c.Addr(), "--token", token, "--metrics-listen", "127.0.0.1:0")
		cmd.Stdout = stdout
		cmd.Stderr = stderr
		cmd.SysProcAttr = rankProcAttr(0)
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("starting worker %d: %w", i, err)
		}
		fmt.Fprintf(stderr, "up: worker %d is pid %d\n", i, cmd.Process.Pid)
		mu.Lock()
		procs = append(procs, cmd)
		mu.Unlock()
		go cmd.Wait()
	}
	defer func() {
		for _, p := range procs {
			p.Process.Signal(syscall.SIGTERM)
		}
	}()
	select {
	case <-c.Done():
		s := c.State()
		fmt.Fprintf(stderr, "up: job %s finished: %d steps, %d rounds (%d recoveries); metrics in %s; export with: herd export --checkpoint %s --out DIR\n",
			spec.Name, s.LastStep, s.Rounds, s.Recoveries, filepath.Join(*out, "coordinator", "runs", spec.Name, "metrics.jsonl"), spec.Checkpoint.URI)
		time.Sleep(2 * time.Second) // workers learn the job is done
		return nil
	case err := <-c.Err():
		return err
	case <-ctx.Done():
		return nil
	}
}
