package shard

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

// How documents are found under a source path:
//
//   - A directory is walked recursively in lexical order (filepath.WalkDir).
//     Entries whose name starts with '.' are skipped, directories included.
//     Symbolic links to files are read; links to directories are not followed.
//   - A name ending in ".gz" is gunzipped and then handled by its inner name.
//   - A name ending in ".jsonl" (or ".jsonl.gz") holds one JSON object per
//     line; its "text" string field is a document. Blank lines are counted and
//     skipped. Any other line (invalid JSON, no "text" field, "text" not a
//     string) is a bad line: counted and reported with file and line number.
//   - A name with a known binary extension (images, archives, executables,
//     model weights, token shards, ...) is skipped, as is any other file with
//     a NUL byte in its first 8000 bytes (after gunzip). Skipped files are
//     counted and reported.
//   - Every other file is text and is one document, unless it is larger than
//     MaxDocBytes: then it is cut into pieces of at most MaxDocBytes, each
//     ending at the last blank line ("\n\n") of its window, else at the last
//     newline, else at a UTF-8 character boundary. This bounds memory for
//     huge files (a book dump, a log) at the cost of an EOS between pieces.
//
// A file that cannot be read or a corrupt gzip stream fails the whole source:
// dropping it would lose data without anyone noticing.

// DefaultMaxDocBytes is the largest text file read as a single document.
const DefaultMaxDocBytes = 16 << 20

// reportSamples is how many bad lines and skipped files a report lists by
// name; all of them are counted.
const reportSamples = 100

// sniffBytes is how much of a text file is searched for a NUL byte.
const sniffBytes = 8000

// ReadOptions controls how documents are cut from files.
type ReadOptions struct {
	// MaxDocBytes is the largest plain text file read as one document;
	// 0 means DefaultMaxDocBytes.
	MaxDocBytes int
}

// ReadReport counts what reading one source found.
type ReadReport struct {
	Files          int64         `json:"files"`
	Docs           int64         `json:"docs"`
	Bytes          int64         `json:"bytes"`
	SkippedFiles   int64         `json:"skipped_files"`
	Skipped        []SkippedFile `json:"skipped,omitempty"`
	BlankLines     int64         `json:"blank_lines"`
	BadLines       int64         `json:"bad_lines"`
	BadLineSamples []BadLine     `json:"bad_line_samples,omitempty"`
}

// SkippedFile is a file left out because it looks binary.
type SkippedFile struct {
	File   string `json:"file"`
	Reason string `json:"reason"`
}

// BadLine is a JSONL line that holds no document.
type BadLine struct {
	File   string `json:"file"`
	Line   int64  `json:"line"`
	Reason string `json:"reason"`
}

func (b BadLine) String() string { return fmt.Sprintf("%s:%d: %s", b.File, b.Line, b.Reason) }

// binaryExt lists extensions of files that never hold text documents.
var binaryExt = func() map[string]bool {
	m := map[string]bool{}
	for _, e := range strings.Fields(`.7z .a .arrow .avi .bin .bmp .bz2 .class .db .dll .dylib .exe
		.flac .gguf .gif .h5 .ico .jar .jpeg .jpg .lz4 .mkv .mov .mp3 .mp4 .npy .npz .o .ogg .otf
		.parquet .pdf .pkl .png .pt .pth .pyc .rar .safetensors .so .sqlite .tar .tgz .tiff .tok
		.ttf .wasm .wav .webm .webp .whl .woff .woff2 .xz .zip .zst`) {
		m[e] = true
	}
	return m
}()

// ReadDocuments calls fn with each document found under path, in a fixed
// order (see the rules above). fn owns the slice it is given. Reading stops
// at the first error from fn, from the file system or from ctx.
func ReadDocuments(ctx context.Context, path string, opt ReadOptions, fn func(doc []byte) error) (ReadReport, error) {
	if opt.MaxDocBytes <= 0 {
		opt.MaxDocBytes = DefaultMaxDocBytes
	}
	r := &docReader{ctx: ctx, opt: opt, fn: fn}
	fi, err := os.Stat(path)
	if err != nil {
		return r.rep, fmt.Errorf("shard: source: %w", err) // names the path
	}
	if !fi.IsDir() {
		err = r.file(path)
	} else {
		err = filepath.WalkDir(path, r.walk(path))
	}
	return r.rep, err
}

type docReader struct {
	ctx context.Context
	opt ReadOptions
	fn  func([]byte) error
	rep ReadReport
}

func (r *docReader) walk(root string) fs.WalkDirFunc {
	return func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("shard: source %s: %w", p, err)
		}
		if p != root && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		if !d.Type().IsRegular() {
			fi, err := os.Stat(p)
			if err != nil || !fi.Mode().IsRegular() {
				r.skip(p, "not a regular file")
				return nil
			}
		}
		return r.file(p)
	}
}

