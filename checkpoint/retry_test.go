package checkpoint_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	. "github.com/herd-llm/herd/checkpoint"
	"github.com/herd-llm/herd/checkpoint/objectstoretest"
)

// faultyStore wraps a store and injects the failures a network brings: requests that fail,
// bodies cut short after some bytes, bodies that stall.
type faultyStore struct {
	ObjectStore
	mu       sync.Mutex
	failOps  map[string]int // op -> remaining calls to fail with a reset connection
	cutAfter int64          // > 0: the next matching Get body fails after this many bytes
	cuts     int            // bodies still to cut
	stalls   int            // bodies still to stall after cutAfter bytes
	match    string         // Get keys containing this are affected
	calls    map[string]int
}

func newFaulty(s ObjectStore) *faultyStore {
	return &faultyStore{ObjectStore: s, failOps: map[string]int{}, calls: map[string]int{}}
}

var errReset = &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}

func (f *faultyStore) hit(op string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[op]++
	if f.failOps[op] > 0 {
		f.failOps[op]--
		return fmt.Errorf("%s: %w", op, errReset)
	}
	return nil
}

func (f *faultyStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if err := f.hit("put"); err != nil {
		io.CopyN(io.Discard, r, 7) // a failed upload has read part of its body
		return err
	}
	return f.ObjectStore.Put(ctx, key, r, size)
}

func (f *faultyStore) List(ctx context.Context, prefix string) ([]ObjectInfo, error) {
	if err := f.hit("list"); err != nil {
		return nil, err
	}
	return f.ObjectStore.List(ctx, prefix)
}

func (f *faultyStore) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	if err := f.hit("get"); err != nil {
		return nil, err
	}
	rc, err := f.ObjectStore.Get(ctx, key, off, n)
	if err != nil || !strings.Contains(key, f.match) {
		return rc, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.cuts > 0:
		f.cuts--
		return &cutBody{r: rc, left: f.cutAfter}, nil
	case f.stalls > 0:
		f.stalls--
		return &cutBody{r: rc, left: f.cutAfter, stall: ctx}, nil
	}
	return rc, nil
}

// cutBody passes left bytes, then fails as a reset connection, or with stall set blocks
// until that context ends, as a body that stops arriving does.
type cutBody struct {
	r     io.ReadCloser
	left  int64
	stall context.Context
}

