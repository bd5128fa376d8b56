// embedding.cu: token embedding lookup and its backward.
//
//   forward:  out[i, :] = table[tok[i], :]          table fp32 [rows, dim], out [ntok, dim]
//   backward: dtable[tok[i], :] += dout[i, :]       dtable fp32, accumulated (+=)
//
// Variants: _f32 (out and dout fp32) and _bf16 (out and dout bf16; the table and its
// gradient stay fp32 as parameters do). bf16 is stored as unsigned short; the forward rounds
// to nearest-even once, the backward widens dout exactly and adds in fp32.
//
// Bad tokens: a token outside [0, rows) cannot panic on the device, so the forward writes
// zeros to that output row and, when status is not null, sets *status = 1. The launcher
// checks tokens on the host first (they arrive as a host []int32), so status is a second line
// of defence and may be null.
//
// The backward is deterministic and does not use atomicAdd. Floating-point addition is not
// associative, so atomics would make dtable depend on thread timing whenever a token repeats,
// and runs would not reproduce bit for bit. Instead the launcher, which holds the tokens on
// the host, sorts the token positions by token with a stable sort and uploads:
//   order[k]    the k-th position in sorted order (ascending position within one token),
//   segStart[s] the first index into order of segment s (segStart[nseg] = ntok),
//   segTok[s]   the token of segment s (distinct across segments).
// One block owns one segment, hence one row of dtable, and no two blocks touch the same row.
// Each element sums its dout rows in ascending position, starting from the old dtable value:
// exactly the order of the CPU reference, so the fp32 result is bit-identical to it.
//
// Launch geometry:
//   embedding_fwd_*: grid = ntok blocks (x), block = 256 threads (any multiple of 32 up to
//                    1024); threads stride over dim. No shared memory.
//   embedding_bwd_*: grid = nseg blocks (x), block = 256 threads; threads stride over dim.
//                    No shared memory.

#include "common.cuh"

// ---- forward --------------------------------------------------------------------------

template <typename T>
__device__ void embedding_fwd_body(T *out, const float *table, const int *tok, int ntok, int dim, int rows,
                                   int *status)
{
    int i = blockIdx.x;
    if (i >= ntok) return;
    int t = tok[i];
    T *o = out + (long long)i * dim;
    if (t < 0 || t >= rows) {
        for (int j = threadIdx.x; j < dim; j += blockDim.x) st(o, j, 0.0f);
        if (status != 0 && threadIdx.x == 0) *status = 1;
        return;
    }
    const float *src = table + (long long)t * dim;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) st(o, j, src[j]);
}

extern "C" __global__ void embedding_fwd_f32(float *out, const float *table, const int *tok, int ntok, int dim,
                                             int rows, int *status)
{
    embedding_fwd_body(out, table, tok, ntok, dim, rows, status);
}

extern "C" __global__ void embedding_fwd_bf16(bf16_t *out, const float *table, const int *tok, int ntok, int dim,
                                              int rows, int *status)
{
    embedding_fwd_body(out, table, tok, ntok, dim, rows, status);
}

// ---- backward -------------------------------------------------------------------------

template <typename T>
__device__ void embedding_bwd_body(float *dtable, const T *dout, const int *order, const int *segStart,
                                   const int *segTok, int nseg, int dim)
{
    int s = blockIdx.x;
    if (s >= nseg) return;
    int lo = segStart[s], hi = segStart[s + 1];
    float *dst = dtable + (long long)segTok[s] * dim;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) {
        float acc = dst[j];
        for (int k = lo; k < hi; k++) acc += ld(dout, (long long)order[k] * dim + j);
        dst[j] = acc;
    }
}

extern "C" __global__ void embedding_bwd_f32(float *dtable, const float *dout, const int *order,
                                             const int *segStart, const int *segTok, int nseg, int dim)
{
    embedding_bwd_body(dtable, dout, order, segStart, segTok, nseg, dim);
}

extern "C" __global__ void embedding_bwd_bf16(float *dtable, const bf16_t *dout, const int *order,
                                              const int *segStart, const int *segTok, int nseg, int dim)
{
    embedding_bwd_body(dtable, dout, order, segStart, segTok, nseg, dim);
}

// Launch helpers: none on the device side. The launcher validates tokens, builds order,
// segStart and segTok with a stable sort on the host, and uploads them with the step's other
// small arrays.
