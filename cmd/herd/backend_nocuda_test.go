//go:build !cuda

package main

import (
	"bytes"
	"strings"
	"testing"
)

// A binary built without the cuda tag refuses --backend cuda up front, saying how to get one.
func TestTrainCUDAWithoutGPUBuild(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"train", "--out", t.TempDir() + "/run", "--backend", "cuda"}, &stdout, &stderr); code == 0 {
		t.Fatal("exit 0")
	}
	if want := "go build -tags cuda ./cmd/herd"; !strings.Contains(stderr.String(), want) {
		t.Fatalf("stderr %q, want it to mention %q", stderr.String(), want)
	}
}
