// Package kernels declares the compute seam of herd: the Backend interface through which
// model/ runs every op of the LLaMA network, forward and backward side by side.
//
// A Backend owns its memory. The model allocates Buffers from it, fills them through Write,
// and never touches their elements directly, so the same model code runs on the CPU reference
// (kernels/cpu) and on a GPU (kernels/cuda, build tag cuda). Every backend must pass the shared
// conformance suite in kernels/kernelstest against the float64 CPU reference.
//
// Conventions used by every op:
//   - Matrices are row-major and densely packed.
//   - B is the batch size, T the sequence length, H the number of attention heads,
//     D the head dimension (the model dimension is H*D), V the vocabulary size.
//   - Attention inputs q, k, v and its output are laid out [B, T, H, D]; that is exactly the
//     [B*T, H*D] output of a linear layer, so no transposes are needed around attention.
//   - Ops named ...Backward accumulate (+=) into parameter gradients (they sum over
//     micro-batches) and say per argument whether an input gradient is overwritten or
//     accumulated into.
//   - Output buffers may alias an input only where the op's comment says so.
package kernels

import "errors"

// ErrDevice is wrapped by every DeviceError.
var ErrDevice = errors.New("device error")

// DeviceError is the value a backend panics with when its device fails an op it was asked to
// run correctly: memory exhausted, a kernel launch or library call failing. Backend methods
// have no error results (a broken precondition panics, as on the CPU), so a device failure
// travels as this panic, and the caller that owns the step (worker.Train) turns it back into
// an error. errors.Is matches ErrDevice and the underlying driver error.
type DeviceError struct {
	Op  string // the backend and op, e.g. "cuda: MatMul"
	Err error
}

func (e *DeviceError) Error() string { return e.Op + ": " + e.Err.Error() }

// Unwrap returns ErrDevice and the underlying error.
func (e *DeviceError) Unwrap() []error { return []error{ErrDevice, e.Err} }

// DType is the element type of a backend's buffers.
type DType int

const (
	Float32 DType = iota + 1
	Float64
	BFloat16
)

// Size returns the number of bytes one element of the type occupies.
func (t DType) Size() int {
	switch t {
	case Float32:
		return 4
	case Float64:
		return 8
	case BFloat16:
		return 2
	}
	panic("kernels: unknown dtype")
}

func (t DType) String() string {
	switch t {
	case Float32:
		return "float32"
	case Float64:
		return "float64"
	case BFloat16:
		return "bfloat16"
	}
	return "unknown"
}

// Buffer is a vector of elements in a backend's memory. Only the backend that allocated a
// Buffer may use it.
type Buffer interface {
	// Len returns the number of elements.
	Len() int
}

// AdamW holds the hyper-parameters of one AdamW update.
type AdamW struct {
	LR          float64 // learning rate of this step
	Beta1       float64 // first-moment decay (LLaMA: 0.9)
	Beta2       float64 // second-moment decay (LLaMA: 0.95)
	Eps         float64 // added to sqrt(v) (1e-8)
	WeightDecay float64 // decoupled weight decay; 0 for gains
	Step        int     // 1-based step number, for bias correction
	GradScale   float64 // multiplies the gradient before use (clipping, averaging)
}

