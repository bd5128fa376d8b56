// crossentropy.cu: fused softmax cross-entropy over the vocabulary, forward and backward.
//
//   forward:  lse[r] = logsumexp_j logits[r, j],  losses[r] = lse[r] - logits[r, target[r]]
//             (losses[r] = 0 when target[r] < 0: the row is ignored; lse is still stored)
//   backward: dlogits[r, j] = scale * (exp(logits[r, j] - lse[r]) - [j == target[r]]),
//             and 0 for ignored rows. dlogits may alias logits: the gradient is written over
//             the logits in place, element by element, and no softmax copy is ever stored.
//
// The forward reads each row once with an online max/sum: each thread keeps (m, s) with
// s = sum exp(z - m) over its strided elements, rescaling s when m grows; the pairs are then
// merged across the warp with shuffles and across warps through shared memory, all in fp32.
// The merge order is fixed by blockDim, so results are deterministic.
//
// Variants: _f32 (logits, dlogits fp32) and _bf16 (logits, dlogits bf16, stored as unsigned
// short). losses and lse are fp32 in both. A target >= vocab is a broken precondition the
// device cannot panic on: the row's loss is set to NaN and, when status is not null,
// *status = 1. The launcher checks targets on the host first (they arrive as a host []int32).
//
// Launch geometry: both kernels take grid = rows blocks (one block per row) and block = 256
// threads (a multiple of 32, at most 1024). The forward uses 64 floats of static shared
// memory; the backward none.

#include "common.cuh"

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }
__device__ __forceinline__ float qnan() { return __int_as_float(0x7fffffff); }

// merge folds (m2, s2) into (m, s), where s is a sum of exp(z - m). An empty side has
// m = -inf and s = 0; the guard keeps -inf - -inf from producing NaN, and still adds the sums
// so that a NaN logit (carried in s, since fmaxf drops NaN) reaches the result.
__device__ __forceinline__ void merge(float &m, float &s, float m2, float s2)
{
    float mm = fmaxf(m, m2);
    if (mm == neg_inf()) {
        s += s2;
        return;
    }
    s = s * expf(m - mm) + s2 * expf(m2 - mm);
    m = mm;
}

// ---- forward --------------------------------------------------------------------------

template <typename T>
__device__ void crossentropy_fwd_body(float *losses, float *lse, const T *logits, const int *targets, int rows,
                                      int vocab, int *status)
{
    __shared__ float shm[32], shs[32];
    int r = blockIdx.x;
    if (r >= rows) return;
    const T *z = logits + (long long)r * vocab;
    float m = neg_inf(), s = 0.0f;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
        float v = ld(z, j);
        if (v > m) {
            s = s * expf(m - v) + 1.0f;
            m = v;
        } else if (m != neg_inf() || v != v) {
            // Skipped only while every value so far, v included, is -inf. A NaN v (which
            // compares false with everything) makes s NaN, so a diverged model reports NaN.
            s += expf(v - m);
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
        merge(m, s, m2, s2);
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarp = blockDim.x >> 5;
    if (lane == 0) {
        shm[warp] = m;
        shs[warp] = s;
    }
    __syncthreads();
    if (warp != 0) return;
    m = lane < nwarp ? shm[lane] : neg_inf();
    s = lane < nwarp ? shs[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
        merge(m, s, m2, s2);
    }
    if (lane != 0) return;
    float lz = m + logf(s);
    lse[r] = lz;
    int tg = targets[r];
    if (tg < 0) {
        losses[r] = 0.0f;
    } else if (tg >= vocab) {
        losses[r] = qnan();
        if (status != 0) *status = 1;
    } else {
        losses[r] = lz - ld(z, tg);
    }
}

extern "C" __global__ void crossentropy_fwd_f32(float *losses, float *lse, const float *logits, const int *targets,
                                                int rows, int vocab, int *status)
{
    crossentropy_fwd_body(losses, lse, logits, targets, rows, vocab, status);
}

extern "C" __global__ void crossentropy_fwd_bf16(float *losses, float *lse, const bf16_t *logits, const int *targets,
                                                 int rows, int vocab, int *status)
{
    crossentropy_fwd_body(losses, lse, logits, targets, rows, vocab, status);
}

// ---- backward -------------------------------------------------------------------------

// The backward reads logits[r, j] and writes dlogits[r, j] in the same thread, which is what
// makes the in-place form (dlogits == logits) safe; the pointers are not restrict-qualified.
template <typename T>
__device__ void crossentropy_bwd_body(T *dlogits, const T *logits, const float *lse, const int *targets, int rows,
                                      int vocab, float scale)
{
    int r = blockIdx.x;
    if (r >= rows) return;
    const T *z = logits + (long long)r * vocab;
    T *d = dlogits + (long long)r * vocab;
    int tg = targets[r];
    if (tg < 0 || tg >= vocab) {
        for (int j = threadIdx.x; j < vocab; j += blockDim.x) st(d, j, 0.0f);
        return;
    }
    float lz = lse[r];
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
        float p = expf(ld(z, j) - lz);
        st(d, j, j == tg ? scale * p - scale : scale * p);
    }
}

extern "C" __global__ void crossentropy_bwd_f32(float *dlogits, const float *logits, const float *lse,
                                                const int *targets, int rows, int vocab, float scale)
{
    crossentropy_bwd_body(dlogits, logits, lse, targets, rows, vocab, scale);
}

extern "C" __global__ void crossentropy_bwd_bf16(bf16_t *dlogits, const bf16_t *logits, const float *lse,
                                                 const int *targets, int rows, int vocab, float scale)
{
    crossentropy_bwd_body(dlogits, logits, lse, targets, rows, vocab, scale);
}

// Launch helpers: none on the device side; targets are uploaded once per step and shared by
// both kernels.
