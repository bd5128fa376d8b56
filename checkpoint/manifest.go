package checkpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// ManifestVersion is the layout version this package writes. It reads versions 1 to 3;
// version 2 added Attempt and shard names that carry it, version 3 shards of several ranges
// (Shard.Ranges: what a rank owns under ZeRO sharding).
const ManifestVersion = 3

// Errors of sharded checkpoints.
var (
	ErrManifest = errors.New("checkpoint: bad manifest")
	ErrChecksum = errors.New("checkpoint: checksum mismatch")
	ErrNoCommit = errors.New("checkpoint: no committed checkpoint")
)

// Buffers names the flat buffers a checkpoint holds, in shard order: parameters and the two
// AdamW moments, all float32 and laid out by the same spec table.
var Buffers = []string{"params", "adam_m", "adam_v"}

// Manifest describes one committed checkpoint. It is written last; its presence is the
// commit.
type Manifest struct {
	Version int    `json:"version"`
	Step    int    `json:"step"`  // optimizer steps done
	World   int    `json:"world"` // ranks that wrote the shards
	Elems   int64  `json:"elems"` // elements of each flat buffer
	DType   string `json:"dtype"` // "float32"
	// Cursor is where the data stream continues: the sampler is a pure function of its seed
	// and the global sequence index, so the step and the global batch size locate it.
	Cursor Cursor `json:"cursor"`
	// Config is the run configuration (model, optimizer, schedule), opaque to this package.
	Config        json.RawMessage `json:"config"`
	TokenizerHash string          `json:"tokenizer_hash"`
	Layout        []TensorRange   `json:"layout"`
	Shards        []Shard         `json:"shards"`
	// Attempt identifies the run (one start of a job, fresh or resumed) that wrote the
	// checkpoint; its shard names carry it, so shards of different attempts at the same step
	// never share a name.
	Attempt string `json:"attempt,omitempty"`
}

// Cursor locates the data stream.
type Cursor struct {
	Step        int    `json:"step"`
	GlobalBatch int    `json:"global_batch"`
	Seq         int    `json:"seq"`
	Seed        uint64 `json:"seed"`
	NextIndex   int64  `json:"next_index"` // first global sequence index not yet trained on
}

// TensorRange is one row of the parameter spec table as recorded in a checkpoint.
type TensorRange struct {
	Name   string `json:"name"`
	Shape  []int  `json:"shape"`
	Offset int64  `json:"offset"`
	Size   int64  `json:"size"`
}

// Shard is one object of a checkpoint: rank Rank's range [Offset, Offset+Count) of every
// buffer in Buffers, stored one after another as little-endian float32. A shard of several
// ranges lists them in Ranges (Offset is then 0 and Count their total): for each buffer in
// turn, the values of each range in order.
type Shard struct {
	Key    string  `json:"key"` // relative to the checkpoint's directory
	Rank   int     `json:"rank"`
	Offset int64   `json:"offset"`
	Count  int64   `json:"count"`
	Ranges []Range `json:"ranges,omitempty"`
	Bytes  int64   `json:"bytes"`
	SHA256 string  `json:"sha256"`
}

// Range is a range [Offset, Offset+Count) of the flat buffers.
type Range struct {
	Offset int64 `json:"offset"`
	Count  int64 `json:"count"`
}

// ranges returns the ranges the shard holds, in storage order.
func (s Shard) ranges() []Range {
	if len(s.Ranges) > 0 {
		return s.Ranges
	}
	return []Range{{s.Offset, s.Count}}
}

var (
	shardKeyRE = regexp.MustCompile(`^rank-[0-9]{5}-of-[0-9]{5}(\.[0-9a-f]{8,32})?\.bin$`)
	attemptRE  = regexp.MustCompile(`^[0-9a-f]{8,32}$`)
	hexRE      = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// ParseManifest decodes and validates a manifest; name identifies it in errors.
func ParseManifest(name string, data []byte) (*Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w %s: %v", ErrManifest, name, err)
	}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("%w %s: %v", ErrManifest, name, err)
	}
	return &m, nil
}

