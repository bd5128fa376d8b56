// Package plan predicts what a training run needs and what it costs before it starts: the
// memory each GPU holds (parameters, gradients, optimizer state, activations, communication
// buffers, a reserve), the time of an optimizer step split into compute, exposed
// communication and overhead, tokens/s/GPU, MFU, GPU-hours and days for a token budget.
//
// Everything here is a pure function of a Config: a model (model.Config), a hardware entry
// (GPU and Fabric, from a small table that a YAML file can extend), a parallel layout (data
// parallelism with ZeRO stage 0-3, Megatron-style tensor parallelism inside a node), a batch
// and a set of stated Assumptions. The figures are predictions from an analytic model, not
// measurements; Calibrate fits the model to a measured run.
//
// Symbols: W data-parallel ranks (dp), t tensor-parallel size (tp), S sequences per step,
// T sequence length, B sequences per micro-batch, k micro-batches per step, N parameters.
package plan
