package hf

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/herd-llm/herd/model"
)

// ---- directories whose config.json promises more than the files hold ----

// llama70B is the shape LLaMA-2 70B's config.json gives, without its grouped-query attention
// (herd has none): hidden 8192, 80 blocks, 64 heads, FFN 28672, vocabulary 32000.
func llama70B() model.Config {
	return model.Config{Dim: 8192, Layers: 80, Heads: 64, FFNHidden: 28672, Vocab: 32000, MaxSeq: 4096,
		NormEps: 1e-5, RopeTheta: 10000, Remat: model.RematHybrid}
}

// claim rewrites dir/config.json to describe cfg instead of the model the files hold.
func claim(t *testing.T, dir string, cfg model.Config) {
	t.Helper()
	editConfig(t, dir, func(m map[string]any) {
		m["hidden_size"], m["num_hidden_layers"], m["num_attention_heads"] = cfg.Dim, cfg.Layers, cfg.Heads
		m["num_key_value_heads"], m["head_dim"] = cfg.Heads, cfg.HeadDim()
		m["intermediate_size"], m["vocab_size"], m["max_position_embeddings"] = cfg.FFNHidden, cfg.Vocab, cfg.MaxSeq
	})
}

// allocated returns the bytes of heap that f allocated.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestImportClaimedModelOverTinyWeights(t *testing.T) {
	tok := trainTokenizer(t)
	tiny := layoutConfig()
	base := export(t, tiny, randomParams(tiny, 11), tok, ExportOptions{})
	okAlloc := allocated(func() {
		if _, err := Import(base, ImportOptions{}); err != nil {
			t.Fatal(err)
		}
	})
	manyBlocks := tiny
	manyBlocks.Layers = math.MaxInt32
	widerFFN := tiny
	widerFFN.FFNHidden = 2 * tiny.FFNHidden
	cases := []struct {
		name    string
		claimed model.Config
		mention []string // in the error besides the weights file and config.json
		huge    bool     // the claim is over a thousand times what the refusal may allocate
	}{
		// The first tensor in layout order, the embedding, has neither shape.
		{"70B", llama70B(), []string{"model.embed_tokens.weight", fmt.Sprint([]int{tiny.Vocab, tiny.Dim}),
			"[32000 8192]", "[vocab_size, hidden_size]"}, true},
		// Only intermediate_size is wrong: the first FFN weight names it.
		{"wider FFN", widerFFN, []string{"model.layers.0.mlp.gate_proj.weight", fmt.Sprint([]int{tiny.FFNHidden, tiny.Dim}),
			fmt.Sprint([]int{widerFFN.FFNHidden, tiny.Dim}), "[intermediate_size, hidden_size]"}, false},
		// Every tensor of blocks 0 and 1 matches; block 2 is not there. The spec table of
		// 2^31-1 blocks would take hundreds of GiB to build: it must not be.
		{"2^31-1 blocks", manyBlocks, []string{"model.layers.2.input_layernorm.weight", "missing",
			fmt.Sprintf("num_hidden_layers = %d", math.MaxInt32)}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := copyDir(t, base)
			claim(t, dir, c.claimed)
			var err error
			alloc := allocated(func() { _, err = Import(dir, ImportOptions{}) })
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("Import: %v, want an error wrapping ErrFormat", err)
			}
			for _, s := range append(c.mention, filepath.Join(dir, WeightsFile), filepath.Join(dir, ConfigFile)) {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			// The claimed model's matrices alone, in float32.
			claimed := 4 * float64(c.claimed.Dim) * float64(2*c.claimed.Vocab+c.claimed.Layers*(4*c.claimed.Dim+3*c.claimed.FFNHidden))
			t.Logf("refused import allocated %d bytes; importing the real files allocates %d; config.json claims %.3g bytes", alloc, okAlloc, claimed)
			if alloc >= okAlloc {
				t.Fatalf("refused import allocated %d bytes, not less than importing the real files (%d)", alloc, okAlloc)
			}
			if c.huge && float64(alloc)*1000 > claimed {
				t.Fatalf("refused import allocated %d bytes, more than a thousandth of the %.3g claimed", alloc, claimed)
			}
		})
	}
}

// ---- safetensors headers that point outside their file ----

