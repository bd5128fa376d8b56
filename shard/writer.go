package shard

import (
	"bufio"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
)

// Writer streams tokens into a new shard file. Tokens go to a temporary file
// in the same directory; Close writes the header, syncs and renames the file
// into place, so a crash never leaves a partial file under the final name.
type Writer struct {
	path string
	f    *os.File
	bw   *bufio.Writer
	h    Header
	buf  []byte
	done bool
}

// Create starts a shard file at path for a tokenizer with the given
// vocabulary size and hash.
func Create(path string, vocab int, hash string) (*Writer, error) {
	if vocab < 1 || vocab > MaxVocab {
		return nil, fmt.Errorf("%w: %s: vocabulary size %d, want 1..%d", ErrHeader, path, vocab, MaxVocab)
	}
	if len(hash) == 0 || len(hash) > MaxHashLen {
		return nil, fmt.Errorf("%w: %s: tokenizer hash length %d, want 1..%d", ErrHeader, path, len(hash), MaxHashLen)
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("shard: create %s: %w", path, err)
	}
	w := &Writer{
		path: path,
		f:    f,
		bw:   bufio.NewWriterSize(f, 1<<20),
		h:    Header{Version: FormatVersion, Width: widthFor(vocab), VocabSize: vocab, Hash: hash},
	}
	if _, err := w.bw.Write(make([]byte, HeaderSize)); err != nil {
		w.Abort()
		return nil, fmt.Errorf("shard: write %s: %w", path, err)
	}
	return w, nil
}

// Path is the final name of the file.
func (w *Writer) Path() string { return w.path }

// Header is the header as it stands: count and checksum of the tokens so far.
func (w *Writer) Header() Header { return w.h }

// Len is the number of tokens written so far.
func (w *Writer) Len() int64 { return w.h.Count }

// Write appends tokens. It writes nothing and returns ErrOutOfVocab when any
// id is outside [0, vocab).
func (w *Writer) Write(tokens []int32) error {
	if w.done {
		return fmt.Errorf("shard: write %s: writer closed", w.path)
	}
	for i, t := range tokens {
		if t < 0 || int64(t) >= int64(w.h.VocabSize) {
			return fmt.Errorf("%w: %s: token %d (position %d) not in [0, %d)",
				ErrOutOfVocab, w.path, t, w.h.Count+int64(i), w.h.VocabSize)
		}
	}
	n := len(tokens) * w.h.Width
	if cap(w.buf) < n {
		w.buf = make([]byte, n)
	}
	b := w.buf[:n]
	putTokens(b, tokens, w.h.Width)
	if _, err := w.bw.Write(b); err != nil {
		return fmt.Errorf("shard: write %s: %w", w.path, err)
	}
	w.h.DataCRC = crc32.Update(w.h.DataCRC, castagnoli, b)
	w.h.Count += int64(len(tokens))
	return nil
}

// Close finishes the file: header, fsync, rename, directory fsync. On error
// the temporary file is removed and nothing appears under the final name.
func (w *Writer) Close() error {
	if w.done {
		return fmt.Errorf("shard: close %s: writer closed", w.path)
	}
	w.done = true
	tmp := w.f.Name()
	err := w.bw.Flush()
	if err == nil {
		_, err = w.f.WriteAt(w.h.marshal(), 0)
	}
	if err == nil {
		err = w.f.Sync()
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, w.path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("shard: close %s: %w", w.path, err)
	}
	if err := syncDir(filepath.Dir(w.path)); err != nil {
		return fmt.Errorf("shard: close %s: %w", w.path, err)
	}
	return nil
}

// Abort discards the file. It is safe to call after Close, where it does nothing.
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.f.Close()
	os.Remove(w.f.Name())
}
