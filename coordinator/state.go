package coordinator

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/herd-llm/herd/cluster"
)

// JobState is the job as the Raft log records it: every coordinator replica applies the same
// commands in the same order and holds the same state.
type JobState struct {
	Token       string         `json:"token"`
	Spec        string         `json:"spec,omitempty"`   // the job file as the first leader read it (JSON)
	Round       *cluster.Round `json:"round,omitempty"`  // the current round; nil before the first
	Ending      uint64         `json:"ending,omitempty"` // a round asked to stop after its current step
	EndReason   string         `json:"end_reason,omitempty"`
	Rounds      int            `json:"rounds"`
	Recoveries  int            `json:"recoveries"` // rounds formed because a worker was lost or failed
	LastStep    int            `json:"last_step"`
	Last        StepSummary    `json:"last"`
	Checkpoints []int          `json:"checkpoints,omitempty"` // committed checkpoint steps, ascending
	Redone      int            `json:"redone"`                // steps trained again in a later round
	StepRound   uint64         `json:"step_round"`            // the round that recorded LastStep
	RedoneUpTo  int            `json:"redone_up_to"`          // the newest step counted in Redone
	Done        bool           `json:"done"`
}

// StepSummary is what the coordinator keeps of the newest step line.
type StepSummary struct {
	Step       int     `json:"step"`
	Loss       float64 `json:"loss"`
	TokensPerS float64 `json:"tokens_per_s"`
	PerDevice  float64 `json:"tokens_per_s_per_device"`
	MFU        float64 `json:"mfu,omitempty"`
	ElapsedS   float64 `json:"elapsed_s"`
}

// LastCheckpoint returns the newest committed checkpoint step, or -1.
func (s *JobState) LastCheckpoint() int {
	if len(s.Checkpoints) == 0 {
		return -1
	}
	return s.Checkpoints[len(s.Checkpoints)-1]
}

// Commands of the Raft log.
const (
	opToken      = "token"
	opRound      = "round"
	opEnd        = "end"
	opSteps      = "steps"
	opCheckpoint = "checkpoint"
	opDone       = "done"
	opAdopt      = "adopt"
	opSpec       = "spec"
)

type command struct {
	Op         string            `json:"op"`
	Token      string            `json:"token,omitempty"`
	Round      *cluster.Round    `json:"round,omitempty"`
	Recovery   bool              `json:"recovery,omitempty"`
	End        uint64            `json:"end,omitempty"`
	Reason     string            `json:"reason,omitempty"`
	Steps      []json.RawMessage `json:"steps,omitempty"`
	StepsRound uint64            `json:"steps_round,omitempty"` // the round that trained Steps
	Checkpoint int               `json:"checkpoint,omitempty"`
	Adopted    []int             `json:"adopted,omitempty"`
	Spec       string            `json:"spec,omitempty"`
}

// fsm applies commands to a JobState and appends the step lines to metrics.jsonl once each:
// a line whose step the file already holds (a replayed log, a redone step) is not written
// again.
type fsm struct {
	mu       sync.Mutex
	state    JobState
	metrics  *os.File // nil: not kept
	fileLast int      // the newest step metrics.jsonl holds
}

var _ raft.FSM = (*fsm)(nil)

// newFSM returns an FSM writing step lines to path ("" keeps none).
func newFSM(path string) (*fsm, error) {
	f := &fsm{}
	if path == "" {
		return f, nil
	}
	last, err := lastStepIn(path)
	if err != nil {
		return nil, err
	}
	file, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	f.metrics, f.fileLast = file, last
	return f, nil
}

// lastStepIn returns the newest step of a metrics file's whole lines.
func lastStepIn(path string) (int, error) {
	raw, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	last := 0
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var rec struct {
			Step int `json:"step"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) == nil {
			last = max(last, rec.Step)
		}
	}
	return last, nil
}

func (f *fsm) close() {
	if f.metrics != nil {
		f.metrics.Close()
	}
}

// snapshot returns a copy of the state.
func (f *fsm) snapshot() JobState {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.state
	s.Checkpoints = append([]int(nil), s.Checkpoints...)
	if s.Round != nil {
		r := *s.Round
		s.Round = &r
	}
	return s
}

// Apply implements raft.FSM.
func (f *fsm) Apply(l *raft.Log) any {
	var c command
	if err := json.Unmarshal(l.Data, &c); err != nil {
		return fmt.Errorf("coordinator: log entry %d: %w", l.Index, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s := &f.state
	switch c.Op {
	case opToken:
		if s.Token == "" {
			s.Token = c.Token
		}
	case opSpec:
		if s.Spec == "" {
			s.Spec = c.Spec
		}
	case opRound:
		s.Round, s.Ending, s.EndReason = c.Round, 0, ""
		s.Rounds++
		if c.Recovery {
			s.Recoveries++
		}
	case opEnd:
		if s.Round != nil && s.Round.ID == c.End {
			s.Ending, s.EndReason = c.End, c.Reason
		}
	case opSteps:
		return f.applySteps(c.Steps, c.StepsRound)
	case opCheckpoint:
		if n := len(s.Checkpoints); n == 0 || c.Checkpoint > s.Checkpoints[n-1] {
			s.Checkpoints = append(s.Checkpoints, c.Checkpoint)
		}
	case opAdopt:
		// Checkpoints found in the location when the job's log knew none: the job continues
		// from the newest of them.
		if len(s.Checkpoints) == 0 && s.Round == nil {
			s.Checkpoints = append(s.Checkpoints, c.Adopted...)
			if n := len(c.Adopted); n > 0 && c.Adopted[n-1] > s.LastStep {
				s.LastStep = c.Adopted[n-1]
			}
		}
	case opDone:
		s.Done = true
	default:
		return fmt.Errorf("coordinator: log entry %d: unknown op %q", l.Index, c.Op)
	}
	return nil
}

// applySteps records step lines. Every worker of a round reports each step (so a step is
// recorded even when the worker holding the round's rank 0 dies); the first line of a step
// is kept. A step reported again by a later round than the one that recorded it was trained
// again, after a failure: it counts once in Redone.
func (f *fsm) applySteps(lines []json.RawMessage, round uint64) error {
	s := &f.state
	for _, line := range lines {
		var m StepSummary
		if err := json.Unmarshal(line, &m); err != nil || m.Step <= 0 {
			continue
		}
		if m.Step <= s.LastStep {
			if round > s.StepRound && m.Step > s.RedoneUpTo {
				s.Redone++
				s.RedoneUpTo = m.Step
			}
			continue
		}
		s.LastStep, s.Last, s.StepRound = m.Step, m, round
		if f.metrics != nil && m.Step > f.fileLast {
			if _, err := f.metrics.Write(append(bytes.TrimSpace(line), '\n')); err != nil {
				return fmt.Errorf("coordinator: metrics.jsonl: %w", err)
			}
			f.fileLast = m.Step
		}
	}
	return nil
}

// Snapshot implements raft.FSM.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	s := f.snapshot()
	raw, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	return snapshotBytes(raw), nil
}

// Restore implements raft.FSM.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var s JobState
	if err := json.NewDecoder(rc).Decode(&s); err != nil {
		return fmt.Errorf("coordinator: restoring a snapshot: %w", err)
	}
	f.mu.Lock()
	f.state = s
	f.mu.Unlock()
	return nil
}

type snapshotBytes []byte

func (b snapshotBytes) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(b); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (b snapshotBytes) Release() {}
