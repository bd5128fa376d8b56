package cuda

import "fmt"

// Size classes of the caching allocator. Small requests round up to a power of two between
// minBlock and smallLimit; larger ones round up to a multiple of largeStep. A freed block is
// reused only for a request of the same class, so a class wastes at most half of a small block
// and less than largeStep of a large one.
const (
	minBlock   = 256     // smallest block; the driver aligns allocations to 256 bytes anyway
	smallLimit = 1 << 20 // largest power-of-two class (1 MiB)
	largeStep  = 2 << 20 // granularity above smallLimit (2 MiB)
)

// sizeClass returns the number of bytes actually allocated for a request of n bytes.
// A request of 0 bytes gets the smallest block so that every allocation has a distinct address.
func sizeClass(n int64) (int64, error) {
	switch {
	case n < 0:
		return 0, fmt.Errorf("%w: negative size %d", ErrBadSize, n)
	case n <= minBlock:
		return minBlock, nil
	case n <= smallLimit:
		c := int64(minBlock)
		for c < n {
			c <<= 1
		}
		return c, nil
	}
	const maxBytes = 1 << 50 // guards the rounding below against overflow
	if n > maxBytes {
		return 0, fmt.Errorf("%w: %d bytes is more than any device holds", ErrBadSize, n)
	}
	return (n + largeStep - 1) / largeStep * largeStep, nil
}