func (m *Manifest) validate() error {
	switch {
	case m.Version < 1 || m.Version > ManifestVersion:
		return fmt.Errorf("version %d, this build reads 1 to %d", m.Version, ManifestVersion)
	case m.Attempt != "" && !attemptRE.MatchString(m.Attempt):
		return fmt.Errorf("attempt %q is not 8 to 32 lowercase hex digits", m.Attempt)
	case m.Step < 0:
		return fmt.Errorf("step %d is negative", m.Step)
	case m.World <= 0 || m.World > 1<<16:
		return fmt.Errorf("world %d out of range", m.World)
	case m.Elems <= 0:
		return fmt.Errorf("elems %d must be positive", m.Elems)
	case m.DType != "float32":
		return fmt.Errorf("dtype %q, only float32 is supported", m.DType)
	case len(m.Shards) != m.World:
		return fmt.Errorf("%d shards for world %d", len(m.Shards), m.World)
	case m.Cursor.Step != m.Step:
		return fmt.Errorf("cursor.step %d differs from step %d", m.Cursor.Step, m.Step)
	}
	var off int64
	for i, t := range m.Layout {
		n := int64(1)
		for _, d := range t.Shape {
			if d <= 0 {
				return fmt.Errorf("layout[%d] %s has shape %v", i, t.Name, t.Shape)
			}
			n *= int64(d)
		}
		if t.Offset != off || t.Size != n {
			return fmt.Errorf("layout[%d] %s at offset %d size %d, want offset %d size %d", i, t.Name, t.Offset, t.Size, off, n)
		}
		off += n
	}
	if off != m.Elems {
		return fmt.Errorf("layout covers %d elements, elems is %d", off, m.Elems)
	}
	var all []Range
	for i, s := range m.Shards {
		var sum int64
		for _, r := range s.ranges() {
			if r.Count < 0 || r.Offset < 0 {
				return fmt.Errorf("shards[%d] has range [%d, +%d)", i, r.Offset, r.Count)
			}
			sum += r.Count
			all = append(all, r)
		}
		switch {
		case s.Rank != i:
			return fmt.Errorf("shards[%d] has rank %d", i, s.Rank)
		case !shardKeyRE.MatchString(s.Key) || s.Key != ShardKey(i, m.World, m.Attempt):
			return fmt.Errorf("shards[%d].key %q is not the shard name of rank %d of %d in attempt %q", i, s.Key, i, m.World, m.Attempt)
		case len(s.Ranges) > 0 && (s.Offset != 0 || s.Count != sum):
			return fmt.Errorf("shards[%d] lists ranges of %d elements, count %d offset %d", i, sum, s.Count, s.Offset)
		case s.Bytes != 4*int64(len(Buffers))*s.Count:
			return fmt.Errorf("shards[%d] has %d bytes for %d elements of %d buffers", i, s.Bytes, s.Count, len(Buffers))
		case !hexRE.MatchString(s.SHA256):
			return fmt.Errorf("shards[%d].sha256 %q is not a sha256", i, s.SHA256)
		}
	}
	// Together the shards' ranges cover the buffers once: sorted, each starts where the last ended.
	sort.Slice(all, func(a, b int) bool { return all[a].Offset < all[b].Offset })
	var next int64
	for _, r := range all {
		if r.Count == 0 {
			continue
		}
		if r.Offset != next || r.Offset+r.Count > m.Elems {
			return fmt.Errorf("the shards' ranges leave [%d, %d) uncovered or cover it twice (next range at %d, %d elements)", next, r.Offset, r.Offset, m.Elems)
		}
		next = r.Offset + r.Count
	}
	if next != m.Elems {
		return fmt.Errorf("shards cover %d of %d elements", next, m.Elems)
	}
	return nil
}

// ShardKey names rank's shard object in a world of the given size, written by attempt ("" in
// checkpoints of manifest version 1).
func ShardKey(rank, world int, attempt string) string {
	if attempt == "" {
		return fmt.Sprintf("rank-%05d-of-%05d.bin", rank, world)
	}
	return fmt.Sprintf("rank-%05d-of-%05d.%s.bin", rank, world, attempt)
}

// doneKey names the record a rank writes after its shard.
func doneKey(shardKey string) string { return strings.TrimSuffix(shardKey, ".bin") + ".done" }

// NewAttempt returns a fresh attempt identifier.
func NewAttempt() string { return randomID() }

// keyAttempt returns the attempt a shard or done object name carries, and whether the name
// is one of those.
func keyAttempt(name string) (string, bool) {
	base, ok := strings.CutSuffix(name, ".bin")
	if !ok {
		if base, ok = strings.CutSuffix(name, ".done"); !ok {
			return "", false
		}
	}
	if !strings.HasPrefix(base, "rank-") {
		return "", false
	}
	_, attempt, _ := strings.Cut(strings.TrimPrefix(base, "rank-"), ".")
	return attempt, true
}

// StepDir names the directory of the checkpoint after step optimizer steps.
func StepDir(step int) string { return fmt.Sprintf("step-%08d", step) }

// ParseStepDir returns the step of a StepDir name.
func ParseStepDir(name string) (int, bool) {
	var step int
	if _, err := fmt.Sscanf(name, "step-%08d", &step); err != nil || StepDir(step) != name {
		return 0, false
	}
	return step, true
}

// Partition returns the range of an n-element buffer that rank writes in a world of size
// ranks: contiguous, the first n%size ranks one element longer.
func Partition(n int64, size, rank int) (off, count int64) {
	q, r := n/int64(size), n%int64(size)
	off = int64(rank)*q + min(int64(rank), r)
	count = q
	if int64(rank) < r {
		count++
	}
	return off, count
}
