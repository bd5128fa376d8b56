package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/herd-llm/herd/checkpoint"
	"github.com/herd-llm/herd/cluster"
	"github.com/herd-llm/herd/internal/dashboard"
	"github.com/herd-llm/herd/worker"
)

func runDashboard(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dashboard", flag.ContinueOnError)
	fs.SetOutput(stderr)
	runDir := fs.String("run", "", "run directory of herd train (its metrics.jsonl and run.json) (required)")
	listen := fs.String("listen", "127.0.0.1:7080", "address to serve the page on (host:port; port 0 picks a free one)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: herd dashboard --run DIR [--listen ADDR]")
		fmt.Fprintln(stderr, "\nServes the web dashboard of a run of herd train: step, loss and throughput, and charts of loss,")
		fmt.Fprintln(stderr, "validation bits per byte, learning rate, gradient norm and tokens/s per GPU, live while the run")
		fmt.Fprintln(stderr, "trains or after. A cluster job's coordinator serves the same page on its API port.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *runDir == "" {
		return errors.New("--run: a run directory is required")
	}
	metrics := filepath.Join(*runDir, "metrics.jsonl")
	if _, err := os.Stat(filepath.Join(*runDir, worker.RunConfigName)); err != nil {
		if _, merr := os.Stat(metrics); merr != nil {
			return fmt.Errorf("--run %s: neither %s nor metrics.jsonl is there: not a run directory of herd train", *runDir, worker.RunConfigName)
		}
	}
	mux := http.NewServeMux()
	dashboard.Register(mux, func() any { return runStatusOf(*runDir) }, metrics)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(stderr, "dashboard: %s on http://%s/\n", *runDir, ln.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// runStatusOf summarizes a run directory with the keys of a cluster job's status: the last
// step line of metrics.jsonl, the planned steps of run.json, the newest committed checkpoint.
func runStatusOf(dir string) cluster.Status {
	st := cluster.Status{Job: filepath.Base(filepath.Clean(dir)), Checkpoint: -1}
	var cfg worker.RunConfig
	if raw, err := os.ReadFile(filepath.Join(dir, worker.RunConfigName)); err == nil && json.Unmarshal(raw, &cfg) == nil {
		st.Steps = cfg.Steps
	}
	// The last step line, read from the end: the page asks for the summary every few seconds.
	var m worker.StepMetrics
	if dashboard.LastLine(filepath.Join(dir, "metrics.jsonl"), func(l []byte) bool {
		m = worker.StepMetrics{}
		return json.Unmarshal(l, &m) == nil && m.Step > 0 && m.TokensPerS > 0
	}) != nil {
		st.Step, st.Loss, st.TokensPerS, st.TokensPerGPU, st.MFU = m.Step, m.Loss, m.TokensPerS, m.TokensPerSPerDevice, m.MFU
	}
	if st.TokensPerS > 0 && st.Steps > st.Step && cfg.Batch > 0 {
		st.ETA = float64(st.Steps-st.Step) * float64(cfg.Batch*cfg.Seq) / st.TokensPerS
	}
	st.Done = st.Steps > 0 && st.Step >= st.Steps
	// The newest committed checkpoint, when the run has a checkpoint directory (a dir store
	// would make one: the page only reads).
	if ckpt := filepath.Join(dir, "checkpoints"); isDir(ckpt) {
		if store, err := checkpoint.NewDirStore(ckpt); err == nil {
			if steps, err := checkpoint.ListSteps(context.Background(), checkpoint.Location{Store: store}); err == nil {
				for _, s := range steps {
					if s.Committed {
						st.Checkpoint = s.Step
					}
				}
			}
		}
	}
	return st
}

func isDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}