func (c *cutBody) Read(p []byte) (int, error) {
	if c.left <= 0 {
		if c.stall != nil {
			<-c.stall.Done()
			return 0, c.stall.Err()
		}
		return 0, errReset
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

func (c *cutBody) Close() error { return c.r.Close() }

type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) add(s string) { l.mu.Lock(); l.lines = append(l.lines, s); l.mu.Unlock() }
func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

func TestTransient(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{errReset, true},
		{fmt.Errorf("get: %w", io.ErrUnexpectedEOF), true},
		{fmt.Errorf("x: %w", syscall.ECONNREFUSED), true},
		{fmt.Errorf("x: %w", ErrStalled), true},
		{minio.ErrorResponse{StatusCode: 503, Code: "SlowDown"}, true},
		{minio.ErrorResponse{StatusCode: 500, Code: "InternalError"}, true},
		{minio.ErrorResponse{StatusCode: 403, Code: "AccessDenied"}, false},
		{fmt.Errorf("x: %w", ErrNotFound), false},
		{fmt.Errorf("x: %w", ErrConflict), false},
		{fmt.Errorf("x: %w", syscall.ENOSPC), false},
		{fmt.Errorf("x: %w", context.Canceled), false},
		{errors.New("checksum mismatch"), false},
	} {
		if got := Transient(c.err); got != c.want {
			t.Errorf("Transient(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// A body cut short midway is resumed with a ranged read: the reader yields the whole
// object, byte for byte, and the retry is logged.
func TestRetriedGetResumesACutBody(t *testing.T) {
	mem := NewMemStore()
	data := objectstoretest.Pattern(7, 0, 3<<20)
	objectstoretest.Put(t, mem, "a/obj", data)
	f := newFaulty(mem)
	f.match, f.cutAfter, f.cuts = "obj", 1<<20+3, 2
	var log logLines
	s := WithRetries(f, RetryPolicy{For: 5 * time.Second, Stall: time.Second, Log: log.add})
	got := objectstoretest.Get(t, s, "a/obj", 0, -1)
	if !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, not the object's %d", len(got), len(data))
	}
	if f.calls["get"] != 3 || strings.Count(log.String(), "resuming") != 2 {
		t.Errorf("%d gets, log:\n%s\nwant 3 gets and 2 resumptions", f.calls["get"], log.String())
	}
	// A ranged read resumes inside its range.
	f.cuts = 1
	if got := objectstoretest.Get(t, s, "a/obj", 5, 2<<20); !bytes.Equal(got, data[5:5+2<<20]) {
		t.Fatal("ranged read resumed wrongly")
	}
}

// A body that stalls is abandoned after the stall timeout and resumed.
func TestRetriedGetResumesAStalledBody(t *testing.T) {
	mem := NewMemStore()
	data := objectstoretest.Pattern(8, 0, 1<<20)
	objectstoretest.Put(t, mem, "obj", data)
	f := newFaulty(mem)
	f.match, f.cutAfter, f.stalls = "obj", 4096, 1
	var log logLines
	s := WithRetries(f, RetryPolicy{For: 5 * time.Second, Stall: 200 * time.Millisecond, Log: log.add})
	start := time.Now()
	got := objectstoretest.Get(t, s, "obj", 0, int64(len(data)))
	if !bytes.Equal(got, data) {
		t.Fatal("stalled read did not resume to the whole object")
	}
	if el := time.Since(start); el > 3*time.Second || !strings.Contains(log.String(), "stalled") {
		t.Errorf("took %v; log:\n%s\nwant the stall noticed after about 200ms", el, log.String())
	}
}

// Transient failures of Put and List are retried; a permanent one is returned at once; a
// failure that outlasts the budget ends with ErrUnavailable, which is not damage.
func TestRetriedOperations(t *testing.T) {
	mem := NewMemStore()
	f := newFaulty(mem)
	var log logLines
	s := WithRetries(f, RetryPolicy{For: 3 * time.Second, Stall: time.Second, Log: log.add})
	ctx := context.Background()
	f.failOps["put"] = 2
	data := []byte("checkpoint shard")
	if err := s.Put(ctx, "k", bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if got := objectstoretest.Get(t, mem, "k", 0, -1); !bytes.Equal(got, data) {
		t.Fatalf("after retried puts the object is %q", got)
	}
	f.failOps["list"] = 1
	if _, err := s.List(ctx, ""); err != nil {
		t.Fatal(err)
	}
	before := f.calls["get"]
	if _, err := s.Get(ctx, "missing", 0, -1); !errors.Is(err, ErrNotFound) || f.calls["get"]-before != 1 {
		t.Errorf("missing object: %v after %d calls, want ErrNotFound after 1", err, f.calls["get"]-before)
	}
	f.failOps["list"] = 1 << 30
	start := time.Now()
	_, err := s.List(ctx, "")
	if !errors.Is(err, ErrUnavailable) || !Transient(err) || Damaged(err) {
		t.Fatalf("List against a store that stays down: %v (unavailable %v, damaged %v)", err, errors.Is(err, ErrUnavailable), Damaged(err))
	}
	if el := time.Since(start); el < 2*time.Second || el > 6*time.Second {
		t.Errorf("gave up after %v, want about the 3s budget", el)
	}
	if !strings.Contains(log.String(), "giving up") {
		t.Errorf("no give-up line in the log:\n%s", log.String())
	}
}

// The issue that made resume destroy good checkpoints: a read that fails in transit is not
// damage. With retries the newest checkpoint loads; without them the load fails, and in
// neither case does it fall back to an older commit.
func TestTransientReadIsNotDamage(t *testing.T) {
	mem := NewMemStore()
	loc := Location{Store: mem, Prefix: "job"}
	rng := rand.New(rand.NewPCG(9, 9))
	const n = 40000
	old, cur := randomState(rng, n), randomState(rng, n)
	saveWorld(t, loc, old, 10, 2, SaverOptions{})
	saveWorld(t, loc, cur, 20, 2, SaverOptions{})

	f := newFaulty(mem)
	f.match, f.cutAfter, f.cuts = StepDir(20)+"/rank-00001", 1000, 1
	var log logLines
	retried := Location{Store: WithRetries(f, RetryPolicy{For: 5 * time.Second, Stall: time.Second, Log: log.add}), Prefix: "job"}
	m, got, err := loadLatest(t, retried, n, log.add)
	if err != nil || m.Step != 20 || !equalState(cur, got) {
		t.Fatalf("with retries: step %v, err %v; want step 20 loaded whole", m, err)
	}
	if strings.Contains(log.String(), "falling back") {
		t.Errorf("a cut-short read was taken for damage:\n%s", log.String())
	}

	f.cuts = 1
	log = logLines{}
	once := Location{Store: WithRetries(f, RetryPolicy{For: -1, Stall: time.Second}), Prefix: "job"}
	_, _, err = loadLatest(t, once, n, log.add)
	if err == nil || Damaged(err) || strings.Contains(log.String(), "falling back") {
		t.Fatalf("without retries: err %v (damaged %v), log %q; want an I/O error and no fallback", err, Damaged(err), log.String())
	}
}

// A resumed run leaves the directories of the timeline it abandons alone until it commits a
// checkpoint of its own, shares no shard name with them (so it never overwrites a shard of a
// committed step), and then deletes them, manifest first.
func TestAbandonedTimelineKeptUntilCommit(t *testing.T) {
	forEachStore(t, func(t *testing.T, store ObjectStore) {
		ctx := context.Background()
		loc := Location{Store: store, Prefix: "job"}
		rng := rand.New(rand.NewPCG(10, 10))
		const n = 200
		for step := 10; step <= 40; step += 10 {
			saveWorld(t, loc, randomState(rng, n), step, 2, SaverOptions{})
		}
		snapshot := func() map[string]string {
			objs, err := store.List(ctx, "job/")
			if err != nil {
				t.Fatal(err)
			}
			out := map[string]string{}
			for _, o := range objs {
				sum, _ := objectstoretest.SumObject(t, store, o.Key)
				out[o.Key] = fmt.Sprintf("%x", sum)
			}
			return out
		}
		before := snapshot()
		// The run resumes from step 20 (as after damage to 30 and 40) and writes step 30 on
		// two ranks, but dies before committing it.
		attempt := NewAttempt()
		died := make(chan struct{})
		for r := 1; r >= 0; r-- {
			s := NewSaver(loc, SaverOptions{Attempt: attempt, Base: 20, CommitTimeout: 5 * time.Second, Failpoint: func(name string, step int) {
				if name == "before-manifest" {
					close(died)
					runtime.Goexit()
				}
			}})
			if _, err := s.Save(ctx, SaveRequest{Step: 30, Rank: r, World: 2, State: randomState(rng, n), Cursor: Cursor{Step: 30},
				Config: []byte(`{}`), Layout: testLayout(n)}); err != nil {
				t.Fatal(err)
			}
			if r == 1 {
				if err := s.Wait(); err != nil {
					t.Fatal(err)
				}
			}
		}
		<-died
		after := snapshot()
		for k, sum := range before {
			if after[k] != sum {
				t.Errorf("%s changed before the resumed run committed", k)
			}
		}
		if len(after) != len(before)+4 {
			t.Errorf("the uncommitted step 30 added %d objects, want 4 (2 shards, 2 records)", len(after)-len(before))
		}
		// The next resumed run commits step 30: the abandoned 30's old shards and all of 40 go.
		var log logLines
		saveWorld(t, loc, randomState(rng, n), 30, 2, SaverOptions{Base: 20, Log: log.add})
		steps, _ := ListSteps(ctx, loc)
		var got []string
		for _, st := range steps {
			got = append(got, fmt.Sprintf("%d:%d", st.Step, len(st.Keys)))
		}
		// 10 and 20 keep 2 shards, 2 records, manifest, tokenizer; 30 the same, of the new attempt.
		if fmt.Sprint(got) != "[10:6 20:6 30:6]" {
			t.Errorf("after the commit: %v, want [10:6 20:6 30:6]\n%s", got, log.String())
		}
		m, err := ReadManifest(ctx, loc, 30)
		if err != nil {
			t.Fatal(err)
		}
		for _, sh := range m.Shards {
			if !strings.Contains(sh.Key, m.Attempt) {
				t.Errorf("shard %s does not carry the attempt %s", sh.Key, m.Attempt)
			}
		}
		if !strings.Contains(log.String(), "step-00000040, left by an abandoned run") {
			t.Errorf("deleting step 40 was not logged:\n%s", log.String())
		}
	})
}

// Rank 0 waiting for a shard that never comes gives up that checkpoint when the next one is
// saved, instead of holding the training loop for the commit timeout.
func TestSupersededSave(t *testing.T) {
	loc := Location{Store: NewMemStore(), Prefix: "job"}
	st := randomState(rand.New(rand.NewPCG(11, 11)), 50)
	s := NewSaver(loc, SaverOptions{CommitTimeout: time.Hour})
	req := SaveRequest{Step: 10, Rank: 0, World: 2, State: st, Cursor: Cursor{Step: 10}, Config: []byte(`{}`), Layout: testLayout(50)}
	if _, err := s.Save(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	req.Step, req.Cursor.Step = 20, 20
	held, err := s.Save(context.Background(), req)
	if err == nil || !strings.Contains(err.Error(), "superseded") || !strings.Contains(err.Error(), "rank 1") {
		t.Fatalf("the older save ended with %v, want superseded, naming rank 1", err)
	}
	if held > 5*time.Second {
		t.Errorf("Save held the caller %v", held)
	}
}

// A shard that lands shortly after the next Save starts still completes the older commit:
// the ranks have all trained past it, so a late shard is a slow one, not a lost one.
func TestSupersededSaveWaitsForLateShard(t *testing.T) {
	loc := Location{Store: NewMemStore(), Prefix: "job"}
	st := randomState(rand.New(rand.NewPCG(12, 12)), 50)
	s0 := NewSaver(loc, SaverOptions{CommitTimeout: time.Hour, Attempt: "a1b2c3d4"})
	s1 := NewSaver(loc, SaverOptions{CommitTimeout: time.Hour, Attempt: "a1b2c3d4"})
	req := SaveRequest{Step: 10, Rank: 0, World: 2, State: st, Cursor: Cursor{Step: 10}, Config: []byte(`{}`), Layout: testLayout(50)}
	if _, err := s0.Save(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(500 * time.Millisecond) // within the grace a superseding Save gives
		r1 := req
		r1.Rank = 1
		s1.Save(context.Background(), r1)
	}()
	time.Sleep(50 * time.Millisecond)
	next := req
	next.Step, next.Cursor.Step = 20, 20
	if _, err := s0.Save(context.Background(), next); err != nil {
		t.Fatalf("the older save ended with %v, want its commit", err)
	}
	steps, err := ListSteps(context.Background(), loc)
	if err != nil || len(steps) == 0 || steps[0].Step != 10 || !steps[0].Committed {
		t.Fatalf("step 10 not committed: %+v, %v", steps, err)
	}
}
