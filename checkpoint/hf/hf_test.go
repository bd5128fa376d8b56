package hf

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/herd-llm/herd/model"
	"github.com/herd-llm/herd/tokenizer"
)

// ---- fixtures ----

// layoutConfig is LAYOUT.md's measured model: vocab 300, d 64, 2 layers, 4 heads, FFN 192.
func layoutConfig() model.Config {
	return model.Config{Dim: 64, Layers: 2, Heads: 4, FFNHidden: 192, Vocab: 300, MaxSeq: 128,
		NormEps: 1e-6, RopeTheta: 10000, Remat: model.RematHybrid}
}

// wideHeadConfig has head_dim 32, a padded vocabulary and non-default eps and theta.
func wideHeadConfig() model.Config {
	return model.Config{Dim: 64, Layers: 2, Heads: 2, FFNHidden: 160, Vocab: 320, MaxSeq: 256,
		NormEps: 1e-5, RopeTheta: 500000, Remat: model.RematHybrid}
}

// trainTokenizer trains a 300-token byte-level BPE tokenizer on a fixed synthetic corpus.
func trainTokenizer(t *testing.T) *tokenizer.Tokenizer {
	t.Helper()
	words := strings.Fields(`the of and to in is that for it as with was on be by at this are
		from or have an they which one you were her all she there would their we him been has
		func return error nil struct package import string café naïve 日本語 русский`)
	rng := rand.New(rand.NewPCG(7, 7))
	docs := make([][]byte, 200)
	for i := range docs {
		var b bytes.Buffer
		for range 40 {
			b.WriteString(words[rng.IntN(len(words))])
			b.WriteString([]string{" ", " ", ", ", ". ", "\n"}[rng.IntN(5)])
		}
		docs[i] = b.Bytes()
	}
	tok, err := tokenizer.TrainDocs(docs, 300, tokenizer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// randomParams returns a flat buffer for cfg filled with normal(0, 1) values.
func randomParams(cfg model.Config, seed uint64) []float32 {
	rng := rand.New(rand.NewPCG(seed, 99))
	p := make([]float32, model.NewLayout(cfg).Size)
	for i := range p {
		p[i] = float32(rng.NormFloat64())
	}
	return p
}

// sliceParams serves tensors from flat, recording the order in which they are asked for.
func sliceParams(flat []float32, asked *[]string) Params {
	return func(s model.ParamSpec) ([]float32, error) {
		if asked != nil {
			*asked = append(*asked, s.Name)
		}
		return flat[s.Offset : s.Offset+s.Size], nil
	}
}

func export(t *testing.T, cfg model.Config, flat []float32, tok *tokenizer.Tokenizer, opts ExportOptions) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "hf")
	if err := Export(dir, cfg, sliceParams(flat, nil), tok, opts); err != nil {
		t.Fatal(err)
	}
	return dir
}

// ---- an independent safetensors reader and writer, from the format's description ----

type stHeaderEntry struct {
	DType   string   `json:"dtype"`
	Shape   []int    `json:"shape"`
	Offsets [2]int64 `json:"data_offsets"`
}

// stData is a safetensors file taken apart: its header entries and each tensor's bytes.
type stData struct {
	meta    map[string]string
	entries map[string]stHeaderEntry
	raw     map[string][]byte
}

// parseST reads path and fails the test unless it is a well-formed safetensors file:
// 8-byte little-endian header length, a space-padded JSON header that keeps the data 8-byte
// aligned, tensors whose byte ranges match their shapes and tile the data exactly.
func parseST(t *testing.T, path string) stData {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 8 {
		t.Fatalf("%s: %d bytes, no header length", path, len(b))
	}
	n := binary.LittleEndian.Uint64(b[:8])
	if n%8 != 0 || 8+n > uint64(len(b)) {
		t.Fatalf("%s: header length %d (file %d bytes) is not 8-aligned or overflows", path, n, len(b))
	}
	hdr := b[8 : 8+n]
	if trimmed := bytes.TrimRight(hdr, " "); !json.Valid(trimmed) || trimmed[len(trimmed)-1] != '}' {
		t.Fatalf("%s: header is not JSON padded with spaces: %q", path, hdr)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(hdr, &top); err != nil {
		t.Fatal(err)
	}
	d := stData{entries: map[string]stHeaderEntry{}, raw: map[string][]byte{}}
	if err := json.Unmarshal(top["__metadata__"], &d.meta); err != nil {
		t.Fatalf("%s: __metadata__: %v", path, err)
	}
	delete(top, "__metadata__")
	var names []string
	for name, raw := range top {
		var e stHeaderEntry
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatalf("%s: %s: %v", path, name, err)
		}
		d.entries[name] = e
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool { return d.entries[names[i]].Offsets[0] < d.entries[names[j]].Offsets[0] })
	data := b[8+n:]
	var next int64
	for _, name := range names {
		e := d.entries[name]
		elems := int64(1)
		for _, s := range e.Shape {
			elems *= int64(s)
		}
		if e.Offsets[0] != next || e.Offsets[1]-e.Offsets[0] != 4*elems {
			t.Fatalf("%s: %s: offsets %v, want [%d, %d] (contiguous, 4 bytes x %d)", path, name, e.Offsets, next, next+4*elems, elems)
		}
		d.raw[name] = data[e.Offsets[0]:e.Offsets[1]]
		next = e.Offsets[1]
	}
	if next != int64(len(data)) {
		t.Fatalf("%s: tensors cover %d bytes, file has %d data bytes", path, next, len(data))
	}
	return d
}

