package hf

import "errors"

// Sentinel errors. Every error about the contents of an exported or imported directory
// wraps one of them, and its message names the file and the key or tensor at fault.
var (
	// ErrFormat reports a file that is malformed or disagrees with another file of the
	// same directory: bad JSON, a missing key or tensor, a shape that does not match
	// config.json, a truncated safetensors file.
	ErrFormat = errors.New("hf: malformed model directory")
	// ErrUnsupported reports a well-formed Hugging Face model that herd cannot represent:
	// grouped-query attention, tied embeddings, biases, another activation, RoPE scaling,
	// or a tensor dtype other than F32, BF16 and F16.
	ErrUnsupported = errors.New("hf: unsupported model")
	// ErrMemory reports an import refused before it allocated anything of the model's size,
	// because the memory it needs exceeds the memory available.
	ErrMemory = errors.New("hf: not enough memory")
)
