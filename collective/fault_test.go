//go:build unix

package collective_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestRingKillMember runs 4 ring members as processes (this test binary, re-executed),
// kills one with SIGKILL in the middle of a large all-reduce, and checks that every
// survivor's call fails with ErrPeerFailed naming the dead member's rank and address well
// within the call's deadline (childOpTimeout), instead of waiting it out.
func TestRingKillMember(t *testing.T) {
	const n, victim = 4, 2
	elems := 16 << 20 // 64 MiB
	if raceEnabled || testing.Short() {
		elems = 2 << 20
	}
	kids := startChildren(t, n, elems)
	kids.waitAll(t, "READY", 30*time.Second)

	// Time one all-reduce, then kill the victim a quarter of the way into a later one (the
	// next one, should a round end early).
	begin := kids.wait(t, victim, "BEGIN 1", 60*time.Second)
	end := kids.wait(t, victim, "END 1", 60*time.Second)
	round := 2
	for ; ; round++ {
		kids.wait(t, victim, fmt.Sprintf("BEGIN %d", round), 60*time.Second)
		time.Sleep(end.Sub(begin) / 4)
		if !kids.seen(victim, fmt.Sprintf("END %d", round)) || round == 20 {
			break
		}
	}
	if err := kids.cmds[victim].Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	if kids.seen(victim, fmt.Sprintf("END %d", round)) {
		t.Fatalf("victim finished all-reduce %d before it was killed; rounds take %v", round, end.Sub(begin))
	}
	t.Logf("killed rank %d %v into all-reduce %d, which takes about %v", victim,
		(end.Sub(begin) / 4).Round(time.Millisecond), round, end.Sub(begin).Round(time.Millisecond))
	for r := range n {
		if r == victim {
			continue
		}
		at, line := kids.waitPrefix(t, r, "FAIL ", 2*childOpTimeout)
		want := fmt.Sprintf("FAIL rank=%d addr=%s peer_failed=true deadline=false ", victim, kids.peers[victim])
		if !strings.HasPrefix(line, want) {
			t.Errorf("rank %d reported %q, want the prefix %q", r, line, want)
		}
		if d := at.Sub(killed); d >= childOpTimeout {
			t.Errorf("rank %d reported the dead peer %v after the kill, want within %v", r, d, childOpTimeout)
		} else {
			t.Logf("rank %d failed %v after the kill: %s", r, d.Round(time.Millisecond), line)
		}
	}
}

// TestRingStoppedMember stops one member of a ring of processes with SIGSTOP: its kernel
// still acknowledges TCP, so no connection breaks, but it sends nothing. Every other member's
// call must fail once its deadline (Config.OpTimeout) passes, and both the call's error and
// Ring.Err must blame the stopped member by rank and address, say that it sent nothing, and
// wrap ErrDeadline, whatever the stopped member's position (first, middle, last) and the
// world size. The cases run in parallel.
func TestRingStoppedMember(t *testing.T) {
	const opTimeout = 3 * time.Second
	// Failing takes the deadline itself plus the failing member's abortGrace at most; the
	// rest is slack for a loaded machine.
	const within = opTimeout + 4*time.Second
	cases := []struct{ n, victim int }{{3, 0}, {3, 1}, {3, 2}, {4, 1}, {4, 3}}
	for _, c := range cases {
		t.Run(fmt.Sprintf("world=%d/stop=%d", c.n, c.victim), func(t *testing.T) {
			t.Parallel()
			kids := startChildren(t, c.n, 4096, childEnv+"_ROUNDS=1000000",
				childEnv+"_OPTIMEOUT="+opTimeout.String(), childEnv+"_PAUSE=10ms")
			victim := kids.cmds[c.victim].Process
			t.Cleanup(func() {
				// Before startChildren's cleanup reaps the children: a stopped child never exits.
				victim.Signal(syscall.SIGCONT)
				victim.Kill()
			})
			kids.waitAll(t, "READY", 30*time.Second)
			kids.wait(t, c.victim, "END 20", 30*time.Second) // the ring runs
			if err := victim.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			stopped := time.Now()
			for r := range c.n {
				if r == c.victim {
					continue
				}
				at, line := kids.waitPrefix(t, r, "FAIL ", within+time.Second)
				_, ringErr := kids.waitPrefix(t, r, "RINGERR ", time.Second)
				want := fmt.Sprintf("rank=%d addr=%s peer_failed=false deadline=true ", c.victim, kids.peers[c.victim])
				for _, got := range []string{line, ringErr} {
					if !strings.Contains(got, want) || !strings.Contains(got, "sent nothing for") {
						t.Errorf("rank %d reported %q, want %q and that rank %d sent nothing", r, got, want, c.victim)
					}
				}
				if d := at.Sub(stopped); d > within {
					t.Errorf("rank %d failed %v after the stop, want within %v", r, d, within)
				} else {
					t.Logf("rank %d failed %v after the stop: %s", r, d.Round(time.Millisecond), line)
				}
			}
		})
	}
}

