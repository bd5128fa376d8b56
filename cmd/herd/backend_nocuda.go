//go:build !cuda

package main

import (
	"context"
	"errors"

	"github.com/herd-llm/herd/collective"
	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/worker"
)

// deviceReducer returns nil: without CUDA every backend's gradients are summed over the ring
// through host memory.
func deviceReducer(context.Context, string, collective.Communicator, kernels.Backend, func(string)) (worker.GradReducer, func(), error) {
	return nil, func() {}, nil
}

func openCUDA(backendOptions) (kernels.Backend, func(), error) { return nil, nil, cudaBuilt() }

func cudaBuilt() error {
	return errors.New("--backend cuda: this herd binary was built without GPU support; " +
		"build it with `go build -tags cuda ./cmd/herd` on a machine with CUDA 11.8 to 12.x headers (see the README's GPU section)")
}

// deviceCount is the number of GPUs the backend can use: none without the cuda build.
func deviceCount(string) int { return 0 }
