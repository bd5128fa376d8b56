// Package checkpoint saves and loads model state. Today it holds the safetensors reader and
// writer that training runs use for their weights; sharded checkpoints on object storage
// build on it.
package checkpoint
