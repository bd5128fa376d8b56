package cluster

import (
	"errors"
	"strings"
	"testing"
)

const goodJob = `name: tiny-test
model:
  preset: tiny
dataset: /data/ds
batch: 12
seq: 32
steps: 100
checkpoint:
  uri: /tmp/ckpt
  every: 10
workers:
  min: 2
  max: 3
`

func TestParseJobSpec(t *testing.T) {
	s, err := ParseJobSpec([]byte(goodJob))
	if err != nil {
		t.Fatal(err)
	}
	if s.Workers.NprocPerNode != 1 || s.Workers.Backend != "cpu" || s.Workers.LastCall.D() != DefaultLastCall || s.Model.Remat != "hybrid" {
		t.Errorf("defaults not applied: %+v", s.Workers)
	}
	c, err := s.ModelConfig()
	if err != nil || c.Dim != 64 {
		t.Errorf("model: %+v %v", c, err)
	}
}

// Every bad job file is refused with the line and the field at fault.
func TestParseJobSpecErrors(t *testing.T) {
	for _, c := range []struct {
		name, old, new, want string
	}{
		{"unknown field", "  max: 3\n", "  max: 3\n  gpus: 8\n", "line 14: field gpus not found"},
		{"wrong type", "batch: 12", "batch: twelve", "line 5: cannot unmarshal !!str `twelve` into int"},
		{"min > max", "  max: 3", "  max: 1", "line 13: workers.max: 1 is less than workers.min = 2"},
		{"unknown preset", "preset: tiny", "preset: huge", `line 3: model.preset: model: invalid config: unknown preset "huge"`},
		{"bad name", "name: tiny-test", "name: Tiny Test", "line 1: name:"},
		{"negative steps", "steps: 100", "steps: -5", "line 7: steps: -5, must be > 0"},
		{"no checkpoint", "  uri: /tmp/ckpt\n", "", "line 8: checkpoint.uri: a checkpoint location"},
		{"bad backend", "  max: 3\n", "  max: 3\n  backend: tpu\n", `line 14: workers.backend: "tpu", must be cpu or cuda`},
		{"bad duration", "  max: 3\n", "  max: 3\n  last_call: soon\n", `line 14: "soon" is not a duration`},
		{"seq too long", "seq: 32", "seq: 99999", "line 6: seq: "},
		{"repeated key", "batch: 12\n", "batch: 12\nbatch: 5\n", `mapping key "batch" already defined`},
		{"batch too small", "batch: 12", "batch: 1", "line 12: workers.min: 2 workers of 1 ranks need a batch of at least 2"},
		{"unknown ZeRO stage", "batch: 12\n", "batch: 12\nzero: 4\n", "zero: 4: unknown ZeRO stage"},
		{"ZeRO on cuda", "  max: 3\n", "  max: 3\n  backend: cuda\nzero: 1\n", "zero: 1: ZeRO runs on the cpu backend only so far"},
		{"tp not dividing nproc", "  max: 3\n", "  max: 3\n  nproc_per_node: 3\ntp: 2\n", "tp: 2 does not divide workers.nproc_per_node = 3"},
		{"tp not dividing heads", "  max: 3\n", "  max: 3\n  nproc_per_node: 8\ntp: 8\n", "tp: model: invalid config: tensor-parallel size 8 does not divide heads = 4"},
		{"tp with zero", "  max: 3\n", "  max: 3\n  nproc_per_node: 2\ntp: 2\nzero: 1\n", "tp: 2 with zero 1: ZeRO with tensor parallelism is not supported yet"},
		{"tp on cuda", "  max: 3\n", "  max: 3\n  nproc_per_node: 2\n  backend: cuda\ntp: 2\n", "tp: 2: tensor parallelism runs on the cpu backend only so far"},
		{"tp not dividing seq", "seq: 32\n", "seq: 33\ntp: 2\n", "seq: 33: sequence parallelism splits every sequence over the tp = 2 ranks"},
		{"negative tp", "  max: 3\n", "  max: 3\ntp: -1\n", "tp: -1, must be >= 1"},
	} {
		doc := strings.Replace(goodJob, c.old, c.new, 1)
		if doc == goodJob {
			t.Fatalf("%s: the edit changed nothing", c.name)
		}
		if strings.Contains(c.new, "tp: 2") && !strings.Contains(doc, "nproc_per_node") {
			doc = strings.Replace(doc, "  max: 3\n", "  max: 3\n  nproc_per_node: 2\n", 1) // tp 2 needs 2 ranks per worker
		}
		_, err := ParseJobSpec([]byte(doc))
		if err == nil || !errors.Is(err, ErrJobSpec) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an ErrJobSpec saying %q", c.name, err, c.want)
		}
	}
	if _, err := ParseJobSpec(nil); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty file: %v", err)
	}
}