// f32 decodes little-endian float32 values.
func f32(raw []byte) []float32 {
	v := make([]float32, len(raw)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return v
}

type rawTensor struct {
	name, dtype string
	shape       []int
	raw         []byte
}

// writeST writes a safetensors file by hand, for inputs Export never produces.
func writeST(t *testing.T, path string, ts []rawTensor) {
	t.Helper()
	h := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	var off int
	for _, x := range ts {
		h[x.name] = stHeaderEntry{DType: x.dtype, Shape: x.shape, Offsets: [2]int64{int64(off), int64(off + len(x.raw))}}
		off += len(x.raw)
	}
	js, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	for len(js)%8 != 0 {
		js = append(js, ' ')
	}
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(js)))
	out = append(out, js...)
	for _, x := range ts {
		out = append(out, x.raw...)
	}
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// ---- LAYOUT.md, restated independently of the package ----

// hfTensor is one tensor LAYOUT.md lists, with the Meta tensor it holds.
type hfTensor struct {
	name, meta string
	shape      []int
	rope       bool // q_proj / k_proj: rows permuted per head
}

func layoutTensors(c model.Config) []hfTensor {
	d, f, v, qd := c.Dim, c.FFNHidden, c.Vocab, c.Heads*(c.Dim/c.Heads)
	ts := []hfTensor{{"model.embed_tokens.weight", "tok_embeddings.weight", []int{v, d}, false}}
	for i := range c.Layers {
		hf, meta := fmt.Sprintf("model.layers.%d.", i), fmt.Sprintf("layers.%d.", i)
		ts = append(ts,
			hfTensor{hf + "input_layernorm.weight", meta + "attention_norm.weight", []int{d}, false},
			hfTensor{hf + "self_attn.q_proj.weight", meta + "attention.wq.weight", []int{qd, d}, true},
			hfTensor{hf + "self_attn.k_proj.weight", meta + "attention.wk.weight", []int{qd, d}, true},
			hfTensor{hf + "self_attn.v_proj.weight", meta + "attention.wv.weight", []int{qd, d}, false},
			hfTensor{hf + "self_attn.o_proj.weight", meta + "attention.wo.weight", []int{d, qd}, false},
			hfTensor{hf + "post_attention_layernorm.weight", meta + "ffn_norm.weight", []int{d}, false},
			hfTensor{hf + "mlp.gate_proj.weight", meta + "feed_forward.w1.weight", []int{f, d}, false},
			hfTensor{hf + "mlp.up_proj.weight", meta + "feed_forward.w3.weight", []int{f, d}, false},
			hfTensor{hf + "mlp.down_proj.weight", meta + "feed_forward.w2.weight", []int{d, f}, false},
		)
	}
	return append(ts,
		hfTensor{"model.norm.weight", "norm.weight", []int{d}, false},
		hfTensor{"lm_head.weight", "output.weight", []int{v, d}, false})
}

// layoutPermute applies LAYOUT.md's rule to a Meta [rows, cols] weight: within each head,
// new row order = [0, 2, 4, ..., hd-2, 1, 3, 5, ..., hd-1].
func layoutPermute(w []float32, cols, hd int) []float32 {
	var order []int
	for r := 0; r < hd; r += 2 {
		order = append(order, r)
	}
	for r := 1; r < hd; r += 2 {
		order = append(order, r)
	}
	out := make([]float32, 0, len(w))
	for h := 0; h < len(w)/(cols*hd); h++ {
		for _, r := range order {
			row := h*hd + r
			out = append(out, w[row*cols:(row+1)*cols]...)
		}
	}
	return out
}

