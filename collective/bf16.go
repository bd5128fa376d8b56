package collective

import (
	"context"
	"math"
)

// BF16ToFloat32 widens a bfloat16 (the upper half of a float32) to float32; it is exact.
func BF16ToFloat32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// Float32ToBF16 rounds f to the nearest bfloat16, ties to even. NaNs stay NaN (quiet) and
// infinities stay infinite; finite values that round past the largest bfloat16 become
// infinities, as IEEE rounding demands.
func Float32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x0040
	}
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}

// BF16AllReducer is implemented by communicators with a native bfloat16 all-reduce, such as
// NCCL's. Implementations must accumulate in float32 and leave identical bits on every rank.
type BF16AllReducer interface {
	// AllReduceBF16 is AllReduce for buf read as bfloat16 values.
	AllReduceBF16(ctx context.Context, buf []uint16, op Op) error
}

// AllReduceBF16 all-reduces buf, read as bfloat16 values, with float32 accumulation. It uses
// c's native path when c implements BF16AllReducer; otherwise it widens buf into scratch
// (allocated when shorter than buf), all-reduces in float32 and rounds the result back once,
// so every rank ends with the same bits. Only the final rounding is done in bfloat16.
func AllReduceBF16(ctx context.Context, c Communicator, buf []uint16, op Op, scratch []float32) error {
	if n, ok := c.(BF16AllReducer); ok {
		return n.AllReduceBF16(ctx, buf, op)
	}
	if cap(scratch) < len(buf) {
		scratch = make([]float32, len(buf))
	}
	f := scratch[:len(buf)]
	for i, h := range buf {
		f[i] = BF16ToFloat32(h)
	}
	if err := c.AllReduce(ctx, f, op); err != nil {
		return err
	}
	for i, v := range f {
		buf[i] = Float32ToBF16(v)
	}
	return nil
}
