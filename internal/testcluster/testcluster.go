// Package testcluster starts the parts of a herd cluster as real processes for end-to-end
// tests: an etcd server, coordinators and workers of the built herd binary, each on
// 127.0.0.1, each killed when the test ends. Tests kill and restart them with signals.
package testcluster

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Output collects a process's output; safe to read while it writes.
type Output struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (o *Output) Write(p []byte) (int, error) { o.mu.Lock(); defer o.mu.Unlock(); return o.b.Write(p) }

// String returns everything written so far.
func (o *Output) String() string { o.mu.Lock(); defer o.mu.Unlock(); return o.b.String() }

// WaitFor waits until the output matches re and returns the first match's submatches.
func (o *Output) WaitFor(t testing.TB, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if m := re.FindStringSubmatch(o.String()); m != nil {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %q; output:\n%s", timeout, re, Tail(o.String(), 4000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitForN waits until the output matches re n times and returns the first n matches'
// submatches.
func (o *Output) WaitForN(t testing.TB, re *regexp.Regexp, n int, timeout time.Duration) [][]string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if m := re.FindAllStringSubmatch(o.String(), -1); len(m) >= n {
			return m[:n]
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %d matches of %q; output:\n%s", timeout, n, re, Tail(o.String(), 4000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Tail returns the last n bytes of s.
func Tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// Proc is a started process.
type Proc struct {
	Cmd  *exec.Cmd
	Out  *Output
	done chan struct{}
	err  error
}

// Start runs bin with args, its output collected, and kills it (and its process group) when
// the test ends.
func Start(t testing.TB, env []string, bin string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Cmd: exec.Command(bin, args...), Out: &Output{}, done: make(chan struct{})}
	p.Cmd.Stdout, p.Cmd.Stderr = p.Out, p.Out
	p.Cmd.Env = append(os.Environ(), env...)
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.Cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.KillGroup()
		<-p.done
	})
	return p
}

// Kill sends SIGKILL to the process alone, as a crash would.
func (p *Proc) Kill() { p.Cmd.Process.Signal(syscall.SIGKILL) }

// KillGroup sends SIGKILL to the process and every process in its group.
func (p *Proc) KillGroup() {
	syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
	p.Cmd.Process.Signal(syscall.SIGKILL)
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) { p.Cmd.Process.Signal(sig) }

// Wait waits up to timeout for the process to exit and returns its error.
func (p *Proc) Wait(t testing.TB, timeout time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		t.Fatalf("process %s still running after %v; output:\n%s", p.Cmd.Args[1], timeout, Tail(p.Out.String(), 4000))
		return nil
	}
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// FreeAddr returns a 127.0.0.1 address whose port was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// EtcdBinary returns the etcd server binary: $HERD_ETCD, else etcd on $PATH. Without one the
// test is skipped, or fails when HERD_REQUIRE_ETCD=1.
func EtcdBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("HERD_ETCD"); p != "" {
		return p
	}
	if p, err := exec.LookPath("etcd"); err == nil {
		return p
	}
	if os.Getenv("HERD_REQUIRE_ETCD") == "1" {
		t.Fatal("tests need an etcd server binary: install Debian's etcd-server, or set HERD_ETCD")
	}
	t.Skip("no etcd server binary (install Debian's etcd-server, or set HERD_ETCD; HERD_REQUIRE_ETCD=1 makes this a failure)")
	return ""
}

// Etcd is an etcd server started as its own process.
type Etcd struct {
	*Proc
	Endpoint string // http://127.0.0.1:port
}

// StartEtcd starts a single-member etcd server on 127.0.0.1 with its data in a temporary
// directory, and waits until it answers.
func StartEtcd(t testing.TB) *Etcd {
	t.Helper()
	bin := EtcdBinary(t)
	client, peer := FreeAddr(t), FreeAddr(t)
	dir := t.TempDir()
	e := &Etcd{Endpoint: "http://" + client}
	e.Proc = Start(t, nil, bin, "--name", "test", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", e.Endpoint, "--advertise-client-urls", e.Endpoint,
		"--listen-peer-urls", "http://"+peer, "--initial-advertise-peer-urls", "http://"+peer,
		"--initial-cluster", "test=http://"+peer, "--logger=zap", "--log-level=error")
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", client, 100*time.Millisecond); err == nil {
			c.Close()
			if e.healthy() {
				return e
			}
		}
		if e.Exited() {
			t.Fatalf("etcd exited: %s", e.Out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("etcd not healthy after 20s: %s", Tail(e.Out.String(), 2000))
	return nil
}

func (e *Etcd) healthy() bool {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint}, DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		return false
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = cli.Get(ctx, "health")
	return err == nil
}

// Coordinator is a `herd coordinator` process.
type Coordinator struct {
	*Proc
	Addr string
}

// apiRE matches the line a coordinator prints once its API listens, before the replicas
// have a leader (with three replicas, none has one until a second one runs); workers that
// join before then are told to retry.
var apiRE = regexp.MustCompile(`API on (\S+) `)

// StartCoordinator runs `herd coordinator --job job --data-dir dir --listen 127.0.0.1:0`
// with extra flags and waits until its API listens.
func StartCoordinator(t testing.TB, bin, job, dir string, extra ...string) *Coordinator {
	t.Helper()
	args := append([]string{"coordinator", "--job", job, "--data-dir", dir, "--listen", "127.0.0.1:0", "--etcd-listen", "127.0.0.1:0"}, extra...)
	c := &Coordinator{Proc: Start(t, nil, bin, args...)}
	c.Addr = c.Out.WaitFor(t, apiRE, 30*time.Second)[1]
	return c
}

// Worker is a `herd worker` process.
type Worker struct {
	*Proc
	ID string
}

var joinedRE = regexp.MustCompile(`joined job \S+ as (\S+);`)

// StartWorker runs `herd worker --join addr --token token` with extra flags and waits until
// it has joined.
func StartWorker(t testing.TB, bin, addr, token string, extra ...string) *Worker {
	t.Helper()
	args := append([]string{"worker", "--join", addr, "--token", token, "--metrics-listen", "127.0.0.1:0"}, extra...)
	w := &Worker{Proc: Start(t, nil, bin, args...)}
	w.ID = w.Out.WaitFor(t, joinedRE, 30*time.Second)[1]
	return w
}

// LogTime parses the time of day at the start of a coordinator line (HH:MM:SS.mmm) as a time
// on the day of ref.
func LogTime(line string, ref time.Time) (time.Time, error) {
	f := strings.Fields(line)
	if len(f) == 0 {
		return time.Time{}, fmt.Errorf("empty line")
	}
	tod, err := time.ParseInLocation("15:04:05.000", f[0], ref.Location())
	if err != nil {
		return time.Time{}, err
	}
	y, m, d := ref.Date()
	return time.Date(y, m, d, tod.Hour(), tod.Minute(), tod.Second(), tod.Nanosecond(), ref.Location()), nil
}

// Atoi parses s or fails the test.
func Atoi(t testing.TB, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
