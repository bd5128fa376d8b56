package shard

import (
	"fmt"
	"path/filepath"
)

// Dataset is a prepared dataset held in memory: per source, the train and
// held-out token streams (each the source's files concatenated in order).
type Dataset struct {
	Dir      string
	Manifest *Manifest
	Train    [][]int32
	HeldOut  [][]int32
}

// LoadDataset reads the manifest in dir and every shard file it lists,
// checking each file's tokenizer hash, vocabulary, token count and
// checksum against the manifest. When hash is not empty it must equal the
// dataset's tokenizer hash.
func LoadDataset(dir string, hash string) (*Dataset, error) {
	mpath := filepath.Join(dir, ManifestName)
	m, err := LoadManifest(mpath)
	if err != nil {
		return nil, err
	}
	if hash != "" && hash != m.TokenizerHash {
		return nil, fmt.Errorf("%w: %s: dataset has %q, want %q", ErrTokenizerMismatch, mpath, m.TokenizerHash, hash)
	}
	ds := &Dataset{Dir: dir, Manifest: m}
	for i, s := range m.Sources {
		train, err := loadStream(dir, m, s.TrainFiles, s.TrainTokens, fmt.Sprintf("sources[%d].train_files", i))
		if err != nil {
			return nil, err
		}
		held, err := loadStream(dir, m, s.HeldOutFiles, s.HeldOutTokens, fmt.Sprintf("sources[%d].held_out_files", i))
		if err != nil {
			return nil, err
		}
		ds.Train = append(ds.Train, train)
		ds.HeldOut = append(ds.HeldOut, held)
	}
	return ds, nil
}

// loadStream reads files in order into one token slice. All headers are
// checked against the manifest before any tokens are read, so the slice is
// sized from counts the files themselves confirm.
func loadStream(dir string, m *Manifest, files []FileEntry, total int64, field string) ([]int32, error) {
	opt := OpenOptions{Hash: m.TokenizerHash, VocabSize: m.VocabSize}
	open := func(i int) (*Reader, error) {
		f := files[i]
		path := filepath.Join(dir, filepath.FromSlash(f.Path))
		r, err := Open(path, opt)
		if err != nil {
			return nil, err
		}
		if h := r.Header(); h.Count != f.Tokens || h.DataCRC != f.CRC32C {
			r.Close()
			return nil, fmt.Errorf("%w: %s: %s[%d] lists %d tokens with crc32c %08x, the file has %d with %08x",
				ErrManifest, path, field, i, f.Tokens, f.CRC32C, h.Count, h.DataCRC)
		}
		return r, nil
	}
	for i := range files {
		r, err := open(i)
		if err != nil {
			return nil, err
		}
		r.Close()
	}
	out := make([]int32, total) // Validate made total the sum of the confirmed counts
	var off int64
	for i := range files {
		r, err := open(i)
		if err != nil {
			return nil, err
		}
		err = r.readAll(out[off : off+r.Len()])
		r.Close()
		if err != nil {
			return nil, err
		}
		off += r.Len()
	}
	return out, nil
}
