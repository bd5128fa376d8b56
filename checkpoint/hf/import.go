package hf

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/herd-llm/herd/model"
	"github.com/herd-llm/herd/tokenizer"
)

// Imported is a model read from a Hugging Face directory.
type Imported struct {
	// Config holds the network's shape from config.json. Fields config.json does not carry
	// are set to Remat = model.RematHybrid and PeakLR = 0.
	Config model.Config
	// Params is the flat parameter buffer laid out by model.NewLayout(Config), with Meta's
	// RoPE layout restored.
	Params []float32
	// Tokenizer is tokenizer.json.
	Tokenizer *tokenizer.Tokenizer
}

// ImportOptions tune Import. The zero value checks the memory for Imported.Params alone
// against MemAvailable.
type ImportOptions struct {
	// ExtraBuffers is how many more buffers of Params' size (float32 per parameter) the
	// caller holds at once after Import returns, so that the memory check covers them too.
	ExtraBuffers int
	// Available reports the bytes of memory available to the import; ok false skips the
	// check. Nil reads MemAvailable from /proc/meminfo (skipped where that is unreadable).
	Available func() (bytes int64, ok bool)
}

// Import reads a LlamaForCausalLM directory written by Export or by transformers'
// save_pretrained: config.json (transformers 5.x "rope_parameters" or 4.x "rope_theta"),
// model.safetensors or the shards listed by model.safetensors.index.json (F32, BF16 or F16,
// widened to float32 exactly), tokenizer.json, and tokenizer_config.json when present. The
// rows of every q and k projection are put back into Meta's RoPE layout.
//
// Everything is checked before the parameter buffer is allocated: config.json's values, every
// tensor's presence, dtype, shape and byte range against the files, and the memory the import
// needs (see ImportOptions) against the memory available. Errors wrap ErrFormat,
// ErrUnsupported or ErrMemory (or the tokenizer's errors) and name the file and the key or
// tensor at fault.
func Import(dir string, opts ImportOptions) (*Imported, error) {
	cfgPath := filepath.Join(dir, ConfigFile)
	cfg, ids, err := readConfig(cfgPath)
	if err != nil {
		return nil, err
	}
	tok, err := tokenizer.Load(filepath.Join(dir, TokenizerFile))
	if err != nil {
		return nil, fmt.Errorf("hf: %w", err)
	}
	if err := checkTokenizer(cfgPath, cfg, ids, tok); err != nil {
		return nil, err
	}
	if err := checkTokenizerConfig(filepath.Join(dir, TokenizerConfigFile), tok); err != nil {
		return nil, err
	}
	w, err := openWeights(dir)
	if err != nil {
		return nil, err
	}
	defer w.close()
	layout, err := w.check(cfgPath, cfg)
	if err != nil {
		return nil, err
	}
	if err := opts.checkMemory(dir, layout); err != nil {
		return nil, err
	}
	params, err := w.load(cfg, layout)
	if err != nil {
		return nil, err
	}
	return &Imported{Config: cfg, Params: params, Tokenizer: tok}, nil
}

// checkTokenizer checks that config.json and tokenizer.json describe the same vocabulary.
func checkTokenizer(path string, cfg model.Config, ids hfConfig, tok *tokenizer.Tokenizer) error {
	if tok.VocabSize() > cfg.Vocab {
		return fmt.Errorf("%w: %s: key \"vocab_size\" = %d, but tokenizer.json has %d tokens", ErrFormat, path, cfg.Vocab, tok.VocabSize())
	}
	if ids.bos != nil && *ids.bos != int(tok.BOS()) {
		return fmt.Errorf("%w: %s: key \"bos_token_id\" = %d, but tokenizer.json has %s at %d", ErrFormat, path, *ids.bos, tokenizer.BOSToken, tok.BOS())
	}
	if len(ids.eos) > 0 && !slices.Contains(ids.eos, int(tok.EOS())) {
		return fmt.Errorf("%w: %s: key \"eos_token_id\" = %v, but tokenizer.json has %s at %d", ErrFormat, path, ids.eos, tokenizer.EOSToken, tok.EOS())
	}
	return nil
}

