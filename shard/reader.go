package shard

import (
	"fmt"
	"hash/crc32"
	"io"
	"os"
)

// OpenOptions states what a reader expects of a shard file.
type OpenOptions struct {
	// Hash, when not empty, must equal the tokenizer hash in the file.
	Hash string
	// VocabSize bounds the token ids; 0 uses the size recorded in the file.
	VocabSize int
}

// Reader reads tokens from a shard file. Open checks the header and the file
// size; ReadTokens reads a window; ReadAll reads everything and also checks
// the data checksum. Token ids are checked against the vocabulary on every read.
type Reader struct {
	path   string
	ra     io.ReaderAt
	closer io.Closer
	h      Header
	vocab  int
}

// Open opens the shard file at path and validates its header against opt.
func Open(path string, opt OpenOptions) (*Reader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("shard: %w", err) // names the path
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("shard: open %s: %w", path, err)
	}
	r, err := NewReader(f, fi.Size(), path, opt)
	if err != nil {
		f.Close()
		return nil, err
	}
	r.closer = f
	return r, nil
}

// NewReader reads a shard held by ra, which has size bytes. name is used in
// error messages.
func NewReader(ra io.ReaderAt, size int64, name string, opt OpenOptions) (*Reader, error) {
	if opt.VocabSize < 0 {
		return nil, fmt.Errorf("shard: open %s: vocabulary size %d is negative", name, opt.VocabSize)
	}
	head := make([]byte, min(size, HeaderSize))
	if err := readAt(ra, head, 0); err != nil {
		return nil, fmt.Errorf("shard: read %s: %w", name, err)
	}
	h, err := parseHeader(name, head, size)
	if err != nil {
		return nil, err
	}
	if opt.Hash != "" && opt.Hash != h.Hash {
		return nil, fmt.Errorf("%w: %s: file has %q, want %q", ErrTokenizerMismatch, name, h.Hash, opt.Hash)
	}
	if err := checkSize(name, h, size); err != nil {
		return nil, err
	}
	vocab := opt.VocabSize
	if vocab == 0 {
		vocab = h.VocabSize
	}
	return &Reader{path: name, ra: ra, h: h, vocab: vocab}, nil
}

// checkSize compares the token count in h with the bytes after the header.
func checkSize(name string, h Header, size int64) error {
	data := size - HeaderSize
	w := int64(h.Width)
	if data/w < h.Count {
		return fmt.Errorf("%w: %s: header says %d tokens, file holds %d bytes of tokens (%w)",
			ErrSizeMismatch, name, h.Count, data, ErrTruncated)
	}
	if data%w != 0 || data/w != h.Count {
		return fmt.Errorf("%w: %s: header says %d tokens, file holds %d bytes of %d-byte tokens",
			ErrSizeMismatch, name, h.Count, data, w)
	}
	return nil
}

// Path is the name given to Open or NewReader.
func (r *Reader) Path() string { return r.path }

// Header is the file's header.
func (r *Reader) Header() Header { return r.h }

// Len is the number of tokens in the file.
func (r *Reader) Len() int64 { return r.h.Count }

// ReadTokens fills dst with the tokens [off, off+len(dst)). It does not check
// the data checksum, which covers the whole file; ReadAll does.
func (r *Reader) ReadTokens(dst []int32, off int64) error {
	if off < 0 || off > r.h.Count || int64(len(dst)) > r.h.Count-off {
		return fmt.Errorf("shard: read %s: tokens [%d, %d) outside [0, %d)", r.path, off, off+int64(len(dst)), r.h.Count)
	}
	b := make([]byte, len(dst)*r.h.Width)
	if err := readAt(r.ra, b, HeaderSize+off*int64(r.h.Width)); err != nil {
		return fmt.Errorf("shard: read %s: %w", r.path, err)
	}
	if i := getTokens(dst, b, r.h.Width, r.vocab); i >= 0 {
		return r.outOfVocab(dst[i], off+int64(i))
	}
	return nil
}

// ReadAll reads every token and checks the data checksum and the vocabulary.
// A checksum mismatch is reported before an out-of-vocabulary id, since
// corruption is the likelier cause of both.
func (r *Reader) ReadAll() ([]int32, error) {
	out := make([]int32, r.h.Count)
	if err := r.readAll(out); err != nil {
		return nil, err
	}
	return out, nil
}

// readAll is ReadAll into out, which holds exactly Len tokens.
func (r *Reader) readAll(out []int32) error {
	const chunk = 1 << 18 // tokens per read
	buf := make([]byte, min(chunk, r.h.Count)*int64(r.h.Width))
	var crc uint32
	bad := int64(-1)
	for off := int64(0); off < r.h.Count; off += chunk {
		dst := out[off:min(off+chunk, r.h.Count)]
		b := buf[:len(dst)*r.h.Width]
		if err := readAt(r.ra, b, HeaderSize+off*int64(r.h.Width)); err != nil {
			return fmt.Errorf("shard: read %s: %w", r.path, err)
		}
		crc = crc32.Update(crc, castagnoli, b)
		if i := getTokens(dst, b, r.h.Width, r.vocab); i >= 0 && bad < 0 {
			bad = off + int64(i)
		}
	}
	if crc != r.h.DataCRC {
		return fmt.Errorf("%w: %s: computed %08x, header has %08x", ErrDataChecksum, r.path, crc, r.h.DataCRC)
	}
	if bad >= 0 {
		return r.outOfVocab(out[bad], bad)
	}
	return nil
}

func (r *Reader) outOfVocab(t int32, pos int64) error {
	return fmt.Errorf("%w: %s: token %d at position %d not in [0, %d)", ErrOutOfVocab, r.path, uint32(t), pos, r.vocab)
}

// Close releases the file opened by Open; for NewReader it does nothing.
func (r *Reader) Close() error {
	if r.closer == nil {
		return nil
	}
	return r.closer.Close()
}

// ReadFile opens, fully reads and closes the shard file at path.
func ReadFile(path string, opt OpenOptions) ([]int32, Header, error) {
	r, err := Open(path, opt)
	if err != nil {
		return nil, Header{}, err
	}
	defer r.Close()
	toks, err := r.ReadAll()
	return toks, r.h, err
}

// readAt fills b from ra at off. A ReaderAt may return io.EOF with a full
// read at the end of its data; that counts as success.
func readAt(ra io.ReaderAt, b []byte, off int64) error {
	n, err := ra.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}