func (r *docReader) skip(file, reason string) {
	r.rep.SkippedFiles++
	if len(r.rep.Skipped) < reportSamples {
		r.rep.Skipped = append(r.rep.Skipped, SkippedFile{File: file, Reason: reason})
	}
}

func (r *docReader) emit(doc []byte) error {
	r.rep.Docs++
	r.rep.Bytes += int64(len(doc))
	return r.fn(doc)
}

// file reads the documents of one file.
func (r *docReader) file(p string) error {
	if err := r.ctx.Err(); err != nil {
		return err
	}
	name := strings.ToLower(filepath.Base(p))
	inner, gz := strings.CutSuffix(name, ".gz")
	if ext := filepath.Ext(inner); binaryExt[ext] {
		r.skip(p, "binary extension "+ext)
		return nil
	}
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("shard: source: %w", err) // names the path
	}
	defer f.Close()
	var in io.Reader = f
	if gz {
		zr, err := gzip.NewReader(f)
		if err != nil {
			return fmt.Errorf("shard: source file %s: gzip: %w", p, err)
		}
		defer zr.Close()
		in = zr
	}
	br := bufio.NewReaderSize(in, 1<<16)
	if strings.HasSuffix(inner, ".jsonl") {
		r.rep.Files++
		err = r.jsonl(p, br)
	} else {
		err = r.text(p, br)
	}
	if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shard: source file %s: %w", p, err)
	}
	return err
}

// jsonl reads one document per line from the "text" field.
func (r *docReader) jsonl(p string, br *bufio.Reader) error {
	for line := int64(1); ; line++ {
		b, err := br.ReadBytes('\n')
		if len(b) > 0 {
			if err := r.jsonLine(p, line, b); err != nil {
				return err
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if line%4096 == 0 {
			if err := r.ctx.Err(); err != nil {
				return err
			}
		}
	}
}

func (r *docReader) jsonLine(p string, line int64, b []byte) error {
	if len(bytes.TrimSpace(b)) == 0 {
		r.rep.BlankLines++
		return nil
	}
	text, reason := jsonText(b)
	if reason != "" {
		r.rep.BadLines++
		if len(r.rep.BadLineSamples) < reportSamples {
			r.rep.BadLineSamples = append(r.rep.BadLineSamples, BadLine{File: p, Line: line, Reason: reason})
		}
		return nil
	}
	return r.emit([]byte(text))
}

// jsonText returns the "text" string of a JSON object, or why there is none.
func jsonText(b []byte) (string, string) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		return "", "invalid JSON: " + err.Error()
	}
	raw, ok := obj["text"]
	if !ok {
		return "", `no "text" field`
	}
	var text string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &text) != nil {
		return "", `"text" is not a string`
	}
	return text, ""
}

// text reads a plain text file as one document, or as pieces when it is
// larger than MaxDocBytes.
func (r *docReader) text(p string, br *bufio.Reader) error {
	head, err := br.Peek(sniffBytes)
	if err != nil && err != io.EOF && err != bufio.ErrBufferFull {
		return err
	}
	if bytes.IndexByte(head, 0) >= 0 {
		r.skip(p, fmt.Sprintf("NUL byte in the first %d bytes", sniffBytes))
		return nil
	}
	r.rep.Files++
	limit := r.opt.MaxDocBytes
	pending, err := readUpTo(br, limit+1, nil)
	pieces := 0
	for err == nil && len(pending) > limit {
		cut := cutPoint(pending, limit)
		if err = r.emit(bytes.Clone(pending[:cut])); err != nil {
			return err
		}
		pieces++
		pending, err = readUpTo(br, limit+1, pending[cut:])
	}
	if err != nil {
		return err
	}
	if len(pending) == 0 && pieces > 0 {
		return nil
	}
	return r.emit(pending) // an empty file is an empty document, for the report
}

// readUpTo returns a new slice holding keep followed by bytes from br, up to
// n bytes in all or until the end of the input.
func readUpTo(br *bufio.Reader, n int, keep []byte) ([]byte, error) {
	out := append([]byte(nil), keep...)
	more, err := io.ReadAll(io.LimitReader(br, int64(n-len(out))))
	return append(out, more...), err
}

// cutPoint is where to end a piece of b, which is longer than limit: after
// the last blank line in b[:limit], else after its last newline, else at the
// last UTF-8 character boundary at or before limit.
func cutPoint(b []byte, limit int) int {
	w := b[:limit]
	if i := bytes.LastIndex(w, []byte("\n\n")); i >= 0 {
		return i + 2
	}
	if i := bytes.LastIndexByte(w, '\n'); i >= 0 {
		return i + 1
	}
	cut := limit
	for k := 0; k < utf8.UTFMax-1 && cut > 1 && !utf8.RuneStart(b[cut]); k++ {
		cut--
	}
	return cut
}
