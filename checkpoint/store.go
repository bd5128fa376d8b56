package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// ObjectStore is where checkpoints live. Keys are slash-separated paths such as
// "run1/step-100/rank-0": no leading or trailing slash, no empty, "." or ".." segment, at most
// 1024 bytes of valid UTF-8. The implementations are DirStore (a local directory), MemStore (in
// memory) and S3Store (any S3-compatible server); OpenStore picks one from a URI. Every
// implementation passes the same conformance suite, objectstoretest.RunAll.
type ObjectStore interface {
	// Put stores the bytes of r under key, replacing any object already there. size is the
	// number of bytes r yields, or -1 if unknown; when size >= 0 and r yields a different
	// number of bytes, Put fails with ErrSizeMismatch. The object appears whole or not at all:
	// a reader of key sees the old object or the new one, never a prefix, and a failed Put
	// leaves nothing new visible.
	Put(ctx context.Context, key string, r io.Reader, size int64) error

	// Get returns a reader of the n bytes of key that start at offset off; n < 0 reads to
	// the end. off may equal the object's size (the reader is then empty). A range that does
	// not lie inside the object fails with ErrInvalidRange, a missing key with ErrNotFound.
	// The caller closes the reader.
	Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error)

	// List returns the objects whose keys start with prefix (a plain string prefix: "a/b"
	// matches "a/b/c" and "a/bc"), sorted by key in byte order. prefix "" lists everything.
	List(ctx context.Context, prefix string) ([]ObjectInfo, error)

	// Delete removes key. Deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
}

// ObjectInfo describes one stored object.
type ObjectInfo struct {
	Key  string // the object's key, relative to the store
	Size int64  // in bytes
}

// Errors of the object stores. Each is wrapped with %w together with the key, path or
// bucket it concerns; test with errors.Is.
var (
	ErrNotFound       = errors.New("checkpoint: object not found")
	ErrInvalidKey     = errors.New("checkpoint: invalid object key")
	ErrInvalidRange   = errors.New("checkpoint: byte range outside object")
	ErrSizeMismatch   = errors.New("checkpoint: object size does not match")
	ErrUnknownScheme  = errors.New("checkpoint: unsupported store URI")
	ErrBucketNotFound = errors.New("checkpoint: bucket not found")
)

// maxKeyLen is S3's limit on key length, applied to every store so that keys move freely
// between them.
const maxKeyLen = 1024

// tmpPrefix starts the names of DirStore's files that are still being written. Keys may not
// contain a segment with this prefix, so such files never collide with objects.
const tmpPrefix = ".herd-tmp-"

// CheckKey reports whether key is a valid object key (see ObjectStore), as an error wrapping
// ErrInvalidKey.
func CheckKey(key string) error {
	if key == "" || len(key) > maxKeyLen || !utf8.ValidString(key) || strings.ContainsRune(key, 0) {
		return fmt.Errorf("%w %q: empty, longer than %d bytes, NUL or not UTF-8", ErrInvalidKey, key, maxKeyLen)
	}
	for seg := range strings.SplitSeq(key, "/") {
		if err := checkSegment(key, seg); err != nil {
			return err
		}
	}
	return nil
}

func checkSegment(key, seg string) error {
	switch {
	case seg == "":
		return fmt.Errorf("%w %q: empty path segment (leading, trailing or double slash)", ErrInvalidKey, key)
	case seg == "." || seg == "..":
		return fmt.Errorf("%w %q: segment %q", ErrInvalidKey, key, seg)
	case strings.HasPrefix(seg, tmpPrefix):
		return fmt.Errorf("%w %q: segment prefix %q is reserved", ErrInvalidKey, key, tmpPrefix)
	}
	return nil
}

// checkPrefix validates a List prefix: "" or a key followed by an optional slash or by the
// start of a further segment.
func checkPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if len(prefix) > maxKeyLen || !utf8.ValidString(prefix) || strings.ContainsRune(prefix, 0) {
		return fmt.Errorf("%w: list prefix %q", ErrInvalidKey, prefix)
	}
	segs := strings.Split(prefix, "/")
	for _, seg := range segs[:len(segs)-1] {
		if err := checkSegment(prefix, seg); err != nil {
			return fmt.Errorf("list prefix: %w", err)
		}
	}
	return nil
}

// resolveRange turns Get's (off, n) into a length for an object of size bytes.
func resolveRange(key string, off, n, size int64) (int64, error) {
	if off < 0 || off > size || (n >= 0 && n > size-off) {
		return 0, fmt.Errorf("%w: %q has %d bytes, asked for %d at offset %d", ErrInvalidRange, key, size, n, off)
	}
	if n < 0 {
		return size - off, nil
	}
	return n, nil
}

// ctxReader fails reads once ctx is done, so that a long Put notices cancellation.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// readSized reads all of r into memory, checking the byte count against size (-1: unknown)
// and failing once ctx is done. limit > 0 stops the read early: when r holds more than limit
// bytes, readSized returns the first limit+1 of them and more = true.
func readSized(ctx context.Context, key string, r io.Reader, size, limit int64) (data []byte, more bool, err error) {
	capacity := int64(64 << 10)
	if size >= 0 {
		capacity = size + 1
	}
	if limit > 0 {
		r = io.LimitReader(r, limit+1)
		capacity = min(capacity, limit+1)
	}
	buf := make([]byte, 0, capacity)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		m, rerr := ctxReader{ctx, r}.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return nil, false, fmt.Errorf("checkpoint: put %q: reading data: %w", key, rerr)
		}
	}
	if limit > 0 && int64(len(buf)) > limit {
		return buf, true, nil
	}
	if size >= 0 && int64(len(buf)) != size {
		return nil, false, sizeError(key, size, int64(len(buf)))
	}
	return buf, false, nil
}

func sizeError(key string, want, got int64) error {
	relation := "at least"
	if got < want {
		relation = "only"
	}
	return fmt.Errorf("%w: put %q: size %d given, reader yields %s %d bytes", ErrSizeMismatch, key, want, relation, got)
}

// exactReader passes through exactly size bytes of r and fails with ErrSizeMismatch if r ends
// early or has more.
type exactReader struct {
	key  string
	r    io.Reader
	size int64
	read int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	left := e.size - e.read
	if left == 0 {
		var probe [1]byte
		if m, _ := io.ReadFull(e.r, probe[:]); m > 0 {
			return 0, sizeError(e.key, e.size, e.size+1)
		}
		return 0, io.EOF
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	m, err := e.r.Read(p)
	e.read += int64(m)
	if err == io.EOF && e.read < e.size {
		return m, sizeError(e.key, e.size, e.read)
	}
	if err == io.EOF {
		err = nil // the final probe decides
	}
	return m, err
}
