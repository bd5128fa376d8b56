package main

// End-to-end fault tests over the built binary: real rank processes killed and stopped with
// signals, a real S3 server (versitygw) killed and restarted, and a loopback proxy that cuts
// or stalls chosen S3 responses. Each test injects a fault, checks the exit or the recovery,
// and compares checkpoints, metrics and run files before and after, byte for byte.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/herd-llm/herd/checkpoint"
	"github.com/herd-llm/herd/checkpoint/objectstoretest"
)

// lockFiles are what a refused or concurrent run may touch: the locks themselves.
func isLockFile(name string) bool {
	base := filepath.Base(name)
	return base == ".lock" || base == checkpoint.LeaseName || strings.HasPrefix(base, ".herd-tmp-")
}

// treeSums returns the sha256 of every file under dir, by relative path, lock files aside.
func treeSums(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || isLockFile(path) {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		out[rel] = fmt.Sprintf("%x", sha256.Sum256(raw))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// storeSums returns the sha256 of every object under prefix, lease aside.
func storeSums(t *testing.T, st checkpoint.ObjectStore, prefix string) map[string]string {
	t.Helper()
	objs, err := st.List(context.Background(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, o := range objs {
		if isLockFile(o.Key) {
			continue
		}
		sum, _ := objectstoretest.SumObject(t, st, o.Key)
		out[o.Key] = fmt.Sprintf("%x", sum)
	}
	return out
}

// sameSums fails the test for every entry of want that got lacks or holds differently, and
// for every entry got has beyond want unless extra allows it.
func sameSums(t *testing.T, what string, want, got map[string]string, extra func(string) bool) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			if _, ok := got[k]; !ok {
				t.Errorf("%s: %s is gone", what, k)
			} else {
				t.Errorf("%s: %s changed", what, k)
			}
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok && (extra == nil || !extra(k)) {
			t.Errorf("%s: %s appeared", what, k)
		}
	}
}

// metricLines returns the raw lines of a run's metrics.jsonl, failing on NUL bytes, lines
// that do not parse, and steps logged twice.
func metricLines(t *testing.T, run string) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(run, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.IndexByte(raw, 0) >= 0 {
		t.Fatalf("%s/metrics.jsonl holds NUL bytes", run)
	}
	steps, _ := readMetrics(t, filepath.Join(run, "metrics.jsonl"))
	seen := map[int]bool{}
	for _, s := range steps {
		n := int(s["step"].(float64))
		if seen[n] {
			t.Fatalf("%s/metrics.jsonl logs step %d twice", run, n)
		}
		seen[n] = true
	}
	return strings.SplitAfter(string(raw), "\n")
}

// s3Faulty points e's runs at a real S3 server through a fault proxy, returns a direct
// store on the same bucket (for snapshots) and the proxy.
func s3Faulty(t *testing.T, e *ckptEnv, job string) (checkpoint.ObjectStore, *objectstoretest.FaultProxy) {
	t.Helper()
	gw := objectstoretest.StartVersityGW(t)
	proxy := objectstoretest.StartFaultProxy(t, gw.Endpoint)
	e.s3Base = "s3://" + gw.Bucket + "/" + job
	e.extra = []string{"--s3-endpoint", proxy.Endpoint}
	e.env = []string{"AWS_ACCESS_KEY_ID=" + gw.AccessKey, "AWS_SECRET_ACCESS_KEY=" + gw.SecretKey, "AWS_REGION=us-east-1"}
	store, err := checkpoint.NewS3Store(t.Context(), gw.Config(""))
	if err != nil {
		t.Fatal(err)
	}
	return store, proxy
}

// Issue item 1: a read that fails in transit during resume is retried, never taken for
// damage. Three ranks on S3 die right after committing step 20. A resume against a store
// whose step-20 reads keep failing fails cleanly and changes nothing; a resume that meets one
// cut-short and one stalled response continues from step 20 on every rank and trains exactly
// as an uninterrupted run.
func TestResumeRidesOutTransientS3Faults(t *testing.T) {
	e := newCkptEnv(t)
	store, proxy := s3Faulty(t, e, "transient")
	ranks := []string{"--nproc", "3", "--batch", "12", "--steps", "30", "--checkpoint-every", "10"}
	ref := filepath.Join(e.dir, "ref")
	if out, ok := e.train(t, ref, nil, ranks...); !ok {
		t.Fatalf("uninterrupted run: %s", out)
	}
	run := filepath.Join(e.dir, "run")
	if out, ok := e.train(t, run, []string{"HERD_FAILPOINT=after-manifest@20"}, ranks...); ok {
		t.Fatalf("the failpoint did not stop the run:\n%s", out)
	}
	prefix := "transient/run/"
	ckBefore, runBefore := storeSums(t, store, prefix), treeSums(t, run)
	hist := readFile(t, filepath.Join(run, "metrics.jsonl"))
	if _, ok := ckBefore[prefix+"step-00000020/manifest.json"]; !ok {
		t.Fatalf("step 20 was not committed: %v", ckBefore)
	}

	// Every read of a step-20 shard is cut short: the resume retries, gives up, and fails.
	proxy.Add(objectstoretest.FaultRule{Method: "GET", PathContains: "step-00000020/rank-", Fault: objectstoretest.Truncate, After: 512, Count: -1})
	out, ok := e.train(t, run, nil, append(ranks, "--resume", "latest", "--store-retry-for", "2s", "--store-stall-timeout", "2s")...)
	if ok || !strings.Contains(out, "unavailable") || strings.Contains(out, "falling back") {
		t.Fatalf("resume against a failing store: exit ok=%v, want a store-unavailable error and no fallback:\n%s", ok, out)
	}
	sameSums(t, "checkpoints after the failed resume", ckBefore, storeSums(t, store, prefix), nil)
	sameSums(t, "run directory after the failed resume", runBefore, treeSums(t, run), nil)

	// One response cut short and one stalled: retried, and the resume goes on from step 20.
	proxy.Clear()
	hits := proxy.Hits()
	proxy.Add(objectstoretest.FaultRule{Method: "GET", PathContains: "step-00000020/rank-00001", Fault: objectstoretest.Truncate, After: 1000, Count: 1})
	proxy.Add(objectstoretest.FaultRule{Method: "GET", PathContains: "step-00000020/rank-00002", Fault: objectstoretest.Stall, After: 100, Count: 1})
	out, ok = e.train(t, run, nil, append(ranks, "--resume", "latest", "--store-stall-timeout", "2s")...)
	if !ok || !strings.Contains(out, "step 20, written by 3 ranks") || strings.Contains(out, "falling back") {
		t.Fatalf("resume through transient faults:\n%s", out)
	}
	if proxy.Hits()-hits != 2 || !strings.Contains(out, "resuming") || !strings.Contains(out, "stalled") {
		t.Errorf("%d faults injected (want 2), and the output shows no retried read:\n%s", proxy.Hits()-hits, out)
	}
	lref, dref := stepLog(t, ref)
	l, d := stepLog(t, run)
	for s := 1; s <= 30; s++ {
		if d[s] != dref[s] || l[s] != lref[s] {
			t.Errorf("step %d: loss %v data %v, uninterrupted %v %v", s, l[s], d[s], lref[s], dref[s])
		}
	}
	// The history up to the resumed step is the same bytes; what the dead run logged after it
	// is set aside, not lost; the checkpoints of steps 10 and 20 are untouched.
	checkHistory(t, run, hist, 20)
	now := storeSums(t, store, prefix)
	for key, sum := range ckBefore {
		if (strings.Contains(key, "step-00000010/") || strings.Contains(key, "step-00000020/")) && now[key] != sum {
			t.Errorf("%s changed after the resume", key)
		}
	}
}

// checkHistory checks a resumed run's metrics: the lines hist (metrics.jsonl before the
// resume) held for steps up to step start it unchanged, and its lines after step are in
// metrics.abandoned.jsonl.
func checkHistory(t *testing.T, run, hist string, step int) {
	t.Helper()
	var kept, moved strings.Builder
	for _, line := range strings.SplitAfter(hist, "\n") {
		if line == "" {
			continue
		}
		var n int
		if _, err := fmt.Sscanf(line, `{"step":%d`, &n); err == nil && n <= step && moved.Len() == 0 && strings.HasSuffix(line, "\n") {
			kept.WriteString(line)
		} else {
			moved.WriteString(line)
		}
	}
	lines := metricLines(t, run)
	if got := strings.Join(lines, ""); !strings.HasPrefix(got, kept.String()) {
		t.Errorf("metrics.jsonl does not start with the %d bytes logged up to step %d", kept.Len(), step)
	}
	abandoned := readFile(t, filepath.Join(run, "metrics.abandoned.jsonl"))
	if m := moved.String(); m != "" && !strings.HasSuffix(m, "\n") {
		moved.WriteString("\n")
	}
	if abandoned != moved.String() {
		t.Errorf("metrics.abandoned.jsonl holds %q, want the lines after step %d: %q", abandoned, step, moved.String())
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(raw)
}

// startTrain starts herd train in the background with e's dataset and flags; its combined
// output collects in the returned buffer.
func (e *ckptEnv) startTrain(t *testing.T, out string, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	base := []string{"train", "--data", e.ds, "--out", out, "--seq", "32", "--batch", "12", "--micro-batch", "2",
		"--lr", "3e-3", "--eval-every", "0", "--sample-every", "0", "--baseline=false"}
	if e.s3Base != "" {
		base = append(base, "--checkpoint", e.s3Base+"/"+filepath.Base(out))
	}
	cmd := exec.Command(e.bin, append(append(base, e.extra...), args...)...)
	cmd.Env = append(os.Environ(), e.env...)
	buf := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = buf, buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd, buf
}

// syncBuffer is a bytes.Buffer safe for a process writing while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// waitFor polls until cond holds or the timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func alive(pid int) bool {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// Issue item 2: killing the launcher of `herd train --nproc 3` stops its ranks at once, and
// while a run writes a run directory and a checkpoint location, a second writer of either is
// refused with a message naming the holder. The run that resumes afterwards writes a history
// with every step once and nothing else.
func TestLauncherDeathAndSecondWriters(t *testing.T) {
	e := newCkptEnv(t)
	run := filepath.Join(e.dir, "run")
	args := []string{"--nproc", "3", "--steps", "240", "--checkpoint-every", "20"}
	cmd, out := e.startTrain(t, run, args...)
	waitFor(t, "the first checkpoint", 60*time.Second, func() bool { return strings.Contains(out.String(), "committed step-00000020") })

	// A second writer of the same run directory, and one of the same checkpoint location
	// through another run directory, are refused while the first runs.
	second, ok := e.train(t, run, nil, append(args, "--resume", "latest", "--batch", "12")...)
	if ok || !strings.Contains(second, "is being written by herd train --out "+run) || !strings.Contains(second, "pid ") {
		t.Errorf("second writer of the run directory was not refused with the holder's name:\n%s", second)
	}
	other := filepath.Join(e.dir, "other")
	third, ok := e.train(t, other, nil, "--nproc", "1", "--batch", "12", "--steps", "240", "--checkpoint", filepath.Join(run, "checkpoints"))
	if ok || !strings.Contains(third, "held by herd train --out "+run) {
		t.Errorf("second writer of the checkpoint location was not refused with the holder's name:\n%s", third)
	}
	if _, err := os.Stat(other); err == nil {
		t.Errorf("the refused run left %s behind", other)
	}

	ranks := childPIDs(cmd.Process.Pid)
	if len(ranks) != 3 {
		t.Fatalf("%d rank processes, want 3", len(ranks))
	}
	cmd.Process.Kill()
	cmd.Wait()
	killed := time.Now()
	waitFor(t, "every rank to stop after its launcher was killed", 15*time.Second, func() bool {
		for _, pid := range ranks {
			if alive(pid) {
				return false
			}
		}
		return true
	})
	t.Logf("ranks gone %.2fs after the launcher was killed", time.Since(killed).Seconds())
	hist := readFile(t, filepath.Join(run, "metrics.jsonl"))

	// The restart resumes alone and writes a clean history.
	res, ok := e.train(t, run, nil, append(args, "--resume", "latest", "--batch", "12")...)
	if !ok || !strings.Contains(res, "resumed from") {
		t.Fatalf("resume after the launcher was killed:\n%s", res)
	}
	steps, _ := readMetrics(t, filepath.Join(run, "metrics.jsonl"))
	if len(steps) != 240 {
		t.Errorf("metrics.jsonl logs %d steps, want 240", len(steps))
	}
	var resumed int
	fmt.Sscanf(res[strings.Index(res, "resumed from"):], "resumed from %s step %d", new(string), &resumed)
	checkHistory(t, run, hist, resumed)
}

// Issue item 4: a refused `herd train` changes nothing. A run is interrupted after its
// checkpoint of step 20; then a fresh start over it, a resume with another --batch, a resume
// from a missing location and a resume of a run that has no checkpoints are each refused,
// and the run directory (metrics, run.json, tokenizer, checkpoints) is the same bytes after.
func TestRefusedTrainChangesNothing(t *testing.T) {
	e := newCkptEnv(t)
	run := filepath.Join(e.dir, "run")
	if out, ok := e.train(t, run, []string{"HERD_FAILPOINT=after-manifest@20"}, "--steps", "30", "--checkpoint-every", "10"); ok {
		t.Fatalf("the failpoint did not stop the run:\n%s", out)
	}
	before := treeSums(t, run)
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"fresh start over an interrupted run", []string{"--steps", "30"}, "holds an interrupted run"},
		{"resume with another batch", []string{"--steps", "30", "--resume", "latest", "--batch", "16"}, "resume with the same values"},
		{"resume from a missing location", []string{"--steps", "30", "--resume", filepath.Join(e.dir, "nowhere")}, filepath.Join(e.dir, "nowhere")},
	} {
		out, ok := e.train(t, run, nil, c.args...)
		if ok || !strings.Contains(out, c.want) {
			t.Errorf("%s: exit ok=%v, want a refusal saying %q:\n%s", c.name, ok, c.want, out)
		}
		sameSums(t, c.name, before, treeSums(t, run), nil)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "nowhere")); err == nil {
		t.Error("the missing resume location was created")
	}
	fresh := filepath.Join(e.dir, "fresh")
	out, ok := e.train(t, fresh, nil, "--steps", "30", "--resume", "latest")
	if ok || !strings.Contains(out, "no committed checkpoint in") || !strings.Contains(out, filepath.Join(fresh, "checkpoints")) {
		t.Errorf("resume of a run without checkpoints: want an error naming %s:\n%s", filepath.Join(fresh, "checkpoints"), out)
	}
	if _, err := os.Stat(fresh); err == nil {
		t.Errorf("the refused resume created %s", fresh)
	}
	// The real resume then continues the run as if nothing had happened.
	if out, ok := e.train(t, run, nil, "--steps", "30", "--checkpoint-every", "10", "--resume", "latest"); !ok || !strings.Contains(out, "step 20, written by 1 ranks") {
		t.Fatalf("resume after the refusals:\n%s", out)
	}
}

