package dashboard

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// ReadLines returns complete lines from an index on, leaves a line still being written for
// later, and treats a missing file as empty.
func TestReadLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "metrics.jsonl")
	if lines, next, err := ReadLines(path, 0, 10); err != nil || len(lines) != 0 || next != 0 {
		t.Fatalf("missing file: %v %d %v", lines, next, err)
	}
	os.WriteFile(path, []byte("{\"step\":1}\n{\"step\":2}\n{\"step\":3}\n{\"step\":4"), 0o644)
	lines, next, err := ReadLines(path, 1, 10)
	if err != nil || len(lines) != 2 || next != 3 || string(lines[0]) != `{"step":2}` {
		t.Fatalf("from 1: %s %d %v", lines, next, err)
	}
	if lines, next, _ := ReadLines(path, 0, 2); len(lines) != 2 || next != 2 {
		t.Fatalf("at most 2: %s %d", lines, next)
	}
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("}\nnot json\n")
	f.Close()
	if lines, next, _ := ReadLines(path, 3, 10); len(lines) != 2 || next != 5 || string(lines[0]) != `{"step":4}` || string(lines[1]) != "null" {
		t.Fatalf("after the line was finished: %s %d", lines, next)
	}
}

// The page and its endpoints are served where the page looks for them.
func TestRegister(t *testing.T) {
	path := filepath.Join(t.TempDir(), "metrics.jsonl")
	os.WriteFile(path, []byte("{\"step\":1,\"loss\":2.5}\n"), 0o644)
	mux := http.NewServeMux()
	Register(mux, func() any { return map[string]any{"job": "j", "step": 1} }, path)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	get := func(p string) string {
		resp, err := http.Get(srv.URL + p)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %v %v", p, err, resp)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if page := get("/"); !strings.Contains(page, `fetch("dashboard/status"`) || !strings.Contains(page, `"dashboard/lines?from="`) {
		t.Error("the page does not poll the endpoints Register serves")
	}
	var lines struct {
		Lines []json.RawMessage `json:"lines"`
		Next  int               `json:"next"`
	}
	if err := json.Unmarshal([]byte(get(PathLines+"?from=0")), &lines); err != nil || len(lines.Lines) != 1 || lines.Next != 1 {
		t.Errorf("lines: %+v %v", lines, err)
	}
	if st := get(PathStatus); !strings.Contains(st, `"job":"j"`) {
		t.Errorf("status: %s", st)
	}
}
