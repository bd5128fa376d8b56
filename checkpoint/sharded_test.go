package checkpoint_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path"
	"runtime"
	"strings"
	"sync"
	"testing"

	. "github.com/herd-llm/herd/checkpoint"
	"github.com/herd-llm/herd/checkpoint/objectstoretest"
)

// storeCase is one object store the sharded-checkpoint tests run against.
type storeCase struct {
	name string
	open func(t *testing.T) ObjectStore
}

// checkpointStores are the stores every test below runs against: memory, a directory, and
// S3 through a real S3-compatible server (versitygw) started by the test.
var checkpointStores = []storeCase{
	{"memory", func(t *testing.T) ObjectStore { return NewMemStore() }},
	{"dir", func(t *testing.T) ObjectStore {
		s, err := NewDirStore(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}},
	{"s3", func(t *testing.T) ObjectStore {
		gw := objectstoretest.StartVersityGW(t)
		s, err := NewS3Store(context.Background(), gw.Config("ckpt"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}},
}

func forEachStore(t *testing.T, fn func(t *testing.T, st ObjectStore)) {
	for _, c := range checkpointStores {
		t.Run(c.name, func(t *testing.T) { fn(t, c.open(t)) })
	}
}

func testLayout(n int) []TensorRange {
	return []TensorRange{{Name: "a", Shape: []int{n - 3}, Offset: 0, Size: int64(n - 3)}, {Name: "b", Shape: []int{3}, Offset: int64(n - 3), Size: 3}}
}

func getAll(ctx context.Context, st ObjectStore, key string) ([]byte, error) {
	rc, err := st.Get(ctx, key, 0, -1)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func key(loc Location, parts ...string) string {
	return path.Join(append([]string{loc.Prefix}, parts...)...)
}

func buffers(s State) [][]float32 { return [][]float32{s.Params, s.M, s.V} }

func randomState(rng *rand.Rand, n int) State {
	s := State{Params: make([]float32, n), M: make([]float32, n), V: make([]float32, n)}
	for _, b := range buffers(s) {
		for i := range b {
			b[i] = rng.Float32()
		}
	}
	return s
}

// saveWorld writes one checkpoint as world ranks would (each its own Saver, sharing one
// attempt) and waits. Unless opts says otherwise, the savers belong to a run that resumed
// from the step before, so earlier checkpoints are its own history, not an abandoned timeline.
func saveWorld(t *testing.T, loc Location, st State, step, world int, opts SaverOptions) {
	t.Helper()
	if opts.Attempt == "" {
		opts.Attempt = NewAttempt()
	}
	if opts.Base == 0 {
		opts.Base = step - 1
	}
	var wg sync.WaitGroup
	errs := make([]error, world)
	for r := 0; r < world; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := NewSaver(loc, opts)
			_, err := s.Save(context.Background(), SaveRequest{Step: step, Rank: r, World: world, State: st,
				Cursor: Cursor{Step: step, GlobalBatch: 8, Seq: 16, Seed: 1, NextIndex: int64(step) * 8},
				Config: []byte(`{"model":"test"}`), TokenizerHash: "abc", Layout: testLayout(len(st.Params)),
				Extra: map[string][]byte{"tokenizer.json": []byte("{}")}})
			if err == nil {
				err = s.Wait()
			}
			errs[r] = err
		}()
	}
	wg.Wait()
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
}

func loadLatest(t *testing.T, loc Location, n int, log func(string)) (*Manifest, State, error) {
	var got State
	m, err := LoadLatest(context.Background(), loc, func(m *Manifest) (State, error) {
		got = State{Params: make([]float32, n), M: make([]float32, n), V: make([]float32, n)}
		return got, nil
	}, log)
	return m, got, err
}

func equalState(a, b State) bool {
	for i, x := range buffers(a) {
		y := buffers(b)[i]
		if len(x) != len(y) {
			return false
		}
		for j := range x {
			if x[j] != y[j] {
				return false
			}
		}
	}
	return true
}

// Written by W ranks, loaded whole (as any number of ranks would): identical state, for
// world sizes whose ranges split unevenly.
func TestShardedRoundTripAnyWorld(t *testing.T) {
	forEachStore(t, func(t *testing.T, store ObjectStore) {
		rng := rand.New(rand.NewPCG(1, 1))
		const n = 1003
		for _, world := range []int{1, 2, 3, 4} {
			loc := Location{Store: store, Prefix: fmt.Sprintf("job-w%d", world)}
			st := randomState(rng, n)
			saveWorld(t, loc, st, 10, world, SaverOptions{})
			m, got, err := loadLatest(t, loc, n, nil)
			if err != nil {
				t.Fatal(err)
			}
			if m.World != world || m.Step != 10 || m.Cursor.NextIndex != 80 || !equalState(st, got) {
				t.Fatalf("world %d: manifest %+v, state equal %v", world, m, equalState(st, got))
			}
			raw, err := ReadObject(context.Background(), loc, 10, "tokenizer.json")
			if err != nil || string(raw) != "{}" {
				t.Errorf("extra object: %q, %v", raw, err)
			}
			if latest, err := getAll(context.Background(), store, key(loc, LatestName)); err != nil || string(latest) != StepDir(10) {
				t.Errorf("latest pointer %q, %v", latest, err)
			}
		}
	})
}

// A flipped byte in a shard of the newest commit is a checksum error naming the object, and
// loading falls back to the previous commit; a truncated manifest falls back the same way.
func TestDamagedCommitFallsBack(t *testing.T) {
	forEachStore(t, func(t *testing.T, store ObjectStore) {
		ctx := context.Background()
		rng := rand.New(rand.NewPCG(2, 2))
		const n = 500
		loc := Location{Store: store, Prefix: "job"}
		old, cur := randomState(rng, n), randomState(rng, n)
		saveWorld(t, loc, old, 10, 2, SaverOptions{})
		saveWorld(t, loc, cur, 20, 2, SaverOptions{})

		m20, err := ReadManifest(ctx, loc, 20)
		if err != nil {
			t.Fatal(err)
		}
		shardKey := key(loc, StepDir(20), m20.Shards[1].Key)
		raw, _ := getAll(ctx, store, shardKey)
		good := append([]byte(nil), raw...)
		raw[17] ^= 0x40
		store.Put(ctx, shardKey, bytes.NewReader(raw), int64(len(raw)))
		var logs []string
		m, got, err := loadLatest(t, loc, n, func(s string) { logs = append(logs, s) })
		if err != nil {
			t.Fatal(err)
		}
		if m.Step != 10 || !equalState(old, got) {
			t.Fatalf("loaded step %d after a flipped byte, want the previous commit 10", m.Step)
		}
		if len(logs) != 1 || !strings.Contains(logs[0], "checksum mismatch") || !strings.Contains(logs[0], shardKey) {
			t.Errorf("fallback log %q does not name the damaged object %s", logs, shardKey)
		}
		store.Put(ctx, shardKey, bytes.NewReader(good), int64(len(good)))

		// An empty shard (a write cut short at a chunk boundary) falls back the same way.
		store.Put(ctx, shardKey, bytes.NewReader(nil), 0)
		logs = nil
		if m, _, err := loadLatest(t, loc, n, func(s string) { logs = append(logs, s) }); err != nil || m.Step != 10 {
			t.Fatalf("empty shard: loaded %v, %v; want the previous commit", m, err)
		}
		store.Put(ctx, shardKey, bytes.NewReader(good), int64(len(good)))

		mk := key(loc, StepDir(20), ManifestName)
		mraw, _ := getAll(ctx, store, mk)
		store.Put(ctx, mk, bytes.NewReader(mraw[:len(mraw)/2]), int64(len(mraw)/2))
		logs = nil
		m, got, err = loadLatest(t, loc, n, func(s string) { logs = append(logs, s) })
		if err != nil || m.Step != 10 || !equalState(old, got) {
			t.Fatalf("truncated manifest: step %v, err %v", m, err)
		}
		if len(logs) != 1 || !strings.Contains(logs[0], "bad manifest") || !strings.Contains(logs[0], mk) {
			t.Errorf("fallback log %q does not name the manifest %s", logs, mk)
		}
	})
}

// A save that dies after its shards but before its manifest is not a commit: loading takes
// the previous one, and the orphan shards go at the next commit.
func TestUncommittedShardsAreIgnoredThenDeleted(t *testing.T) {
	forEachStore(t, func(t *testing.T, store ObjectStore) {
		rng := rand.New(rand.NewPCG(3, 3))
		const n = 300
		loc := Location{Store: store, Prefix: "job"}
		first := randomState(rng, n)
		saveWorld(t, loc, first, 10, 1, SaverOptions{})
		// The writer dies at the failpoint: its goroutine ends there, as the process would.
		died := make(chan struct{})
		s := NewSaver(loc, SaverOptions{Base: 10, Failpoint: func(name string, step int) {
			if name == "before-manifest" {
				close(died)
				runtime.Goexit()
			}
		}})
		if _, err := s.Save(context.Background(), SaveRequest{Step: 20, Rank: 0, World: 1, State: randomState(rng, n),
			Cursor: Cursor{Step: 20}, Config: []byte(`{}`), Layout: testLayout(n)}); err != nil {
			t.Fatal(err)
		}
		<-died
		steps, _ := ListSteps(context.Background(), loc)
		if len(steps) != 2 || steps[1].Committed {
			t.Fatalf("after the crash: %+v", steps)
		}
		m, got, err := loadLatest(t, loc, n, nil)
		if err != nil || m.Step != 10 || !equalState(first, got) {
			t.Fatalf("loaded %v, %v; want the commit of step 10", m, err)
		}
		saveWorld(t, loc, randomState(rng, n), 30, 1, SaverOptions{KeepLast: 1})
		steps, _ = ListSteps(context.Background(), loc)
		if len(steps) != 1 || steps[0].Step != 30 {
			t.Errorf("after the next commit with keep-last 1: %+v, want only step 30", steps)
		}
	})
}

func TestRetention(t *testing.T) {
	store := NewMemStore()
	loc := Location{Store: store, Prefix: "job"}
	rng := rand.New(rand.NewPCG(4, 4))
	for step := 10; step <= 100; step += 10 {
		saveWorld(t, loc, randomState(rng, 50), step, 1, SaverOptions{KeepLast: 2, KeepEvery: 40})
	}
	steps, _ := ListSteps(context.Background(), loc)
	var got []int
	for _, s := range steps {
		got = append(got, s.Step)
	}
	if fmt.Sprint(got) != "[40 80 90 100]" {
		t.Errorf("kept %v, want [40 80 90 100] (last 2 and every multiple of 40)", got)
	}
}

// Async save: Save returns after copying to staging; the caller may change its buffers at
// once, and the checkpoint holds the values at the time of Save.
func TestAsyncSaveSnapshotsState(t *testing.T) {
	store := NewMemStore()
	loc := Location{Store: store, Prefix: "job"}
	st := randomState(rand.New(rand.NewPCG(5, 5)), 100)
	want := State{Params: append([]float32(nil), st.Params...), M: append([]float32(nil), st.M...), V: append([]float32(nil), st.V...)}
	s := NewSaver(loc, SaverOptions{})
	if _, err := s.Save(context.Background(), SaveRequest{Step: 1, Rank: 0, World: 1, State: st, Cursor: Cursor{Step: 1},
		Config: []byte(`{}`), Layout: testLayout(100)}); err != nil {
		t.Fatal(err)
	}
	s.WaitSnapshot()
	for i := range st.Params {
		st.Params[i] = -1
	}
	if err := s.Wait(); err != nil {
		t.Fatal(err)
	}
	_, got, err := loadLatest(t, loc, 100, nil)
	if err != nil || !equalState(want, got) {
		t.Fatalf("async save did not snapshot the state: %v", err)
	}
}

func FuzzParseManifest(f *testing.F) {
	store := NewMemStore()
	loc := Location{Store: store, Prefix: "j"}
	s := NewSaver(loc, SaverOptions{})
	s.Save(context.Background(), SaveRequest{Step: 3, Rank: 0, World: 1, State: randomState(rand.New(rand.NewPCG(1, 1)), 10),
		Cursor: Cursor{Step: 3}, Config: []byte(`{"a":1}`), Layout: testLayout(10)})
	s.Wait()
	raw, _ := getAll(context.Background(), store, "j/"+StepDir(3)+"/"+ManifestName)
	if len(raw) == 0 {
		f.Fatal("no manifest to seed the corpus")
	}
	f.Add(raw)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"version":1,"shards":[{}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest("fuzz", data)
		if err == nil {
			if len(m.Shards) != m.World || m.Elems <= 0 || m.Shards[len(m.Shards)-1].Offset+m.Shards[len(m.Shards)-1].Count != m.Elems {
				t.Fatalf("accepted an inconsistent manifest: %+v", m)
			}
		} else if !errors.Is(err, ErrManifest) {
			t.Fatalf("error %v does not wrap ErrManifest", err)
		}
	})
}

// Ranks that own interleaved ranges (ZeRO's chunks of every unit) write them as one shard
// each; any world size loads the whole state back.
func TestShardsOfSeveralRanges(t *testing.T) {
	forEachStore(t, func(t *testing.T, store ObjectStore) {
		rng := rand.New(rand.NewPCG(12, 12))
		const n = 1000
		st := randomState(rng, n)
		loc := Location{Store: store, Prefix: "zero"}
		units := [][2]int64{{0, 300}, {300, 350}, {650, 350}}
		const world = 3
		attempt := NewAttempt()
		var wg sync.WaitGroup
		errs := make([]error, world)
		for r := 0; r < world; r++ {
			var spans []Span
			for _, u := range units {
				lo, hi := u[0]+u[1]*int64(r)/world, u[0]+u[1]*int64(r+1)/world
				spans = append(spans, Span{Offset: lo, Params: st.Params[lo:hi], M: st.M[lo:hi], V: st.V[lo:hi]})
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				s := NewSaver(loc, SaverOptions{Attempt: attempt})
				_, err := s.Save(context.Background(), SaveRequest{Step: 7, Rank: r, World: world, Spans: spans, Elems: n,
					Cursor: Cursor{Step: 7}, Config: []byte(`{}`), Layout: testLayout(n)})
				if err == nil {
					err = s.Wait()
				}
				errs[r] = err
			}()
		}
		wg.Wait()
		for r, err := range errs {
			if err != nil {
				t.Fatalf("rank %d: %v", r, err)
			}
		}
		m, got, err := loadLatest(t, loc, n, nil)
		if err != nil {
			t.Fatal(err)
		}
		if m.Version != ManifestVersion || len(m.Shards[1].Ranges) != 3 || !equalState(st, got) {
			t.Fatalf("manifest %+v; state equal %v", m.Shards, equalState(st, got))
		}
		// A manifest whose ranges overlap or leave a gap is refused.
		m.Shards[2].Ranges[0].Offset--
		raw, _ := json.Marshal(m)
		if _, err := ParseManifest("x", raw); err == nil || !errors.Is(err, ErrManifest) {
			t.Errorf("overlapping ranges accepted: %v", err)
		}
	})
}
