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
	"io/fs"
	"net/http"
	"os"
	"strconv"
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
	mux.HandleFunc("GET "+PathLines, func(w http.ResponseWriter, r *http.Request) {
		from, _ := strconv.Atoi(r.URL.Query().Get("from"))
		lines, next, err := ReadLines(metrics, max(from, 0), maxLines)
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
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return []json.RawMessage{}, from, nil
	}
	if err != nil {
		return nil, from, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<16)
	out := []json.RawMessage{}
	i := 0
	for len(out) < n {
		line, err := r.ReadBytes('\n')
		if err != nil {
			break // EOF, or a partial last line
		}
		if i >= from {
			if line = bytes.TrimSpace(line); json.Valid(line) {
				out = append(out, json.RawMessage(line))
			} else {
				out = append(out, json.RawMessage("null"))
			}
		}
		i++
	}
	return out, from + len(out), nil
}
