// Package worker runs training: it ties a model on a backend to a prepared dataset, runs the
// step loop (micro-batches, gradient accumulation, clipping, AdamW, the LR schedule),
// validates on the held-out split, and writes the run directory.
package worker

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"

	"github.com/herd-llm/herd/checkpoint"
	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/model"
	"github.com/herd-llm/herd/tokenizer"
)

// Files of a run directory.
const (
	RunConfigName = "run.json"
	WeightsName   = "model.safetensors"
	TokenizerName = "tokenizer.json"
	MetricsName   = "metrics.jsonl"
)

// ErrRun is wrapped by errors about a run directory.
var ErrRun = errors.New("worker: bad run directory")

// RunConfig is what run.json records: enough to rebuild the model and its data stream.
type RunConfig struct {
	Model         model.Config      `json:"model"`
	Optim         model.OptimConfig `json:"optim"`
	Schedule      model.Schedule    `json:"schedule"`
	Data          string            `json:"data"`
	TokenizerHash string            `json:"tokenizer_hash"`
	Seed          uint64            `json:"seed"`
	Seq           int               `json:"seq"`
	Batch         int               `json:"batch"`
	MicroBatch    int               `json:"micro_batch"`
	Steps         int               `json:"steps"`
	EvalSeqs      int               `json:"eval_seqs"`
	World         int               `json:"world"`
	TP            int               `json:"tp,omitempty"` // tensor-parallel size (absent: none); World/TP data-parallel replicas
	StepsDone     int               `json:"steps_done"`
}

// Run is a finished or running training run loaded from its directory.
type Run struct {
	Dir       string
	Config    RunConfig
	Tokenizer *tokenizer.Tokenizer
}

// OpenRun reads run.json and tokenizer.json of dir.
func OpenRun(dir string) (*Run, error) {
	path := filepath.Join(dir, RunConfigName)
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRun, err)
	}
	var rc RunConfig
	if err := json.Unmarshal(raw, &rc); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrRun, path, err)
	}
	if err := rc.Model.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrRun, path, err)
	}
	tok, err := tokenizer.Load(filepath.Join(dir, TokenizerName))
	if err != nil {
		return nil, err
	}
	if tok.Hash() != rc.TokenizerHash {
		return nil, fmt.Errorf("%w: %s: tokenizer hash %s, run.json says %s", ErrRun, dir, tok.Hash(), rc.TokenizerHash)
	}
	if tok.VocabSize() != rc.Model.Vocab {
		return nil, fmt.Errorf("%w: %s: tokenizer has %d tokens, model vocab is %d", ErrRun, dir, tok.VocabSize(), rc.Model.Vocab)
	}
	return &Run{Dir: dir, Config: rc, Tokenizer: tok}, nil
}

// LoadModel builds the run's model on be and loads its weights.
func (r *Run) LoadModel(be kernels.Backend) (*model.Model, error) {
	m, err := model.New(r.Config.Model, be)
	if err != nil {
		return nil, err
	}
	if err := LoadWeights(m, filepath.Join(r.Dir, WeightsName)); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// SaveWeights writes the model's parameters as float32 safetensors with Meta's tensor names.
func SaveWeights(m *model.Model, path string) error {
	host := make([]float32, m.Layout.Size)
	m.Backend().Read32(host, m.Params())
	return saveWeights(m.Layout, host, path)
}

// saveWeights writes whole parameters laid out by l as float32 safetensors.
func saveWeights(l model.Layout, host []float32, path string) error {
	tensors := make([]checkpoint.Tensor, len(l.Specs))
	for i, s := range l.Specs {
		tensors[i] = checkpoint.Tensor{Name: s.Name, Shape: s.Shape, Data: host[s.Offset : s.Offset+s.Size]}
	}
	return checkpoint.WriteFileAtomic(path, func(w io.Writer) error {
		return checkpoint.WriteSafetensors(w, tensors, map[string]string{"format": "herd"})
	})
}

// LoadWeights reads a safetensors file written by SaveWeights into m, checking that every
// tensor of the layout is present with its shape.
func LoadWeights(m *model.Model, path string) error {
	tensors, _, err := checkpoint.ReadSafetensors(path)
	if err != nil {
		return err
	}
	byName := map[string]checkpoint.Tensor{}
	for _, t := range tensors {
		byName[t.Name] = t
	}
	host := make([]float32, m.Layout.Size)
	for _, s := range m.Layout.Specs {
		t, ok := byName[s.Name]
		if !ok {
			return fmt.Errorf("%w: %s has no tensor %s", ErrRun, path, s.Name)
		}
		if fmt.Sprint(t.Shape) != fmt.Sprint(s.Shape) {
			return fmt.Errorf("%w: %s: tensor %s has shape %v, the model needs %v", ErrRun, path, s.Name, t.Shape, s.Shape)
		}
		if bad, first := nonFinite(t.Data); bad > 0 {
			return fmt.Errorf("%w: %s: tensor %s holds %d values that are NaN or infinite (the first is %v at index %d): the weights are unusable, as those of a run that diverged",
				ErrRun, path, s.Name, bad, t.Data[first], first)
		}
		copy(host[s.Offset:], t.Data)
	}
	m.Backend().Write32(m.Params(), host)
	m.ParamsUpdated()
	return nil
}

func writeJSON(path string, v any) error {
	return checkpoint.WriteFileAtomic(path, func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	})
}

// nonFinite counts the NaN and infinite values of v and returns the index of the first.
func nonFinite(v []float32) (n, first int) {
	first = -1
	for i, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			if first < 0 {
				first = i
			}
			n++
		}
	}
	return n, first
}
