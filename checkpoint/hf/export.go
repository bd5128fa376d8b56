package hf

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/herd-llm/herd/model"
	"github.com/herd-llm/herd/tokenizer"
)

// File names of a Hugging Face model directory.
const (
	ConfigFile           = "config.json"
	GenerationConfigFile = "generation_config.json"
	WeightsFile          = "model.safetensors"
	WeightsIndexFile     = "model.safetensors.index.json"
	TokenizerFile        = "tokenizer.json"
	TokenizerConfigFile  = "tokenizer_config.json"
)

// ExportOptions tune Export. The zero value writes one model.safetensors.
type ExportOptions struct {
	// MaxShardBytes, when > 0, splits the weights into model-0000k-of-0000n.safetensors
	// files of at most this many data bytes each (a larger tensor gets a file of its own),
	// listed by model.safetensors.index.json, as save_pretrained does for large models.
	MaxShardBytes int64
}

// Params returns the float32 values of one tensor of the flat parameter buffer, laid out as
// spec describes (len == spec.Size). Export reads the slice and does not keep or modify it.
type Params func(spec model.ParamSpec) ([]float32, error)

// tensor is one weight as Export writes it.
type tensor struct {
	spec model.ParamSpec
	name string // HF name
	rope bool   // rows permuted per head
}

// Export writes a Hugging Face LlamaForCausalLM directory for cfg into dir (created if
// needed): tokenizer.json, tokenizer_config.json, generation_config.json, the F32 weights,
// and config.json last, so a directory without config.json is an unfinished export. The
// weights are streamed: every header is computed from the spec table first, then each tensor
// is fetched through params, permuted if it is a q or k projection, and written, so at most
// one tensor is held beyond what params holds. Every file is written to a temporary name and
// renamed.
func Export(dir string, cfg model.Config, params Params, tok *tokenizer.Tokenizer, opts ExportOptions) error {
	if err := checkExport(cfg, params, tok); err != nil {
		return err
	}
	tensors, err := exportTensors(cfg)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("hf: %w", err)
	}
	if err := tok.Save(filepath.Join(dir, TokenizerFile)); err != nil {
		return fmt.Errorf("hf: %w", err)
	}
	if err := writeJSON(filepath.Join(dir, TokenizerConfigFile), tokenizerConfigJSON(cfg, tok)); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(dir, GenerationConfigFile), generationConfigJSON(tok)); err != nil {
		return err
	}
	if err := writeWeights(dir, tensors, cfg.HeadDim(), params, opts.MaxShardBytes); err != nil {
		return err
	}
	return writeJSON(filepath.Join(dir, ConfigFile), configJSON(cfg, tok))
}

func checkExport(cfg model.Config, params Params, tok *tokenizer.Tokenizer) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("hf: export: %w", err)
	}
	if params == nil || tok == nil {
		return errors.New("hf: export needs a params function and a tokenizer")
	}
	if tok.VocabSize() > cfg.Vocab {
		return fmt.Errorf("hf: export: tokenizer has %d tokens, more than the model's vocab = %d", tok.VocabSize(), cfg.Vocab)
	}
	return nil
}

// exportTensors lists the weights in herd's layout order with their HF names.
func exportTensors(cfg model.Config) ([]tensor, error) {
	specs := model.NewLayout(cfg).Specs
	ts := make([]tensor, len(specs))
	hd := cfg.HeadDim()
	for i, s := range specs {
		name, rope, err := hfName(s.Name)
		if err != nil {
			return nil, err
		}
		if rope && (len(s.Shape) != 2 || s.Shape[0]%hd != 0) {
			return nil, fmt.Errorf("hf: %s has shape %v, not whole heads of %d rows", s.Name, s.Shape, hd)
		}
		ts[i] = tensor{spec: s, name: name, rope: rope}
	}
	return ts, nil
}

// shardName is save_pretrained's name for shard k (1-based) of n.
func shardName(k, n int) string { return fmt.Sprintf("model-%05d-of-%05d.safetensors", k, n) }

// planShards splits ts into runs of at most maxBytes data bytes (maxBytes <= 0: one run).
func planShards(ts []tensor, maxBytes int64) [][]tensor {
	if maxBytes <= 0 {
		return [][]tensor{ts}
	}
	var shards [][]tensor
	var size int64
	for _, t := range ts {
		b := 4 * int64(t.spec.Size)
		if len(shards) == 0 || size+b > maxBytes && size > 0 {
			shards = append(shards, nil)
			size = 0
		}
		shards[len(shards)-1] = append(shards[len(shards)-1], t)
		size += b
	}
	return shards
}

// writeWeights writes model.safetensors, or the shards and their index. It removes the
// other form left by an earlier export, since loaders prefer model.safetensors when both
// exist.
func writeWeights(dir string, ts []tensor, hd int, params Params, maxBytes int64) error {
	shards := planShards(ts, maxBytes)
	if len(shards) == 1 {
		if err := writeAtomic(filepath.Join(dir, WeightsFile), func(w io.Writer) error {
			return writeShard(w, ts, hd, params)
		}); err != nil {
			return err
		}
		return removeIfExists(filepath.Join(dir, WeightsIndexFile))
	}
	weightMap := map[string]string{}
	var total int64
	for k, shard := range shards {
		file := shardName(k+1, len(shards))
		for _, t := range shard {
			weightMap[t.name] = file
			total += 4 * int64(t.spec.Size)
		}
		if err := writeAtomic(filepath.Join(dir, file), func(w io.Writer) error {
			return writeShard(w, shard, hd, params)
		}); err != nil {
			return err
		}
	}
	index := map[string]any{"metadata": map[string]any{"total_size": total}, "weight_map": weightMap}
	if err := writeJSON(filepath.Join(dir, WeightsIndexFile), index); err != nil {
		return err
	}
	return removeIfExists(filepath.Join(dir, WeightsFile))
}

// writeShard writes one safetensors file holding ts: the header, then each tensor as
// params returns it, q and k rows reordered for rotate_half.
func writeShard(w io.Writer, ts []tensor, hd int, params Params) error {
	st := make([]stTensor, len(ts))
	for i, t := range ts {
		st[i] = stTensor{name: t.name, shape: t.spec.Shape}
	}
	prefix, _, err := encodeHeader(st)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	if _, err := bw.Write(prefix); err != nil {
		return err
	}
	var perm []float32
	var buf []byte
	for _, t := range ts {
		data, err := params(t.spec)
		if err != nil {
			return fmt.Errorf("hf: fetching %s: %w", t.spec.Name, err)
		}
		if len(data) != t.spec.Size {
			return fmt.Errorf("hf: params returned %d values for %s, spec has %d", len(data), t.spec.Name, t.spec.Size)
		}
		if t.rope {
			if cap(perm) < len(data) {
				perm = make([]float32, len(data))
			}
			perm = perm[:len(data)]
			toHF(perm, data, t.spec.Shape[1], hd)
			data = perm
		}
		if buf, err = writeF32(bw, data, buf); err != nil {
			return err
		}
	}
	return bw.Flush()
}

func writeJSON(path string, v any) error {
	b, err := marshalJSON(v)
	if err != nil {
		return err
	}
	return writeAtomic(path, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("hf: %w", err)
	}
	return nil
}
