package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/herd-llm/herd/collective"
	"go.uber.org/zap"
)

// Environment of a rank started by `herd train --nproc N`. The parent binds every rank's
// listening socket on 127.0.0.1 before starting them and hands it down as file descriptor 3,
// so no port can be taken in between; the ring secret travels in the environment, never on
// a command line.
const (
	envRank   = "HERD_RANK"
	envWorld  = "HERD_WORLD"
	envPeers  = "HERD_PEERS"
	envJob    = "HERD_JOB_ID"
	envSecret = "HERD_RING_SECRET"
	listenFD  = 3
)

// launchLocal runs `herd <args>` as n rank processes on this machine and waits for them.
// When one fails, the others are stopped and the error names the rank.
func launchLocal(ctx context.Context, n int, args []string, stdout, stderr io.Writer) error {
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
	for i := 0; i < n; i++ {
		l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return err
		}
		lns = append(lns, l)
		peers = append(peers, l.Addr().String())
	}
	job, secret := randomHex(8), randomHex(32)
	type exit struct {
		rank int
		err  error
	}
	exits := make(chan exit, n)
	procs := make([]*exec.Cmd, n)
	var outMu sync.Mutex
	killStarted := func() {
		for _, p := range procs {
			if p != nil {
				p.Process.Kill()
			}
		}
	}
	for r := 0; r < n; r++ {
		f, err := lns[r].File()
		if err != nil {
			killStarted()
			return err
		}
		cmd := exec.Command(self, args...)
		cmd.ExtraFiles = []*os.File{f} // fd 3
		cmd.Env = append(os.Environ(), envRank+"="+strconv.Itoa(r), envWorld+"="+strconv.Itoa(n),
			envPeers+"="+strings.Join(peers, ","), envJob+"="+job, envSecret+"="+secret)
		var lines io.Reader
		if r == 0 {
			cmd.Stdout, cmd.Stderr = stdout, stderr
		} else {
			cmd.Stdout = io.Discard
			if lines, err = cmd.StderrPipe(); err != nil {
				f.Close()
				killStarted()
				return err
			}
		}
		if err := cmd.Start(); err != nil {
			f.Close()
			killStarted()
			return fmt.Errorf("starting rank %d: %w", r, err)
		}
		f.Close()
		procs[r] = cmd
		go func(r int) {
			if lines != nil {
				copyLines(stderr, &outMu, fmt.Sprintf("[rank %d] ", r), lines) // to EOF, before Wait
			}
			exits <- exit{r, cmd.Wait()}
		}(r)
	}
	for _, l := range lns {
		l.Close()
	}
	lns = nil
	var failed *exit
	exited := make([]bool, n)
	stop := func(sig os.Signal) {
		for r, p := range procs {
			if !exited[r] {
				p.Process.Signal(sig)
			}
		}
	}
	done := 0
	var grace <-chan time.Time
	for done < n {
		select {
		case e := <-exits:
			done++
			exited[e.rank] = true
			if e.err != nil && failed == nil {
				failed = &e
				stop(syscall.SIGTERM)
				grace = time.After(10 * time.Second)
			}
		case <-ctx.Done():
			stop(syscall.SIGTERM)
			grace = time.After(10 * time.Second)
			ctx = context.Background()
		case <-grace:
			stop(syscall.SIGKILL)
		}
	}
	if failed != nil {
		return fmt.Errorf("rank %d of %d failed: %v", failed.rank, n, failed.err)
	}
	return nil
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
	f := os.NewFile(listenFD, "ring-listener")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("rank %d: inherited listener: %w", rank, err)
	}
	cfg := collective.DefaultConfig()
	cfg.Rank, cfg.Peers, cfg.Listener = rank, strings.Split(os.Getenv(envPeers), ","), ln
	cfg.JobID, cfg.Secret, cfg.OpTimeout = os.Getenv(envJob), os.Getenv(envSecret), timeout
	logCfg := zap.NewProductionConfig()
	logCfg.Level = zap.NewAtomicLevelAt(zap.WarnLevel)
	logCfg.OutputPaths = []string{"stderr"}
	if logger, err := logCfg.Build(); err == nil {
		cfg.Logger = logger.With(zap.Int("rank", rank))
	}
	ring, err := collective.Start(ctx, cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-ring.Ready():
		return ring, nil
	case err := <-ring.Err():
		ring.Close()
		return nil, fmt.Errorf("rank %d: joining the ring: %w", rank, err)
	case <-ctx.Done():
		ring.Close()
		return nil, ctx.Err()
	}
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