func metaTensor(cfg model.Config, flat []float32, name string) []float32 {
	s, ok := model.NewLayout(cfg).Lookup(name)
	if !ok {
		panic(name)
	}
	return flat[s.Offset : s.Offset+s.Size]
}

func sameBits(a, b []float32) bool {
	return slices.EqualFunc(a, b, func(x, y float32) bool { return math.Float32bits(x) == math.Float32bits(y) })
}

// ---- round trip ----

func TestRoundTrip(t *testing.T) {
	tok := trainTokenizer(t)
	cases := []struct {
		name string
		cfg  model.Config
		opts ExportOptions
	}{
		{"layout-md", layoutConfig(), ExportOptions{}},
		{"head-dim-32", wideHeadConfig(), ExportOptions{}},
		{"sharded", layoutConfig(), ExportOptions{MaxShardBytes: 64 << 10}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			flat := randomParams(c.cfg, uint64(i))
			orig := slices.Clone(flat)
			var asked []string
			dir := filepath.Join(t.TempDir(), "hf")
			if err := Export(dir, c.cfg, sliceParams(flat, &asked), tok, c.opts); err != nil {
				t.Fatal(err)
			}
			if !sameBits(flat, orig) {
				t.Fatal("Export modified the caller's parameters")
			}
			var want []string
			for _, s := range model.NewLayout(c.cfg).Specs {
				want = append(want, s.Name)
			}
			if !slices.Equal(asked, want) {
				t.Fatalf("params fetched %v, want each tensor once in layout order %v", asked, want)
			}
			imp, err := Import(dir, ImportOptions{})
			if err != nil {
				t.Fatal(err)
			}
			wantCfg := c.cfg
			wantCfg.PeakLR = 0
			if imp.Config != wantCfg {
				t.Fatalf("config %+v, want %+v", imp.Config, wantCfg)
			}
			if !sameBits(imp.Params, orig) {
				t.Fatal("imported params differ from the exported ones")
			}
			if imp.Tokenizer.Hash() != tok.Hash() {
				t.Fatalf("tokenizer hash %s, want %s", imp.Tokenizer.Hash(), tok.Hash())
			}
		})
	}
}

func TestShardedLayout(t *testing.T) {
	cfg := layoutConfig()
	tok := trainTokenizer(t)
	flat := randomParams(cfg, 3)
	dir := export(t, cfg, flat, tok, ExportOptions{MaxShardBytes: 64 << 10})
	if _, err := os.Stat(filepath.Join(dir, WeightsFile)); err == nil {
		t.Fatal("sharded export also wrote model.safetensors")
	}
	var index struct {
		Metadata struct {
			TotalSize int64 `json:"total_size"`
		} `json:"metadata"`
		WeightMap map[string]string `json:"weight_map"`
	}
	b, err := os.ReadFile(filepath.Join(dir, WeightsIndexFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &index); err != nil {
		t.Fatal(err)
	}
	files := map[string]bool{}
	var total int64
	for _, want := range layoutTensors(cfg) {
		file := index.WeightMap[want.name]
		if file == "" {
			t.Fatalf("index has no entry for %s", want.name)
		}
		files[file] = true
		st := parseST(t, filepath.Join(dir, file))
		if !slices.Equal(st.entries[want.name].Shape, want.shape) {
			t.Fatalf("%s in %s: shape %v, want %v", want.name, file, st.entries[want.name].Shape, want.shape)
		}
		total += int64(len(st.raw[want.name]))
	}
	if len(index.WeightMap) != len(layoutTensors(cfg)) || len(files) < 3 || index.Metadata.TotalSize != total {
		t.Fatalf("index lists %d tensors in %d files, total_size %d (data %d)", len(index.WeightMap), len(files), index.Metadata.TotalSize, total)
	}
	for f := range files {
		if _, err := fmt.Sscanf(f, "model-%05d-of-%05d.safetensors", new(int), new(int)); err != nil {
			t.Fatalf("shard name %q is not save_pretrained's", f)
		}
	}
	// Exporting one file into the same directory removes the stale index.
	if err := Export(dir, cfg, sliceParams(flat, nil), tok, ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, WeightsIndexFile)); err == nil {
		t.Fatal("single-file export left model.safetensors.index.json behind")
	}
}

// ---- the safetensors file against LAYOUT.md ----

