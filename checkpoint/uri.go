package checkpoint

import (
	"context"
	"fmt"
	"net/url"
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
	u, err := url.Parse(uri)
	if err != nil || u.Scheme == "" || len(u.Scheme) == 1 { // one letter: a Windows drive
		return openDir(uri)
	}
	switch u.Scheme {
	case "file":
		if u.Opaque != "" || (u.Host != "" && u.Host != "localhost") || u.Path == "" {
			return nil, "", fmt.Errorf("%w %q: want file:///absolute/path", ErrUnknownScheme, uri)
		}
		return openDir(u.Path)
	case "s3":
		return openS3(ctx, uri, u, s3)
	}
	return nil, "", fmt.Errorf("%w %q: scheme %q (want file://, s3:// or a directory path)", ErrUnknownScheme, uri, u.Scheme)
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
