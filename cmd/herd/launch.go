package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/herd-llm/herd/collective"
	"github.com/herd-llm/herd/worker"
	"go.uber.org/zap"
)

// Environment of a rank started by `herd train --nproc N`. The parent binds every rank's
// listening socket on 127.0.0.1 before starting them and hands it down as file descriptor 3,
// so no port can be taken in between; the ring secret travels in the environment, never on
// a command line. File descriptor 4 is the write end of a pipe on which a failing rank tells
// the launcher, in one JSON line, which rank its failure is attributed to.
const (
	envRank     = "HERD_RANK"
	envWorld    = "HERD_WORLD"
	envPeers    = "HERD_PEERS"
	envJob      = "HERD_JOB_ID"
	envSecret   = "HERD_RING_SECRET"
	envLauncher = "HERD_LAUNCHER_PID"
	envTPPeers  = "HERD_TP_PEERS" // the rank's tensor-parallel group, in group order
	envDPPeers  = "HERD_DP_PEERS" // the ranks holding the same tensor-parallel share
	listenFD    = 3
	statusFD    = 4
	tpListenFD  = 5
	dpListenFD  = 6
)

// rankStatus is what a failing rank reports to the launcher.
type rankStatus struct {
	Rank    int    `json:"rank"`
	Culprit int    `json:"culprit"` // the rank the failure is attributed to
	Error   string `json:"error"`
}

// launchLocal runs `herd <args>` as n rank processes on this machine and waits for them.
// The ranks form one process group and die with the launcher: each gets SIGTERM when the
// launcher exits however it exits (Linux's parent-death signal, and a rank that finds its
// launcher gone stops too), so a killed launcher never leaves ranks training on their own.
// When one rank fails, the others are stopped, and the error names the rank the failure is
// attributed to: the one that died or did not answer, not the first to notice.
//
// With tp > 1 the ranks form a dp x tp mesh: rank r is tensor-parallel rank r%tp of group
// r/tp and data-parallel rank r/tp of group r%tp, and each rank also inherits a listening
// socket for each of its two groups' rings (fds 5 and 6).
func launchLocal(ctx context.Context, n, tp int, args []string, stdout, stderr io.Writer) error {
	// The parent-death signal fires when the thread that started a child exits: keep this
	// goroutine on one thread until every rank has been waited for.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var lns []*net.TCPListener
	var peers []string
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	listen := func() (*net.TCPListener, error) {
		l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err == nil {
			lns = append(lns, l)
		}
		return l, err
	}
	axes := 1 // listeners per rank: the world's, then the tp and dp groups'
	if tp > 1 {
		axes = 3
	}
	addrs := make([][]string, axes)
	for a := range axes {
		for i := 0; i < n; i++ {
			l, err := listen()
			if err != nil {
				return err
			}
			addrs[a] = append(addrs[a], l.Addr().String())
		}
	}
	peers = addrs[0]
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer statusR.Close()
	statuses := make(chan []rankStatus, 1)
	go func() { statuses <- readStatuses(statusR) }()
	job, secret := randomHex(8), randomHex(32)
	type exit struct {
		rank int
		err  error
	}
	exits := make(chan exit, n)
	procs := make([]*exec.Cmd, n)
	pgid := 0
	var outMu sync.Mutex
	signalAll := func(sig syscall.Signal) {
		if pgid != 0 {
			syscall.Kill(-pgid, sig)
		}
	}
	// stopAll asks every rank to stop; a stopped (SIGSTOP) rank is continued so that it can.
	stopAll := func() {
		signalAll(syscall.SIGTERM)
		signalAll(syscall.SIGCONT)
	}
	for r := 0; r < n; r++ {
		files := make([]*os.File, axes)
		for a := range files {
			if files[a], err = lns[a*n+r].File(); err != nil {
				for _, f := range files[:a] {
					f.Close()
				}
				signalAll(syscall.SIGKILL)
				statusW.Close()
				return err
			}
		}
		f := files[0]
		cmd := exec.Command(self, args...)
		cmd.ExtraFiles = []*os.File{f, statusW} // fds 3 and 4
		cmd.Env = append(os.Environ(), envRank+"="+strconv.Itoa(r), envWorld+"="+strconv.Itoa(n),
			envPeers+"="+strings.Join(peers, ","), envJob+"="+job, envSecret+"="+secret,
			envLauncher+"="+strconv.Itoa(os.Getpid()))
		if tp > 1 {
			cmd.ExtraFiles = append(cmd.ExtraFiles, files[1], files[2]) // fds 5 and 6
			var tpPeers, dpPeers []string
			for k := r / tp * tp; k < r/tp*tp+tp; k++ {
				tpPeers = append(tpPeers, addrs[1][k])
			}
			for k := r % tp; k < n; k += tp {
				dpPeers = append(dpPeers, addrs[2][k])
			}
			cmd.Env = append(cmd.Env, envTPPeers+"="+strings.Join(tpPeers, ","), envDPPeers+"="+strings.Join(dpPeers, ","))
		}
		closeFiles := func() {
			for _, f := range files[1:] {
				f.Close()
			}
		}
		cmd.SysProcAttr = rankProcAttr(pgid)
		var lines io.Reader
		if r == 0 {
			cmd.Stdout, cmd.Stderr = stdout, stderr
		} else {
			cmd.Stdout = io.Discard
			if lines, err = cmd.StderrPipe(); err != nil {
				f.Close()
				closeFiles()
				signalAll(syscall.SIGKILL)
				statusW.Close()
				return err
			}
		}
		if err := cmd.Start(); err != nil {
			f.Close()
			closeFiles()
			signalAll(syscall.SIGKILL)
			statusW.Close()
			return fmt.Errorf("starting rank %d: %w", r, err)
		}
		f.Close()
		closeFiles()
		if pgid == 0 {
			pgid = cmd.Process.Pid
		}
		procs[r] = cmd
		go func(r int) {
			if lines != nil {
				copyLines(stderr, &outMu, fmt.Sprintf("[rank %d] ", r), lines) // to EOF, before Wait
			}
			exits <- exit{r, cmd.Wait()}
		}(r)
	}
	statusW.Close() // the ranks hold the write end now
	for _, l := range lns {
		l.Close()
	}
	lns = nil
	var first *exit
	killed := false // the first rank to fail was killed by a signal from outside
	exitErr := make([]error, n)
	stopped := false // the launcher itself stopped the ranks
	done := 0
	var grace <-chan time.Time
	for done < n {
		select {
		case e := <-exits:
			done++
			exitErr[e.rank] = e.err
			if e.err != nil && first == nil {
				first = &e
				killed = !stopped && signaled(e.err) // died of a signal the launcher did not send
				if !stopped {
					stopAll()
					grace = time.After(10 * time.Second)
				}
				stopped = true
			}
		case <-ctx.Done():
			stopAll()
			grace = time.After(10 * time.Second)
			ctx = context.Background()
			stopped = true
		case <-grace:
			signalAll(syscall.SIGKILL)
		}
	}
	if first == nil {
		return nil
	}
	return failureReport(n, first.rank, killed, exitErr, <-statuses)
}

