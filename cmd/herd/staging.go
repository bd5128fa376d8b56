package main

import (
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/herd-llm/herd/shard"
)

// A command that writes a directory of files (herd prepare a dataset, herd export a model)
// writes it in a staging directory beside --out, on the same file system, and renames it
// into place as the last step, so --out is either absent (or the empty directory it was) or
// holds the whole result. The staging directory is hidden and names the command and the
// process that owns it:
//
//	.NAME.WHAT-PID-HOST-RANDOM
//
// where HOST is a hash of the host name. A run that dies without cleaning up
// (killed, power cut) leaves it behind; the next preparation of the same
// --out removes it once no process with that id runs on this host.

// errHoldsDataset marks a --out that holds a prepared dataset; errNotEmpty one
// that holds something else.
var (
	errHoldsDataset = errors.New("already holds a dataset")
	errNotEmpty     = errors.New("is not empty")
)

// checkOut refuses an --out that is anything but absent or an empty
// directory, saying what is there.
func checkOut(out string) error {
	fi, err := os.Lstat(out)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("--out %s: %w", out, err)
	case fi.Mode()&fs.ModeSymlink != 0:
		dst, _ := os.Readlink(out)
		return fmt.Errorf("--out %s is a symbolic link to %s; give a new directory, or the link's target", out, dst)
	case !fi.IsDir():
		return fmt.Errorf("--out %s is a file (%s), not a directory; give a new or empty directory", out, humanBytes(fi.Size()))
	}
	entries, err := os.ReadDir(out)
	if err != nil {
		return fmt.Errorf("--out %s: %w", out, err)
	}
	if len(entries) == 0 {
		return nil
	}
	names := make([]string, 0, 3)
	for _, e := range entries[:min(len(entries), 3)] {
		names = append(names, e.Name())
	}
	what := strings.Join(names, ", ")
	if more := len(entries) - len(names); more > 0 {
		what += fmt.Sprintf(" and %d more", more)
	}
	if _, err := os.Stat(filepath.Join(out, shard.ManifestName)); err == nil {
		return fmt.Errorf("--out %s %w (%s); nothing was changed: give a new directory, or remove this one to prepare it again", out, errHoldsDataset, what)
	}
	return fmt.Errorf("--out %s %w (%s); nothing was changed: give a new or empty directory", out, errNotEmpty, what)
}

// staging is a directory a command's output is written into before it is renamed to out.
type staging struct {
	dir, out, what string
	committed      bool
}

// newStaging removes the staging directories that dead runs of the command what ("prepare",
// "export") left for out, and makes a new one.
func newStaging(out, what string, log io.Writer) (*staging, error) {
	parent, base := filepath.Split(filepath.Clean(out))
	if parent == "" {
		parent = "."
	}
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, fmt.Errorf("--out %s: %w", out, err)
	}
	host := hostTag()
	removeDeadStaging(parent, base, what, host, log)
	dir, err := os.MkdirTemp(parent, fmt.Sprintf("%s%d-%s-*", stagingPrefix(base, what), os.Getpid(), host))
	if err != nil {
		return nil, fmt.Errorf("--out %s: staging directory: %w", out, err)
	}
	mode := fs.FileMode(0o755)
	if fi, err := os.Stat(out); err == nil {
		mode = fi.Mode().Perm() // the empty directory it replaces
	}
	if err := os.Chmod(dir, mode); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("--out %s: staging directory: %w", out, err)
	}
	return &staging{dir: dir, out: out, what: what}, nil
}

func stagingPrefix(base, what string) string { return "." + base + "." + what + "-" }

// hostTag names this host in staging directory names: 8 hex digits of a hash
// of the host name, or "nohost" when it is unknown.
func hostTag() string {
	name, err := os.Hostname()
	if err != nil || name == "" {
		return "nohost"
	}
	h := fnv.New32a()
	h.Write([]byte(name))
	return fmt.Sprintf("%08x", h.Sum32())
}

// removeDeadStaging removes the staging directories for base in parent whose
// owner ran on this host and no longer runs. Anything it cannot attribute is left.
func removeDeadStaging(parent, base, what, host string, log io.Writer) {
	entries, err := os.ReadDir(parent)
	if err != nil || host == "nohost" {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), stagingPrefix(base, what))
		if !ok || !e.IsDir() {
			continue
		}
		f := strings.Split(rest, "-")
		pid, err := strconv.Atoi(f[0])
		if len(f) != 3 || err != nil || pid <= 0 || f[1] != host || pid == os.Getpid() || processRuns(pid) {
			continue
		}
		p := filepath.Join(parent, e.Name())
		if err := os.RemoveAll(p); err == nil {
			fmt.Fprintf(log, "%s: removed %s, left by an earlier run (process %d, no longer running)\n", what, p, pid)
		}
	}
}

// processRuns reports whether a process with this id runs on this host. A
// process that exists but belongs to someone else counts as running.
func processRuns(pid int) bool {
	return !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// commit renames the staging directory to out. When out has meanwhile become
// anything but an empty directory it fails, leaving out as it is, with
// checkOut's description of what is there.
// It calls rename(2) itself: os.Rename refuses to replace a directory, even an
// empty one, and removing that first would open a window for another process.
func (s *staging) commit() error {
	if err := syscall.Rename(s.dir, s.out); err != nil {
		err = &os.LinkError{Op: "rename", Old: s.dir, New: s.out, Err: err}
		if _, serr := os.Lstat(s.out); serr == nil {
			if cerr := checkOut(s.out); cerr != nil {
				return fmt.Errorf("another process filled --out meanwhile; this %s is discarded: %w", s.what, cerr)
			}
		}
		return fmt.Errorf("--out %s: moving the result into place: %w", s.out, err)
	}
	s.committed = true
	if err := syncPath(filepath.Dir(s.out)); err != nil {
		return fmt.Errorf("--out %s: the result is in place, but flushing its parent directory failed: %w", s.out, err)
	}
	return nil
}

// discard removes the staging directory unless it was committed.
func (s *staging) discard() {
	if !s.committed {
		os.RemoveAll(s.dir)
	}
}

// syncPath flushes a file, or a directory's entries (a rename), to stable storage.
func syncPath(path string) error {
	d, err := os.Open(path)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
