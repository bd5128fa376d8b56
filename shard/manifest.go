package shard

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// ManifestName is the manifest's file name inside a dataset directory. Its
// presence commits the dataset: Prepare writes it after every shard file.
const ManifestName = "manifest.json"

// ManifestVersion is the manifest format written by this package.
const ManifestVersion = 1

// Manifest describes a prepared dataset: the tokenizer, and per source its
// shard files, token and document counts and what cleaning removed.
type Manifest struct {
	FormatVersion   int              `json:"format_version"`
	TokenizerHash   string           `json:"tokenizer_hash"`
	VocabSize       int              `json:"vocab_size"`
	EOS             int32            `json:"eos"`
	Filter          Filter           `json:"filter"`
	HeldOutFraction float64          `json:"held_out_fraction"`
	Sources         []SourceManifest `json:"sources"`
}

// SourceManifest describes one source of a dataset. The train token stream
// of a source is its TrainFiles concatenated in order, likewise held-out.
type SourceManifest struct {
	Name          string       `json:"name"`
	Weight        float64      `json:"weight"`
	Input         string       `json:"input"` // the path documents were read from; relative to the dataset when inside it
	TrainFiles    []FileEntry  `json:"train_files"`
	HeldOutFiles  []FileEntry  `json:"held_out_files"`
	TrainTokens   int64        `json:"train_tokens"`
	HeldOutTokens int64        `json:"held_out_tokens"`
	TrainDocs     int64        `json:"train_docs"`
	HeldOutDocs   int64        `json:"held_out_docs"`
	Read          ReadReport   `json:"read"`
	Filter        FilterReport `json:"filter_report"`
	Quality       *Quality     `json:"quality,omitempty"` // the quality filters applied, when any
}

// FileEntry is one shard file, its path relative to the dataset directory
// with '/' separators, its token count and its data checksum.
type FileEntry struct {
	Path   string `json:"path"`
	Tokens int64  `json:"tokens"`
	CRC32C uint32 `json:"crc32c"`
}

// LoadManifest reads and validates the manifest at path (a file, or a
// dataset directory holding manifest.json).
func LoadManifest(path string) (*Manifest, error) {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		path = filepath.Join(path, ManifestName)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrManifest, path, err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrManifest, path, err)
	}
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrManifest, path, err)
	}
	return &m, nil
}

// Validate checks every field of m; the error names the first bad field.
func (m *Manifest) Validate() error {
	if err := m.check(); err != nil {
		return fmt.Errorf("%w: %v", ErrManifest, err)
	}
	return nil
}

func (m *Manifest) check() error {
	switch {
	case m.FormatVersion != ManifestVersion:
		return fmt.Errorf("format_version is %d, this build reads %d", m.FormatVersion, ManifestVersion)
	case len(m.TokenizerHash) == 0 || len(m.TokenizerHash) > MaxHashLen:
		return fmt.Errorf("tokenizer_hash has %d bytes, want 1..%d", len(m.TokenizerHash), MaxHashLen)
	case m.VocabSize < 1 || m.VocabSize > MaxVocab:
		return fmt.Errorf("vocab_size is %d, want 1..%d", m.VocabSize, MaxVocab)
	case m.EOS < 0 || int64(m.EOS) >= int64(m.VocabSize):
		return fmt.Errorf("eos is %d, want 0..%d", m.EOS, m.VocabSize-1)
	case len(m.Sources) == 0:
		return fmt.Errorf("sources is empty")
	}
	names := map[string]int{}
	paths := map[string]string{}
	for i := range m.Sources {
		s := &m.Sources[i]
		if j, dup := names[s.Name]; dup {
			return fmt.Errorf("sources[%d].name %q repeats sources[%d]", i, s.Name, j)
		}
		names[s.Name] = i
		if err := s.check(fmt.Sprintf("sources[%d]", i), paths); err != nil {
			return err
		}
	}
	return nil
}

func (s *SourceManifest) check(field string, paths map[string]string) error {
	if err := checkName(s.Name); err != nil {
		return fmt.Errorf("%s.name: %v", field, err)
	}
	if err := checkWeight(s.Weight); err != nil {
		return fmt.Errorf("%s.weight: %v", field, err)
	}
	if len(s.TrainFiles) == 0 {
		return fmt.Errorf("%s.train_files is empty", field)
	}
	if s.TrainDocs < 1 || s.HeldOutDocs < 0 {
		return fmt.Errorf("%s: train_docs %d, held_out_docs %d; want >= 1 and >= 0", field, s.TrainDocs, s.HeldOutDocs)
	}
	if err := checkFiles(field+".train_files", s.TrainFiles, s.TrainTokens, paths); err != nil {
		return err
	}
	return checkFiles(field+".held_out_files", s.HeldOutFiles, s.HeldOutTokens, paths)
}

// checkFiles checks paths are local and unique and that token counts add up.
func checkFiles(field string, files []FileEntry, total int64, paths map[string]string) error {
	var sum int64
	for i, f := range files {
		at := fmt.Sprintf("%s[%d]", field, i)
		if f.Path == "" || !filepath.IsLocal(filepath.FromSlash(f.Path)) {
			return fmt.Errorf("%s.path %q must be a relative path inside the dataset directory", at, f.Path)
		}
		if prev, dup := paths[f.Path]; dup {
			return fmt.Errorf("%s.path %q is also %s", at, f.Path, prev)
		}
		paths[f.Path] = at
		if f.Tokens < 1 {
			return fmt.Errorf("%s.tokens is %d, want >= 1", at, f.Tokens)
		}
		sum += f.Tokens
	}
	if sum != total {
		return fmt.Errorf("%s: tokens add up to %d, the source says %d", field, sum, total)
	}
	return nil
}

// Mixture is the manifest's sources as a sampling mixture over train tokens.
func (m *Manifest) Mixture() Mixture {
	mix := make(Mixture, len(m.Sources))
	for i, s := range m.Sources {
		mix[i] = Component{Name: s.Name, Weight: s.Weight, Tokens: s.TrainTokens}
	}
	return mix
}

// write stores m as dir/manifest.json atomically.
func (m *Manifest) write(dir string) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, ManifestName), append(b, '\n'))
}