// Backend runs the ops of the LLaMA network on one device.
type Backend interface {
	// Name identifies the backend in logs and benchmarks, e.g. "cpu-float32".
	Name() string
	// DType is the element type of every Buffer this backend allocates.
	DType() DType

	// Alloc returns a zeroed buffer of n elements.
	Alloc(n int) Buffer
	// Free returns a buffer to the backend. Views made by Slice must not be freed.
	Free(b Buffer)
	// Slice returns a view of n elements of b starting at element off. No copy is made.
	Slice(b Buffer, off, n int) Buffer
	// LiveBytes reports the bytes currently allocated and not freed; views count nothing.
	LiveBytes() int64

	// Write copies host values into dst (len(src) == dst.Len()), converting to the dtype.
	Write(dst Buffer, src []float64)
	// Read copies src into host memory (len(dst) == src.Len()).
	Read(dst []float64, src Buffer)
	// Write32 and Read32 are Write and Read for float32 host memory.
	Write32(dst Buffer, src []float32)
	Read32(dst []float32, src Buffer)

	// Zero sets every element of x to 0.
	Zero(x Buffer)
	// Copy sets dst = src.
	Copy(dst, src Buffer)
	// Add sets out = a + b elementwise; out may alias a or b.
	Add(out, a, b Buffer)
	// Scale sets x = s*x.
	Scale(x Buffer, s float64)
	// SumSquares returns the sum of x[i]^2, accumulated in float64.
	SumSquares(x Buffer) float64

	// MatMul sets C = op(A) op(B) + beta*C, where C is [m, n], op(A) is [m, k] and op(B) is
	// [k, n]. With transA, A is stored [k, m]; with transB, B is stored [n, k].
	MatMul(c, a, b Buffer, m, n, k int, transA, transB bool, beta float64)

	// Embedding sets out[i, :] = table[tokens[i], :] for each of the len(tokens) rows of width dim.
	Embedding(out, table Buffer, tokens []int32, dim int)
	// EmbeddingBackward accumulates dtable[tokens[i], :] += dout[i, :].
	EmbeddingBackward(dtable, dout Buffer, tokens []int32, dim int)

	// RMSNorm sets out = x / rms(x) * gain per row, with rms(x) = sqrt(mean(x^2) + eps), and
	// stores rstd[r] = 1/rms(x[r]) (in the backend's dtype, or float32 on a Mixed backend).
	// x is [rows, dim]; on a Mixed backend it may be float32 with an activation out.
	RMSNorm(out, rstd, x, gain Buffer, rows, dim int, eps float64)
	// RMSNormBackward accumulates dx += d(out)/dx . dout and dgain += d(out)/dgain . dout,
	// given the rstd saved by RMSNorm. On a Mixed backend dx and x may be float32 with an
	// activation dout.
	RMSNormBackward(dx, dgain, dout, x, gain, rstd Buffer, rows, dim int)

	// RoPE rotates each adjacent pair (x[2i], x[2i+1]) of every head of x [B, T, H, D] by the
	// angle (pos0+t) * theta^(-2i/D), Meta's layout. out may alias x.
	RoPE(out, x Buffer, b, t, h, d, pos0 int, theta float64)
	// RoPEBackward sets dx = R^T dout, the inverse rotation. dx may alias dout.
	RoPEBackward(dx, dout Buffer, b, t, h, d, pos0 int, theta float64)

	// Attention computes causal softmax(q k^T / sqrt(D)) v per batch and head without storing
	// the T x T weights, and saves the per-row logsumexp lse [B, H, T] for the backward pass.
	Attention(out, lse, q, k, v Buffer, b, t, h, d int)
	// AttentionBackward sets (overwrites) dq, dk and dv from dout and the saved out and lse.
	AttentionBackward(dq, dk, dv, dout, out, lse, q, k, v Buffer, b, t, h, d int)

	// AttentionCached is causal attention for generation with a KV cache, batch 1: tq queries
	// q [tq, H, D] at positions tk-tq .. tk-1 attend to the first tk rows of the caches
	// k, v [>=tk, H, D]. Nothing of size tq x tk is stored; no logsumexp is kept.
	AttentionCached(out, q, k, v Buffer, tq, tk, h, d int)

	// SwiGLU sets out = silu(a) * b elementwise, with silu(x) = x*sigmoid(x).
	SwiGLU(out, a, b Buffer)
	// SwiGLUBackward sets (overwrites) da and db from dout.
	SwiGLUBackward(da, db, dout, a, b Buffer)

	// CrossEntropy sets losses[r] = logsumexp(logits[r]) - logits[r, targets[r]] for logits
	// [rows, vocab] and stores lse[r]. Rows whose target is negative are ignored (loss 0).
	CrossEntropy(losses, lse, logits Buffer, targets []int32, rows, vocab int)
	// CrossEntropyBackward sets dlogits = scale * (softmax(logits) - onehot(target)) per row,
	// and 0 for ignored rows. dlogits may alias logits.
	CrossEntropyBackward(dlogits, logits, lse Buffer, targets []int32, rows, vocab int, scale float64)

	// AdamWUpdate applies one AdamW step to params p with gradient g and moments m, v.
	AdamWUpdate(p, g, m, v Buffer, hp AdamW)
}

