package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strings"
)

// OpenStore opens the store a URI names and returns it with the key prefix under which the
// URI's objects live (keys are then prefix + "/" + name, or name alone when prefix is "").
//
//	file:///abs/path, /abs/path, rel/path   DirStore rooted at the path; prefix ""
//	s3://bucket/some/prefix                 S3Store over bucket; prefix "some/prefix"
//
// For s3 URIs, s3 supplies endpoint, region, credentials and tuning; its Bucket is replaced
// by the URI's, and its Prefix, if any, still applies beneath the returned prefix. Other
// schemes fail with ErrUnknownScheme, naming the URI.
func OpenStore(ctx context.Context, uri string, s3 S3Config) (ObjectStore, string, error) {
	if uri == "" {
		return nil, "", fmt.Errorf("%w: empty URI", ErrUnknownScheme)
	}
	dir, isDir, err := dirPath(uri)
	switch {
	case err != nil:
		return nil, "", err
	case isDir:
		return openDir(dir)
	}
	u, _ := url.Parse(uri)
	return openS3(ctx, uri, u, s3)
}

// dirPath returns the directory a URI names, or isDir false for an s3:// URI.
func dirPath(uri string) (dir string, isDir bool, err error) {
	u, err := url.Parse(uri)
	if err != nil || u.Scheme == "" || len(u.Scheme) == 1 { // one letter: a Windows drive
		return uri, true, nil
	}
	switch u.Scheme {
	case "file":
		if u.Opaque != "" || (u.Host != "" && u.Host != "localhost") || u.Path == "" {
			return "", false, fmt.Errorf("%w %q: want file:///absolute/path", ErrUnknownScheme, uri)
		}
		return u.Path, true, nil
	case "s3":
		return "", false, nil
	}
	return "", false, fmt.Errorf("%w %q: scheme %q (want file://, s3:// or a directory path)", ErrUnknownScheme, uri, u.Scheme)
}

// StoreOptions configures OpenLocation.
type StoreOptions struct {
	// S3 supplies endpoint, region, credentials and tuning for s3:// URIs (see OpenStore).
	S3 S3Config
	// Retry is applied to every operation (see WithRetries).
	Retry RetryPolicy
	// Existing refuses a directory that does not exist instead of creating it: for
	// locations that are only read (a checkpoint to export or to resume from).
	Existing bool
}

// OpenLocation opens the checkpoint location a URI names (see OpenStore for the forms) with
// o.Retry applied to its store.
func OpenLocation(ctx context.Context, uri string, o StoreOptions) (Location, error) {
	if err := o.Retry.Validate(); err != nil {
		return Location{}, err
	}
	if dir, isDir, err := dirPath(uri); err == nil && isDir && o.Existing && dir != "" {
		if fi, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
			return Location{}, fmt.Errorf("%w in %s: it does not exist", ErrNoCommit, dir)
		} else if err != nil {
			return Location{}, fmt.Errorf("%w in %s: %w", ErrNoCommit, dir, err)
		} else if !fi.IsDir() {
			return Location{}, fmt.Errorf("%w in %s: it is not a directory", ErrNoCommit, dir)
		}
	}
	st, prefix, err := OpenStore(ctx, uri, o.S3)
	if err != nil {
		return Location{}, err
	}
	return Location{Store: WithRetries(st, o.Retry), Prefix: prefix}, nil
}

func openDir(path string) (ObjectStore, string, error) {
	d, err := NewDirStore(path)
	if err != nil {
		return nil, "", err
	}
	return d, "", nil
}

func openS3(ctx context.Context, uri string, u *url.URL, cfg S3Config) (ObjectStore, string, error) {
	if u.Opaque != "" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, "", fmt.Errorf("%w %q: want s3://bucket[/prefix]", ErrUnknownScheme, uri)
	}
	prefix := strings.Trim(u.Path, "/")
	if prefix != "" {
		if err := CheckKey(prefix); err != nil {
			return nil, "", fmt.Errorf("checkpoint: store URI %q: %w", uri, err)
		}
	}
	cfg.Bucket = u.Host
	s, err := NewS3Store(ctx, cfg)
	if err != nil {
		return nil, "", fmt.Errorf("checkpoint: store URI %q: %w", uri, err)
	}
	return s, prefix, nil
}