// weights is the set of safetensors files of a directory.
type weights struct {
	source string             // model.safetensors or the index, for errors
	files  []*stFile          // open files
	where  map[string]*stFile // tensor name -> its file
}

// openWeights opens model.safetensors, or else every shard the index lists.
func openWeights(dir string) (*weights, error) {
	w := &weights{source: filepath.Join(dir, WeightsFile), where: map[string]*stFile{}}
	_, err := os.Stat(w.source)
	if errors.Is(err, fs.ErrNotExist) {
		w.source = filepath.Join(dir, WeightsIndexFile)
		if _, err := os.Stat(w.source); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s holds neither %s nor %s", ErrFormat, dir, WeightsFile, WeightsIndexFile)
		}
		err = w.openShards(dir)
	} else {
		err = w.add(w.source)
	}
	if err != nil {
		w.close()
		return nil, err
	}
	return w, nil
}

// add opens one safetensors file and records its tensors.
func (w *weights) add(path string) error {
	f, err := openSafetensors(path)
	if err != nil {
		return err
	}
	w.files = append(w.files, f)
	for name := range f.tensors {
		if prev, dup := w.where[name]; dup {
			return fmt.Errorf("%w: tensor %s is in both %s and %s", ErrFormat, name, prev.path, path)
		}
		w.where[name] = f
	}
	return nil
}