func TestImportRejectsDataPastEndOfFile(t *testing.T) {
	tok := trainTokenizer(t)
	cfg := layoutConfig()
	base := export(t, cfg, randomParams(cfg, 12), tok, ExportOptions{})
	st := parseST(t, filepath.Join(base, WeightsFile))
	byEnd := make([]string, 0, len(st.entries))
	for name := range st.entries {
		byEnd = append(byEnd, name)
	}
	sort.Slice(byEnd, func(i, j int) bool { return st.entries[byEnd[i]].Offsets[1] < st.entries[byEnd[j]].Offsets[1] })
	hdr, _ := os.ReadFile(filepath.Join(base, WeightsFile))
	dataStart := int64(len(hdr)) - st.entries[byEnd[len(byEnd)-1]].Offsets[1]

	// Cut the file in the middle of a tensor: the error names it and the bytes left.
	for _, victim := range []string{byEnd[len(byEnd)-1], byEnd[len(byEnd)/2]} {
		t.Run("cut inside "+victim, func(t *testing.T) {
			dir := copyDir(t, base)
			path := filepath.Join(dir, WeightsFile)
			e := st.entries[victim]
			keep := (e.Offsets[0] + e.Offsets[1]) / 2
			if err := os.Truncate(path, dataStart+keep); err != nil {
				t.Fatal(err)
			}
			_, err := Import(dir, ImportOptions{})
			want := []string{path, "tensor " + victim, fmt.Sprint(e.Offsets[1]), fmt.Sprintf("holds %d bytes", keep)}
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("Import: %v, want ErrFormat", err)
			}
			for _, s := range want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}

	// A header whose byte count overflows int64 is rejected, not multiplied out.
	t.Run("overflowing shape", func(t *testing.T) {
		dir := copyDir(t, base)
		path := filepath.Join(dir, WeightsFile)
		writeST(t, path, []rawTensor{{"lm_head.weight", "F32", []int{1 << 40, 1 << 40}, make([]byte, 16)}})
		_, err := Import(dir, ImportOptions{})
		if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "lm_head.weight") || !strings.Contains(err.Error(), path) {
			t.Fatalf("Import: %v, want ErrFormat naming lm_head.weight and %s", err, path)
		}
	})
}

// ---- memory ----