func TestSafetensorsMatchesLayout(t *testing.T) {
	tok := trainTokenizer(t)
	for i, cfg := range []model.Config{layoutConfig(), wideHeadConfig()} {
		t.Run(fmt.Sprintf("heads-%d", cfg.Heads), func(t *testing.T) {
			flat := randomParams(cfg, 10+uint64(i))
			dir := export(t, cfg, flat, tok, ExportOptions{})
			st := parseST(t, filepath.Join(dir, WeightsFile))
			if !reflect.DeepEqual(st.meta, map[string]string{"format": "pt"}) {
				t.Fatalf("__metadata__ = %v, want {format: pt}", st.meta)
			}
			want := layoutTensors(cfg)
			if len(st.entries) != len(want) {
				t.Fatalf("%d tensors, want %d", len(st.entries), len(want))
			}
			hd := cfg.Dim / cfg.Heads
			for _, w := range want {
				e, ok := st.entries[w.name]
				if !ok {
					t.Fatalf("tensor %s missing", w.name)
				}
				if e.DType != "F32" || !slices.Equal(e.Shape, w.shape) {
					t.Fatalf("%s: dtype %s shape %v, want F32 %v", w.name, e.DType, e.Shape, w.shape)
				}
				src := metaTensor(cfg, flat, w.meta)
				if w.rope {
					src = layoutPermute(src, cfg.Dim, hd)
				}
				if !sameBits(f32(st.raw[w.name]), src) {
					t.Fatalf("%s does not hold %s (permuted: %v)", w.name, w.meta, w.rope)
				}
			}
		})
	}
}

// ---- the permutation, checked through RoPE ----

// metaRoPE rotates each adjacent pair (2j, 2j+1) of one head by pos * theta^(-2j/hd), as
// Meta's LLaMA code and herd's kernels do.
func metaRoPE(x []float64, pos int, theta float64) []float64 {
	hd := len(x)
	out := make([]float64, hd)
	for j := 0; j < hd/2; j++ {
		s, c := math.Sincos(float64(pos) * math.Pow(theta, -2*float64(j)/float64(hd)))
		out[2*j] = x[2*j]*c - x[2*j+1]*s
		out[2*j+1] = x[2*j]*s + x[2*j+1]*c
	}
	return out
}

// hfRoPE is transformers' apply_rotary_pos_emb: x*cos + rotate_half(x)*sin, where
// rotate_half(x) = [-x[hd/2:], x[:hd/2]] and cos, sin repeat inv_freq[j] = theta^(-2j/hd)
// over both halves.
func hfRoPE(x []float64, pos int, theta float64) []float64 {
	hd := len(x)
	out := make([]float64, hd)
	for j := 0; j < hd; j++ {
		s, c := math.Sincos(float64(pos) * math.Pow(theta, -2*float64(j%(hd/2))/float64(hd)))
		var rot float64 // rotate_half(x)[j]
		if j < hd/2 {
			rot = -x[j+hd/2]
		} else {
			rot = x[j-hd/2]
		}
		out[j] = x[j]*c + rot*s
	}
	return out
}

// project returns rows [h*hd, (h+1)*hd) of w [rows, len(x)] times x.
func project(w []float32, x []float64, h, hd int) []float64 {
	out := make([]float64, hd)
	for r := range hd {
		row := w[(h*hd+r)*len(x) : (h*hd+r+1)*len(x)]
		for i, xi := range x {
			out[r] += float64(row[i]) * xi
		}
	}
	return out
}

func dot(a, b []float64) (sum, scale float64) {
	for i := range a {
		sum += a[i] * b[i]
		scale += math.Abs(a[i] * b[i])
	}
	return sum, scale
}

// ropeMismatch returns the largest difference, relative to the sum of the products'
// magnitudes, between per-head scores q_m·k_n computed with Meta's RoPE on the Meta weights
// and with HF's RoPE on the HF weights, for query x at position m and key y at position n.
func ropeMismatch(cfg model.Config, metaQ, metaK, hfQ, hfK []float32, x, y []float64, m, n int) float64 {
	hd := cfg.Dim / cfg.Heads
	var worst float64
	for h := range cfg.Heads {
		want, scale := dot(metaRoPE(project(metaQ, x, h, hd), m, cfg.RopeTheta), metaRoPE(project(metaK, y, h, hd), n, cfg.RopeTheta))
		got, _ := dot(hfRoPE(project(hfQ, x, h, hd), m, cfg.RopeTheta), hfRoPE(project(hfK, y, h, hd), n, cfg.RopeTheta))
		worst = max(worst, math.Abs(got-want)/scale)
	}
	return worst
}

