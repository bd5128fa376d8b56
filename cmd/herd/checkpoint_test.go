package main

import (
	"bytes"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/herd-llm/herd/checkpoint"
	"github.com/herd-llm/herd/checkpoint/objectstoretest"
)

// ckptEnv is a prepared dataset and the flags of a short, fast training run.
type ckptEnv struct {
	bin, dir, ds string
	extra        []string // flags added to every train (e.g. the S3 endpoint)
	env          []string
	s3Base       string // when set, each run checkpoints to s3Base/<run directory name>
}

func newCkptEnv(t *testing.T) *ckptEnv {
	t.Helper()
	e := &ckptEnv{bin: herdBinary(t), dir: t.TempDir()}
	textDir, jsonl := writeCorpus(t, e.dir)
	e.ds = filepath.Join(e.dir, "ds")
	runBin(t, e.bin, "prepare", "--source", "prose="+textDir+":0.6", "--source", "code="+jsonl+":0.4", "--vocab", "320", "--out", e.ds)
	return e
}

// train runs herd train and returns its combined output and whether it exited 0.
func (e *ckptEnv) train(t *testing.T, out string, env []string, args ...string) (string, bool) {
	t.Helper()
	base := []string{"train", "--data", e.ds, "--out", out, "--seq", "32", "--batch", "8", "--micro-batch", "2",
		"--lr", "3e-3", "--eval-every", "0", "--sample-every", "0", "--baseline=false"}
	if e.s3Base != "" {
		base = append(base, "--checkpoint", e.s3Base+"/"+filepath.Base(out))
	}
	cmd := exec.Command(e.bin, append(append(base, e.extra...), args...)...)
	cmd.Env = append(append(os.Environ(), e.env...), env...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	return buf.String(), err == nil
}

// stepLog returns, per step, the last logged loss and data fingerprint of a run.
func stepLog(t *testing.T, run string) (map[int]float64, map[int]float64) {
	t.Helper()
	steps, _ := readMetrics(t, filepath.Join(run, "metrics.jsonl"))
	loss, data := map[int]float64{}, map[int]float64{}
	for _, s := range steps {
		n := int(s["step"].(float64))
		loss[n], data[n] = s["loss"].(float64), s["data_crc"].(float64)
	}
	return loss, data
}

func weights(t *testing.T, path string) []float32 {
	t.Helper()
	ts, _, err := checkpoint.ReadSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []float32
	for _, x := range ts {
		out = append(out, x.Data...)
	}
	return out
}

// Exact resume: 20 steps in one process, and 10 steps + checkpoint + a new process resuming
// for 10 more, end with bitwise-identical parameters and identical per-step losses.
func TestResumeIsExact(t *testing.T) {
	e := newCkptEnv(t)
	runResumeIsExact(t, e)
}

func runResumeIsExact(t *testing.T, e *ckptEnv) {
	a, b := filepath.Join(e.dir, "a"), filepath.Join(e.dir, "b")
	if out, ok := e.train(t, a, nil, "--steps", "20", "--checkpoint-every", "10"); !ok {
		t.Fatalf("uninterrupted run: %s", out)
	}
	// The first half ends by dying right after committing step 10.
	if out, ok := e.train(t, b, []string{"HERD_FAILPOINT=after-manifest@10"}, "--steps", "20", "--checkpoint-every", "10"); ok {
		t.Fatalf("the failpoint did not stop the run:\n%s", out)
	}
	out, ok := e.train(t, b, nil, "--steps", "20", "--checkpoint-every", "10", "--resume", "latest")
	if !ok || !strings.Contains(out, "resumed from") || !strings.Contains(out, "step 10, written by 1 ranks") {
		t.Fatalf("resume: %s", out)
	}
	la, _ := stepLog(t, a)
	lb, _ := stepLog(t, b)
	if steps, _ := readMetrics(t, filepath.Join(b, "metrics.jsonl")); len(steps) != 20 {
		t.Errorf("the resumed run's metrics.jsonl has %d step lines, want 20 (no step logged twice)", len(steps))
	}
	for s := 1; s <= 20; s++ {
		if la[s] != lb[s] {
			t.Errorf("step %d: loss %v resumed, %v uninterrupted", s, lb[s], la[s])
		}
	}
	wa, wb := weights(t, filepath.Join(a, "model.safetensors")), weights(t, filepath.Join(b, "model.safetensors"))
	for i := range wa {
		if wa[i] != wb[i] {
			t.Fatalf("parameter %d: %v resumed, %v uninterrupted", i, wb[i], wa[i])
		}
	}
}

// Resharding: a checkpoint written by 4 ranks resumes in 1 and in 2 processes with the same
// data stream (the same sequences at every step) and losses equal to the uninterrupted run
// up to summation order.
func TestResumeReshards(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 8 training processes")
	}
	e := newCkptEnv(t)
	ref := filepath.Join(e.dir, "ref")
	if out, ok := e.train(t, ref, nil, "--steps", "16"); !ok {
		t.Fatalf("reference run: %s", out)
	}
	lref, dref := stepLog(t, ref)
	for _, n := range []int{1, 2} {
		run := filepath.Join(e.dir, "w4to"+strconv.Itoa(n))
		if out, ok := e.train(t, run, []string{"HERD_FAILPOINT=after-manifest@8"}, "--steps", "16", "--checkpoint-every", "8", "--nproc", "4"); ok {
			t.Fatalf("4-rank run was not stopped:\n%s", out)
		}
		out, ok := e.train(t, run, nil, "--steps", "16", "--checkpoint-every", "8", "--resume", "latest", "--nproc", strconv.Itoa(n))
		if !ok || !strings.Contains(out, "written by 4 ranks") {
			t.Fatalf("resume on %d: %s", n, out)
		}
		l, d := stepLog(t, run)
		for s := 1; s <= 16; s++ {
			if d[s] != dref[s] {
				t.Errorf("4 -> %d ranks, step %d: data fingerprint %v, uninterrupted %v", n, s, d[s], dref[s])
			}
			if math.Abs(l[s]-lref[s]) > 1e-4*lref[s] {
				t.Errorf("4 -> %d ranks, step %d: loss %v, uninterrupted %v", n, s, l[s], lref[s])
			}
		}
	}
}

