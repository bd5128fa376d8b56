package dashboard

import (
	"encoding/json"
	"fmt"
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

// The lines endpoint's index reads from the nearest remembered line, gives the same lines as
// a read from the start, and starts over when the file is replaced by a shorter one.
func TestLineIndex(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "metrics.jsonl")
	var b strings.Builder
	for i := range 3000 {
		fmt.Fprintf(&b, "{\"step\":%d}\n", i+1)
	}
	os.WriteFile(path, []byte(b.String()), 0o644)
	var ix lineIndex
	for _, from := range []int{0, 1500, 2999, 1024, 2048, 7} {
		got, next, err := ix.read(path, from, 10)
		want, wantNext, _ := ReadLines(path, from, 10)
		if err != nil || next != wantNext || fmt.Sprint(got) != fmt.Sprint(want) || string(got[0]) != fmt.Sprintf(`{"step":%d}`, from+1) {
			t.Fatalf("from %d: %s %d %v, want %s %d", from, got, next, err, want, wantNext)
		}
	}
	if len(ix.marks) < 3 {
		t.Errorf("%d marks after reading past line 2048", len(ix.marks))
	}
	tmp := filepath.Join(dir, "new")
	os.WriteFile(tmp, []byte("{\"step\":1}\n{\"step\":9}\n"), 0o644)
	os.Rename(tmp, path)
	if got, next, _ := ix.read(path, 1, 10); len(got) != 1 || next != 2 || string(got[0]) != `{"step":9}` {
		t.Errorf("after the file was replaced: %s %d", got, next)
	}
}

// LastLine finds the last complete matching line from the end, across windows and lines
// longer than one.
func TestLastLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "metrics.jsonl")
	isStep := func(l []byte) bool { return strings.HasPrefix(string(l), `{"step"`) }
	if LastLine(path, isStep) != nil {
		t.Error("a missing file has a line")
	}
	long := `{"val":"` + strings.Repeat("x", 200<<10) + "\"}\n"
	var b strings.Builder
	b.WriteString("{\"step\":1}\n" + long)
	for range 5000 {
		b.WriteString("{\"eval\":1}\n")
	}
	b.WriteString(`{"step":2`) // still being written
	os.WriteFile(path, []byte(b.String()), 0o644)
	if got := LastLine(path, isStep); string(got) != `{"step":1}` {
		t.Errorf("got %.40q, want the first line (the last one is not finished)", got)
	}
	if got := LastLine(path, func(l []byte) bool { return strings.HasPrefix(string(l), `{"val"`) }); len(got) != len(long)-1 {
		t.Errorf("the long line: %d bytes, want %d", len(got), len(long)-1)
	}
}
