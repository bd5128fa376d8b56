package hf

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strconv"

	"github.com/herd-llm/herd/model"
	"github.com/herd-llm/herd/tokenizer"
)

// transformersVersion is the release whose files this package reproduces.
const transformersVersion = "5.17.0"

// HF LlamaConfig's defaults for the keys Import lets a config.json leave out.
const (
	defaultMaxPositions = 2048
	defaultNormEps      = 1e-6
	defaultRopeTheta    = 10000.0
)

// pyFloat spells v as Python's json module does for a float, so that 10000.0 stays a float
// ("10000.0", not "10000") for readers that check types.
func pyFloat(v float64) json.Number {
	s := strconv.FormatFloat(v, 'g', -1, 64)
	for _, c := range s {
		if c == '.' || c == 'e' || c == 'n' || c == 'N' {
			return json.Number(s)
		}
	}
	return json.Number(s + ".0")
}

// configJSON returns config.json for cfg: the keys transformers 5.17 writes, plus the
// top-level "rope_theta" and "torch_dtype" that transformers 4.x reads.
func configJSON(cfg model.Config, tok *tokenizer.Tokenizer) map[string]any {
	return map[string]any{
		"architectures":           []string{"LlamaForCausalLM"},
		"attention_bias":          false,
		"attention_dropout":       pyFloat(0),
		"bos_token_id":            tok.BOS(),
		"dtype":                   "float32",
		"eos_token_id":            tok.EOS(),
		"head_dim":                cfg.HeadDim(),
		"hidden_act":              "silu",
		"hidden_size":             cfg.Dim,
		"initializer_range":       pyFloat(0.02),
		"intermediate_size":       cfg.FFNHidden,
		"max_position_embeddings": cfg.MaxSeq,
		"mlp_bias":                false,
		"model_type":              "llama",
		"num_attention_heads":     cfg.Heads,
		"num_hidden_layers":       cfg.Layers,
		"num_key_value_heads":     cfg.Heads,
		"pad_token_id":            padID(tok),
		"pretraining_tp":          1,
		"rms_norm_eps":            pyFloat(cfg.NormEps),
		"rope_parameters":         map[string]any{"rope_theta": pyFloat(cfg.RopeTheta), "rope_type": "default"},
		"rope_theta":              pyFloat(cfg.RopeTheta),
		"tie_word_embeddings":     false,
		"torch_dtype":             "float32",
		"transformers_version":    transformersVersion,
		"use_cache":               true,
		"vocab_size":              cfg.Vocab,
	}
}

// generationConfigJSON returns generation_config.json as save_pretrained derives it from
// the model config.
func generationConfigJSON(tok *tokenizer.Tokenizer) map[string]any {
	return map[string]any{
		"_from_model_config":   true,
		"bos_token_id":         tok.BOS(),
		"eos_token_id":         tok.EOS(),
		"pad_token_id":         padID(tok),
		"transformers_version": transformersVersion,
	}
}

// padID is the pad_token_id of config.json and generation_config.json: null for a tokenizer
// without a padding token (LLaMA's).
func padID(tok *tokenizer.Tokenizer) any {
	if tok.PAD() < 0 {
		return nil
	}
	return tok.PAD()
}

// marshalJSON formats v as transformers does: sorted keys, two-space indent, final newline.
func marshalJSON(v any) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("hf: %w", err)
	}
	return append(b, '\n'), nil
}

// hfConfig is what Import takes from config.json besides the model.Config.
type hfConfig struct {
	bos *int  // bos_token_id, nil when absent or null
	eos []int // eos_token_id: one id or a list; empty when absent or null
}

// configReader reads typed keys of one config.json and names the file and key in errors.
type configReader struct {
	path string
	m    map[string]json.RawMessage
}

func (r configReader) errf(sentinel error, key, format string, a ...any) error {
	return fmt.Errorf("%w: %s: key %q %s", sentinel, r.path, key, fmt.Sprintf(format, a...))
}

// has reports whether key is present and not null.
func (r configReader) has(key string) bool {
	v, ok := r.m[key]
	return ok && string(v) != "null"
}