// A process killed after writing its shards but before the manifest leaves no commit: the
// resume takes the previous checkpoint and deletes the orphan shards, which belong to the
// abandoned timeline.
func TestKilledBeforeManifest(t *testing.T) {
	e := newCkptEnv(t)
	runKilledBeforeManifest(t, e, func(run string) []string {
		steps, err := os.ReadDir(filepath.Join(run, "checkpoints"))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range steps {
			names = append(names, s.Name())
		}
		return names
	})
}

func runKilledBeforeManifest(t *testing.T, e *ckptEnv, list func(run string) []string) {
	run := filepath.Join(e.dir, "killed")
	if out, ok := e.train(t, run, []string{"HERD_FAILPOINT=before-manifest@20"}, "--steps", "30", "--checkpoint-every", "10"); ok {
		t.Fatalf("the failpoint did not kill the run:\n%s", out)
	}
	if got := strings.Join(list(run), " "); !strings.Contains(got, "step-00000020") {
		t.Fatalf("no shards of step 20 were left behind: %s", got)
	}
	// Starting afresh over existing checkpoints is refused, never mixed with them.
	if out, ok := e.train(t, run, nil, "--steps", "30"); ok || !strings.Contains(out, "holds an interrupted run") {
		t.Fatalf("a fresh run over existing checkpoints was not refused:\n%s", out)
	}
	out, ok := e.train(t, run, nil, "--steps", "30", "--checkpoint-every", "15", "--resume", "latest")
	if !ok || !strings.Contains(out, "step 10, written by 1 ranks") {
		t.Fatalf("resume did not take the commit of step 10:\n%s", out)
	}
	if !strings.Contains(out, "step-00000020, left by an abandoned run after the resumed step 10") {
		t.Errorf("the orphan shards of step 20 were not reported deleted:\n%s", out)
	}
	if got := strings.Join(list(run), " "); strings.Contains(got, "step-00000020") {
		t.Errorf("orphan shards of step 20 are still there: %s", got)
	}
}

// export -> import gives bitwise-identical parameters.
func TestExportImportRoundTrip(t *testing.T) {
	e := newCkptEnv(t)
	run := filepath.Join(e.dir, "run")
	if out, ok := e.train(t, run, nil, "--steps", "5"); !ok {
		t.Fatal(out)
	}
	hfDir, back := filepath.Join(e.dir, "hf"), filepath.Join(e.dir, "imported")
	runBin(t, e.bin, "export", "--checkpoint", filepath.Join(run, "checkpoints"), "--out", hfDir)
	for _, f := range []string{"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} {
		if _, err := os.Stat(filepath.Join(hfDir, f)); err != nil {
			t.Errorf("export lacks %s", f)
		}
	}
	runBin(t, e.bin, "import", "--from", hfDir, "--out", back)
	want := weights(t, filepath.Join(run, "model.safetensors"))
	store, _ := checkpoint.NewDirStore(back)
	loc := checkpoint.Location{Store: store}
	var got checkpoint.State
	m, err := checkpoint.LoadLatest(t.Context(), loc, func(m *checkpoint.Manifest) (checkpoint.State, error) {
		got = checkpoint.State{Params: make([]float32, m.Elems), M: make([]float32, m.Elems), V: make([]float32, m.Elems)}
		return got, nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.Step != 0 || len(got.Params) != len(want) {
		t.Fatalf("imported step %d with %d parameters, want step 0 with %d", m.Step, len(got.Params), len(want))
	}
	for i := range want {
		if got.Params[i] != want[i] {
			t.Fatalf("parameter %d: %v after export and import, want %v", i, got.Params[i], want[i])
		}
	}
}

// s3Env points the training runs of e at a real S3-compatible server started for the test.
func s3Env(t *testing.T, e *ckptEnv, job string) checkpoint.ObjectStore {
	t.Helper()
	gw := objectstoretest.StartVersityGW(t)
	e.s3Base = "s3://" + gw.Bucket + "/" + job
	e.extra = []string{"--s3-endpoint", gw.Endpoint}
	e.env = []string{"AWS_ACCESS_KEY_ID=" + gw.AccessKey, "AWS_SECRET_ACCESS_KEY=" + gw.SecretKey, "AWS_REGION=us-east-1"}
	store, err := checkpoint.NewS3Store(t.Context(), gw.Config(""))
	if err != nil {
		t.Fatal(err)
	}
	return store
}

// The checkpoint scenarios again with the checkpoints on S3.
func TestResumeIsExactS3(t *testing.T) {
	e := newCkptEnv(t)
	s3Env(t, e, "exact")
	runResumeIsExact(t, e)
}

func TestKilledBeforeManifestS3(t *testing.T) {
	e := newCkptEnv(t)
	store := s3Env(t, e, "killed")
	runKilledBeforeManifest(t, e, func(string) []string {
		steps, err := checkpoint.ListSteps(t.Context(), checkpoint.Location{Store: store, Prefix: "killed/killed"})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range steps {
			names = append(names, checkpoint.StepDir(s.Step))
		}
		return names
	})
}
