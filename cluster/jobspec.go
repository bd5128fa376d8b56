package cluster

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/herd-llm/herd/internal/yamlpos"

	"github.com/herd-llm/herd/model"
)

// ErrJobSpec is wrapped by every error about a job file.
var ErrJobSpec = errors.New("cluster: invalid job spec")

// JobSpec is a training job as JOB.yaml describes it. Field names are the YAML keys.
type JobSpec struct {
	// Name identifies the job; every etcd key of the job is under /herd/jobs/<name>/.
	Name string `yaml:"name"`
	// Model is a preset, optionally with fields overridden, or a whole inline config.
	Model ModelSpec `yaml:"model"`
	// Dataset is a prepared dataset directory (herd prepare) that every worker can read.
	Dataset string `yaml:"dataset"`
	// Batch is the global batch in sequences per optimizer step. It stays the same whatever
	// the number of workers: each rank trains on its share.
	Batch int `yaml:"batch"`
	// MicroBatch caps the sequences of one forward/backward pass on a rank (0: the whole share).
	MicroBatch int `yaml:"micro_batch"`
	// Zero is the ZeRO stage (herd train --zero): 0 replicates the training state on every
	// rank; 1 shards the AdamW moments across the ranks, 2 the gradients too, 3 the
	// parameters too. A round that loses a rank's shard restarts from the newest checkpoint.
	Zero int `yaml:"zero"`
	// TP is the tensor-parallel size (herd train --tp): groups of tp rank processes of one
	// worker split every layer of the model, and the groups train data-parallel. It must
	// divide workers.nproc_per_node, the heads and ffn_hidden; 0 or 1: none.
	TP int `yaml:"tp"`
	// SequenceParallel, with tp, splits the residual stream, norms and their statistics by
	// sequence over the tensor-parallel ranks (absent: on).
	SequenceParallel *bool `yaml:"sequence_parallel"`
	// Seq is the sequence length in tokens.
	Seq int `yaml:"seq"`
	// Steps is the number of optimizer steps.
	Steps int `yaml:"steps"`
	// Seed seeds the initial weights and the data order.
	Seed uint64 `yaml:"seed"`
	// Schedule is the learning rate schedule and the optimizer's settings.
	Schedule ScheduleSpec `yaml:"schedule"`
	// Checkpoint says where and how often the job saves.
	Checkpoint CheckpointSpec `yaml:"checkpoint"`
	// Workers bounds the cluster and says how each worker runs.
	Workers WorkersSpec `yaml:"workers"`
	// Token authenticates workers; "" means $HERD_TOKEN of the coordinator, else one the
	// coordinator makes and prints.
	Token string `yaml:"token"`
}

// ModelSpec selects the network.
type ModelSpec struct {
	Preset    string  `yaml:"preset"`     // tiny, 15m, 125m, 1b, 7b, 13b, 33b or 65b; the fields below override it
	Dim       int     `yaml:"dim"`        // model width
	Layers    int     `yaml:"layers"`     // transformer blocks
	Heads     int     `yaml:"heads"`      // attention heads (dim must be a multiple)
	FFNHidden int     `yaml:"ffn_hidden"` // SwiGLU hidden width
	MaxSeq    int     `yaml:"max_seq"`    // longest sequence the model is built for (at least seq)
	NormEps   float64 `yaml:"norm_eps"`   // RMSNorm epsilon
	RopeTheta float64 `yaml:"rope_theta"` // rotary embedding base
	Remat     string  `yaml:"remat"`      // rematerialization: none, hybrid (LLaMA's) or full
}

// ScheduleSpec is the optimizer and learning-rate schedule.
type ScheduleSpec struct {
	LR          float64  `yaml:"lr"`           // peak learning rate; 0: the preset's
	Warmup      *int     `yaml:"warmup"`       // warmup steps; absent: min(2000, steps/20)
	WeightDecay *float64 `yaml:"weight_decay"` // AdamW weight decay on matrices; absent: 0.1
	Clip        *float64 `yaml:"clip"`         // global gradient norm limit; absent: 1.0; 0 disables
}

