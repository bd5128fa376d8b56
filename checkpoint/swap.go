package checkpoint

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/minio/minio-go/v7"
)

// ErrConflict is returned by Swapper.Swap when the object changed since it was read.
var ErrConflict = errors.New("checkpoint: object changed concurrently")

// Swapper is implemented by stores that can replace an object only if nobody changed it since
// it was read: the compare-and-swap that a lease on a checkpoint location needs. DirStore and
// MemStore implement it with a lock; S3Store with conditional writes (If-Match and
// If-None-Match, which AWS S3, MinIO and versitygw honour).
type Swapper interface {
	// ReadVersion returns the bytes of key and an opaque tag of this version of the object,
	// or an error wrapping ErrNotFound.
	ReadVersion(ctx context.Context, key string) (data []byte, version string, err error)

	// Swap replaces key with data if its current version is old ("" means that key must not
	// exist), and returns the new version. If key changed meanwhile it fails with an error
	// wrapping ErrConflict and changes nothing.
	Swap(ctx context.Context, key, old string, data []byte) (version string, err error)
}

var (
	_ Swapper = (*DirStore)(nil)
	_ Swapper = (*MemStore)(nil)
	_ Swapper = (*S3Store)(nil)
)

// contentVersion is the version tag of the stores that have none of their own.
func contentVersion(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:16])
}

// ReadVersion implements Swapper.
func (d *DirStore) ReadVersion(ctx context.Context, key string) ([]byte, string, error) {
	data, err := getAll(ctx, d, key)
	if err != nil {
		return nil, "", err
	}
	return data, contentVersion(data), nil
}

// Swap implements Swapper. Swaps, also those of other processes on the same file system,
// are serialized by flock(2) on a lock file in the store's root, which List never shows.
func (d *DirStore) Swap(ctx context.Context, key, old string, data []byte) (string, error) {
	if err := CheckKey(key); err != nil {
		return "", err
	}
	f, err := os.OpenFile(filepath.Join(d.root, tmpPrefix+"swap.lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return "", fmt.Errorf("checkpoint: swap %q: %w", key, err)
	}
	defer f.Close()
	if err := flockCtx(ctx, f); err != nil {
		return "", fmt.Errorf("checkpoint: swap %q: lock: %w", key, err)
	}
	defer funlock(f)
	cur, ver, err := d.ReadVersion(ctx, key)
	switch {
	case errors.Is(err, ErrNotFound):
		ver = ""
	case err != nil:
		return "", err
	}
	if ver != old {
		return "", fmt.Errorf("%w: %q is at version %q, expected %q (%d bytes now)", ErrConflict, key, ver, old, len(cur))
	}
	if err := d.Put(ctx, key, bytes.NewReader(data), int64(len(data))); err != nil {
		return "", err
	}
	return contentVersion(data), nil
}

// ReadVersion implements Swapper.
func (m *MemStore) ReadVersion(ctx context.Context, key string) ([]byte, string, error) {
	data, err := getAll(ctx, m, key)
	if err != nil {
		return nil, "", err
	}
	return data, contentVersion(data), nil
}

// Swap implements Swapper.
func (m *MemStore) Swap(ctx context.Context, key, old string, data []byte) (string, error) {
	if err := CheckKey(key); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("checkpoint: swap %q: %w", key, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	ver := ""
	if cur, ok := m.objects[key]; ok {
		ver = contentVersion(cur)
	}
	if ver != old {
		return "", fmt.Errorf("%w: %q is at version %q, expected %q", ErrConflict, key, ver, old)
	}
	m.objects[key] = bytes.Clone(data)
	return contentVersion(data), nil
}

// ReadVersion implements Swapper; the version is the object's ETag.
func (s *S3Store) ReadVersion(ctx context.Context, key string) ([]byte, string, error) {
	if err := CheckKey(key); err != nil {
		return nil, "", err
	}
	body, info, _, err := s.core.GetObject(ctx, s.bucket, s.prefix+key, minio.GetObjectOptions{})
	if err != nil {
		return nil, "", s.wrap("get", key, err)
	}
	defer body.Close()
	data, err := io.ReadAll(body)
	if err != nil {
		return nil, "", s.wrap("get", key, err)
	}
	return data, info.ETag, nil
}

// Swap implements Swapper with a conditional PUT: If-Match the old ETag, or If-None-Match *
// for an object that must not exist yet. A server that refuses the condition answers 412
// (or 409 for two conditional writes racing), which becomes ErrConflict.
func (s *S3Store) Swap(ctx context.Context, key, old string, data []byte) (string, error) {
	if err := CheckKey(key); err != nil {
		return "", err
	}
	opts := minio.PutObjectOptions{ContentType: "application/octet-stream"}
	if old == "" {
		opts.SetMatchETagExcept("*")
	} else {
		opts.SetMatchETag(old)
	}
	info, err := s.core.Client.PutObject(ctx, s.bucket, s.prefix+key, bytes.NewReader(data), int64(len(data)), opts)
	if err != nil {
		resp := minio.ToErrorResponse(err)
		if resp.StatusCode == 412 || resp.StatusCode == 409 || resp.Code == "PreconditionFailed" || resp.Code == "ConditionalRequestConflict" {
			return "", fmt.Errorf("%w: %s: %s", ErrConflict, s.where(key), resp.Code)
		}
		return "", s.wrap("put", key, err)
	}
	return info.ETag, nil
}