// number returns key as a float64, def when absent; required keys fail when absent.
func (r configReader) number(key string, def float64, required bool) (float64, error) {
	if !r.has(key) {
		if required {
			return 0, r.errf(ErrFormat, key, "is missing")
		}
		return def, nil
	}
	var v float64
	if err := json.Unmarshal(r.m[key], &v); err != nil {
		return 0, r.errf(ErrFormat, key, "= %s is not a number", r.m[key])
	}
	return v, nil
}

// integer returns key as an int; see number.
func (r configReader) integer(key string, def int, required bool) (int, error) {
	v, err := r.number(key, float64(def), required)
	if err != nil {
		return 0, err
	}
	if v != math.Trunc(v) {
		return 0, r.errf(ErrFormat, key, "= %g is not an integer", v)
	}
	if math.Abs(v) > math.MaxInt32 {
		return 0, r.errf(ErrFormat, key, "= %g is out of range (at most %d)", v, math.MaxInt32)
	}
	return int(v), nil
}

// flag returns key as a bool, def when absent.
func (r configReader) flag(key string, def bool) (bool, error) {
	if !r.has(key) {
		return def, nil
	}
	var v bool
	if err := json.Unmarshal(r.m[key], &v); err != nil {
		return false, r.errf(ErrFormat, key, "= %s is not a boolean", r.m[key])
	}
	return v, nil
}

// str returns key as a string, def when absent.
func (r configReader) str(key, def string) (string, error) {
	if !r.has(key) {
		return def, nil
	}
	var v string
	if err := json.Unmarshal(r.m[key], &v); err != nil {
		return "", r.errf(ErrFormat, key, "= %s is not a string", r.m[key])
	}
	return v, nil
}

// readConfig reads a LlamaForCausalLM config.json and rejects what herd cannot represent.
// The fields config.json does not carry get Remat = model.RematHybrid and PeakLR = 0.
func readConfig(path string) (model.Config, hfConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return model.Config{}, hfConfig{}, fmt.Errorf("%w: %w", ErrFormat, err)
	}
	r := configReader{path: path}
	if err := json.Unmarshal(data, &r.m); err != nil {
		return model.Config{}, hfConfig{}, fmt.Errorf("%w: %s: not a JSON object: %v", ErrFormat, path, err)
	}
	if err := r.checkSupported(); err != nil {
		return model.Config{}, hfConfig{}, err
	}
	cfg, err := r.shape()
	if err != nil {
		return model.Config{}, hfConfig{}, err
	}
	if cfg.RopeTheta, err = r.ropeTheta(); err != nil {
		return model.Config{}, hfConfig{}, err
	}
	if err := cfg.Validate(); err != nil {
		return model.Config{}, hfConfig{}, fmt.Errorf("%w: %s: %w", ErrFormat, path, err)
	}
	ids, err := r.specialIDs()
	return cfg, ids, err
}

// checkSupported rejects the features of LlamaConfig that herd's network lacks.
func (r configReader) checkSupported() error {
	if mt, err := r.str("model_type", "llama"); err != nil || mt != "llama" {
		return firstErr(err, r.errf(ErrUnsupported, "model_type", "= %q, herd imports \"llama\"", mt))
	}
	if act, err := r.str("hidden_act", "silu"); err != nil || (act != "silu" && act != "swish") {
		return firstErr(err, r.errf(ErrUnsupported, "hidden_act", "= %q, herd's SwiGLU needs \"silu\"", act))
	}
	for _, key := range []string{"tie_word_embeddings", "attention_bias", "mlp_bias"} {
		if v, err := r.flag(key, false); err != nil || v {
			return firstErr(err, r.errf(ErrUnsupported, key, "= true, herd supports only false"))
		}
	}
	return nil
}

func firstErr(err, otherwise error) error {
	if err != nil {
		return err
	}
	return otherwise
}

