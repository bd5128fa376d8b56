package checkpoint_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/herd-llm/herd/checkpoint"
	"github.com/herd-llm/herd/checkpoint/objectstoretest"
)

func TestMemStoreConformance(t *testing.T) {
	objectstoretest.RunAll(t, func(t *testing.T) checkpoint.ObjectStore { return checkpoint.NewMemStore() })
}

func TestDirStoreConformance(t *testing.T) {
	objectstoretest.RunAll(t, func(t *testing.T) checkpoint.ObjectStore { return newDirStore(t) })
}

func newDirStore(t testing.TB) *checkpoint.DirStore {
	t.Helper()
	s, err := checkpoint.NewDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCheckKey(t *testing.T) {
	for _, key := range []string{"a", "a/b", "job/step-00000001/rank-00000-of-00002.bin", ".hidden/x", "a..b", "a/.../b", "ünïcode/ключ"} {
		if err := checkpoint.CheckKey(key); err != nil {
			t.Errorf("CheckKey(%q) = %v, want nil", key, err)
		}
	}
	for _, key := range []string{"", "/a", "a/", "a//b", "..", "a/..", "./a", "a/./b", "\xff", "a\x00", ".herd-tmp-x", strings.Repeat("a", 1025)} {
		err := checkpoint.CheckKey(key)
		if !errors.Is(err, checkpoint.ErrInvalidKey) {
			t.Errorf("CheckKey(%q) = %v, want ErrInvalidKey", key, err)
		}
	}
}

// The retrying wrapper passes the whole suite too, Swapper included.
func TestRetryingStoreConformance(t *testing.T) {
	objectstoretest.RunAll(t, func(t *testing.T) checkpoint.ObjectStore {
		return checkpoint.WithRetries(newDirStore(t), checkpoint.RetryPolicy{})
	})
}