// CheckpointSpec is where and how often the job saves.
type CheckpointSpec struct {
	URI        string `yaml:"uri"`         // directory, file:///path or s3://bucket/prefix
	Every      int    `yaml:"every"`       // steps between checkpoints; 0: only the last
	KeepLast   int    `yaml:"keep_last"`   // committed checkpoints kept; 0: all
	KeepEvery  int    `yaml:"keep_every"`  // also keep multiples of this step
	S3Endpoint string `yaml:"s3_endpoint"` // for s3:// URIs; credentials come from the environment
	S3Region   string `yaml:"s3_region"`   // for s3:// URIs; default: $AWS_REGION
}

// WorkersSpec bounds the cluster.
type WorkersSpec struct {
	Min          int      `yaml:"min"`            // a round forms once this many workers are present
	Max          int      `yaml:"max"`            // at most this many take part; more wait as spares
	NprocPerNode int      `yaml:"nproc_per_node"` // rank processes per worker, one per device
	Backend      string   `yaml:"backend"`        // cpu (default) or cuda
	LastCall     Duration `yaml:"last_call"`      // after min is reached, how long to wait for more (default 2s)
	LeaseTTL     Duration `yaml:"lease_ttl"`      // a worker that stops renewing for this long is lost (default 3s)
	// CollectiveTimeout is the deadline of one collective: a rank that hangs is named after it
	// (default 5m).
	CollectiveTimeout Duration `yaml:"collective_timeout"`
}

// Duration is a time.Duration written as "2s" in YAML.
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration such as 2s or 500ms", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Defaults of a job spec.
const (
	DefaultLastCall = 2 * time.Second
	DefaultLeaseTTL = 3 * time.Second
	// DefaultCollectiveTimeout must cover rank 0's validations, which the others wait for.
	DefaultCollectiveTimeout = 5 * time.Minute
)

var jobNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// LoadJobSpec reads and validates a job file.
func LoadJobSpec(path string) (*JobSpec, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrJobSpec, err)
	}
	spec, err := ParseJobSpec(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return spec, nil
}

// ParseJobSpec decodes a job file strictly (unknown keys, wrong types and repeated keys are
// refused with their line) and validates it, naming the line and the field at fault.
func ParseJobSpec(raw []byte) (*JobSpec, error) {
	var spec JobSpec
	root, err := yamlpos.DecodeStrict(raw, &spec)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrJobSpec, err)
	}
	spec.applyDefaults()
	if err := spec.validate(); err != nil {
		var fe *fieldError
		if errors.As(err, &fe) {
			return nil, fmt.Errorf("%w: line %d: %s: %s", ErrJobSpec, yamlpos.Line(root, strings.Split(fe.path, ".")...), fe.path, fe.msg)
		}
		return nil, fmt.Errorf("%w: %v", ErrJobSpec, err)
	}
	return &spec, nil
}

// fieldError is a validation error about the field at a dotted path ("workers.min").
type fieldError struct {
	path, msg string
}

func (e *fieldError) Error() string { return e.path + ": " + e.msg }

func bad(path, format string, a ...any) error {
	return &fieldError{path: path, msg: fmt.Sprintf(format, a...)}
}

func (s *JobSpec) applyDefaults() {
	if s.Workers.NprocPerNode == 0 {
		s.Workers.NprocPerNode = 1
	}
	if s.TP == 0 {
		s.TP = 1
	}
	if s.SequenceParallel == nil {
		on := true
		s.SequenceParallel = &on
	}
	if s.Workers.Backend == "" {
		s.Workers.Backend = "cpu"
	}
	if s.Workers.LastCall == 0 {
		s.Workers.LastCall = Duration(DefaultLastCall)
	}
	if s.Workers.LeaseTTL == 0 {
		s.Workers.LeaseTTL = Duration(DefaultLeaseTTL)
	}
	if s.Workers.CollectiveTimeout == 0 {
		s.Workers.CollectiveTimeout = Duration(DefaultCollectiveTimeout)
	}
	if s.Workers.Max == 0 {
		s.Workers.Max = s.Workers.Min
	}
	if s.Model.Remat == "" {
		s.Model.Remat = string(model.RematHybrid)
	}
}