// signaled reports whether a rank process ended by a signal.
func signaled(err error) bool {
	ee, ok := err.(*exec.ExitError)
	return ok && !ee.Exited()
}

// failureReport says why a local run failed. The rank blamed is the first to exit when a
// signal from outside killed it (the launcher then stopped the others, maybe before they
// noticed the loss: what they report may blame a neighbour they were waiting for); else the
// one the ranks' own reports attribute the failure to (the first report wins), or the first
// rank to exit when none reported.
func failureReport(n, firstExit int, firstKilled bool, exitErr []error, st []rankStatus) error {
	if firstKilled {
		return fmt.Errorf("rank %d of %d failed: %v (the other ranks were stopped)", firstExit, n, exitErr[firstExit])
	}
	if len(st) == 0 {
		return fmt.Errorf("rank %d of %d failed: %v", firstExit, n, exitErr[firstExit])
	}
	culprit := st[0].Culprit
	for _, s := range st {
		if s.Rank == culprit {
			return fmt.Errorf("rank %d of %d failed: %s", culprit, n, s.Error)
		}
	}
	if culprit >= 0 && culprit < n && exitErr[culprit] != nil {
		if signaled(exitErr[culprit]) {
			return fmt.Errorf("rank %d of %d failed (%v): rank %d reported: %s", culprit, n, exitErr[culprit], st[0].Rank, st[0].Error)
		}
	}
	return fmt.Errorf("rank %d of %d failed: rank %d reported: %s", culprit, n, st[0].Rank, st[0].Error)
}

func readStatuses(r io.Reader) []rankStatus {
	var out []rankStatus
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var s rankStatus
		if json.Unmarshal(sc.Bytes(), &s) == nil {
			out = append(out, s)
		}
	}
	return out
}

// reportFailure tells the launcher, when there is one, which rank err is attributed to.
func reportFailure(rank int, err error) {
	if os.Getenv(envRank) == "" || errors.Is(err, context.Canceled) {
		return // a rank told to stop by the launcher is not a cause
	}
	s := rankStatus{Rank: rank, Culprit: rank, Error: err.Error()}
	var pe *collective.PeerError
	if errors.As(err, &pe) {
		s.Culprit = worldRank(rank, pe)
	}
	if errors.Is(err, worker.ErrPeerRestore) {
		s.Culprit = 0
	}
	line, _ := json.Marshal(s)
	f := os.NewFile(statusFD, "status")
	f.Write(append(line, '\n'))
	f.Close()
}