func TestImportMemoryCheck(t *testing.T) {
	tok := trainTokenizer(t)
	cfg := layoutConfig()
	dir := export(t, cfg, randomParams(cfg, 13), tok, ExportOptions{})
	n := int64(model.NewLayout(cfg).Size)
	// herd import's peak: the parameters, one zero buffer for both moments and the saver's
	// staging copy of three buffers, 4 bytes per parameter each.
	const extra = 4
	need := 4 * n * (1 + extra)
	// Import alone peaks at the parameters, the largest q/k projection (d x d) reordered
	// through a scratch copy, and one read chunk.
	needAlone := 4*n + 4*int64(cfg.Dim*cfg.Dim) + readChunk
	cases := []struct {
		name        string
		extra       int
		have        int64
		known, fits bool
	}{
		{"herd import, one byte short", extra, need - 1, true, false},
		{"herd import, exact fit", extra, need, true, true},
		{"Import alone, one byte short", 0, needAlone - 1, true, false},
		{"Import alone, exact fit", 0, needAlone, true, true},
		{"memory unknown", extra, 0, false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := ImportOptions{ExtraBuffers: c.extra, Available: func() (int64, bool) { return c.have, c.known }}
			imp, err := Import(dir, opts)
			if c.fits {
				if err != nil || len(imp.Params) != int(n) {
					t.Fatalf("Import: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrMemory) {
				t.Fatalf("Import: %v, want ErrMemory", err)
			}
			wantNeed := need
			if c.extra == 0 {
				wantNeed = needAlone
			}
			for _, s := range []string{dir, formatBytes(wantNeed), formatBytes(c.have), strconv.FormatInt(n, 10) + " parameters"} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
}

func TestParseMemAvailable(t *testing.T) {
	const meminfo = "MemTotal:       24576000 kB\nMemFree:         1000000 kB\nMemAvailable:   12345678 kB\nBuffers:          100 kB\n"
	if got, ok := parseMemAvailable(strings.NewReader(meminfo)); !ok || got != 12345678*1024 {
		t.Fatalf("parseMemAvailable = %d, %v; want %d", got, ok, 12345678*1024)
	}
	for _, bad := range []string{"MemTotal: 100 kB\n", "MemAvailable: lots kB\n", "MemAvailable: 100 MB\n", ""} {
		if got, ok := parseMemAvailable(strings.NewReader(bad)); ok {
			t.Errorf("parseMemAvailable(%q) = %d, true; want unknown", bad, got)
		}
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{512: "512 B", 1536: "1.5 KiB", 3 << 30: "3.0 GiB", 276 << 30: "276.0 GiB", 5 << 40: "5.0 TiB"} {
		if got := formatBytes(n); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// ---- tokenizer_config.json ----

func TestTokenizerConfigJSON(t *testing.T) {
	tok := trainTokenizer(t)
	cfg := wideHeadConfig() // max_seq 256, not transformers' default
	dir := export(t, cfg, randomParams(cfg, 14), tok, ExportOptions{})
	got := readJSONMap(t, filepath.Join(dir, TokenizerConfigFile))

	// The special tokens as tokenizer.json, read here on its own, defines them.
	var tj struct {
		AddedTokens []struct {
			ID      int    `json:"id"`
			Content string `json:"content"`
			Special bool   `json:"special"`
		} `json:"added_tokens"`
	}
	raw, err := os.ReadFile(filepath.Join(dir, TokenizerFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &tj); err != nil {
		t.Fatal(err)
	}
	content := map[int32]string{}
	decoder := map[string]any{}
	for _, a := range tj.AddedTokens {
		content[int32(a.ID)] = a.Content
		decoder[strconv.Itoa(a.ID)] = map[string]any{"content": a.Content, "lstrip": false, "normalized": false,
			"rstrip": false, "single_word": false, "special": a.Special}
	}
	want := map[string]any{
		"tokenizer_class":              "PreTrainedTokenizerFast",
		"add_bos_token":                false,
		"add_eos_token":                false,
		"add_prefix_space":             false,
		"added_tokens_decoder":         decoder,
		"bos_token":                    content[tok.BOS()],
		"eos_token":                    content[tok.EOS()],
		"pad_token":                    content[tok.PAD()],
		"clean_up_tokenization_spaces": false,
		"split_special_tokens":         true,
		"model_input_names":            []any{"input_ids", "attention_mask"},
		"model_max_length":             float64(cfg.MaxSeq),
	}
	if want["bos_token"] != "<s>" || want["eos_token"] != "</s>" || want["pad_token"] != "<pad>" {
		t.Fatalf("tokenizer.json special tokens %v, want <s>, </s>, <pad> at BOS, EOS, PAD", content)
	}
	for k, v := range want {
		if !reflect.DeepEqual(got[k], v) {
			t.Errorf("tokenizer_config.json %q = %#v, want %#v", k, got[k], v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("tokenizer_config.json has unexpected key %q", k)
		}
	}
}

func TestImportChecksTokenizerConfig(t *testing.T) {
	tok := trainTokenizer(t)
	cfg := layoutConfig()
	base := export(t, cfg, randomParams(cfg, 15), tok, ExportOptions{})
	edit := func(t *testing.T, dir string, f func(m map[string]any)) {
		t.Helper()
		path := filepath.Join(dir, TokenizerConfigFile)
		m := readJSONMap(t, path)
		f(m)
		b, _ := json.Marshal(m)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	accepted := []struct {
		name string
		edit func(t *testing.T, dir string)
	}{
		{"as exported", func(t *testing.T, dir string) {}},
		{"absent", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, TokenizerConfigFile)) }},
		{"AddedToken objects", func(t *testing.T, dir string) {
			edit(t, dir, func(m map[string]any) { m["bos_token"] = map[string]any{"__type": "AddedToken", "content": "<s>"} })
		}},
		{"add_eos_token true", func(t *testing.T, dir string) { edit(t, dir, func(m map[string]any) { m["add_eos_token"] = true }) }},
	}
	for _, c := range accepted {
		t.Run(c.name, func(t *testing.T) {
			dir := copyDir(t, base)
			c.edit(t, dir)
			if _, err := Import(dir, ImportOptions{}); err != nil {
				t.Fatal(err)
			}
		})
	}
	rejected := []struct {
		key      string
		sentinel error
		edit     func(m map[string]any)
	}{
		{"add_bos_token", ErrUnsupported, func(m map[string]any) { m["add_bos_token"] = true }},
		{"add_eos_token", ErrFormat, func(m map[string]any) { m["add_eos_token"] = "no" }},
		{"bos_token", ErrFormat, func(m map[string]any) { m["bos_token"] = "<|begin_of_text|>" }},
		{"eos_token", ErrFormat, func(m map[string]any) { m["eos_token"] = "<s>" }},
		{"pad_token", ErrFormat, func(m map[string]any) { m["pad_token"] = 0 }},
	}
	for _, c := range rejected {
		t.Run(c.key, func(t *testing.T) {
			dir := copyDir(t, base)
			edit(t, dir, c.edit)
			_, err := Import(dir, ImportOptions{})
			if !errors.Is(err, c.sentinel) || !strings.Contains(err.Error(), `"`+c.key+`"`) || !strings.Contains(err.Error(), filepath.Join(dir, TokenizerConfigFile)) {
				t.Fatalf("Import: %v; want %v naming key %q and the file", err, c.sentinel, c.key)
			}
		})
	}
}
