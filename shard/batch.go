package shard

import "fmt"

// Batch returns the global sequence indices that rank reads at step: the
// step's indices [step*globalBatch, (step+1)*globalBatch) cut into world
// contiguous runs, the first globalBatch%world ranks taking one more. The
// union over ranks is the same for every world size, so a run resumed at any
// step with any number of ranks continues the same stream.
func Batch(step, globalBatch, rank, world int) ([]int64, error) {
	switch {
	case step < 0:
		return nil, fmt.Errorf("%w: step %d, want >= 0", ErrBatch, step)
	case globalBatch < 1:
		return nil, fmt.Errorf("%w: global batch %d, want >= 1", ErrBatch, globalBatch)
	case world < 1:
		return nil, fmt.Errorf("%w: world size %d, want >= 1", ErrBatch, world)
	case rank < 0 || rank >= world:
		return nil, fmt.Errorf("%w: rank %d, want 0..%d for world size %d", ErrBatch, rank, world-1, world)
	}
	base, extra := globalBatch/world, globalBatch%world
	n := base
	if rank < extra {
		n++
	}
	start := int64(step)*int64(globalBatch) + int64(rank*base+min(rank, extra))
	idx := make([]int64, n)
	for j := range idx {
		idx[j] = start + int64(j)
	}
	return idx, nil
}
