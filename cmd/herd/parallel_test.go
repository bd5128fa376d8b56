package main

import (
	"bytes"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/herd-llm/herd/checkpoint"
)

// Data parallelism is exact: with the same global batch, 1, 2 and 4 processes give the same
// loss at every step of a 20-step run and the same final parameters, up to summation order.
func TestDataParallelMatchesSingleProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 7 training processes")
	}
	bin := herdBinary(t)
	dir := t.TempDir()
	textDir, jsonl := writeCorpus(t, dir)
	ds := filepath.Join(dir, "ds")
	runBin(t, bin, "prepare", "--source", "prose="+textDir+":0.6", "--source", "code="+jsonl+":0.4", "--vocab", "320", "--out", ds)
	losses := map[int][]float64{}
	params := map[int][]float32{}
	for _, n := range []int{1, 2, 4} {
		run := filepath.Join(dir, "run"+strconv.Itoa(n))
		runBin(t, bin, "train", "--data", ds, "--out", run, "--steps", "20", "--seq", "32", "--batch", "8",
			"--micro-batch", "2", "--lr", "3e-3", "--eval-every", "0", "--sample-every", "0", "--baseline=false",
			"--nproc", strconv.Itoa(n), "--check-every", "5")
		steps, _ := readMetrics(t, filepath.Join(run, "metrics.jsonl"))
		for _, s := range steps {
			losses[n] = append(losses[n], s["loss"].(float64))
		}
		tensors, _, err := checkpoint.ReadSafetensors(filepath.Join(run, "model.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range tensors {
			params[n] = append(params[n], tt.Data...)
		}
	}
	// --micro-batch defaults to --batch / --nproc.
	runBin(t, bin, "train", "--data", ds, "--out", filepath.Join(dir, "default-micro"), "--steps", "2", "--seq", "32",
		"--batch", "8", "--eval-every", "0", "--sample-every", "0", "--baseline=false", "--nproc", "2")
	for _, n := range []int{2, 4} {
		if len(losses[n]) != 20 {
			t.Fatalf("%d processes: %d steps logged", n, len(losses[n]))
		}
		worst := 0.0
		for i, l := range losses[n] {
			worst = math.Max(worst, math.Abs(l-losses[1][i])/losses[1][i])
		}
		if worst > 1e-4 {
			t.Errorf("%d processes: loss differs from 1 process by %.3g relative (bound 1e-4)\n1: %v\n%d: %v", n, worst, losses[1], n, losses[n])
		}
		var maxAbs, maxDiff float64
		for i, p := range params[n] {
			maxAbs = math.Max(maxAbs, math.Abs(float64(params[1][i])))
			maxDiff = math.Max(maxDiff, math.Abs(float64(p-params[1][i])))
		}
		if maxDiff/maxAbs > 1e-4 {
			t.Errorf("%d processes: final parameters differ by %.3g of the largest (bound 1e-4)", n, maxDiff/maxAbs)
		}
		t.Logf("%d processes: worst loss difference %.2g relative, parameters %.2g", n, worst, maxDiff/maxAbs)
	}
}

// Killing one rank of a data-parallel run stops the whole run promptly with an error that
// names the failed rank; nothing hangs.
func TestDataParallelRankKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("starts training processes")
	}
	bin := herdBinary(t)
	dir := t.TempDir()
	textDir, jsonl := writeCorpus(t, dir)
	ds := filepath.Join(dir, "ds")
	runBin(t, bin, "prepare", "--source", "prose="+textDir+":0.6", "--source", "code="+jsonl+":0.4", "--vocab", "320", "--out", ds)
	cmd := exec.Command(bin, "train", "--data", ds, "--out", filepath.Join(dir, "run"), "--steps", "100000", "--seq", "32",
		"--batch", "8", "--micro-batch", "2", "--eval-every", "0", "--sample-every", "0", "--nproc", "4", "--collective-timeout", "5s")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until training runs, then SIGKILL rank 2 (a child of the launcher).
	deadline := time.Now().Add(30 * time.Second)
	var victim int
	for victim == 0 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		if !strings.Contains(stderr.String(), "step ") {
			continue
		}
		if pids := childPIDs(cmd.Process.Pid); len(pids) == 4 {
			victim = pids[2] // rank 2
		}
	}
	if victim == 0 {
		cmd.Process.Kill()
		t.Fatalf("the 4 ranks never started training:\n%s", stderr.String())
	}
	killed := time.Now()
	syscall.Kill(victim, syscall.SIGKILL)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("run succeeded after a rank was killed")
		}
		t.Logf("run failed %.2fs after the kill", time.Since(killed).Seconds())
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("run still going 20 s after a rank was killed:\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), "failed") || !strings.Contains(stderr.String(), "rank 2") {
		t.Errorf("the error does not name rank 2:\n%s", tail(stderr.String(), 2000))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// childPIDs lists the processes whose parent is pid, in increasing pid order, from /proc.
// childPIDs returns the child processes of pid, ordered by their rank (HERD_RANK in their
// environment; children without one after the ranks, by pid). PIDs alone do not follow rank
// order: a busy machine may hand out recycled, lower numbers to later children.
func childPIDs(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	rank := map[int]int{}
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// Fields after the parenthesized command: state, then the parent pid.
		rest := string(stat[strings.LastIndexByte(string(stat), ')')+1:])
		f := strings.Fields(rest)
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, child)
			rank[child] = math.MaxInt
			env, _ := os.ReadFile("/proc/" + e.Name() + "/environ")
			for _, kv := range strings.Split(string(env), "\x00") {
				if v, ok := strings.CutPrefix(kv, envRank+"="); ok {
					if r, err := strconv.Atoi(v); err == nil {
						rank[child] = r
					}
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if rank[out[i]] != rank[out[j]] {
			return rank[out[i]] < rank[out[j]]
		}
		return out[i] < out[j]
	})
	return out
}
