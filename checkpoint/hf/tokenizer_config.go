package hf

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"

	"github.com/herd-llm/herd/model"
	"github.com/herd-llm/herd/tokenizer"
)

// tokenizerClass is the class AutoTokenizer builds from tokenizer_config.json. In
// transformers 5 it names TokenizersBackend, which runs tokenizer.json's pipeline as it is;
// without it AutoTokenizer takes the class of config.json's model_type, LLaMA's, which
// rebuilds the pipeline its own way and prepends BOS by default.
const tokenizerClass = "PreTrainedTokenizerFast"

// tokenizerConfigJSON returns tokenizer_config.json for tok, read by transformers'
// from_pretrained so that AutoTokenizer gives a model exported by herd the ids herd trained
// it on: documents are encoded by tokenizer.json's pipeline alone, with no BOS before them
// (herd's data has an EOS after each document and nothing else) unless the tokenizer puts
// one there (LLaMA's SentencePiece-style tokenizer.json, whose post-processor adds <s>), and
// a special token's text in the input is split into bytes, as herd's Encode does
// (split_special_tokens). A tokenizer without a padding token (LLaMA's) has pad_token null.
// docs/huggingface.md explains each key.
func tokenizerConfigJSON(cfg model.Config, tok *tokenizer.Tokenizer) map[string]any {
	added := map[string]any{}
	for id := range int32(tok.VocabSize()) {
		if tok.IsSpecial(id) {
			added[strconv.Itoa(int(id))] = map[string]any{"content": tok.TokenString(id), "lstrip": false,
				"normalized": false, "rstrip": false, "single_word": false, "special": true}
		}
	}
	_, bos := tok.DocumentStart()
	var pad any
	if tok.PAD() >= 0 {
		pad = tok.TokenString(tok.PAD())
	}
	return map[string]any{
		"add_bos_token":                bos,
		"add_eos_token":                false,
		"add_prefix_space":             false,
		"added_tokens_decoder":         added,
		"bos_token":                    tok.TokenString(tok.BOS()),
		"clean_up_tokenization_spaces": false,
		"eos_token":                    tok.TokenString(tok.EOS()),
		"model_input_names":            []string{"input_ids", "attention_mask"},
		"model_max_length":             cfg.MaxSeq,
		"pad_token":                    pad,
		"split_special_tokens":         true,
		"tokenizer_class":              tokenizerClass,
	}
}

// checkTokenizerConfig checks tokenizer_config.json when the directory has one. herd encodes
// with tokenizer.json alone, so the file need only agree with it: the special tokens it names
// are tokenizer.json's, and it asks for a BOS before every input exactly when tokenizer.json's
// post-processor puts one there (LLaMA's), which herd's data pipeline then writes before
// every document. The padding token is not checked when tokenizer.json has none: herd never
// pads with it.
func checkTokenizerConfig(path string, tok *tokenizer.Tokenizer) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrFormat, err)
	}
	r := configReader{path: path}
	if err := json.Unmarshal(data, &r.m); err != nil {
		return fmt.Errorf("%w: %s: not a JSON object: %v", ErrFormat, path, err)
	}
	for _, sp := range []struct {
		key string
		id  int32
	}{{"bos_token", tok.BOS()}, {"eos_token", tok.EOS()}, {"pad_token", tok.PAD()}} {
		if sp.id < 0 {
			continue
		}
		content, ok, err := r.tokenContent(sp.key)
		if err != nil {
			return err
		}
		if want := tok.TokenString(sp.id); ok && content != want {
			return r.errf(ErrFormat, sp.key, "= %q, but tokenizer.json has %q at id %d", content, want, sp.id)
		}
	}
	if _, err := r.flag("add_eos_token", false); err != nil {
		return err
	}
	_, starts := tok.DocumentStart()
	bos, err := r.flag("add_bos_token", starts)
	switch {
	case err != nil:
		return err
	case bos && !starts:
		return r.errf(ErrUnsupported, "add_bos_token", "= true, but tokenizer.json's post_processor puts no <s> before a text, and herd's data has only an EOS after each document")
	case !bos && starts:
		return r.errf(ErrUnsupported, "add_bos_token", "= false, but tokenizer.json's post_processor puts <s> before every text; herd encodes as tokenizer.json does (remove the key, or the post-processor)")
	}
	return nil
}

// tokenContent returns a special-token key of tokenizer_config.json: a string, or an
// AddedToken object with a "content" string as older transformers releases wrote. ok is
// false when the key is absent or null.
func (r configReader) tokenContent(key string) (content string, ok bool, err error) {
	if !r.has(key) {
		return "", false, nil
	}
	if err := json.Unmarshal(r.m[key], &content); err == nil {
		return content, true, nil
	}
	var obj struct {
		Content *string `json:"content"`
	}
	if err := json.Unmarshal(r.m[key], &obj); err != nil || obj.Content == nil {
		return "", false, r.errf(ErrFormat, key, "= %s is neither a token string nor an object with a \"content\" string", r.m[key])
	}
	return *obj.Content, true, nil
}
