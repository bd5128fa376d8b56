package main

import (
	"flag"
	"fmt"

	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/kernels/cpu"
	"github.com/herd-llm/herd/model"
	"github.com/herd-llm/herd/worker"
)

// backendOptions selects and configures the compute backend of a command.
type backendOptions struct {
	name   string // cpu or cuda
	pureGo bool   // cpu: the pure-Go matmul even when BLAS is installed
	device int    // cuda: first device ordinal; rank r of a local group uses device+r
	rank   int
}

const collectiveUsage = "how data-parallel processes sum gradients: auto, ring (the TCP ring, through host memory), nccl (NCCL between GPUs, one GPU per process); auto is nccl when the cuda backend gives every process its own GPU, else ring"

const backendUsage = "compute backend: cpu (float32, any machine) or cuda (NVIDIA GPU, bf16 mixed precision; needs a binary built with -tags cuda)"

// openBackend returns the backend and a function that releases it.
func openBackend(o backendOptions) (kernels.Backend, func(), error) {
	switch o.name {
	case "cpu":
		return cpu.New[float32](cpu.Options{PureGo: o.pureGo}), func() {}, nil
	case "cuda":
		return openCUDA(o)
	}
	return nil, nil, fmt.Errorf("--backend = %q, allowed: cpu, cuda", o.name)
}

// checkCollective fails early for a --collective value the backend cannot use.
func checkCollective(kind, backend string) error {
	switch kind {
	case "auto", "ring":
		return nil
	case "nccl":
		if backend != "cuda" {
			return fmt.Errorf("--collective nccl needs --backend cuda")
		}
		return nil
	}
	return fmt.Errorf("--collective = %q, allowed: auto, ring, nccl", kind)
}

// checkBackend fails early, before any data is prepared or process started, for a backend
// name that is unknown or not built into this binary.
func checkBackend(name string) error {
	switch name {
	case "cpu":
		return nil
	case "cuda":
		return cudaBuilt()
	}
	return fmt.Errorf("--backend = %q, allowed: cpu, cuda", name)
}

// backendFlags registers --backend and --device on fs, for the commands that only run a model
// forward (sample, eval); train adds its own --pure-go and rank placement.
func backendFlags(fs *flag.FlagSet) func() backendOptions {
	name := fs.String("backend", "cpu", backendUsage)
	device := fs.Int("device", 0, "cuda: GPU ordinal")
	return func() backendOptions { return backendOptions{name: *name, device: *device} }
}

// loadModel opens the backend o names and loads the run's final weights into it; release
// frees the model, then the backend.
func loadModel(r *worker.Run, o backendOptions) (*model.Model, func(), error) {
	be, closeBackend, err := openBackend(o)
	if err != nil {
		return nil, nil, err
	}
	m, err := r.LoadModel(be)
	if err != nil {
		closeBackend()
		return nil, nil, err
	}
	return m, func() { m.Close(); closeBackend() }, nil
}