// Issue item 5: saving rides out the S3 server's restart (connections refused for seconds)
// and a stalled upload, and a store that keeps failing ends the run only after
// --checkpoint-failure-limit, with an error that says so.
func TestSavesRideOutS3Outages(t *testing.T) {
	e := newCkptEnv(t)
	gw := objectstoretest.StartVersityGW(t)
	e.s3Base = "s3://" + gw.Bucket + "/outage"
	e.extra = []string{"--s3-endpoint", gw.Endpoint}
	e.env = []string{"AWS_ACCESS_KEY_ID=" + gw.AccessKey, "AWS_SECRET_ACCESS_KEY=" + gw.SecretKey, "AWS_REGION=us-east-1"}
	run := filepath.Join(e.dir, "restart")
	cmd, out := e.startTrain(t, run, "--steps", "150", "--checkpoint-every", "10", "--nproc", "2")
	waitFor(t, "the first checkpoint", 60*time.Second, func() bool { return strings.Contains(out.String(), "committed outage/restart/step-00000010") })
	gw.Kill()
	down := time.Now()
	time.Sleep(5 * time.Second)
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("S3 server down for %v", time.Since(down).Round(time.Millisecond))
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the run failed across a 5 s S3 restart: %v\n%s", err, tail(out.String(), 3000))
	}
	if !strings.Contains(out.String(), "retrying") || !strings.Contains(out.String(), "committed outage/restart/step-00000150") {
		t.Errorf("no retry logged, or the last checkpoint missing:\n%s", tail(out.String(), 3000))
	}

	// A stalled upload is abandoned after the stall timeout and tried again.
	proxy := objectstoretest.StartFaultProxy(t, gw.Endpoint)
	e.extra = []string{"--s3-endpoint", proxy.Endpoint}
	proxy.Add(objectstoretest.FaultRule{Method: "PUT", PathContains: "step-00000010/rank-00000", Fault: objectstoretest.Hold, Count: 1})
	stalled := filepath.Join(e.dir, "stalled")
	if o, ok := e.train(t, stalled, nil, "--steps", "20", "--checkpoint-every", "10", "--store-stall-timeout", "2s"); !ok ||
		!strings.Contains(o, "stalled") || !strings.Contains(o, "committed outage/stalled/step-00000020") || proxy.Hits() != 1 {
		t.Errorf("stalled upload: exit ok=%v, %d faults:\n%s", ok, proxy.Hits(), o)
	}

	// Uploads that never succeed: every checkpoint fails, training goes on, and the run stops
	// once checkpoints have failed for longer than the limit.
	proxy.Add(objectstoretest.FaultRule{Method: "PUT", PathContains: "failing/step-", Fault: objectstoretest.Hold, Count: -1})
	start := time.Now()
	o, ok := e.train(t, filepath.Join(e.dir, "failing"), nil, "--steps", "100000", "--checkpoint-every", "5",
		"--store-stall-timeout", "1s", "--store-retry-for", "2s", "--checkpoint-failure-limit", "6s")
	if ok || !strings.Contains(o, "checkpoints have failed for") || !strings.Contains(o, "training goes on") {
		t.Errorf("a store that keeps failing: exit ok=%v:\n%s", ok, tail(o, 3000))
	}
	if el := time.Since(start); el > 60*time.Second {
		t.Errorf("the run took %v to give up on a 6 s failure limit", el)
	}
}

