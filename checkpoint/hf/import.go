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

// Import reads a LlamaForCausalLM directory written by Export or by transformers'
// save_pretrained: config.json (transformers 5.x "rope_parameters" or 4.x "rope_theta"),
// model.safetensors or the shards listed by model.safetensors.index.json (F32, BF16 or F16,
// widened to float32 exactly), and tokenizer.json. The rows of every q and k projection are
// put back into Meta's RoPE layout. Errors wrap ErrFormat or ErrUnsupported (or the
// tokenizer's errors) and name the file and the key or tensor at fault.
func Import(dir string) (*Imported, error) {
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
	w, err := openWeights(dir)
	if err != nil {
		return nil, err
	}
	defer w.close()
	params, err := w.load(cfg)
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

// load reads every tensor of cfg's layout into one flat buffer, undoing the q/k row
// permutation, and rejects tensors that herd's network has no place for.
func (w *weights) load(cfg model.Config) ([]float32, error) {
	layout := model.NewLayout(cfg)
	params := make([]float32, layout.Size)
	used := map[string]bool{}
	var scratch []float32
	for _, s := range layout.Specs {
		name, rope, err := hfName(s.Name)
		if err != nil {
			return nil, err
		}
		f := w.where[name]
		if f == nil {
			return nil, fmt.Errorf("%w: %s: tensor %s is missing", ErrFormat, w.source, name)
		}
		used[name] = true
		e := f.tensors[name]
		if !slices.Equal(e.Shape, s.Shape) {
			return nil, fmt.Errorf("%w: %s: tensor %s has shape %v, config.json gives %v", ErrFormat, f.path, name, e.Shape, s.Shape)
		}
		dst := params[s.Offset : s.Offset+s.Size]
		if !rope {
			if err := f.read(name, e, dst); err != nil {
				return nil, err
			}
			continue
		}
		if len(s.Shape) != 2 || s.Shape[0]%cfg.HeadDim() != 0 {
			return nil, fmt.Errorf("%w: %s: tensor %s has shape %v, not whole heads of %d rows", ErrFormat, f.path, name, s.Shape, cfg.HeadDim())
		}
		scratch = slices.Grow(scratch[:0], s.Size)[:s.Size]
		if err := f.read(name, e, scratch); err != nil {
			return nil, err
		}
		fromHF(dst, scratch, s.Shape[1], cfg.HeadDim())
	}
	return params, w.checkUnused(used)
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
