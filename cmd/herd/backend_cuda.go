//go:build cuda

package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"gorgonia.org/cu"

	"github.com/herd-llm/herd/collective"
	"github.com/herd-llm/herd/collective/nccl"
	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/kernels/cuda"
	"github.com/herd-llm/herd/worker"
)

func cudaBuilt() error { return nil }

// openCUDA opens device (device + rank) mod the device count, so that the processes of a
// local data-parallel group spread over the machine's GPUs, or share one when there is one.
func openCUDA(o backendOptions) (kernels.Backend, func(), error) {
	n, err := cu.NumDevices()
	if err != nil || n == 0 {
		return nil, nil, fmt.Errorf("--backend cuda: no CUDA device (%d devices, %v)", n, err)
	}
	if o.device < 0 || o.device >= n {
		return nil, nil, fmt.Errorf("--device = %d, this machine has devices 0 to %d", o.device, n-1)
	}
	// The start-up report (libraries with their paths and versions, the code kind) goes to
	// stderr, so that sample's stdout stays the generated text.
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	be, err := cuda.New(cuda.Options{Device: (o.device + o.rank) % n, Logf: logf})
	if err != nil {
		return nil, nil, fmt.Errorf("--backend cuda: %w", err)
	}
	return be, func() { be.Close() }, nil
}

// stagedElems is the pinned staging buffer of the ring reducer: 64 MiB of float32.
const stagedElems = 16 << 20

// deviceReducer returns the gradient reducer of a data-parallel rank on the CUDA backend:
// NCCL when kind is nccl, or auto and this machine has a GPU per rank; otherwise the TCP ring
// staged through pinned host memory, which also lets several ranks share one GPU. Every rank
// calls it at the same point, after the ring is up: NCCL's set-up runs over the ring. For
// other backends it returns nil (the host path).
func deviceReducer(ctx context.Context, kind string, ring collective.Communicator, be kernels.Backend, logf func(string)) (worker.GradReducer, func(), error) {
	cb, ok := be.(*cuda.Backend)
	if !ok {
		return nil, func() {}, nil
	}
	if kind == "auto" {
		kind = "ring"
		if n, err := cu.NumDevices(); err == nil && n >= ring.Size() {
			kind = "nccl"
		}
	}
	var comm nccl.Device
	switch kind {
	case "nccl":
		c, err := nccl.Init(ctx, ring, cb.Device())
		if err != nil {
			return nil, nil, fmt.Errorf("--collective nccl: %w", err)
		}
		path, _ := nccl.LibraryPath()
		logf(fmt.Sprintf("gradients: NCCL %s (%s), %d ranks, one GPU each", nccl.VersionString(c.Version()), path, c.Size()))
		comm = c
	default:
		s, err := nccl.NewStaged(ring, cb.Device(), stagedElems)
		if err != nil {
			return nil, nil, fmt.Errorf("--collective ring: %w", err)
		}
		logf(fmt.Sprintf("gradients: TCP ring staged through %d MiB of pinned memory, %d ranks", 4*stagedElems>>20, s.Size()))
		comm = s
	}
	red, err := nccl.NewGradReducer(ctx, cb, comm)
	if err != nil {
		return nil, nil, errors.Join(err, comm.Close())
	}
	return red, func() { red.Close(); comm.Close() }, nil
}

// deviceCount is the number of GPUs the backend can use.
func deviceCount(backend string) int {
	if backend != "cuda" {
		return 0
	}
	n, err := cu.NumDevices()
	if err != nil {
		return 0
	}
	return n
}
