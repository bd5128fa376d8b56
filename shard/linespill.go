package shard

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Line dedup in bounded memory. The in-memory deduper holds every distinct line's hash; a
// corpus with more distinct lines than fit is deduplicated in two passes instead:
//
//  1. planLineDedup reads the sources as Prepare will, applying the same earlier filters,
//     and writes the hash of every line line dedup would see to a file, in order.
//  2. It splits that file into 2^k buckets by the hashes' top bits, enough that one
//     bucket's distinct hashes fit the memory budget, and for each bucket, in order, writes
//     a bit per line: 1 for the first occurrence of its hash, 0 for a repeat.
//  3. Prepare's pass then reads, for each line, the next bit of its hash's bucket: lines
//     reach the buckets in the order they were written, so the bits line up.
//
// Memory is one bucket's set, the buffers of the bucket files, and nothing per line.

// lineSetBytes is what a distinct hash costs in a Go map of uint64 (key, slot, overhead).
const lineSetBytes = 48

// maxLineBuckets bounds the files open at once while splitting.
const maxLineBuckets = 512

// lineBits answers, line by line in the order planLineDedup saw them, whether a line is the
// first of its hash.
type lineBits struct {
	dir    string
	k      int // a hash's top k bits are its bucket
	files  []*os.File
	bufs   []*bufio.Reader
	cur    []byte // the byte of each bucket being read
	left   []uint8
	Lines  int64 // lines planned
	Bucket int   // buckets
	MaxSet int64 // the most distinct hashes one bucket held
}

// next reports whether the line with hash h is its hash's first occurrence.
func (b *lineBits) next(h uint64) (bool, error) {
	i := bucketOf(h, b.k)
	if b.left[i] == 0 {
		c, err := b.bufs[i].ReadByte()
		if err != nil {
			return false, fmt.Errorf("shard: line dedup: bucket %d ran out of lines (the sources changed since the first pass?): %w", i, err)
		}
		b.cur[i], b.left[i] = c, 8
	}
	first := b.cur[i]&1 == 1
	b.cur[i] >>= 1
	b.left[i]--
	return first, nil
}

// rewind starts the bits again from the first line, for a second pass that reads them.
func (b *lineBits) rewind() error {
	for i, f := range b.files {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		b.bufs[i].Reset(f)
		b.cur[i], b.left[i] = 0, 0
	}
	return nil
}

// Close removes the bucket files.
func (b *lineBits) Close() error {
	for _, f := range b.files {
		f.Close()
	}
	return os.RemoveAll(b.dir)
}

// lineHashes calls fn with the hash of every line of doc that line dedup compares (those that
// do not normalize to nothing), in order.
func lineHashes(doc []byte, fn func(h uint64, line []byte)) {
	forEachLine(doc, func(line []byte) {
		if norm := NormalizeLine(bytes.TrimRight(line, "\r\n")); len(norm) > 0 {
			fn(hash64(norm), line)
		} else {
			fn(0, line)
		}
	})
}

// forEachLine calls fn with each line of doc, its newline included.
func forEachLine(doc []byte, fn func(line []byte)) {
	for start := 0; start < len(doc); {
		end := len(doc)
		if i := bytes.IndexByte(doc[start:], '\n'); i >= 0 {
			end = start + i + 1
		}
		fn(doc[start:end])
		start = end
	}
}