// shape reads the sizes of the network and checks the head keys against them.
func (r configReader) shape() (model.Config, error) {
	c := model.Config{Remat: model.RematHybrid}
	ints := []struct {
		key string
		dst *int
		def int
		req bool
	}{
		{"hidden_size", &c.Dim, 0, true},
		{"num_hidden_layers", &c.Layers, 0, true},
		{"num_attention_heads", &c.Heads, 0, true},
		{"intermediate_size", &c.FFNHidden, 0, true},
		{"vocab_size", &c.Vocab, 0, true},
		{"max_position_embeddings", &c.MaxSeq, defaultMaxPositions, false},
	}
	for _, f := range ints {
		v, err := r.integer(f.key, f.def, f.req)
		if err != nil {
			return c, err
		}
		if v <= 0 {
			return c, r.errf(ErrFormat, f.key, "= %d, must be > 0", v)
		}
		*f.dst = v
	}
	var err error
	if c.NormEps, err = r.number("rms_norm_eps", defaultNormEps, false); err != nil {
		return c, err
	}
	if !(c.NormEps > 0) {
		return c, r.errf(ErrFormat, "rms_norm_eps", "= %g, must be > 0", c.NormEps)
	}
	if c.Dim%c.Heads != 0 {
		return c, r.errf(ErrFormat, "num_attention_heads", "= %d does not divide hidden_size = %d", c.Heads, c.Dim)
	}
	if c.HeadDim()%2 != 0 {
		return c, r.errf(ErrFormat, "num_attention_heads", "= %d gives an odd head dimension hidden_size/num_attention_heads = %d; rotary embeddings rotate pairs", c.Heads, c.HeadDim())
	}
	if kv, err := r.integer("num_key_value_heads", c.Heads, false); err != nil || kv != c.Heads {
		return c, firstErr(err, r.errf(ErrUnsupported, "num_key_value_heads", "= %d, herd needs num_attention_heads = %d (no grouped-query attention)", kv, c.Heads))
	}
	if hd, err := r.integer("head_dim", c.HeadDim(), false); err != nil || hd != c.HeadDim() {
		return c, firstErr(err, r.errf(ErrUnsupported, "head_dim", "= %d, herd needs hidden_size/num_attention_heads = %d", hd, c.HeadDim()))
	}
	return c, nil
}

// ropeTheta reads the rotary base from rope_parameters (transformers 5.x) or from the
// top-level rope_theta (4.x), and rejects any RoPE scaling and a base that is not positive.
func (r configReader) ropeTheta() (float64, error) {
	theta, key, err := r.ropeThetaKey()
	if err == nil && !(theta > 0) {
		err = r.errf(ErrFormat, key, "= %g, must be > 0", theta)
	}
	return theta, err
}

// ropeThetaKey returns the rotary base and the key it was read from.
func (r configReader) ropeThetaKey() (float64, string, error) {
	for _, key := range []string{"rope_parameters", "rope_scaling"} {
		if !r.has(key) {
			continue
		}
		var p map[string]json.RawMessage
		if err := json.Unmarshal(r.m[key], &p); err != nil {
			return 0, key, r.errf(ErrFormat, key, "= %s is not an object", r.m[key])
		}
		sub := configReader{path: r.path, m: p}
		for _, typeKey := range []string{"rope_type", "type"} {
			if t, err := sub.str(typeKey, "default"); err != nil || t != "default" {
				return 0, key, firstErr(err, r.errf(ErrUnsupported, key+"."+typeKey, "= %q, herd supports only \"default\" (no RoPE scaling)", t))
			}
		}
		if key == "rope_parameters" && sub.has("rope_theta") {
			key += ".rope_theta"
			v, err := sub.number("rope_theta", 0, true)
			if err != nil {
				return 0, key, r.errf(ErrFormat, key, "= %s is not a number", p["rope_theta"])
			}
			return v, key, nil
		}
	}
	v, err := r.number("rope_theta", defaultRopeTheta, false)
	return v, "rope_theta", err
}

// specialIDs reads bos_token_id and eos_token_id (eos may be a list).
func (r configReader) specialIDs() (hfConfig, error) {
	var ids hfConfig
	if r.has("bos_token_id") {
		v, err := r.integer("bos_token_id", 0, true)
		if err != nil {
			return ids, err
		}
		ids.bos = &v
	}
	if !r.has("eos_token_id") {
		return ids, nil
	}
	if err := json.Unmarshal(r.m["eos_token_id"], &ids.eos); err == nil {
		return ids, nil
	}
	v, err := r.integer("eos_token_id", 0, true)
	if err != nil {
		return ids, r.errf(ErrFormat, "eos_token_id", "= %s is neither an id nor a list of ids", r.m["eos_token_id"])
	}
	ids.eos = []int{v}
	return ids, nil
}
