package coordinator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/herd-llm/herd/cluster"
)

func applyAll(t *testing.T, f *fsm, cmds []command, first uint64) {
	t.Helper()
	for i, c := range cmds {
		raw, _ := json.Marshal(c)
		if err, ok := f.Apply(&raft.Log{Index: first + uint64(i), Data: raw}).(error); ok && err != nil {
			t.Fatal(err)
		}
	}
}

func stepLine(n int, loss float64) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"step":%d,"loss":%g,"data_crc":%d}`, n, loss, 1000+n))
}

type sinkBuffer struct{ bytes.Buffer }

func (s *sinkBuffer) ID() string    { return "test" }
func (s *sinkBuffer) Cancel() error { return nil }
func (s *sinkBuffer) Close() error  { return nil }

// The job state: steps recorded once each (a repeat from a later round counts as redone),
// checkpoints in order; a snapshot restores the same state; replaying the log after a restart
// writes no line of metrics.jsonl twice.
func TestFSM(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "metrics.jsonl")
	f, err := newFSM(path)
	if err != nil {
		t.Fatal(err)
	}
	log := []command{
		{Op: opToken, Token: "t1"},
		{Op: opToken, Token: "t2"}, // the first token stays
		{Op: opRound, Round: &cluster.Round{ID: 1}},
		{Op: opSteps, StepsRound: 1, Steps: []json.RawMessage{stepLine(1, 5), stepLine(2, 4.5), stepLine(3, 4.2)}},
		{Op: opSteps, StepsRound: 1, Steps: []json.RawMessage{stepLine(3, 4.2)}}, // another worker's copy
		{Op: opCheckpoint, Checkpoint: 2},
		{Op: opRound, Round: &cluster.Round{ID: 2}, Recovery: true},
		{Op: opSteps, StepsRound: 2, Steps: []json.RawMessage{stepLine(3, 4.21), stepLine(4, 4.0)}}, // step 3 redone
		{Op: opSteps, StepsRound: 2, Steps: []json.RawMessage{stepLine(3, 4.21), stepLine(4, 4.0)}}, // the other worker
		{Op: opCheckpoint, Checkpoint: 1},                                                           // older: ignored
		{Op: opCheckpoint, Checkpoint: 4},
	}
	applyAll(t, f, log, 1)
	s := f.snapshot()
	if s.Token != "t1" || s.LastStep != 4 || s.Redone != 1 || s.Rounds != 2 || s.Recoveries != 1 ||
		fmt.Sprint(s.Checkpoints) != "[2 4]" || s.Last.Loss != 4.0 {
		t.Fatalf("state after the log: %+v", s)
	}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink sinkBuffer
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	f.close()
	g, err := newFSM(path)
	if err != nil {
		t.Fatal(err)
	}
	defer g.close()
	if err := g.Restore(io.NopCloser(&sink)); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g.snapshot(), s) {
		t.Fatalf("restored %+v, want %+v", g.snapshot(), s)
	}
	// A replica that replays the whole log (no snapshot) appends nothing it already wrote.
	h, err := newFSM(path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.close()
	applyAll(t, h, log, 1)
	raw, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	if len(lines) != 4 {
		t.Fatalf("metrics.jsonl has %d lines after a replay, want 4:\n%s", len(lines), raw)
	}
	if !strings.Contains(lines[2], `"loss":4.2,`) {
		t.Errorf("step 3's line is not the first one recorded: %s", lines[2])
	}
}

func TestSpecDiff(t *testing.T) {
	a := simSpec(t, 1, 2, 12)
	b := simSpec(t, 1, 2, 12)
	b.Batch = 24
	if d := specDiff(a, b); !strings.Contains(d, "Batch: 12, now 24") {
		t.Errorf("specDiff = %q", d)
	}
}