// planLineDedup runs the first pass over cfg's sources (see above) within budget bytes of
// memory for the hash set, in dir, which it creates and which lineBits.Close removes.
func planLineDedup(ctx context.Context, cfg PrepareConfig, budget int64, dir string) (*lineBits, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(dir)
		}
	}()
	all, err := os.Create(filepath.Join(dir, "hashes"))
	if err != nil {
		return nil, err
	}
	defer all.Close()
	w := bufio.NewWriterSize(all, 1<<20)
	var n int64
	var buf [8]byte
	cleaner := NewCleaner(cfg.Filter)
	for _, s := range cfg.Sources {
		_, err := ReadDocuments(ctx, s.Path, ReadOptions{MaxDocBytes: cfg.MaxDocBytes}, func(doc []byte) error {
			if v, _ := cleaner.Check(doc); v != Keep || !s.Quality.LineDedup {
				return nil
			}
			a := analyzeEarly(s.Quality, doc) // what the real pass's line dedup sees
			if a.code != Keep {
				return nil
			}
			for _, h := range a.lines {
				if h == 0 {
					continue // blank lines are not compared
				}
				binary.LittleEndian.PutUint64(buf[:], h)
				if _, err := w.Write(buf[:]); err != nil {
					return err
				}
				n++
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("shard: line dedup, first pass over %s: %w", s.Name, err)
		}
	}
	if err := w.Flush(); err != nil {
		return nil, err
	}
	// Enough buckets that one bucket's distinct hashes (at most its lines) fit the budget.
	k := 0
	for k < 63 && n*lineSetBytes>>k > budget {
		k++
	}
	if 1<<k > maxLineBuckets {
		return nil, fmt.Errorf("shard: line dedup: %d lines need %d MiB of hashes, more than %d buckets of the %d MiB memory budget; raise the budget",
			n, n*lineSetBytes>>20, maxLineBuckets, budget>>20)
	}
	b := &lineBits{dir: dir, k: k, Lines: n, Bucket: 1 << k}
	defer func() {
		if !ok {
			for _, f := range b.files {
				f.Close()
			}
		}
	}()
	if err := b.split(all); err != nil {
		return nil, err
	}
	if err := b.decide(); err != nil {
		return nil, err
	}
	ok = true
	return b, nil
}

// bucketOf returns the bucket of h for k bits (0 bits: bucket 0).
func bucketOf(h uint64, k int) uint64 {
	if k == 0 {
		return 0
	}
	return h >> (64 - k)
}

// split writes the hashes of all, in order, to the bucket files.
func (b *lineBits) split(all *os.File) error {
	if _, err := splitRecords(all, b.dir, b.k, 8); err != nil {
		return err
	}
	return os.Remove(all.Name())
}

// splitRecords copies the size-byte records of src, from its start and in order, to 2^k files
// bucket-0.. in dir, each record to the bucket of its first 8 bytes' top k bits (bucketOf), and
// returns their paths.
func splitRecords(src *os.File, dir string, k, size int) ([]string, error) {
	n := 1 << k
	paths := make([]string, n)
	files := make([]*os.File, n)
	out := make([]*bufio.Writer, n)
	defer func() {
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
	}()
	for i := range n {
		paths[i] = filepath.Join(dir, fmt.Sprintf("bucket-%d", i))
		f, err := os.Create(paths[i])
		if err != nil {
			return nil, err
		}
		files[i], out[i] = f, bufio.NewWriterSize(f, 16<<10)
	}
	err := forEachRecord(src, size, func(rec []byte) error {
		_, err := out[bucketOf(binary.LittleEndian.Uint64(rec), k)].Write(rec)
		return err
	})
	if err != nil {
		return nil, err
	}
	for i := range n {
		if err := out[i].Flush(); err != nil {
			return nil, err
		}
	}
	return paths, nil
}

// forEachRecord calls fn with each size-byte record of f, from its start.
func forEachRecord(f *os.File, size int, fn func(rec []byte) error) error {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	r := bufio.NewReaderSize(f, 1<<20)
	buf := make([]byte, size)
	for {
		if _, err := io.ReadFull(r, buf); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		if err := fn(buf); err != nil {
			return err
		}
	}
}

// decide writes each bucket's bits, one bucket's set in memory at a time, and opens them for
// reading.
func (b *lineBits) decide() error {
	for i := range b.Bucket {
		path := filepath.Join(b.dir, fmt.Sprintf("bucket-%d", i))
		in, err := os.Open(path)
		if err != nil {
			return err
		}
		bitsPath := path + ".bits"
		out, err := os.Create(bitsPath)
		if err != nil {
			in.Close()
			return err
		}
		w := bufio.NewWriterSize(out, 64<<10)
		seen := map[uint64]struct{}{}
		var cur, nbits uint8
		err = forEachRecord(in, 8, func(rec []byte) error {
			h := binary.LittleEndian.Uint64(rec)
			if _, dup := seen[h]; !dup {
				seen[h] = struct{}{}
				cur |= 1 << nbits
			}
			if nbits++; nbits == 8 {
				w.WriteByte(cur)
				cur, nbits = 0, 0
			}
			return nil
		})
		in.Close()
		b.MaxSet = max(b.MaxSet, int64(len(seen)))
		if err != nil {
			out.Close()
			return err
		}
		if nbits > 0 {
			w.WriteByte(cur)
		}
		if err := w.Flush(); err != nil {
			out.Close()
			return err
		}
		if err := out.Close(); err != nil {
			return err
		}
		os.Remove(path)
		f, err := os.Open(bitsPath)
		if err != nil {
			return err
		}
		b.files = append(b.files, f)
		b.bufs = append(b.bufs, bufio.NewReaderSize(f, 4<<10))
	}
	b.cur, b.left = make([]byte, b.Bucket), make([]uint8, b.Bucket)
	return nil
}
