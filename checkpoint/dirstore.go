package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// DirStore is an ObjectStore over a local directory: key "a/b/c" is the file root/a/b/c.
//
// Put writes a temporary file (named with the reserved prefix ".herd-tmp-") in the target
// directory, fsyncs it, renames it over the key's file and fsyncs the directory, so an object
// is complete whenever it is visible and survives a crash once Put returns. Temporary files
// left by a crash are never listed. Keys that would need one path to be both a file and a
// directory ("a" and "a/b") cannot coexist, unlike on S3; checkpoint layouts never need that.
type DirStore struct {
	root string
}

var _ ObjectStore = (*DirStore)(nil)

// copyBufSize is the chunk in which Put copies data to its file.
const copyBufSize = 1 << 20

// NewDirStore returns a store rooted at root, creating the directory if it is missing.
func NewDirStore(root string) (*DirStore, error) {
	if root == "" {
		return nil, fmt.Errorf("checkpoint: dir store: empty root path")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: dir store %s: %w", root, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("checkpoint: dir store: %w", err)
	}
	return &DirStore{root: abs}, nil
}

// Root returns the store's directory as an absolute path.
func (d *DirStore) Root() string { return d.root }

// String returns the store's location as a file URI.
func (d *DirStore) String() string { return "file://" + filepath.ToSlash(d.root) }

func (d *DirStore) path(key string) string {
	return filepath.Join(d.root, filepath.FromSlash(key))
}

// Put implements ObjectStore.
func (d *DirStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("checkpoint: put %q: %w", key, err)
	}
	path := d.path(key)
	f, err := d.createTemp(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("checkpoint: put %q: %w", key, err)
	}
	if err := d.fill(ctx, key, f, r, size); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("checkpoint: put %q: %w", key, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("checkpoint: put %q: %w", key, err)
	}
	return nil
}

// createTemp creates a temporary file in dir, creating dir first. A concurrent Delete may
// remove dir once it is empty, between the two steps; the loop then makes it again.
func (d *DirStore) createTemp(dir string) (*os.File, error) {
	var err error
	for range 5 {
		if err = d.mkdirs(dir); err != nil {
			return nil, err
		}
		var f *os.File
		f, err = os.CreateTemp(dir, tmpPrefix+"*")
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	return nil, err
}

// mkdirs creates dir and its missing parents below the root, fsyncing each parent that gains
// an entry so that the new path survives a crash.
func (d *DirStore) mkdirs(dir string) error {
	if dir == d.root {
		return nil
	}
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s is a file, not a directory", dir)
		}
		return nil
	}
	parent := filepath.Dir(dir)
	if err := d.mkdirs(parent); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return syncDir(parent)
}

// fill copies the object's bytes into f, checks their count and makes them durable.
func (d *DirStore) fill(ctx context.Context, key string, f *os.File, r io.Reader, size int64) error {
	var written int64
	var err error
	if wt, ok := r.(io.WriterTo); ok && size >= 0 {
		// An in-memory reader (a checkpoint shard) writes straight from its buffer: no copy
		// through an intermediate buffer, cancellation checked between large chunks.
		written, err = wt.WriteTo(ctxWriter{ctx, f})
	} else {
		src := io.Reader(ctxReader{ctx, r})
		if size >= 0 {
			src = io.LimitReader(src, size+1)
		}
		written, err = io.CopyBuffer(struct{ io.Writer }{f}, src, make([]byte, copyBufSize))
	}
	if err != nil {
		return fmt.Errorf("checkpoint: put %q: %w", key, err)
	}
	if size >= 0 && written != size {
		return sizeError(key, size, written)
	}
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("checkpoint: put %q: %w", key, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("checkpoint: put %q: fsync: %w", key, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("checkpoint: put %q: %w", key, err)
	}
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) {
		err = nil // file systems that cannot fsync a directory
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// Get implements ObjectStore.
func (d *DirStore) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	if err := CheckKey(key); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("checkpoint: get %q: %w", key, err)
	}
	f, err := os.Open(d.path(key))
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil, fmt.Errorf("%w: %q in %s", ErrNotFound, key, d.root)
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoint: get %q: %w", key, err)
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%w: %q in %s (not a regular file)", ErrNotFound, key, d.root)
	}
	length, err := resolveRange(key, off, n, fi.Size())
	if err != nil {
		f.Close()
		return nil, err
	}
	if off == 0 && length == fi.Size() {
		return f, nil
	}
	return sectionCloser{io.NewSectionReader(f, off, length), f}, nil
}

type sectionCloser struct {
	*io.SectionReader
	io.Closer
}

// List implements ObjectStore.
func (d *DirStore) List(ctx context.Context, prefix string) ([]ObjectInfo, error) {
	if err := checkPrefix(prefix); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("checkpoint: list %q: %w", prefix, err)
	}
	// Walk from the directory that holds every match: the prefix up to its last slash.
	start := d.root
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		start = d.path(prefix[:i])
	}
	var out []ObjectInfo
	err := filepath.WalkDir(start, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			if path == start && (errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)) {
				return fs.SkipAll
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		return d.visit(path, e, prefix, &out)
	})
	if err != nil {
		return nil, fmt.Errorf("checkpoint: list %q in %s: %w", prefix, d.root, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// visit adds path to out if it is an object matching prefix, and prunes directories that
// cannot hold a match.
func (d *DirStore) visit(path string, e fs.DirEntry, prefix string, out *[]ObjectInfo) error {
	rel, err := filepath.Rel(d.root, path)
	if err != nil || rel == "." {
		return err
	}
	key := filepath.ToSlash(rel)
	if e.IsDir() {
		if !strings.HasPrefix(key+"/", prefix) && !strings.HasPrefix(prefix, key+"/") {
			return fs.SkipDir
		}
		return nil
	}
	if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), tmpPrefix) || !strings.HasPrefix(key, prefix) {
		return nil
	}
	fi, err := e.Info()
	if errors.Is(err, fs.ErrNotExist) {
		return nil // deleted while listing
	}
	if err != nil {
		return err
	}
	*out = append(*out, ObjectInfo{Key: key, Size: fi.Size()})
	return nil
}

// Delete implements ObjectStore. Directories left empty are removed, up to the root.
func (d *DirStore) Delete(ctx context.Context, key string) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("checkpoint: delete %q: %w", key, err)
	}
	path := d.path(key)
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) || (err == nil && fi.IsDir()) {
		return nil
	}
	if err == nil {
		err = os.Remove(path)
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("checkpoint: delete %q: %w", key, err)
	}
	for dir := filepath.Dir(path); dir != d.root; dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil {
			break // not empty, or gone already
		}
	}
	return nil
}

// ctxWriter writes to w in chunks of at most ctxChunk bytes, failing once ctx is done.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

const ctxChunk = 16 << 20

func (c ctxWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if err := c.ctx.Err(); err != nil {
			return n, err
		}
		k, err := c.w.Write(p[:min(len(p), ctxChunk)])
		n += k
		if err != nil {
			return n, err
		}
		p = p[k:]
	}
	return n, nil
}