func TestPermutationPreservesRoPEScores(t *testing.T) {
	tok := trainTokenizer(t)
	for i, cfg := range []model.Config{layoutConfig(), wideHeadConfig()} {
		t.Run(fmt.Sprintf("head-dim-%d", cfg.HeadDim()), func(t *testing.T) {
			flat := randomParams(cfg, 20+uint64(i))
			dir := export(t, cfg, flat, tok, ExportOptions{})
			st := parseST(t, filepath.Join(dir, WeightsFile))
			rng := rand.New(rand.NewPCG(5, uint64(i)))
			x, y := make([]float64, cfg.Dim), make([]float64, cfg.Dim)
			for j := range x {
				x[j], y[j] = rng.NormFloat64(), rng.NormFloat64()
			}
			worstOK, bestBad := 0.0, math.Inf(1)
			for layer := range cfg.Layers {
				p := fmt.Sprintf("layers.%d.attention.", layer)
				metaQ, metaK := metaTensor(cfg, flat, p+"wq.weight"), metaTensor(cfg, flat, p+"wk.weight")
				hp := fmt.Sprintf("model.layers.%d.self_attn.", layer)
				hfQ, hfK := f32(st.raw[hp+"q_proj.weight"]), f32(st.raw[hp+"k_proj.weight"])
				for _, pos := range [][2]int{{3, 11}, {37, 5}, {120, 121}} {
					// Scores agree up to summation order in float64: 1e-12 of their magnitude.
					d := ropeMismatch(cfg, metaQ, metaK, hfQ, hfK, x, y, pos[0], pos[1])
					worstOK = max(worstOK, d)
					if d > 1e-12 {
						t.Fatalf("layer %d positions %v: exported q/k give scores off by %.3g (relative)", layer, pos, d)
					}
					// Without the permutation the scores are wrong, so the check can fail. The
					// error is smaller for a large theta, whose slow frequencies barely rotate,
					// but stays nine orders of magnitude above the tolerance.
					d = ropeMismatch(cfg, metaQ, metaK, metaQ, metaK, x, y, pos[0], pos[1])
					bestBad = min(bestBad, d)
					if d < 1e-3 {
						t.Fatalf("layer %d positions %v: unpermuted weights differ by only %.3g; the check is blind", layer, pos, d)
					}
				}
			}
			t.Logf("relative score error: exported weights at most %.2g, unpermuted weights at least %.2g", worstOK, bestBad)
		})
	}
}

// ---- config.json ----

