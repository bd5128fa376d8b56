package checkpoint_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/herd-llm/herd/checkpoint"
	"github.com/herd-llm/herd/checkpoint/objectstoretest"
)

func TestOpenStoreDirectory(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	for uri, root := range map[string]string{
		filepath.Join(dir, "abs"):           filepath.Join(dir, "abs"),
		"rel/path":                          filepath.Join(dir, "rel/path"),
		"./dot":                             filepath.Join(dir, "dot"),
		"file://" + filepath.Join(dir, "f"): filepath.Join(dir, "f"),
		"file://localhost" + dir + "/lh":    filepath.Join(dir, "lh"),
	} {
		s, prefix, err := checkpoint.OpenStore(context.Background(), uri, checkpoint.S3Config{})
		if err != nil {
			t.Fatalf("OpenStore(%q): %v", uri, err)
		}
		d, ok := s.(*checkpoint.DirStore)
		if !ok || prefix != "" {
			t.Fatalf("OpenStore(%q) = %T, prefix %q; want a DirStore and no prefix", uri, s, prefix)
		}
		if got, _ := filepath.EvalSymlinks(d.Root()); got != mustEval(t, root) {
			t.Errorf("OpenStore(%q) rooted at %s, want %s", uri, d.Root(), root)
		}
		objectstoretest.Put(t, s, "k", []byte("v"))
		if _, err := os.Stat(filepath.Join(root, "k")); err != nil {
			t.Errorf("OpenStore(%q): object not in %s: %v", uri, root, err)
		}
	}
}

func mustEval(t *testing.T, path string) string {
	t.Helper()
	p, err := filepath.EvalSymlinks(path)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestOpenStoreRejects(t *testing.T) {
	for _, uri := range []string{"", "gs://bucket/x", "http://host/x", "file://otherhost/x", "file:relative", "s3://", "s3:/bucket", "s3:bucket", "s3://bucket/a/../b", "s3://bucket/x?versionId=1", "hdfs:///x"} {
		_, _, err := checkpoint.OpenStore(context.Background(), uri, checkpoint.S3Config{})
		if err == nil {
			t.Errorf("OpenStore(%q) succeeded", uri)
			continue
		}
		if uri != "" && !strings.Contains(err.Error(), uri) {
			t.Errorf("OpenStore(%q) = %v: error does not name the URI", uri, err)
		}
	}
	_, _, err := checkpoint.OpenStore(context.Background(), "gs://bucket/x", checkpoint.S3Config{})
	if !errors.Is(err, checkpoint.ErrUnknownScheme) {
		t.Errorf("OpenStore(gs://...) = %v, want ErrUnknownScheme", err)
	}
}

func TestOpenStoreS3(t *testing.T) {
	gw := objectstoretest.StartVersityGW(t)
	cfg := gw.Config("")
	cfg.Bucket = "ignored-for-the-uri"
	s, prefix, err := checkpoint.OpenStore(context.Background(), "s3://"+gw.Bucket+"/runs/llama-7b/", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.(*checkpoint.S3Store); !ok || prefix != "runs/llama-7b" {
		t.Fatalf("OpenStore(s3://...) = %T, prefix %q; want an S3Store and prefix runs/llama-7b", s, prefix)
	}
	objectstoretest.Put(t, s, prefix+"/step-1/manifest.json", []byte("{}"))
	plain := newS3Store(t, gw.Config(""))
	if got := objectstoretest.Get(t, plain, "runs/llama-7b/step-1/manifest.json", 0, -1); string(got) != "{}" {
		t.Fatalf("object not at the URI's prefix: %q", got)
	}
	if _, _, err := checkpoint.OpenStore(context.Background(), "s3://missing-bucket/x", gw.Config("")); !errors.Is(err, checkpoint.ErrBucketNotFound) {
		t.Errorf("OpenStore(s3://missing-bucket) = %v, want ErrBucketNotFound", err)
	}
}