func (s *JobSpec) validate() error {
	switch {
	case !jobNameRE.MatchString(s.Name):
		return bad("name", "%q must be 1 to 63 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit", s.Name)
	case s.Dataset == "":
		return bad("dataset", "a prepared dataset directory (herd prepare) is required")
	case s.Batch <= 0:
		return bad("batch", "%d, must be > 0 (sequences per optimizer step)", s.Batch)
	case s.MicroBatch < 0:
		return bad("micro_batch", "%d, must be >= 0 (0: each rank's whole share)", s.MicroBatch)
	case s.Zero < 0 || s.Zero > 3:
		return bad("zero", "%d: unknown ZeRO stage (0 replicated state, 1 AdamW moments sharded, 2 and gradients, 3 and parameters)", s.Zero)
	case s.Zero > 0 && s.Workers.Backend == "cuda":
		return bad("zero", "%d: ZeRO runs on the cpu backend only so far", s.Zero)
	case s.TP < 1:
		return bad("tp", "%d, must be >= 1 (1: no tensor parallelism)", s.TP)
	case s.TP > 1 && s.Workers.NprocPerNode%s.TP != 0:
		return bad("tp", "%d does not divide workers.nproc_per_node = %d: a tensor-parallel group is tp rank processes of one worker", s.TP, s.Workers.NprocPerNode)
	case s.TP > 1 && s.Workers.Backend != "cpu":
		return bad("tp", "%d: tensor parallelism runs on the cpu backend only so far", s.TP)
	case s.TP > 1 && s.Zero > 0:
		return bad("tp", "%d with zero %d: ZeRO with tensor parallelism is not supported yet", s.TP, s.Zero)
	case s.Seq <= 0:
		return bad("seq", "%d, must be > 0", s.Seq)
	case s.TP > 1 && *s.SequenceParallel && s.Seq%s.TP != 0:
		return bad("seq", "%d: sequence parallelism splits every sequence over the tp = %d ranks, so tp must divide it (or set sequence_parallel: false)", s.Seq, s.TP)
	case s.Steps <= 0:
		return bad("steps", "%d, must be > 0", s.Steps)
	case s.Schedule.LR < 0:
		return bad("schedule.lr", "%g, must be >= 0 (0: the preset's)", s.Schedule.LR)
	case s.Schedule.Warmup != nil && (*s.Schedule.Warmup < 0 || *s.Schedule.Warmup > s.Steps):
		return bad("schedule.warmup", "%d, must be in [0, steps = %d]", *s.Schedule.Warmup, s.Steps)
	case s.Schedule.WeightDecay != nil && *s.Schedule.WeightDecay < 0:
		return bad("schedule.weight_decay", "%g, must be >= 0", *s.Schedule.WeightDecay)
	case s.Schedule.Clip != nil && *s.Schedule.Clip < 0:
		return bad("schedule.clip", "%g, must be >= 0 (0 disables clipping)", *s.Schedule.Clip)
	case s.Checkpoint.URI == "":
		return bad("checkpoint.uri", "a checkpoint location (directory, file:///path or s3://bucket/prefix) is required")
	case s.Checkpoint.Every < 0:
		return bad("checkpoint.every", "%d, must be >= 0 (0: only the last step)", s.Checkpoint.Every)
	case s.Checkpoint.KeepLast < 0:
		return bad("checkpoint.keep_last", "%d, must be >= 0 (0: keep all)", s.Checkpoint.KeepLast)
	case s.Checkpoint.KeepEvery < 0:
		return bad("checkpoint.keep_every", "%d, must be >= 0", s.Checkpoint.KeepEvery)
	case s.Workers.Min < 1:
		return bad("workers.min", "%d, must be >= 1", s.Workers.Min)
	case s.Workers.Max < s.Workers.Min:
		return bad("workers.max", "%d is less than workers.min = %d", s.Workers.Max, s.Workers.Min)
	case s.Workers.NprocPerNode < 1 || s.Workers.NprocPerNode > 64:
		return bad("workers.nproc_per_node", "%d, must be in [1, 64] (one rank process per device)", s.Workers.NprocPerNode)
	case s.Workers.Backend != "cpu" && s.Workers.Backend != "cuda":
		return bad("workers.backend", "%q, must be cpu or cuda", s.Workers.Backend)
	case s.Workers.LastCall < 0:
		return bad("workers.last_call", "%v, must be >= 0", s.Workers.LastCall.D())
	case s.Workers.LeaseTTL.D() < time.Second:
		return bad("workers.lease_ttl", "%v, must be at least 1s", s.Workers.LeaseTTL.D())
	case s.Workers.CollectiveTimeout.D() < 0:
		return bad("workers.collective_timeout", "%v, must be > 0", s.Workers.CollectiveTimeout.D())
	}
	if _, err := model.ParseRemat(s.Model.Remat); err != nil {
		return bad("model.remat", "%v", err)
	}
	c, err := s.ModelConfig()
	if err != nil {
		return err
	}
	if err := c.CheckSeq(s.Seq); err != nil {
		return bad("seq", "%v", err)
	}
	if s.TP > 1 {
		if err := model.CheckTensorParallel(c, s.TP); err != nil {
			return bad("tp", "%v", err)
		}
	}
	if s.MinWorld()/s.TP > s.Batch {
		return bad("workers.min", "%d workers of %d ranks need a batch of at least %d sequences (one per data-parallel replica), batch is %d",
			s.Workers.Min, s.Workers.NprocPerNode, s.MinWorld()/s.TP, s.Batch)
	}
	return nil
}

