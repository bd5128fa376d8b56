// Package llamajs runs the npm package llama-tokenizer-js (MIT licence), which ships LLaMA's
// 32,000 pieces and their merges and encodes in node, for tests: it writes LLaMA's
// tokenizer.json from the package's own tables and encodes texts as the package does.
// HERD_LLAMA_TOKENIZER_JS names the package's directory (.ci/run fetches it with npm pack);
// HERD_REQUIRE_LLAMA_TOKENIZER_JS=1 makes its absence a failure rather than a skip.
package llamajs

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Dir returns the package's directory, or skips the test (fails it when required).
func Dir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("HERD_LLAMA_TOKENIZER_JS")
	if dir == "" {
		if os.Getenv("HERD_REQUIRE_LLAMA_TOKENIZER_JS") == "1" {
			t.Fatal("HERD_REQUIRE_LLAMA_TOKENIZER_JS=1 but HERD_LLAMA_TOKENIZER_JS is not set")
		}
		t.Skip("HERD_LLAMA_TOKENIZER_JS is not set (the llama-tokenizer-js npm package's directory; .ci/run fetches it; HERD_REQUIRE_LLAMA_TOKENIZER_JS=1 makes this a failure)")
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("HERD_LLAMA_TOKENIZER_JS is set but node is not installed: %v", err)
	}
	return dir
}

// Encodings are the package's ids for each text, without BOS: Prefixed with the dummy prefix
// (LLaMA's tokenizer.json with a Prepend normalizer), Metaspace as a Metaspace pre-tokenizer
// encodes (no prefix before a text that starts with a space; nil where that is Prefixed's).
type Encodings struct {
	Prefixed  [][]int32 `json:"prefixed"`
	Metaspace [][]int32 `json:"metaspace"`
	Seconds   float64   `json:"seconds"` // the package's time to encode Prefixed, in node
}

// Run checks the package with its own tests, writes LLaMA's tokenizer.json in the two layouts
// of transformers' LlamaConverter into out (tokenizer.json: Prepend+Replace normalizer;
// tokenizer-metaspace.json: Metaspace pre-tokenizer with split false), both with the
// post-processor "<s> $A", and encodes texts.
func Run(t testing.TB, out string, texts []string) Encodings {
	t.Helper()
	pkg := Dir(t)
	if texts == nil {
		texts = []string{}
	}
	raw, _ := json.Marshal(texts)
	script, corpus := filepath.Join(out, "llama.mjs"), filepath.Join(out, "corpus.json")
	if err := os.WriteFile(corpus, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(script, []byte(nodeScript), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("node", script, pkg, corpus, out).CombinedOutput(); err != nil {
		t.Fatalf("node: %v\n%s", err, b)
	}
	var enc Encodings
	raw, err := os.ReadFile(filepath.Join(out, "ids.json"))
	if err == nil {
		err = json.Unmarshal(raw, &enc)
	}
	if err != nil {
		t.Fatal(err)
	}
	return enc
}

// nodeScript is the node side: it checks the package with its own tests, writes the two
// tokenizer.json files and encodes every text of the corpus, with the dummy prefix and
// (for the Metaspace layout) without it where the text starts with a space.
const nodeScript = `
import { readFileSync, writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
const [pkg, corpusPath, outDir] = process.argv.slice(2);
const { LlamaTokenizer } = await import(pathToFileURL(pkg + '/llama-tokenizer.js'));
const tok = new LlamaTokenizer();
tok.runTests();
const vocab = {};
tok.vocabById.forEach((piece, id) => { vocab[piece] = id; });
const merges = [...tok.merges.entries()].sort((a, b) => a[1] - b[1]).map(([k]) => k.split(' '));
const added = ['<unk>', '<s>', '</s>'].map((content, id) => ({id, content, single_word: false,
  lstrip: false, rstrip: false, normalized: false, special: true}));
const replace = (from, to) => ({type: 'Replace', pattern: {String: from}, content: to});
const post = {type: 'TemplateProcessing',
  single: [{SpecialToken: {id: '<s>', type_id: 0}}, {Sequence: {id: 'A', type_id: 0}}],
  pair: [{SpecialToken: {id: '<s>', type_id: 0}}, {Sequence: {id: 'A', type_id: 0}},
         {SpecialToken: {id: '<s>', type_id: 1}}, {Sequence: {id: 'B', type_id: 1}}],
  special_tokens: {'<s>': {id: '<s>', ids: [1], tokens: ['<s>']}}};
const file = (normalizer, pre) => ({version: '1.0', truncation: null, padding: null,
  added_tokens: added, normalizer, pre_tokenizer: pre, post_processor: post,
  decoder: {type: 'Sequence', decoders: [replace('\u2581', ' '), {type: 'ByteFallback'},
    {type: 'Fuse'}, {type: 'Strip', content: ' ', start: 1, stop: 0}]},
  model: {type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null,
    end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, ignore_merges: false,
    vocab, merges}});
writeFileSync(outDir + '/tokenizer.json', JSON.stringify(file(
  {type: 'Sequence', normalizers: [{type: 'Prepend', prepend: '\u2581'}, replace(' ', '\u2581')]}, null)));
writeFileSync(outDir + '/tokenizer-metaspace.json', JSON.stringify(file(null,
  {type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'first', split: false})));
const texts = JSON.parse(readFileSync(corpusPath, 'utf8'));
const start = performance.now();
const prefixed = texts.map(t => tok.encode(t, false, true));
const seconds = (performance.now() - start) / 1000;
const metaspace = texts.map(t => (t.startsWith(' ') || t.startsWith('\u2581')) ? tok.encode(t, false, false) : null);
writeFileSync(outDir + '/ids.json', JSON.stringify({prefixed, metaspace, seconds}));
`