// Issue item 8: bad input is refused clearly and changes nothing.
func TestBadInputRefused(t *testing.T) {
	e := newCkptEnv(t)
	run := filepath.Join(e.dir, "run")
	if out, ok := e.train(t, run, nil, "--steps", "4"); !ok {
		t.Fatal(out)
	}
	ck := filepath.Join(run, "checkpoints")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--checkpoint-every", "-1"}, "--checkpoint-every = -1, must be >= 0"},
		{[]string{"--keep-last", "-1"}, "--keep-last = -1, must be >= 0"},
		{[]string{"--keep-every", "-2"}, "--keep-every = -2, must be >= 0"},
		{[]string{"--checkpoint-failure-limit", "-1s"}, "--checkpoint-failure-limit = -1s, must be >= 0"},
		{[]string{"--collective-timeout", "0s"}, "--collective-timeout = 0s, must be > 0"},
		{[]string{"--store-stall-timeout", "0s"}, "--store-stall-timeout = 0s must be > 0"},
	} {
		out, ok := e.train(t, filepath.Join(e.dir, "never"), nil, append([]string{"--steps", "4"}, c.args...)...)
		if ok || !strings.Contains(out, c.want) {
			t.Errorf("%v: want a refusal saying %q:\n%s", c.args, c.want, out)
		}
	}
	if _, err := os.Stat(filepath.Join(e.dir, "never")); err == nil {
		t.Error("a refused run created its --out")
	}

	// export into a directory that holds something: refused, and the directory unchanged.
	full := filepath.Join(e.dir, "full")
	os.MkdirAll(full, 0o755)
	os.WriteFile(filepath.Join(full, "notes.txt"), []byte("mine"), 0o644)
	before := treeSums(t, full)
	if out, err := exec.Command(e.bin, "export", "--checkpoint", ck, "--out", full).CombinedOutput(); err == nil || !strings.Contains(string(out), "is not empty (notes.txt)") {
		t.Errorf("export into a non-empty directory: %v\n%s", err, out)
	}
	sameSums(t, "export target", before, treeSums(t, full), nil)
	// export from a location that does not exist: named, and not created.
	missing := filepath.Join(e.dir, "no-such-checkpoints")
	out, err := exec.Command(e.bin, "export", "--checkpoint", missing, "--out", filepath.Join(e.dir, "hf")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no committed checkpoint in "+missing) {
		t.Errorf("export of a missing location: %v\n%s", err, out)
	}
	for _, p := range []string{missing, filepath.Join(e.dir, "hf")} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("the failed export created %s", p)
		}
	}
	// export into an empty directory works and fills it.
	empty := filepath.Join(e.dir, "empty")
	os.MkdirAll(empty, 0o755)
	runBin(t, e.bin, "export", "--checkpoint", ck, "--out", empty)
	if _, err := os.Stat(filepath.Join(empty, "config.json")); err != nil {
		t.Errorf("export into an empty directory: %v", err)
	}

	// sample from weights that hold NaN: a clear error, not text.
	bad := filepath.Join(e.dir, "nan-run")
	copyDir(t, run, bad)
	ts, meta, err := checkpoint.ReadSafetensors(filepath.Join(bad, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	ts[3].Data[5] = float32(math.NaN())
	f, err := os.Create(filepath.Join(bad, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if err := checkpoint.WriteSafetensors(f, ts, meta); err != nil {
		t.Fatal(err)
	}
	f.Close()
	cmd := exec.Command(e.bin, "sample", "--run", bad, "--tokens", "5")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err == nil || !strings.Contains(stderr.String(), "NaN or infinite") || !strings.Contains(stderr.String(), ts[3].Name) {
		t.Errorf("sample from NaN weights: %v, stdout %q, stderr:\n%s", err, stdout.String(), stderr.String())
	}
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), raw, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Issue item 6: a rank stopped with SIGSTOP (alive, silent) is named as the rank that did not
// answer, whichever rank it is, and the run ends within the collective timeout plus seconds.
func TestStoppedRankIsNamed(t *testing.T) {
	e := newCkptEnv(t)
	for _, victim := range []int{1, 0} {
		run := filepath.Join(e.dir, fmt.Sprintf("stop%d", victim))
		cmd, out := e.startTrain(t, run, "--nproc", "3", "--steps", "100000", "--checkpoint-every", "0", "--collective-timeout", "3s")
		waitFor(t, "training", 60*time.Second, func() bool { return strings.Contains(out.String(), "step ") })
		ranks := childPIDs(cmd.Process.Pid)
		if len(ranks) != 3 {
			t.Fatalf("%d rank processes, want 3", len(ranks))
		}
		syscall.Kill(ranks[victim], syscall.SIGSTOP)
		stopped := time.Now()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err == nil {
				t.Fatalf("rank %d stopped: the run succeeded", victim)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("rank %d stopped: the run still going after 30 s:\n%s", victim, tail(out.String(), 2000))
		}
		el := time.Since(stopped)
		summary := lastLine(out.String())
		want := fmt.Sprintf("rank %d of 3 failed", victim)
		if !strings.Contains(summary, want) {
			t.Errorf("rank %d stopped: the run's last line does not blame it:\n%s\n(whole output:\n%s)", victim, summary, tail(out.String(), 3000))
		}
		t.Logf("rank %d stopped: run ended after %.1fs: %s", victim, el.Seconds(), summary)
		for _, pid := range ranks {
			if alive(pid) {
				t.Errorf("rank process %d still alive after the run ended", pid)
			}
		}
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