func readJSONMap(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestConfigJSON(t *testing.T) {
	tok := trainTokenizer(t)
	cfg := layoutConfig()
	dir := export(t, cfg, randomParams(cfg, 1), tok, ExportOptions{})
	got := readJSONMap(t, filepath.Join(dir, ConfigFile))
	// LAYOUT.md's config.json, with the ids of this tokenizer and the 4.x keys added.
	want := map[string]any{
		"architectures": []any{"LlamaForCausalLM"}, "attention_bias": false, "attention_dropout": 0.0,
		"bos_token_id": float64(tok.BOS()), "dtype": "float32", "eos_token_id": float64(tok.EOS()),
		"head_dim": 16.0, "hidden_act": "silu", "hidden_size": 64.0, "initializer_range": 0.02,
		"intermediate_size": 192.0, "max_position_embeddings": 128.0, "mlp_bias": false,
		"model_type": "llama", "num_attention_heads": 4.0, "num_hidden_layers": 2.0,
		"num_key_value_heads": 4.0, "pad_token_id": float64(tok.PAD()), "pretraining_tp": 1.0,
		"rms_norm_eps": 1e-06, "rope_parameters": map[string]any{"rope_theta": 10000.0, "rope_type": "default"},
		"tie_word_embeddings": false, "transformers_version": "5.17.0", "use_cache": true, "vocab_size": 300.0,
		"rope_theta": 10000.0, "torch_dtype": "float32",
	}
	for k, v := range want {
		if !reflect.DeepEqual(got[k], v) {
			t.Errorf("config.json %q = %#v, want %#v", k, got[k], v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("config.json has unexpected key %q", k)
		}
	}
	raw, _ := os.ReadFile(filepath.Join(dir, ConfigFile))
	for _, s := range []string{`"rope_theta": 10000.0`, `"rms_norm_eps": 1e-06`, `"attention_dropout": 0.0`} {
		if !bytes.Contains(raw, []byte(s)) {
			t.Errorf("config.json does not spell %s as Python does:\n%s", s, raw)
		}
	}
	gen := readJSONMap(t, filepath.Join(dir, GenerationConfigFile))
	if gen["bos_token_id"] != float64(tok.BOS()) || gen["eos_token_id"] != float64(tok.EOS()) {
		t.Errorf("generation_config.json = %v, want bos %d eos %d", gen, tok.BOS(), tok.EOS())
	}
}

// editConfig rewrites dir/config.json through edit.
func editConfig(t *testing.T, dir string, edit func(m map[string]any)) {
	t.Helper()
	path := filepath.Join(dir, ConfigFile)
	m := readJSONMap(t, path)
	edit(m)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestImportRejectsConfig(t *testing.T) {
	tok := trainTokenizer(t)
	cfg := layoutConfig()
	base := export(t, cfg, randomParams(cfg, 2), tok, ExportOptions{})
	cases := []struct {
		key      string // must appear in the error
		sentinel error
		edit     func(m map[string]any)
	}{
		{"tie_word_embeddings", ErrUnsupported, func(m map[string]any) { m["tie_word_embeddings"] = true }},
		{"num_key_value_heads", ErrUnsupported, func(m map[string]any) { m["num_key_value_heads"] = 2 }},
		{"hidden_act", ErrUnsupported, func(m map[string]any) { m["hidden_act"] = "gelu" }},
		{"attention_bias", ErrUnsupported, func(m map[string]any) { m["attention_bias"] = true }},
		{"mlp_bias", ErrUnsupported, func(m map[string]any) { m["mlp_bias"] = true }},
		{"head_dim", ErrUnsupported, func(m map[string]any) { m["head_dim"] = 8 }},
		{"model_type", ErrUnsupported, func(m map[string]any) { m["model_type"] = "mistral" }},
		{"rope_parameters.rope_type", ErrUnsupported, func(m map[string]any) {
			m["rope_parameters"] = map[string]any{"rope_theta": 500000.0, "rope_type": "llama3", "factor": 8.0}
		}},
		{"hidden_size", ErrFormat, func(m map[string]any) { delete(m, "hidden_size") }},
		{"num_hidden_layers", ErrFormat, func(m map[string]any) { m["num_hidden_layers"] = 2.5 }},
		{"vocab_size", ErrFormat, func(m map[string]any) { m["vocab_size"] = 200 }},
		{"bos_token_id", ErrFormat, func(m map[string]any) { m["bos_token_id"] = 7 }},
		{"eos_token_id", ErrFormat, func(m map[string]any) { m["eos_token_id"] = []int{5, 6} }},
		{"hidden_size", ErrFormat, func(m map[string]any) { m["hidden_size"] = 0 }},
		{"num_hidden_layers", ErrFormat, func(m map[string]any) { m["num_hidden_layers"] = -2 }},
		{"intermediate_size", ErrFormat, func(m map[string]any) { m["intermediate_size"] = 0 }},
		{"vocab_size", ErrFormat, func(m map[string]any) { m["vocab_size"] = 1e12 }},
		{"max_position_embeddings", ErrFormat, func(m map[string]any) { m["max_position_embeddings"] = 0 }},
		{"num_attention_heads", ErrFormat, func(m map[string]any) { m["num_attention_heads"] = 0 }},
		{"num_attention_heads", ErrFormat, func(m map[string]any) { m["num_attention_heads"] = 3 }},
		{"num_attention_heads", ErrFormat, func(m map[string]any) { m["num_attention_heads"] = 64 }}, // head dim 1
		{"rms_norm_eps", ErrFormat, func(m map[string]any) { m["rms_norm_eps"] = 0 }},
		{"rope_parameters.rope_theta", ErrFormat, func(m map[string]any) {
			m["rope_parameters"] = map[string]any{"rope_theta": -1.0, "rope_type": "default"}
		}},
		{"rope_theta", ErrFormat, func(m map[string]any) { delete(m, "rope_parameters"); m["rope_theta"] = 0 }},
	}
	for _, c := range cases {
		t.Run(c.key, func(t *testing.T) {
			dir := copyDir(t, base)
			editConfig(t, dir, c.edit)
			_, err := Import(dir, ImportOptions{})
			if !errors.Is(err, c.sentinel) {
				t.Fatalf("Import: %v, want an error wrapping %v", err, c.sentinel)
			}
			if !strings.Contains(err.Error(), `"`+c.key+`"`) || !strings.Contains(err.Error(), filepath.Join(dir, ConfigFile)) {
				t.Fatalf("error %q does not name the key %q and the file", err, c.key)
			}
		})
	}
}

func TestImportRopeThetaKeys(t *testing.T) {
	tok := trainTokenizer(t)
	cfg := layoutConfig()
	base := export(t, cfg, randomParams(cfg, 4), tok, ExportOptions{})
	cases := []struct {
		name string
		want float64
		edit func(m map[string]any)
	}{
		{"transformers-4", 500000, func(m map[string]any) { delete(m, "rope_parameters"); m["rope_theta"] = 500000.0 }},
		{"transformers-5", 20000, func(m map[string]any) {
			delete(m, "rope_theta")
			m["rope_parameters"] = map[string]any{"rope_theta": 20000.0, "rope_type": "default"}
		}},
		{"default", 10000, func(m map[string]any) { delete(m, "rope_theta"); delete(m, "rope_parameters") }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := copyDir(t, base)
			editConfig(t, dir, c.edit)
			imp, err := Import(dir, ImportOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if imp.Config.RopeTheta != c.want {
				t.Fatalf("rope theta %g, want %g", imp.Config.RopeTheta, c.want)
			}
		})
	}
}

func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy")
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	return dst
}

// ---- weights that are not what config.json promises ----

// rewriteWeights rebuilds dir/model.safetensors from its tensors after edit.
func rewriteWeights(t *testing.T, dir string, edit func(ts []rawTensor) []rawTensor) {
	t.Helper()
	path := filepath.Join(dir, WeightsFile)
	st := parseST(t, path)
	var ts []rawTensor
	for name, e := range st.entries {
		ts = append(ts, rawTensor{name, e.DType, e.Shape, st.raw[name]})
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].name < ts[j].name })
	writeST(t, path, edit(ts))
}