// worldRank returns the world rank of the peer a ring failure is attributed to: pe.Rank
// numbers the ranks of the ring that failed, which under --tp may be this rank's tensor or
// data group; the peer's address tells which.
func worldRank(rank int, pe *collective.PeerError) int {
	tpPeers, dpPeers := strings.Split(os.Getenv(envTPPeers), ","), strings.Split(os.Getenv(envDPPeers), ",")
	tp := len(tpPeers)
	if os.Getenv(envTPPeers) == "" {
		return pe.Rank
	}
	if k := slices.Index(tpPeers, pe.Addr); k >= 0 {
		return rank/tp*tp + k
	}
	if k := slices.Index(dpPeers, pe.Addr); k >= 0 {
		return k*tp + rank%tp
	}
	return pe.Rank
}

// watchLauncher cancels a rank's work when its launcher is gone: the parent-death signal
// covers most exits, and this covers a launcher that died before the rank could ask for it.
func watchLauncher(cancel context.CancelFunc) {
	want, err := strconv.Atoi(os.Getenv(envLauncher))
	if err != nil {
		return
	}
	if os.Getppid() != want {
		fmt.Fprintf(os.Stderr, "herd: launcher %d is gone; stopping\n", want)
		cancel()
		return
	}
	go func() {
		for range time.Tick(time.Second) {
			if os.Getppid() != want {
				fmt.Fprintf(os.Stderr, "herd: launcher %d is gone; stopping\n", want)
				cancel()
				return
			}
		}
	}()
}

// joinRing builds this process's ring from the environment set by launchLocal; it returns
// nil when the process was not started as a rank.
func joinRing(ctx context.Context, timeout time.Duration, stderr io.Writer) (*collective.Ring, error) {
	rs := os.Getenv(envRank)
	if rs == "" {
		return nil, nil
	}
	rank, err := strconv.Atoi(rs)
	if err != nil {
		return nil, fmt.Errorf("%s=%q: %w", envRank, rs, err)
	}
	return startRing(ctx, listenFD, rank, strings.Split(os.Getenv(envPeers), ","), "", timeout, zap.Int("rank", rank))
}

// joinMesh builds the rings of this rank's tensor-parallel and data-parallel groups from the
// environment set by launchLocal with tp > 1 (after joinRing, every rank in the same order).
func joinMesh(ctx context.Context, world *collective.Ring, tp int, timeout time.Duration) (tpRing, dpRing *collective.Ring, err error) {
	r := world.Rank()
	tpPeers, dpPeers := strings.Split(os.Getenv(envTPPeers), ","), strings.Split(os.Getenv(envDPPeers), ",")
	if len(tpPeers) != tp || world.Size()%tp != 0 || len(dpPeers) != world.Size()/tp {
		return nil, nil, fmt.Errorf("rank %d: %s lists %d ranks and %s %d, which do not form groups of --tp %d among %d",
			r, envTPPeers, len(tpPeers), envDPPeers, len(dpPeers), tp, world.Size())
	}
	if tpRing, err = startRing(ctx, tpListenFD, r%tp, tpPeers, fmt.Sprintf("/tp%d", r/tp), timeout, zap.Int("rank", r), zap.String("group", "tp")); err != nil {
		return nil, nil, err
	}
	if dpRing, err = startRing(ctx, dpListenFD, r/tp, dpPeers, fmt.Sprintf("/dp%d", r%tp), timeout, zap.Int("rank", r), zap.String("group", "dp")); err != nil {
		tpRing.Close()
		return nil, nil, err
	}
	return tpRing, dpRing, nil
}

// startRing joins one ring as rank of peers over the listener inherited at fd; suffix tells
// the job's rings apart.
func startRing(ctx context.Context, fd uintptr, rank int, peers []string, suffix string, timeout time.Duration, fields ...zap.Field) (*collective.Ring, error) {
	f := os.NewFile(fd, "ring-listener")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("rank %d: inherited listener: %w", rank, err)
	}
	cfg := collective.DefaultConfig()
	cfg.Rank, cfg.Peers, cfg.Listener = rank, peers, ln
	cfg.JobID, cfg.Secret, cfg.OpTimeout = os.Getenv(envJob)+suffix, os.Getenv(envSecret), timeout
	logCfg := zap.NewProductionConfig()
	logCfg.Level = zap.NewAtomicLevelAt(zap.WarnLevel)
	logCfg.OutputPaths = []string{"stderr"}
	logCfg.Encoding = "console" // read by people, beside the progress lines
	logCfg.EncoderConfig = zap.NewDevelopmentEncoderConfig()
	logCfg.DisableCaller, logCfg.DisableStacktrace = true, true
	if logger, err := logCfg.Build(); err == nil {
		cfg.Logger = logger.With(fields...)
	}
	ring, err := collective.Join(ctx, cfg)
	if err != nil && ctx.Err() == nil {
		return nil, fmt.Errorf("rank %d: joining the ring%s: %w", rank, suffix, err)
	}
	return ring, err
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// copyLines copies r to w line by line with a prefix, whole lines at a time, until r ends.
// Lines of any length pass; a last line without a newline is kept.
func copyLines(w io.Writer, mu *sync.Mutex, prefix string, r io.Reader) {
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			mu.Lock()
			fmt.Fprint(w, prefix+strings.TrimSuffix(line, "\n")+"\n")
			mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}
