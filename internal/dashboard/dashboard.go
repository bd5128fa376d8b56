// Package dashboard serves herd's web dashboard: one page with no build step and nothing
// fetched from elsewhere (dashboard.html, embedded), which polls two JSON endpoints beside it
// and draws the job summary, the workers table and charts of loss, validation bits per byte,
// learning rate, gradient norm and tokens/s per GPU over steps. The coordinator serves it on
// its API port; `herd dashboard --run DIR` serves it for a run directory of `herd train`.
package dashboard

import (
	"bufio"
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strconv"
	"sync"
)

//go:embed dashboard.html
var page []byte

// Paths the page polls, relative to where it is served.
const (
	PathStatus = "/dashboard/status"
	PathLines  = "/dashboard/lines"
)

// maxLines bounds the metrics lines one poll returns; the page asks again for the rest.
const maxLines = 20000

// Register adds the page (GET /) and its endpoints to mux. status returns the job summary (a
// cluster.Status, or a run's summary: the same JSON keys), metrics is the metrics.jsonl whose
// step and validation lines the charts draw.
func Register(mux *http.ServeMux, status func() any, metrics string) {
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(page)
	})
	mux.HandleFunc("GET "+PathStatus, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(status())
	})
	var ix lineIndex // polls ask for the lines after the last they got: no rescans from the start
	mux.HandleFunc("GET "+PathLines, func(w http.ResponseWriter, r *http.Request) {
		from, _ := strconv.Atoi(r.URL.Query().Get("from"))
		lines, next, err := ix.read(metrics, max(from, 0), maxLines)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(struct {
			Lines []json.RawMessage `json:"lines"`
			Next  int               `json:"next"`
		}{lines, next})
	})
}

// ReadLines returns up to n complete JSON lines of the file at path from line index from on,
// and the index of the line after them. A missing file has no lines; a last line still being
// written (no newline yet) is left for the next call.
func ReadLines(path string, from, n int) ([]json.RawMessage, int, error) {
	var ix lineIndex
	return ix.read(path, from, n)
}

// markEvery is how many lines apart lineIndex remembers where a line starts.
const markEvery = 1024

// lineIndex remembers where every markEvery-th line of a growing file starts, so that reading
// the lines from some index on reads from the nearest mark, not from the start of the file
// every time. A file that was replaced or cut (a resumed run rewrites metrics.jsonl) starts
// it over.
type lineIndex struct {
	mu    sync.Mutex
	file  os.FileInfo
	marks []int64 // marks[k]: the offset of line k*markEvery
}

func (ix *lineIndex) read(path string, from, n int) ([]json.RawMessage, int, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return []json.RawMessage{}, from, nil
	}
	if err != nil {
		return nil, from, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, from, err
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if ix.file == nil || !os.SameFile(ix.file, fi) || fi.Size() < ix.marks[len(ix.marks)-1] {
		ix.marks = []int64{0}
	}
	ix.file = fi
	k := min(from/markEvery, len(ix.marks)-1)
	off := ix.marks[k]
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return nil, from, err
	}
	r := bufio.NewReaderSize(f, 1<<16)
	out := []json.RawMessage{}
	for i := k * markEvery; len(out) < n; i++ {
		if i%markEvery == 0 && i/markEvery == len(ix.marks) {
			ix.marks = append(ix.marks, off)
		}
		line, err := r.ReadBytes('\n')
		if err != nil {
			break // EOF, or a partial last line
		}
		off += int64(len(line))
		if i >= from {
			if line = bytes.TrimSpace(line); json.Valid(line) {
				out = append(out, json.RawMessage(line))
			} else {
				out = append(out, json.RawMessage("null"))
			}
		}
	}
	return out, from + len(out), nil
}

// LastLine returns the last complete line of the file at path for which match is true,
// reading the file from its end, or nil when there is none (or no file).
func LastLine(path string, match func(line []byte) bool) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil
	}
	end := fi.Size() // lines before end are complete, once the partial last line is cut off
	var tail []byte  // the bytes from the window's start to end
	for window := int64(64 << 10); ; window *= 2 {
		start := max(0, end-window)
		buf := make([]byte, end-start)
		if _, err := f.ReadAt(buf, start); err != nil && !errors.Is(err, io.EOF) {
			return nil
		}
		tail = buf
		if start == 0 {
			break
		}
		// Cut the first (possibly partial) line: it is read whole by a wider window.
		nl := bytes.IndexByte(tail, '\n')
		if nl < 0 {
			continue // one line longer than the window
		}
		lines := tail[nl+1:]
		if l := lastMatch(lines, match); l != nil {
			return l
		}
		end = start + int64(nl+1) // the lines after it have been looked at
	}
	return lastMatch(tail, match)
}

// lastMatch returns the last newline-terminated line of b for which match is true.
func lastMatch(b []byte, match func([]byte) bool) []byte {
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[:i+1] // a partial last line is still being written
	} else {
		return nil
	}
	for len(b) > 0 {
		j := bytes.LastIndexByte(b[:len(b)-1], '\n') // the start of the last line
		line := bytes.TrimSpace(b[j+1:])
		if match(line) {
			return line
		}
		b = b[:j+1]
	}
	return nil
}