func TestImportRejectsWeights(t *testing.T) {
	tok := trainTokenizer(t)
	cfg := layoutConfig()
	base := export(t, cfg, randomParams(cfg, 5), tok, ExportOptions{})
	drop := func(name string) func([]rawTensor) []rawTensor {
		return func(ts []rawTensor) []rawTensor {
			return slices.DeleteFunc(ts, func(x rawTensor) bool { return x.name == name })
		}
	}
	cases := []struct {
		name, mention string
		sentinel      error
		edit          func([]rawTensor) []rawTensor
	}{
		{"missing", "lm_head.weight", ErrFormat, drop("lm_head.weight")},
		{"shape", "model.norm.weight", ErrFormat, func(ts []rawTensor) []rawTensor {
			for i := range ts {
				if ts[i].name == "model.norm.weight" {
					ts[i].shape, ts[i].raw = []int{32}, ts[i].raw[:128]
				}
			}
			return ts
		}},
		{"extra", "model.layers.0.self_attn.q_proj.bias", ErrUnsupported, func(ts []rawTensor) []rawTensor {
			return append(ts, rawTensor{"model.layers.0.self_attn.q_proj.bias", "F32", []int{64}, make([]byte, 256)})
		}},
		{"dtype", "model.norm.weight", ErrUnsupported, func(ts []rawTensor) []rawTensor {
			for i := range ts {
				if ts[i].name == "model.norm.weight" {
					ts[i].dtype, ts[i].shape = "I32", []int{64}
				}
			}
			return ts
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := copyDir(t, base)
			rewriteWeights(t, dir, c.edit)
			_, err := Import(dir, ImportOptions{})
			if !errors.Is(err, c.sentinel) || !strings.Contains(err.Error(), c.mention) || !strings.Contains(err.Error(), WeightsFile) {
				t.Fatalf("Import: %v; want %v naming %s and the file", err, c.sentinel, c.mention)
			}
		})
	}
	t.Run("truncated", func(t *testing.T) {
		dir := copyDir(t, base)
		path := filepath.Join(dir, WeightsFile)
		st, _ := os.Stat(path)
		if err := os.Truncate(path, st.Size()-4); err != nil {
			t.Fatal(err)
		}
		if _, err := Import(dir, ImportOptions{}); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), path) {
			t.Fatalf("Import of a truncated file: %v", err)
		}
	})
	t.Run("inv_freq is skipped", func(t *testing.T) {
		dir := copyDir(t, base)
		rewriteWeights(t, dir, func(ts []rawTensor) []rawTensor {
			return append(ts, rawTensor{"model.layers.0.self_attn.rotary_emb.inv_freq", "F32", []int{8}, make([]byte, 32)})
		})
		if _, err := Import(dir, ImportOptions{}); err != nil {
			t.Fatal(err)
		}
	})
}

