package checkpoint_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/herd-llm/herd/checkpoint"
	"github.com/herd-llm/herd/checkpoint/objectstoretest"
)

// tempFiles returns the in-progress files under root.
func tempFiles(t *testing.T, root string) []string {
	t.Helper()
	var found []string
	filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".herd-tmp-") {
			found = append(found, path)
		}
		return err
	})
	return found
}

func TestDirStoreLeavesNoTempFiles(t *testing.T) {
	s := newDirStore(t)
	objectstoretest.Put(t, s, "a/b", []byte("data"))
	err := s.Put(context.Background(), "a/c", objectstoretest.PatternReader(1, 10), 11)
	if !errors.Is(err, checkpoint.ErrSizeMismatch) {
		t.Fatalf("Put with a short reader = %v", err)
	}
	if tmp := tempFiles(t, s.Root()); len(tmp) != 0 {
		t.Fatalf("temporary files left: %v", tmp)
	}
}

// Files a crash left half-written are never objects.
func TestDirStoreIgnoresCrashLeftovers(t *testing.T) {
	s := newDirStore(t)
	objectstoretest.Put(t, s, "step-1/rank-0", []byte("whole"))
	if err := os.WriteFile(filepath.Join(s.Root(), "step-1", ".herd-tmp-123456"), []byte("half"), 0o644); err != nil {
		t.Fatal(err)
	}
	infos := objectstoretest.List(t, s, "")
	if len(infos) != 1 || infos[0].Key != "step-1/rank-0" {
		t.Fatalf("List = %v, want only step-1/rank-0", infos)
	}
}

// Deleting the last object below a directory removes the directory, so that the name can
// become an object.
func TestDirStoreDeletePrunesDirectories(t *testing.T) {
	s := newDirStore(t)
	objectstoretest.Put(t, s, "d/e/f", []byte("x"))
	if err := s.Delete(context.Background(), "d/e/f"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.Root(), "d")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("directory d survived the delete of its last object: %v", err)
	}
	objectstoretest.Put(t, s, "d", []byte("now a file"))
	if _, err := os.Stat(s.Root()); err != nil {
		t.Fatalf("root removed: %v", err)
	}
}

func TestDirStoreFileInTheWay(t *testing.T) {
	s := newDirStore(t)
	objectstoretest.Put(t, s, "a", []byte("x"))
	err := s.Put(context.Background(), "a/b", strings.NewReader("y"), 1)
	if err == nil || !strings.Contains(err.Error(), `"a/b"`) {
		t.Fatalf("Put below a file = %v, want an error naming the key", err)
	}
	objectstoretest.WantNotFound(t, s, "a/b")
}

func TestDirStoreFilePermissions(t *testing.T) {
	s := newDirStore(t)
	objectstoretest.Put(t, s, "k", []byte("x"))
	fi, err := os.Stat(filepath.Join(s.Root(), "k"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("object mode %v, want 0644", fi.Mode().Perm())
	}
}