// Mixed is implemented by backends that compute in a narrower type than float32 (bfloat16 on
// GPUs) while keeping master weights, gradients, optimizer moments, per-row statistics and the
// residual stream in float32, as mixed-precision training (PyTorch's autocast) does. Alloc
// returns activation buffers (DType); AllocMaster returns float32 buffers.
//
// MatMul's A and B are always activations: bf16 goes only into matrix multiplications (and
// into the activations a remat policy keeps). Ops take float32 buffers, and the model passes
// them, for:
//   - parameters that are not matrix-multiplication operands (RMSNorm's gain, Embedding's
//     table), parameter gradients (dgain, dtable, and C of a MatMul with transA, the form
//     dW += dY^T X in which weight gradients accumulate) and optimizer state;
//   - statistics: rstd, lse, losses;
//   - the residual stream and its gradient: Embedding's out and EmbeddingBackward's dout,
//     RMSNorm's x with an activation out, RMSNormBackward's x and dx with an activation dout,
//     and C of the MatMuls that add into the stream (beta = 1 onto a copy of it);
//   - the logits: C of the output projection and CrossEntropy's logits and dlogits.
//
// Copy converts between the two types. The weights of linear layers, the other MatMul
// operands, are read from a working copy in the activation type that AdamWUpdateCast
// refreshes after every update.
type Mixed interface {
	Backend
	// AllocMaster returns a zeroed float32 buffer of n elements.
	AllocMaster(n int) Buffer
	// Cast sets dst = src converted to dst's element type; lengths must match.
	Cast(dst, src Buffer)
	// AdamWUpdateCast applies AdamWUpdate to the float32 master weights p and then writes p,
	// rounded to the activation type, into the working copy w.
	AdamWUpdateCast(w, p, g, m, v Buffer, hp AdamW)
}

// Peak is implemented by backends that know their device's peak dense throughput in the type
// they compute in, the denominator of model FLOPs utilization (MFU).
type Peak interface {
	// PeakFLOPS returns the device's peak FLOP/s, or 0 when unknown.
	PeakFLOPS() float64
}

// VocabParallel is implemented by backends that run the vocabulary-parallel ops of tensor
// parallelism: the embedding table and the output head split by rows over the vocabulary,
// each rank holding the rows [lo, lo+rows) of its shard, so that no rank ever holds the full
// logits (Megatron's vocabulary-parallel cross-entropy).
type VocabParallel interface {
	// EmbeddingShard sets out[i, :] = table[tokens[i]-lo, :] for tokens in the shard's rows
	// [lo, lo+table.Len()/dim), and 0 for the others (the other shards' ranks hold them).
	EmbeddingShard(out, table Buffer, tokens []int32, lo, dim int)
	// EmbeddingShardBackward accumulates dtable[tokens[i]-lo, :] += dout[i, :] for tokens in
	// the shard's rows; the others contribute nothing.
	EmbeddingShardBackward(dtable, dout Buffer, tokens []int32, lo, dim int)
	// CrossEntropyShard stores, for logits [rows, vocab] of the shard's columns
	// [lo, lo+vocab), the logsumexp of each row over those columns in lse and the target's
	// logit in target (0 when the target lies in another shard or is ignored).
	CrossEntropyShard(lse, target, logits Buffer, targets []int32, lo, rows, vocab int)
	// CrossEntropyShardBackward sets dlogits = scale * (exp(logits - lse) - onehot) over the
	// shard's columns, where lse is the logsumexp over the whole vocabulary and onehot marks
	// the target when it lies in the shard; rows whose target is negative get 0. dlogits may
	// alias logits.
	CrossEntropyShardBackward(dlogits, logits, lse Buffer, targets []int32, lo, rows, vocab int, scale float64)
}
