package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// checkEmptyOrAbsent refuses an output directory that holds anything: commands that write
// a directory of files never mix them with files already there.
func checkEmptyOrAbsent(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case len(entries) > 0:
		var names []string
		for _, e := range entries[:min(len(entries), 3)] {
			names = append(names, e.Name())
		}
		more := ""
		if len(entries) > 3 {
			more = fmt.Sprintf(" and %d more", len(entries)-3)
		}
		return fmt.Errorf("%s is not empty (it holds %s%s): remove it or choose another directory", dir, strings.Join(names, ", "), more)
	}
	return nil
}

// commitDir builds an output directory in a hidden temporary directory beside dir and
// renames it into place once write has succeeded, so dir appears whole or not at all; on
// failure the temporary directory is removed. dir must be absent or empty.
func commitDir(dir, what string, write func(tmp string) error) error {
	if err := checkEmptyOrAbsent(dir); err != nil {
		return err
	}
	parent := filepath.Dir(filepath.Clean(dir))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+"."+what+"-")
	if err != nil {
		return err
	}
	if err := write(tmp); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	os.Remove(dir) // an empty directory gives way (os.Rename refuses to replace one)
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("%s: %w", dir, err)
	}
	return nil
}
