package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/herd-llm/herd/shard"
)

// The built-in corpus needs nothing installed beyond the Go toolchain that builds herd:
//
//	english  Isaac Newton's Opticks (src/testdata, public domain) and the Go documents in
//	         doc/ (the specification, memory model, assembler guide; BSD-licensed with Go),
//	         split into documents of about 8 KiB at paragraph breaks
//	code     the Go standard library's non-test source files (BSD-licensed with Go)
const builtinVersion = "v1"

func goroot() (string, error) {
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		if dir := strings.TrimSpace(string(out)); dir != "" {
			return dir, nil
		}
	}
	if dir := os.Getenv("GOROOT"); dir != "" {
		return dir, nil
	}
	//lint:ignore SA1019 the toolchain's own root is the last resort when no go command runs
	if dir := runtime.GOROOT(); dir != "" {
		return dir, nil
	}
	return "", fmt.Errorf("cannot find the Go toolchain's GOROOT for the built-in corpus; pass --source instead")
}

// builtinDataset returns the directory of the built-in corpus prepared with the given vocab,
// preparing it into the user cache directory the first time.
func builtinDataset(ctx context.Context, vocab int, log io.Writer) (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	dir := filepath.Join(base, "herd", fmt.Sprintf("builtin-%s-vocab%d", builtinVersion, vocab))
	o := prepareOptions{builtin: true, out: dir, vocab: vocab, heldOut: 0.01,
		minBytes: 32, maxNonText: 0.1, sampleMB: 16, maxShardToks: 1 << 28}
	err = ensureDataset(ctx, o, "built-in corpus", log)
	if errors.Is(err, errNotEmpty) {
		// herd prepares into a staging directory and renames it into place, so only
		// an earlier version, interrupted, leaves a partial dataset here.
		return "", fmt.Errorf("preparing the built-in corpus in %s: %w; it is what remains of an interrupted preparation by an earlier herd: remove it", dir, err)
	}
	if err != nil {
		return "", fmt.Errorf("preparing the built-in corpus in %s: %w", dir, err)
	}
	return dir, nil
}

// ensureDataset prepares o.out unless it already holds a dataset. Processes
// that start at once each prepare their own copy; the first to finish renames
// it into place and the others use that one.
func ensureDataset(ctx context.Context, o prepareOptions, what string, log io.Writer) error {
	if _, err := shard.LoadManifest(o.out); err == nil {
		fmt.Fprintf(log, "data: %s, prepared in %s\n", what, o.out)
		return nil
	}
	_, err := prepareDataset(ctx, o, log)
	if errors.Is(err, errHoldsDataset) {
		if _, lerr := shard.LoadManifest(o.out); lerr == nil {
			fmt.Fprintf(log, "data: %s, prepared in %s by another process\n", what, o.out)
			return nil
		}
	}
	return err
}

// materializeBuiltin writes the built-in corpus under dir and returns its sources.
func materializeBuiltin(ctx context.Context, dir string) ([]shard.SourceSpec, error) {
	root, err := goroot()
	if err != nil {
		return nil, err
	}
	english, code := filepath.Join(dir, "english"), filepath.Join(dir, "code")
	for _, d := range []string{english, code} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	texts := []string{filepath.Join(root, "src", "testdata", "Isaac.Newton-Opticks.txt")}
	docs, _ := filepath.Glob(filepath.Join(root, "doc", "*.html"))
	mds, _ := filepath.Glob(filepath.Join(root, "doc", "*.md"))
	texts = append(append(texts, docs...), mds...)
	n := 0
	for _, p := range texts {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("built-in corpus: %w", err)
		}
		for _, chunk := range splitParagraphs(raw, 8<<10) {
			n++
			name := fmt.Sprintf("%s-%04d.txt", strings.TrimSuffix(filepath.Base(p), filepath.Ext(p)), n)
			if err := os.WriteFile(filepath.Join(english, name), chunk, 0o644); err != nil {
				return nil, err
			}
		}
	}
	src := filepath.Join(root, "src")
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			switch d.Name() {
			case "testdata", "vendor", "cmd":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		dst := filepath.Join(code, strings.ReplaceAll(rel, string(filepath.Separator), "__"))
		return os.WriteFile(dst, raw, 0o644)
	})
	if err != nil {
		return nil, fmt.Errorf("built-in corpus: %w", err)
	}
	return []shard.SourceSpec{{Name: "english", Path: english, Weight: 0.3}, {Name: "code", Path: code, Weight: 0.7}}, nil
}

// splitParagraphs cuts text into pieces of about size bytes, at blank lines where possible.
func splitParagraphs(text []byte, size int) [][]byte {
	var out [][]byte
	for len(text) > 0 {
		if len(text) <= size*3/2 {
			out = append(out, text)
			break
		}
		cut := bytes.Index(text[size:], []byte("\n\n"))
		if cut < 0 {
			out = append(out, text)
			break
		}
		cut += size + 2
		out = append(out, text[:cut])
		text = text[cut:]
	}
	return out
}