// children are ring members running in processes of their own.
type children struct {
	cmds   []*exec.Cmd
	peers  []string
	stderr []*lockedBuffer
	mu     sync.Mutex
	lines  [][]event // per rank, in order
	more   chan struct{}
}

type event struct {
	at   time.Time
	line string
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startChildren binds n loopback listeners here, so every port is known before any member
// starts, and hands listener i to child i as fd 3. env adds settings (see childOptions).
func startChildren(t *testing.T, n, elems int, env ...string) *children {
	files := make([]*os.File, n)
	k := &children{peers: make([]string, n), lines: make([][]event, n), more: make(chan struct{}, 1)}
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		k.peers[i] = ln.Addr().String()
		if files[i], err = ln.(*net.TCPListener).File(); err != nil {
			t.Fatal(err)
		}
		ln.Close()
	}
	t.Cleanup(func() { k.stop(t) })
	for i := range n {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"=1", fmt.Sprintf("%s_RANK=%d", childEnv, i),
			fmt.Sprintf("%s_ELEMS=%d", childEnv, elems), childEnv+"_PEERS="+strings.Join(k.peers, ","))
		cmd.Env = append(cmd.Env, env...)
		cmd.ExtraFiles = []*os.File{files[i]}
		stderr := &lockedBuffer{}
		cmd.Stderr = stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		files[i].Close()
		k.cmds, k.stderr = append(k.cmds, cmd), append(k.stderr, stderr)
		go k.scan(i, stdout)
	}
	return k
}

func (k *children) scan(rank int, stdout interface{ Read([]byte) (int, error) }) {
	s := bufio.NewScanner(stdout)
	for s.Scan() {
		k.mu.Lock()
		k.lines[rank] = append(k.lines[rank], event{time.Now(), s.Text()})
		k.mu.Unlock()
		select {
		case k.more <- struct{}{}:
		default:
		}
	}
}

func (k *children) find(rank int, prefix string) (event, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, e := range k.lines[rank] {
		if strings.HasPrefix(e.line, prefix) {
			return e, true
		}
	}
	return event{}, false
}

func (k *children) seen(rank int, line string) bool {
	_, ok := k.find(rank, line)
	return ok
}

// waitPrefix waits up to timeout for rank to print a line starting with prefix.
func (k *children) waitPrefix(t *testing.T, rank int, prefix string, timeout time.Duration) (time.Time, string) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		if e, ok := k.find(rank, prefix); ok {
			return e.at, e.line
		}
		select {
		case <-k.more:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("rank %d printed no %q within %v; stdout %q; stderr:\n%s",
				rank, prefix, timeout, k.dump(rank), k.stderr[rank])
		}
	}
}

func (k *children) wait(t *testing.T, rank int, line string, timeout time.Duration) time.Time {
	t.Helper()
	at, _ := k.waitPrefix(t, rank, line, timeout)
	return at
}

func (k *children) waitAll(t *testing.T, line string, timeout time.Duration) {
	t.Helper()
	for r := range k.cmds {
		k.waitPrefix(t, r, line, timeout)
	}
}

func (k *children) dump(rank int) []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for _, e := range k.lines[rank] {
		out = append(out, e.line)
	}
	return out
}

// stop kills whatever still runs and reaps every child, each within 10 s.
func (k *children) stop(t *testing.T) {
	for i, cmd := range k.cmds {
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
			continue
		case <-time.After(10 * time.Second):
			t.Errorf("rank %d still running 10s after the test; killing it", i)
		}
		cmd.Process.Kill()
		<-done
	}
}
