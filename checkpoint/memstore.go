package checkpoint

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
)

// MemStore is an ObjectStore held in memory, safe for concurrent use. Tests and in-process
// clusters use it where a real store would only add I/O; it follows the same contract as
// DirStore and S3Store, checked by the same suite.
type MemStore struct {
	mu      sync.RWMutex
	objects map[string][]byte // never modified after insertion, so readers share them
}

var _ ObjectStore = (*MemStore)(nil)

// NewMemStore returns an empty store.
func NewMemStore() *MemStore {
	return &MemStore{objects: map[string][]byte{}}
}

// Put implements ObjectStore. The bytes are read in full before the object is replaced.
func (m *MemStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("checkpoint: put %q: %w", key, err)
	}
	data, _, err := readSized(ctx, key, r, size, 0)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.objects[key] = data
	return nil
}

// Get implements ObjectStore.
func (m *MemStore) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	if err := CheckKey(key); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("checkpoint: get %q: %w", key, err)
	}
	m.mu.RLock()
	data, ok := m.objects[key]
	m.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: %q in memory store", ErrNotFound, key)
	}
	length, err := resolveRange(key, off, n, int64(len(data)))
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(data[off : off+length])), nil
}

// List implements ObjectStore.
func (m *MemStore) List(ctx context.Context, prefix string) ([]ObjectInfo, error) {
	if err := checkPrefix(prefix); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("checkpoint: list %q: %w", prefix, err)
	}
	m.mu.RLock()
	var out []ObjectInfo
	for k, v := range m.objects {
		if strings.HasPrefix(k, prefix) {
			out = append(out, ObjectInfo{Key: k, Size: int64(len(v))})
		}
	}
	m.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Delete implements ObjectStore.
func (m *MemStore) Delete(ctx context.Context, key string) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("checkpoint: delete %q: %w", key, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.objects, key)
	return nil
}

// String names the store for messages.
func (m *MemStore) String() string { return "mem://" }
