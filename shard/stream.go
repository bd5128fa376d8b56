package shard

import (
	"fmt"
	"path/filepath"
)

// stream writes one token stream (a source's train or held-out split) as a
// series of shard files of at most max tokens each: dir/<prefix>-00000.tok,
// -00001.tok, ... A document may continue from one file into the next.
type stream struct {
	root   string // dataset directory
	rel    string // path prefix relative to root, '/'-separated
	vocab  int
	hash   string
	max    int64
	cur    *Writer
	files  []FileEntry
	tokens int64
	// done receives the path of each finished file, so a failed run can remove it.
	done func(path string)
}

func (st *stream) write(toks []int32) error {
	for len(toks) > 0 {
		if st.cur == nil {
			if err := st.open(); err != nil {
				return err
			}
		}
		n := int(min(int64(len(toks)), st.max-st.cur.Len()))
		if err := st.cur.Write(toks[:n]); err != nil {
			return err
		}
		toks = toks[n:]
		st.tokens += int64(n)
		if st.cur.Len() == st.max {
			if err := st.closeFile(); err != nil {
				return err
			}
		}
	}
	return nil
}

func (st *stream) open() error {
	rel := fmt.Sprintf("%s-%05d.tok", st.rel, len(st.files))
	w, err := Create(filepath.Join(st.root, filepath.FromSlash(rel)), st.vocab, st.hash)
	if err != nil {
		return err
	}
	st.cur = w
	st.files = append(st.files, FileEntry{Path: rel})
	return nil
}

func (st *stream) closeFile() error {
	w := st.cur
	st.cur = nil
	err := w.Close()
	st.done(w.Path()) // even on error: a late failure may leave the file in place
	if err != nil {
		return err
	}
	h := w.Header()
	f := &st.files[len(st.files)-1]
	f.Tokens, f.CRC32C = h.Count, h.DataCRC
	return nil
}

// finish closes the last file.
func (st *stream) finish() error {
	if st.cur == nil {
		return nil
	}
	return st.closeFile()
}

// abort discards the file being written; finished files are the caller's.
func (st *stream) abort() {
	if st.cur != nil {
		st.cur.Abort()
		st.cur = nil
	}
}
