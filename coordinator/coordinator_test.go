package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/herd-llm/herd/checkpoint"
	"github.com/herd-llm/herd/cluster"
)

// simWorker speaks the worker's side of the protocol, with no training: it joins, registers
// under an etcd lease it keeps alive, long-polls for rounds, and reports its ranks' state
// when told its round failed. The control-plane tests and benchmark run many of them.
type simWorker struct {
	id     string
	client *cluster.Client
	etcd   *clientv3.Client
	lease  clientv3.LeaseID
	cancel context.CancelFunc // stops the keep-alive: the worker "crashes"

	mu    sync.Mutex
	round *cluster.Round
}

func startSim(ctx context.Context, c *Coordinator, cli *clientv3.Client, token string, i int) (*simWorker, error) {
	w := &simWorker{client: cluster.NewClient(c.Addr(), token), etcd: cli}
	w.client.RetryFor = 20 * time.Second
	resp, err := w.client.Join(ctx, cluster.JoinRequest{Host: fmt.Sprintf("sim%03d", i), Backend: "cpu", Slots: 1})
	if err != nil {
		return nil, err
	}
	w.id = resp.WorkerID
	lease, err := cli.Grant(ctx, int64(resp.LeaseTTL))
	if err != nil {
		return nil, err
	}
	w.lease = lease.ID
	reg := cluster.Registration{WorkerID: w.id, Host: "sim", Backend: "cpu", Ranks: []string{fmt.Sprintf("127.0.0.1:%d", 20000+i)}, Joined: time.Now()}
	raw, _ := json.Marshal(reg)
	if _, err := cli.Put(ctx, cluster.WorkerKey(resp.Job, w.id), string(raw), clientv3.WithLease(lease.ID)); err != nil {
		return nil, err
	}
	kctx, cancel := context.WithCancel(ctx)
	w.cancel = cancel
	ka, err := cli.KeepAlive(kctx, lease.ID)
	if err != nil {
		return nil, err
	}
	go func() {
		for range ka {
		}
	}()
	go w.poll(kctx)
	return w, nil
}

func (w *simWorker) poll(ctx context.Context) {
	var after uint64
	for ctx.Err() == nil {
		r, err := w.client.Round(ctx, w.id, after)
		if err != nil || r.Round == nil {
			continue
		}
		after = r.Round.ID
		w.mu.Lock()
		w.round = r.Round
		w.mu.Unlock()
	}
}

func (w *simWorker) currentRound() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.round == nil {
		return 0
	}
	return w.round.ID
}

// failRound reports the worker's rank stopped in its round, as a worker does when its ring
// breaks because a member died.
func (w *simWorker) failRound(ctx context.Context, step int) error {
	w.mu.Lock()
	r := w.round
	w.mu.Unlock()
	if r == nil {
		return errors.New("no round")
	}
	m, ok := r.Member(w.id)
	if !ok {
		return nil
	}
	return w.client.Report(ctx, cluster.Report{WorkerID: w.id, Round: r.ID,
		Ranks: []cluster.RankState{{Rank: m.FirstRank, Step: step, Checksum: 42, Phase: cluster.PhaseStopped, Error: "peer lost"}}})
}

