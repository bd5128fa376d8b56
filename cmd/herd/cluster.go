package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/herd-llm/herd/checkpoint"
	"github.com/herd-llm/herd/cluster"
	"github.com/herd-llm/herd/coordinator"
	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/worker"
)

// consoleLogger logs warnings and errors to w for people.
func consoleLogger(w io.Writer, level zapcore.Level) *zap.Logger {
	enc := zap.NewDevelopmentEncoderConfig()
	core := zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.AddSync(w), level)
	return zap.New(core)
}

func runCoordinator(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("coordinator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	jobPath := fs.String("job", "", "job file (JOB.yaml): model, dataset, batch, steps, checkpoint, workers (required)")
	dataDir := fs.String("data-dir", "herd-coordinator", "directory for the embedded etcd, the Raft log and the job's metrics.jsonl")
	listen := fs.String("listen", ":7070", "address of the API that workers join and `herd status` reads (host:port)")
	advertise := fs.String("advertise", "", "API address others dial (default: from --listen, with this machine's address for a wildcard host)")
	etcdURLs := fs.String("etcd", "", "comma-separated client URLs of an existing etcd cluster (default: an embedded single-member etcd in --data-dir)")
	etcdUser := fs.String("etcd-user", "", "etcd user name, when the cluster has authentication on (the password comes from $HERD_ETCD_PASSWORD)")
	etcdCA := fs.String("etcd-ca", "", "CA certificate (PEM) for TLS to etcd")
	etcdCert := fs.String("etcd-cert", "", "client certificate (PEM) for TLS to etcd")
	etcdKey := fs.String("etcd-key", "", "client key (PEM) for TLS to etcd")
	etcdListen := fs.String("etcd-listen", ":2379", "embedded etcd: client address (workers register there)")
	etcdTimeout := fs.Duration("etcd-timeout", 10*time.Second, "how long to wait for etcd to answer before giving up")
	raftID := fs.String("raft-id", "c1", "this replica's id among --raft-peers")
	raftPeers := fs.String("raft-peers", "", "every replica as ID=HOST:PORT,... (the Raft addresses); default: this replica alone")
	raftAddr := fs.String("raft-addr", "", "this replica's Raft address when alone (default: a free port on 127.0.0.1, kept across restarts)")
	s3 := s3Flags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: herd coordinator --job JOB.yaml [--data-dir DIR] [--etcd URL,...] [--listen ADDR] [--raft-id ID --raft-peers ID=ADDR,...]")
		fmt.Fprintln(stderr, "\nRuns the control plane of a training job on the head node: worker membership in etcd, the")
		fmt.Fprintln(stderr, "job's state in Raft (one replica, or three with --raft-peers and a shared --etcd), rounds that")
		fmt.Fprintln(stderr, "say which workers train, and the API workers join with `herd worker --join ADDR --token TOKEN`.")
		fmt.Fprintln(stderr, "It prints the join command, and exits when the job has finished. The workers' token is the job")
		fmt.Fprintln(stderr, "file's token:, else $HERD_TOKEN, else one the coordinator makes and prints.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *jobPath == "" {
		return errors.New("--job: a job file is required")
	}
	spec, err := cluster.LoadJobSpec(*jobPath)
	if err != nil {
		return err
	}
	if spec.Token == "" {
		spec.Token = os.Getenv("HERD_TOKEN") // from a secret store, beside a job file kept in the open
	}
	cfg := coordinator.Config{Job: spec, DataDir: *dataDir, Listen: *listen, Advertise: *advertise, RaftID: *raftID, RaftAddr: *raftAddr,
		Etcd: coordinator.EtcdConfig{Username: *etcdUser, Password: os.Getenv("HERD_ETCD_PASSWORD"), CA: *etcdCA, Cert: *etcdCert,
			Key: *etcdKey, Listen: *etcdListen, DialTimeout: *etcdTimeout},
		Logger: consoleLogger(stderr, zapcore.WarnLevel), Out: stderr}
	if *etcdURLs != "" {
		cfg.Etcd.Endpoints = strings.Split(*etcdURLs, ",")
	}
	if *raftPeers != "" {
		if cfg.RaftPeers, err = coordinator.ParseRaftPeers(*raftPeers); err != nil {
			return err
		}
	}
	storeOpts := checkpoint.StoreOptions{S3: s3.config()}
	if spec.Checkpoint.S3Endpoint != "" {
		storeOpts.S3.Endpoint = spec.Checkpoint.S3Endpoint
	}
	if spec.Checkpoint.S3Region != "" {
		storeOpts.S3.Region = spec.Checkpoint.S3Region
	}
	cfg.Checkpoint = func(ctx context.Context) (checkpoint.Location, error) {
		return checkpoint.OpenLocation(ctx, spec.Checkpoint.URI, storeOpts)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := coordinator.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintf(stderr, "coordinator: %s API on %s (etcd %s); joining the job's replicas\n", *raftID, c.Addr(), strings.Join(c.EtcdEndpoints(), ","))
	select {
	case <-c.Ready():
	case err := <-c.Err():
		return err
	case <-ctx.Done():
		return nil
	}
	fmt.Fprintf(stderr, "coordinator: %s serving job %s on %s (etcd %s)\n", *raftID, spec.Name, c.Addr(), strings.Join(c.EtcdEndpoints(), ","))
	select {
	case <-c.Done():
		// Let workers polling for rounds learn that the job is done before the API goes.
		time.Sleep(3 * time.Second)
		return nil
	case err := <-c.Err():
		return err
	case <-ctx.Done():
		fmt.Fprintln(stderr, "coordinator: stopping; the job's state is in --data-dir and etcd, start again to continue")
		return nil
	}
}

func runWorker(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	join := fs.String("join", "", "the coordinator's API address (host:port; several, comma-separated, for replicas) (required)")
	token := fs.String("token", os.Getenv("HERD_TOKEN"), "the job's token, which the coordinator prints at start (default: $HERD_TOKEN)")
	job := fs.String("job", "", "the job this worker is for (default: whatever job the coordinator runs)")
	nproc := fs.Int("nproc-per-node", 0, "rank processes to run, one per GPU (default: 1 on the cpu backend, every GPU on cuda)")
	backend := fs.String("backend", "cpu", backendUsage)
	advertise := fs.String("advertise", "", "host or IP the other workers reach this one at (default: this machine's address; 127.0.0.1 when the coordinator is on 127.0.0.1)")
	pureGo := fs.Bool("pure-go", false, "cpu: use the pure-Go matmul even when a BLAS library is installed")
	metrics := fs.String("metrics-listen", ":9401", "where to serve Prometheus /metrics (\"\" : nowhere); port 0 picks a free one")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: herd worker --join ADDR --token TOKEN [--nproc-per-node N] [--backend cpu|cuda]")
		fmt.Fprintln(stderr, "\nJoins a training job: registers with the coordinator under an etcd lease, starts one rank process")
		fmt.Fprintln(stderr, "per device, and trains in the rounds the coordinator forms. SIGTERM leaves cleanly; the job goes")
		fmt.Fprintln(stderr, "on with the other workers.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *join == "":
		return errors.New("--join: the coordinator's address is required")
	case *token == "":
		return errors.New("--token: the job's token is required (the coordinator prints it at start)")
	case *nproc < 0:
		return fmt.Errorf("--nproc-per-node = %d, must be >= 0", *nproc)
	}
	if err := checkBackend(*backend); err != nil {
		return err
	}
	devices := deviceCount(*backend)
	if *backend == "cuda" && devices == 0 {
		return errors.New("--backend cuda: this machine has no CUDA device")
	}
	host := *advertise
	if host == "" {
		host = advertiseFor(*join)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	name, _ := os.Hostname()
	return worker.RunAgent(ctx, worker.AgentConfig{Join: *join, Token: *token, Job: *job, Host: name, Backend: *backend,
		Devices: devices, Slots: *nproc, Log: stderr, Logger: consoleLogger(stderr, zapcore.ErrorLevel), MetricsListen: *metrics,
		RankCommand: func(local int) *exec.Cmd {
			args := []string{"worker-rank", "--listen", host + ":0", "--local", strconv.Itoa(local), "--device", strconv.Itoa(local)}
			if *pureGo {
				args = append(args, "--pure-go")
			}
			cmd := exec.Command(self, args...)
			cmd.SysProcAttr = rankProcAttr(0)
			return cmd
		}})
}

// advertiseFor returns the host the ranks of a worker joining coordinator addr listen on:
// 127.0.0.1 for a coordinator on the loopback, else this machine's address.
func advertiseFor(addr string) string {
	host := strings.Split(strings.Split(addr, ",")[0], ":")[0]
	if host == "127.0.0.1" || host == "localhost" {
		return "127.0.0.1"
	}
	return cluster.OutboundIP()
}

// runWorkerRank is the hidden command a worker runs once per device.
func runWorkerRank(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("worker-rank", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "ring address")
	local := fs.Int("local", 0, "this rank's index on its worker")
	device := fs.Int("device", 0, "GPU ordinal")
	pureGo := fs.Bool("pure-go", false, "cpu: pure-Go matmul")
	s3 := s3Flags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	host := strings.Split(*listen, ":")[0]
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return worker.RunRank(ctx, worker.RankConfig{Listen: *listen, Advertise: host, Local: *local, Device: *device, In: os.Stdin, Out: stdout, Log: stderr,
		Stores: checkpoint.StoreOptions{S3: s3.config(), Retry: checkpoint.RetryPolicy{Log: func(s string) { fmt.Fprintln(stderr, s) }}},
		OpenBackend: func(name string, dev int) (kernels.Backend, func(), error) {
			return openBackend(backendOptions{name: name, device: dev, pureGo: *pureGo})
		}})
}

func runStatus(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("coordinator", "127.0.0.1:7070", "a coordinator's API address (any replica)")
	watch := fs.Bool("watch", false, "print the status again every --interval until interrupted")
	interval := fs.Duration("interval", 2*time.Second, "with --watch: time between updates")
	asJSON := fs.Bool("json", false, "print JSON")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: herd status [--coordinator ADDR] [--watch] [--json]")
		fmt.Fprintln(stderr, "\nPrints a job's round, step, loss, tokens/s in total and per GPU, MFU, each worker's state and last")
		fmt.Fprintln(stderr, "heartbeat, the last checkpoint and the ETA.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *interval <= 0 {
		return fmt.Errorf("--interval = %v, must be > 0", *interval)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	client := cluster.NewClient(*addr, "")
	client.RetryFor = 5 * time.Second
	for {
		st, err := client.Status(ctx)
		if err != nil {
			return fmt.Errorf("--coordinator %s: %w", *addr, err)
		}
		if *asJSON {
			printJSON(stdout, st)
		} else {
			printStatus(stdout, st)
		}
		if !*watch {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(*interval):
		}
	}
}

func printStatus(w io.Writer, st *cluster.Status) {
	state := "training"
	switch {
	case st.Done:
		state = "finished"
	case st.Round == nil:
		state = "waiting for workers"
	}
	fmt.Fprintf(w, "job %s: %s; leader %s\n", st.Job, state, st.Leader)
	if st.Round != nil {
		fmt.Fprintf(w, "round %d: %d workers, %d ranks (%d rounds, %d recoveries, %d steps redone)\n",
			st.Round.ID, len(st.Round.Members), st.Round.World, st.Rounds, st.Recoveries, st.RedoneSteps)
	}
	eta := "-"
	if st.ETA > 0 {
		eta = (time.Duration(st.ETA) * time.Second).String()
	}
	mfu := ""
	if st.MFU > 0 {
		mfu = fmt.Sprintf("  MFU %.1f%%", 100*st.MFU)
	}
	fmt.Fprintf(w, "step %d/%d  loss %.4f  %.0f tok/s (%.0f per GPU)%s  last checkpoint %d  ETA %s\n",
		st.Step, st.Steps, st.Loss, st.TokensPerS, st.TokensPerGPU, mfu, st.Checkpoint, eta)
	for _, ws := range st.Workers {
		seen := "-"
		if !ws.LastSeen.IsZero() {
			seen = time.Since(ws.LastSeen).Round(100*time.Millisecond).String() + " ago"
		}
		fmt.Fprintf(w, "  %-24s %-9s %d ranks  host %-16s last heard %s\n", ws.WorkerID, ws.State, ws.Ranks, ws.Host, seen)
	}
}

// dataDirFor returns a directory for a command's state under the user's data directory.
func dataDirFor(name string) string {
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	return filepath.Join(base, "herd", name)
}

func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