// ModelConfig returns the network the spec selects. Its vocabulary is set from the
// dataset's tokenizer when the job starts.
func (s *JobSpec) ModelConfig() (model.Config, error) {
	m := s.Model
	var c model.Config
	if m.Preset != "" {
		p, err := model.Preset(m.Preset)
		if err != nil {
			return c, bad("model.preset", "%v", err)
		}
		c = p
	} else if m.Dim == 0 || m.Layers == 0 || m.Heads == 0 {
		return c, bad("model", "give a preset (%s) or dim, layers and heads", strings.Join(model.PresetNames(), ", "))
	} else {
		c = model.Config{Dim: m.Dim, FFNHidden: model.FFNHiddenFor(m.Dim), MaxSeq: 2048, NormEps: 1e-6, RopeTheta: 10000, PeakLR: 3e-4, Vocab: 32000}
	}
	set := func(dst *int, v int) {
		if v != 0 {
			*dst = v
		}
	}
	set(&c.Dim, m.Dim)
	set(&c.Layers, m.Layers)
	set(&c.Heads, m.Heads)
	set(&c.FFNHidden, m.FFNHidden)
	set(&c.MaxSeq, m.MaxSeq)
	if m.NormEps != 0 {
		c.NormEps = m.NormEps
	}
	if m.RopeTheta != 0 {
		c.RopeTheta = m.RopeTheta
	}
	r, err := model.ParseRemat(m.Remat)
	if err != nil {
		return c, bad("model.remat", "%v", err)
	}
	c.Remat = r
	if err := c.Validate(); err != nil {
		return c, bad("model", "%v", err)
	}
	return c, nil
}

// MinWorld is the number of ranks of the smallest round.
func (s *JobSpec) MinWorld() int { return s.Workers.Min * s.Workers.NprocPerNode }
