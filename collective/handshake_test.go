package collective

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func startMember(t *testing.T, rank int, peers []string, ln net.Listener, secret string, log *zap.Logger) *Ring {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Rank, cfg.Peers, cfg.Listener = rank, peers, ln
	cfg.JobID, cfg.Secret, cfg.Logger = "job-1", secret, log
	cfg.DialTimeout = 10 * time.Second
	r, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// waitLogged polls the observed logs until one entry matches, for at most 5 s.
func waitLogged(t *testing.T, logs *observer.ObservedLogs, msg, remote string) observer.LoggedEntry {
	t.Helper()
	for range 500 {
		found := logs.FilterMessage(msg).FilterField(zap.String("remote", remote)).All()
		if len(found) > 0 {
			return found[0]
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no %q logged for remote %s; logged: %v", msg, remote, logs.All())
	return observer.LoggedEntry{}
}

// TestWrongSecretRefused connects a client that knows the job and ranks but not the secret:
// it is refused, the refusal is logged with its address, and the real neighbour still joins.
func TestWrongSecretRefused(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	ln0, ln1 := listenLoopback(t), listenLoopback(t)
	peers := []string{ln0.Addr().String(), ln1.Addr().String()}
	r0 := startMember(t, 0, peers, ln0, "right secret", zap.New(core))

	rogue, err := net.Dial("tcp", peers[0])
	if err != nil {
		t.Fatal(err)
	}
	defer rogue.Close()
	rogue.SetDeadline(time.Now().Add(10 * time.Second))
	err = dialHandshake(rogue, "job-1", "wrong secret", 1, 0, 2)
	if !errors.Is(err, ErrAuth) {
		t.Fatalf("handshake with a wrong secret: %v, want ErrAuth", err)
	}
	e := waitLogged(t, logs, "collective: refused peer", rogue.LocalAddr().String())
	if e.Level != zapcore.WarnLevel || e.ContextMap()["reason"] != "wrong secret for job job-1" {
		t.Fatalf("refusal logged as %v %v", e.Level, e.ContextMap())
	}

	r1 := startMember(t, 1, peers, ln1, "right secret", zap.NewNop())
	bufs := [][]float32{{1, 2}, {10, 20}}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, r := range []*Ring{r0, r1} {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			errs[i] = r.AllReduce(ctx, bufs[i], Sum)
		})
	}
	wg.Wait()
	for i := range errs {
		if errs[i] != nil || bufs[i][0] != 11 || bufs[i][1] != 22 {
			t.Fatalf("rank %d after the refusal: %v %v", i, bufs[i], errs[i])
		}
	}
}

// TestWrongSecretMember starts two members whose secrets differ. Each refuses the other;
// whichever is refused first fails with ErrAuth naming the member that refused it, and the
// refusal is logged.
func TestWrongSecretMember(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	ln0, ln1 := listenLoopback(t), listenLoopback(t)
	peers := []string{ln0.Addr().String(), ln1.Addr().String()}
	r0 := startMember(t, 0, peers, ln0, "right secret", zap.New(core))
	r1 := startMember(t, 1, peers, ln1, "wrong secret", zap.New(core))
	var err error
	var failed int
	select {
	case err = <-r0.Err():
	case err = <-r1.Err():
		failed = 1
	case <-time.After(10 * time.Second):
		t.Fatal("neither member failed within 10s")
	}
	var pe *PeerError
	if !errors.Is(err, ErrAuth) || !errors.As(err, &pe) || pe.Rank != 1-failed || pe.Addr != peers[1-failed] {
		t.Fatalf("rank %d failed with %v, want ErrAuth naming rank %d at %s", failed, err, 1-failed, peers[1-failed])
	}
	for i := 0; logs.FilterMessage("collective: refused peer").Len() == 0; i++ {
		if i == 500 {
			t.Fatalf("refusal not logged within 5s; logged: %v", logs.All())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWrongJobRefused checks that members of another job are refused even without secrets.
func TestWrongJobRefused(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	ln0 := listenLoopback(t)
	peers := []string{ln0.Addr().String(), "127.0.0.1:1"}
	startMember(t, 0, peers, ln0, "", zap.New(core))
	c, err := net.Dial("tcp", peers[0])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := dialHandshake(c, "job-2", "", 1, 0, 2); !errors.Is(err, ErrAuth) {
		t.Fatalf("handshake for another job: %v, want ErrAuth", err)
	}
	waitLogged(t, logs, "collective: refused peer", c.LocalAddr().String())
}
