//go:build cuda

package main

import (
	"fmt"

	"gorgonia.org/cu"

	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/kernels/cuda"
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
	be, err := cuda.New(cuda.Options{Device: (o.device + o.rank) % n})
	if err != nil {
		return nil, nil, fmt.Errorf("--backend cuda: %w", err)
	}
	return be, func() { be.Close() }, nil
}
