//go:build !cuda

package main

import (
	"errors"

	"github.com/herd-llm/herd/kernels"
)

func openCUDA(backendOptions) (kernels.Backend, func(), error) { return nil, nil, cudaBuilt() }

func cudaBuilt() error {
	return errors.New("--backend cuda: this herd binary was built without GPU support; " +
		"build it with `go build -tags cuda ./cmd/herd` on a machine with CUDA 11.8 to 12.x headers (see the README's GPU section)")
}
