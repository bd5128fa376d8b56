package main

import (
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/herd-llm/herd/checkpoint"
)

// zeroStages are the ZeRO stages, each compared against plain data parallelism.
var zeroStages = []int{1, 2, 3}

// ZeRO is exact: for 2 and 4 processes, in one micro-batch per step and in several, with
// gradient clipping active, each stage gives the same per-step losses and final parameters as
// plain data parallelism up to summation order.
func TestZeroMatchesDataParallel(t *testing.T) {
	e := newCkptEnv(t)
	run := func(name string, w, micro, zero int) (map[int]float64, []float32) {
		dir := filepath.Join(e.dir, name)
		out, ok := e.train(t, dir, nil, "--steps", "12", "--nproc", strconv.Itoa(w), "--micro-batch", strconv.Itoa(micro),
			"--zero", strconv.Itoa(zero), "--clip", "1.0", "--check-every", "4")
		if !ok {
			t.Fatalf("%s: %s", name, out)
		}
		l, _ := stepLog(t, dir)
		return l, weights(t, filepath.Join(dir, "model.safetensors"))
	}
	for _, w := range []int{2, 4} {
		for _, micro := range []int{8 / w, 1} {
			refL, refP := run(fmt.Sprintf("dp-w%d-m%d", w, micro), w, micro, 0)
			for _, z := range zeroStages {
				l, p := run(fmt.Sprintf("z%d-w%d-m%d", z, w, micro), w, micro, z)
				worstL, worstP, maxAbs := 0.0, 0.0, 0.0
				for s, ref := range refL {
					worstL = math.Max(worstL, math.Abs(l[s]-ref)/ref)
				}
				for i := range refP {
					maxAbs = math.Max(maxAbs, math.Abs(float64(refP[i])))
					worstP = math.Max(worstP, math.Abs(float64(p[i]-refP[i])))
				}
				if len(l) != 12 || worstL > 1e-5 || worstP/maxAbs > 1e-5 {
					t.Errorf("zero %d, %d processes, micro-batch %d: %d steps, loss off by %.2g, parameters by %.2g (bound 1e-5)", z, w, micro, len(l), worstL, worstP/maxAbs)
				}
				t.Logf("zero %d, %d processes, micro-batch %d: loss within %.2g, parameters within %.2g of plain data parallelism", z, w, micro, worstL, worstP/maxAbs)
			}
		}
	}
}

// A checkpoint written under ZeRO holds each rank's chunks, and resumes in another stage and
// world size: 4 processes under ZeRO-3 stop after step 8; the run continues as ZeRO-1 on 2
// processes, as ZeRO-2 on 2 and as one plain process, each exactly on the uninterrupted run's
// data and within summation order of its losses.
func TestZeroCheckpointsReshard(t *testing.T) {
	e := newCkptEnv(t)
	ref := filepath.Join(e.dir, "ref")
	if out, ok := e.train(t, ref, nil, "--steps", "16", "--nproc", "4", "--zero", "3"); !ok {
		t.Fatal(out)
	}
	lref, dref := stepLog(t, ref)
	for _, to := range [][2]int{{2, 1}, {2, 2}, {1, 0}} {
		run := filepath.Join(e.dir, fmt.Sprintf("to-w%d-z%d", to[0], to[1]))
		if out, ok := e.train(t, run, []string{"HERD_FAILPOINT=after-manifest@8"}, "--steps", "16", "--checkpoint-every", "8", "--nproc", "4", "--zero", "3"); ok {
			t.Fatalf("the failpoint did not stop the run:\n%s", out)
		}
		store, err := checkpoint.NewDirStore(filepath.Join(run, "checkpoints"))
		if err != nil {
			t.Fatal(err)
		}
		m, err := checkpoint.ReadManifest(t.Context(), checkpoint.Location{Store: store}, 8)
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Shards) != 4 || len(m.Shards[0].Ranges) < 3 {
			t.Errorf("the ZeRO checkpoint's shards do not hold chunks of every unit: %+v", m.Shards[0])
		}
		out, ok := e.train(t, run, nil, "--steps", "16", "--checkpoint-every", "8", "--resume", "latest",
			"--nproc", strconv.Itoa(to[0]), "--zero", strconv.Itoa(to[1]))
		if !ok {
			t.Fatalf("resume as zero %d on %d: %s", to[1], to[0], out)
		}
		l, d := stepLog(t, run)
		for s := 1; s <= 16; s++ {
			if d[s] != dref[s] || math.Abs(l[s]-lref[s]) > 1e-5*lref[s] {
				t.Errorf("zero 3 x4 -> zero %d x%d, step %d: loss %v data %v, uninterrupted %v %v", to[1], to[0], s, l[s], d[s], lref[s], dref[s])
			}
		}
	}
}