// ---- half-precision weights ----

func TestImportHalfPrecision(t *testing.T) {
	tok := trainTokenizer(t)
	cfg := layoutConfig()
	flat := randomParams(cfg, 6)
	dir := export(t, cfg, flat, tok, ExportOptions{})
	// F16 values of the final norm with their exact float32 values.
	halves := []struct {
		bits uint16
		want float32
	}{
		{0x3c00, 1}, {0xc000, -2}, {0x7bff, 65504}, {0x0001, 1.0 / (1 << 24)}, {0x03ff, 1023.0 / (1 << 24)},
		{0x0400, 1.0 / (1 << 14)}, {0x3555, 0.333251953125}, {0x7c00, float32(math.Inf(1))}, {0xfc00, float32(math.Inf(-1))},
	}
	rewriteWeights(t, dir, func(ts []rawTensor) []rawTensor {
		for i := range ts {
			if ts[i].name == "model.norm.weight" {
				raw := make([]byte, 0, 2*cfg.Dim)
				for j := range cfg.Dim {
					raw = binary.LittleEndian.AppendUint16(raw, halves[j%len(halves)].bits)
				}
				ts[i].dtype, ts[i].raw = "F16", raw
				continue
			}
			// Every other tensor as BF16: the top half of each float32.
			raw := make([]byte, 0, len(ts[i].raw)/2)
			for j := 0; j < len(ts[i].raw); j += 4 {
				raw = binary.LittleEndian.AppendUint16(raw, uint16(binary.LittleEndian.Uint32(ts[i].raw[j:])>>16))
			}
			ts[i].dtype, ts[i].raw = "BF16", raw
		}
		return ts
	})
	imp, err := Import(dir, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range model.NewLayout(cfg).Specs {
		got := imp.Params[s.Offset : s.Offset+s.Size]
		want := make([]float32, s.Size)
		for j, v := range flat[s.Offset : s.Offset+s.Size] {
			want[j] = math.Float32frombits(math.Float32bits(v) &^ 0xffff)
			if s.Name == "norm.weight" {
				want[j] = halves[j%len(halves)].want
			}
		}
		if !sameBits(got, want) {
			t.Fatalf("%s: half-precision values not widened exactly", s.Name)
		}
	}
}

func TestF16Specials(t *testing.T) {
	if v := f16to32(0x8000); v != 0 || !math.Signbit(float64(v)) {
		t.Fatalf("f16 -0 gave %g", v)
	}
	if v := f16to32(0x7e01); !math.IsNaN(float64(v)) || math.Float32bits(v) != 0x7fc02000 {
		t.Fatalf("f16 NaN 0x7e01 gave %#x", math.Float32bits(v))
	}
	if v := f16to32(0x8001); v != -1.0/(1<<24) {
		t.Fatalf("f16 0x8001 gave %g", v)
	}
}

// ---- failures during export ----

func TestExportFailureLeavesNoPartialFiles(t *testing.T) {
	tok := trainTokenizer(t)
	cfg := layoutConfig()
	flat := randomParams(cfg, 8)
	dir := filepath.Join(t.TempDir(), "hf")
	boom := errors.New("device read failed")
	params := func(s model.ParamSpec) ([]float32, error) {
		if s.Name == "layers.1.attention.wk.weight" {
			return nil, boom
		}
		return flat[s.Offset : s.Offset+s.Size], nil
	}
	err := Export(dir, cfg, params, tok, ExportOptions{})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "layers.1.attention.wk.weight") {
		t.Fatalf("Export: %v, want the params error naming the tensor", err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() == WeightsFile || e.Name() == ConfigFile || strings.Contains(e.Name(), ".tmp") {
			t.Fatalf("failed export left %s behind", e.Name())
		}
	}
	short := func(s model.ParamSpec) ([]float32, error) { return flat[s.Offset : s.Offset+s.Size-1], nil }
	if err := Export(dir, cfg, short, tok, ExportOptions{}); err == nil || !strings.Contains(err.Error(), "tok_embeddings.weight") {
		t.Fatalf("Export with a short tensor: %v", err)
	}
	small := cfg
	small.Vocab = 280
	if err := Export(dir, small, sliceParams(randomParams(small, 1), nil), tok, ExportOptions{}); err == nil {
		t.Fatal("Export accepted a tokenizer larger than the model's vocabulary")
	}
}