// openShards opens the files of model.safetensors.index.json and checks its weight_map.
func (w *weights) openShards(dir string) error {
	data, err := os.ReadFile(w.source)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrFormat, err)
	}
	var index struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(data, &index); err != nil || len(index.WeightMap) == 0 {
		return fmt.Errorf("%w: %s: key \"weight_map\" missing or not an object of file names (%v)", ErrFormat, w.source, err)
	}
	var files []string
	for name, file := range index.WeightMap {
		if file != filepath.Base(file) || file == "." || file == ".." || strings.ContainsAny(file, `/\`) {
			return fmt.Errorf("%w: %s: tensor %s maps to %q, not a file name in the directory", ErrFormat, w.source, name, file)
		}
		if !slices.Contains(files, file) {
			files = append(files, file)
		}
	}
	sort.Strings(files)
	for _, file := range files {
		if err := w.add(filepath.Join(dir, file)); err != nil {
			return err
		}
	}
	for name, file := range index.WeightMap {
		if f := w.where[name]; f == nil || filepath.Base(f.path) != file {
			return fmt.Errorf("%w: %s: tensor %s is not in %s", ErrFormat, w.source, name, file)
		}
	}
	return nil
}

func (w *weights) close() {
	for _, f := range w.files {
		f.Close()
	}
}

// check compares every tensor of cfg's layout with the headers of the files: presence, dtype,
// shape, and so byte size (the headers' byte ranges were checked against the files when they
// were opened). It allocates nothing in proportion to the model config.json describes, so a
// config.json that claims a far larger model than the files hold fails here, naming the
// first tensor that disagrees. cfgPath names config.json in errors. It returns the layout.
func (w *weights) check(cfgPath string, cfg model.Config) (model.Layout, error) {
	// Build the spec table for at most one block more than the files could hold, so that a
	// config.json claiming millions of blocks costs nothing: the extra block cannot be
	// complete, so checking that table already fails on a missing tensor.
	probe := cfg
	probe.Layers = min(cfg.Layers, len(w.where)/len(blockNames)+1)
	layout := model.NewLayout(probe)
	used := map[string]bool{}
	for _, s := range layout.Specs {
		name, rope, err := hfName(s.Name)
		if err != nil {
			return model.Layout{}, err
		}
		f := w.where[name]
		if f == nil {
			return model.Layout{}, w.missing(name, s.Layer, cfgPath, cfg.Layers)
		}
		used[name] = true
		e := f.tensors[name]
		if !slices.Equal(e.Shape, s.Shape) {
			return model.Layout{}, fmt.Errorf("%w: %s: tensor %s has shape %v, but %s expects %v = %s", ErrFormat, f.path, name, e.Shape, cfgPath, s.Shape, shapeKeys(s))
		}
		if _, ok := decoders[e.DType]; !ok {
			return model.Layout{}, fmt.Errorf("%w: %s: tensor %s has dtype %s; F32, BF16 or F16 is needed", ErrUnsupported, f.path, name, e.DType)
		}
		if rope && (len(s.Shape) != 2 || s.Shape[0]%cfg.HeadDim() != 0) {
			return model.Layout{}, fmt.Errorf("%w: %s: tensor %s has shape %v, not whole heads of %d rows", ErrFormat, f.path, name, s.Shape, cfg.HeadDim())
		}
	}
	if probe.Layers != cfg.Layers {
		// Unreachable: the probe's last block cannot be complete. Kept so that a change to
		// the bound above fails loudly instead of returning a truncated layout.
		return model.Layout{}, fmt.Errorf("%w: %s: num_hidden_layers = %d, the files hold fewer blocks", ErrFormat, cfgPath, cfg.Layers)
	}
	return layout, w.checkUnused(used)
}

// missing reports that tensor name of block layer (-1 outside the blocks) is in no file.
func (w *weights) missing(name string, layer int, cfgPath string, layers int) error {
	if layer < 0 {
		return fmt.Errorf("%w: %s: tensor %s is missing", ErrFormat, w.source, name)
	}
	return fmt.Errorf("%w: %s: tensor %s is missing, and %s gives num_hidden_layers = %d", ErrFormat, w.source, name, cfgPath, layers)
}

// shapeKeys names the config.json keys that give the shape of s.
func shapeKeys(s model.ParamSpec) string {
	switch {
	case s.Name == "tok_embeddings.weight" || s.Name == "output.weight":
		return "[vocab_size, hidden_size]"
	case len(s.Shape) == 1:
		return "[hidden_size]"
	case strings.HasSuffix(s.Name, ".w1.weight") || strings.HasSuffix(s.Name, ".w3.weight"):
		return "[intermediate_size, hidden_size]"
	case strings.HasSuffix(s.Name, ".w2.weight"):
		return "[hidden_size, intermediate_size]"
	case strings.HasSuffix(s.Name, ".wo.weight"):
		return "[hidden_size, num_attention_heads*head_dim]"
	default:
		return "[num_attention_heads*head_dim, hidden_size]"
	}
}

// load reads every tensor of layout (which check returned) into one flat buffer, undoing
// the q/k row permutation.
func (w *weights) load(cfg model.Config, layout model.Layout) ([]float32, error) {
	params := make([]float32, layout.Size)
	var scratch []float32
	for _, s := range layout.Specs {
		name, rope, err := hfName(s.Name)
		if err != nil {
			return nil, err
		}
		f := w.where[name]
		e := f.tensors[name]
		dst := params[s.Offset : s.Offset+s.Size]
		if !rope {
			if err := f.read(name, e, dst); err != nil {
				return nil, err
			}
			continue
		}
		scratch = slices.Grow(scratch[:0], s.Size)[:s.Size]
		if err := f.read(name, e, scratch); err != nil {
			return nil, err
		}
		fromHF(dst, scratch, s.Shape[1], cfg.HeadDim())
	}
	return params, nil
}

// checkUnused rejects tensors outside herd's layout. Rotary inverse frequencies, which old
// transformers releases saved as buffers, are recomputed from rope_theta and skipped.
func (w *weights) checkUnused(used map[string]bool) error {
	var extra []string
	for name := range w.where {
		if !used[name] && !strings.HasSuffix(name, ".rotary_emb.inv_freq") {
			extra = append(extra, name)
		}
	}
	if len(extra) == 0 {
		return nil
	}
	sort.Strings(extra)
	return fmt.Errorf("%w: %s: tensor %s has no place in herd's LLaMA (%d such tensors)", ErrUnsupported, w.where[extra[0]].path, extra[0], len(extra))
}
