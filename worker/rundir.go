package worker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/herd-llm/herd/checkpoint"
)

// LockName is the lock file of a run directory.
const LockName = ".lock"

// ErrLocked is wrapped by the refusal to write a run directory another process writes.
var ErrLocked = errors.New("worker: run directory in use")

// runLock is the lock of a run directory: one writer at a time. It is flock(2) on DIR/.lock,
// which the kernel releases when the holder dies however it dies, so a crashed run never
// keeps it. The file names the holder for the refusal message.
type runLock struct {
	f       *os.File
	created bool // the directory did not exist before
	dir     string
}

// lockRunDir takes the lock of dir, creating dir if needed, or fails with an error wrapping
// ErrLocked that names the holder.
func lockRunDir(dir, what string) (*runLock, error) {
	created := false
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		created = true
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, LockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := flockTry(f); err != nil {
		defer f.Close()
		var h checkpoint.Holder
		if raw, rerr := os.ReadFile(path); rerr == nil && json.Unmarshal(bytes.TrimSpace(raw), &h) == nil && h.PID != 0 {
			return nil, fmt.Errorf("%w: --out %s is being written by %v; stop that run first, or choose another --out", ErrLocked, dir, h)
		}
		return nil, fmt.Errorf("%w: --out %s is locked by another process (%v)", ErrLocked, dir, err)
	}
	h := checkpoint.ThisProcess(what)
	h.Acquired = time.Now()
	raw, _ := json.Marshal(h)
	if err := f.Truncate(0); err == nil {
		f.WriteAt(append(raw, '\n'), 0)
	}
	return &runLock{f: f, created: created, dir: dir}, nil
}

// release unlocks; with forget, a directory the lock created (which then holds nothing but
// the lock file) is removed again.
func (l *runLock) release(forget bool) {
	if l == nil {
		return
	}
	if forget && l.created {
		os.Remove(filepath.Join(l.dir, LockName))
		os.Remove(l.dir)
	}
	l.f.Close() // closing the last descriptor drops the flock
}