func simSpec(t testing.TB, min, max, batch int) *cluster.JobSpec {
	t.Helper()
	spec, err := cluster.ParseJobSpec(fmt.Appendf(nil, `name: sim
model:
  preset: tiny
dataset: /nonexistent
batch: %d
seq: 32
steps: 1000
checkpoint:
  uri: /nonexistent
workers:
  min: %d
  max: %d
  last_call: 500ms
  lease_ttl: 2s
token: sim-token
`, batch, min, max))
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

func startTestCoordinator(t testing.TB, spec *cluster.JobSpec, out *syncWriter) *Coordinator {
	t.Helper()
	c, err := Start(context.Background(), Config{Job: spec, DataDir: t.TempDir(), Listen: "127.0.0.1:0",
		Etcd: EtcdConfig{Listen: "127.0.0.1:0"}, Logger: zap.NewNop(), Out: out})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	select {
	case <-c.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("coordinator not ready")
	}
	return c
}

type syncWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
func (w *syncWriter) String() string { w.mu.Lock(); defer w.mu.Unlock(); return w.b.String() }

// waitRound waits until the coordinator's current round is at least id and returns it.
func waitRound(t testing.TB, c *Coordinator, id uint64, timeout time.Duration) *cluster.Round {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if r := c.State().Round; r != nil && r.ID >= id {
			return r
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no round %d after %v", id, timeout)
	return nil
}

func etcdClient(t testing.TB, c *Coordinator) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.EtcdEndpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// In-process: workers join, a round forms with all of them, a wrong token is refused, and
// when workers vanish the next round forms with the survivors, from the state they hold.
func TestRoundsInProcess(t *testing.T) {
	out := &syncWriter{}
	c := startTestCoordinator(t, simSpec(t, 2, 6, 12), out)
	cli := etcdClient(t, c)
	ctx := context.Background()
	if _, err := cluster.NewClient(c.Addr(), "wrong").Join(ctx, cluster.JoinRequest{Backend: "cpu", Slots: 1}); !errors.Is(err, cluster.ErrToken) {
		t.Fatalf("join with a wrong token: %v", err)
	}
	var ws []*simWorker
	for i := 0; i < 6; i++ {
		w, err := startSim(ctx, c, cli, "sim-token", i)
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	r := waitRound(t, c, 1, 10*time.Second)
	if len(r.Members) != 6 || r.World != 6 || r.Micro != 2 || r.Source.Kind != cluster.SourceFresh {
		t.Fatalf("first round: %+v", r)
	}
	for _, w := range ws {
		for w.currentRound() < 1 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	// Two workers vanish; the survivors report their ranks stopped at step 17.
	ws[1].cancel()
	ws[4].cancel()
	for _, i := range []int{0, 2, 3, 5} {
		if err := ws[i].failRound(ctx, 17); err != nil {
			t.Fatal(err)
		}
	}
	r2 := waitRound(t, c, 2, 15*time.Second)
	// 4 survivors, but ranks must divide the batch of 12: 4 do.
	if len(r2.Members) != 4 || r2.Start != 17 || r2.Source.Kind != cluster.SourceBroadcast {
		t.Fatalf("second round: %d members, start %d, source %+v\n%s", len(r2.Members), r2.Start, r2.Source, out.String())
	}
	for _, m := range r2.Members {
		if m.WorkerID == ws[1].id || m.WorkerID == ws[4].id {
			t.Errorf("a vanished worker is in the next round")
		}
	}
	// The status lists the 4 survivors training and, for a while, the 2 vanished as lost.
	st := c.Status()
	states := map[string]int{}
	for _, w := range st.Workers {
		states[w.State]++
	}
	if st.Recoveries != 1 || st.Rounds != 2 || states["training"] != 4 || states["lost"] != 2 || len(st.Workers) != 6 {
		t.Errorf("status: %+v", st)
	}
}

// The control plane at scale: 200 workers with real etcd leases and the real join protocol
// join one job; then 20 vanish at once. Reports the time to form the first round after the
// last worker registered, and the time from the loss to the next round (which includes the
// lease TTL of 2 s, the time etcd takes to notice).
func BenchmarkControlPlane(b *testing.B) {
	for range b.N {
		out := &syncWriter{}
		c := startTestCoordinator(b, simSpec(b, 100, 200, 1800), out)
		cli := etcdClient(b, c)
		ctx := context.Background()
		ws := make([]*simWorker, 200)
		var wg sync.WaitGroup
		errs := make(chan error, 200)
		start := time.Now()
		for i := range ws {
			wg.Go(func() {
				w, err := startSim(ctx, c, cli, "sim-token", i)
				if err != nil {
					errs <- err
					return
				}
				ws[i] = w
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		joined := time.Since(start)
		r := waitRound(b, c, 1, 30*time.Second)
		formed := time.Since(start) - joined
		if len(r.Members) != 200 {
			b.Fatalf("first round has %d members", len(r.Members))
		}
		for _, w := range ws {
			for w.currentRound() < 1 {
				time.Sleep(5 * time.Millisecond)
			}
		}
		lost := time.Now()
		for _, w := range ws[:20] {
			w.cancel()
		}
		ferrs := make(chan error, 180)
		for _, w := range ws[20:] {
			go func() { ferrs <- w.failRound(ctx, 100) }()
		}
		for range 180 {
			if err := <-ferrs; err != nil {
				b.Fatal(err)
			}
		}
		defer func() {
			if b.Failed() {
				b.Log(out.String())
			}
		}()
		r2 := waitRound(b, c, 2, 20*time.Second)
		recovered := time.Since(lost)
		if len(r2.Members) != 180 {
			b.Fatalf("second round has %d members", len(r2.Members))
		}
		detected := lostAt(out.String())
		b.ReportMetric(joined.Seconds(), "join_s")
		b.ReportMetric(formed.Seconds(), "form_s")
		b.ReportMetric(recovered.Seconds(), "recover_s")
		if !detected.IsZero() {
			b.ReportMetric(detected.Sub(lost).Seconds(), "detect_s")
		}
		for _, w := range ws {
			w.cancel()
		}
	}
}

// lostAt returns the time of the last "left or was lost" line.
func lostAt(out string) time.Time {
	var at time.Time
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "left or was lost") {
			f := strings.Fields(line)
			if tod, err := time.ParseInLocation("15:04:05.000", f[0], time.Local); err == nil {
				y, m, d := time.Now().Date()
				at = time.Date(y, m, d, tod.Hour(), tod.Minute(), tod.Second(), tod.Nanosecond(), time.Local)
			}
		}
	}
	return at
}

// Every worker is lost after the final checkpoint committed but before its report (and the
// last steps' reports) arrived: the coordinator finds the commit in the location and ends the
// job, instead of forming a round from the last step that would have nothing to train and
// nothing to report (it waited for it forever).
func TestFinalCheckpointFoundAfterLoss(t *testing.T) {
	out := &syncWriter{}
	spec := simSpec(t, 2, 2, 12)
	ckpt := t.TempDir()
	c, err := Start(context.Background(), Config{Job: spec, DataDir: t.TempDir(), Listen: "127.0.0.1:0",
		Etcd: EtcdConfig{Listen: "127.0.0.1:0"}, Logger: zap.NewNop(), Out: out,
		Checkpoint: func(ctx context.Context) (checkpoint.Location, error) {
			return checkpoint.OpenLocation(ctx, ckpt, checkpoint.StoreOptions{})
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	<-c.Ready()
	cli := etcdClient(t, c)
	ctx := context.Background()
	var ws []*simWorker
	for i := range 2 {
		w, err := startSim(ctx, c, cli, "sim-token", i)
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	waitRound(t, c, 1, 10*time.Second)
	// The final checkpoint commits; then both workers vanish without a word.
	step := filepath.Join(ckpt, checkpoint.StepDir(spec.Steps))
	if err := os.MkdirAll(step, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(step, "manifest.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		w.cancel()
	}
	select {
	case <-c.Done():
	case <-time.After(30 * time.Second):
		t.Fatalf("the job did not end:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "finished: the final checkpoint (step 1000) was committed before the workers were lost") {
		t.Errorf("output:\n%s", out.String())
	}
	if r := c.State().Round; r == nil || r.ID != 1 {
		t.Errorf("a round after the loss: %+v", r)
	}
}
