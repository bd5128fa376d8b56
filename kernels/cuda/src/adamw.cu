// adamw.cu: the AdamW update on fp32 master parameters, and the deterministic global
// gradient norm used for clipping.
//
// Update, PyTorch's order, with g = grad * gradScale:
//   m = b1*m + (1-b1)*g,   v = b2*v + (1-b2)*g^2
//   p = p*decay - lrc1 * m / (sqrt(v)*isc2 + eps)
// The host folds the per-step constants in float64 exactly as the CPU reference does and
// passes them rounded to fp32: decay = 1 - lr*wd, c1 = 1 - b1^step, c2 = 1 - b2^step,
// lrc1 = lr/c1, isc2 = 1/sqrt(c2). p, g, m and v are fp32 in both variants (parameters,
// their gradients and optimizer state are never bf16). adamw_bf16 also writes the updated
// parameters, rounded to nearest-even, into the bf16 working copy pw used by the forward
// pass; pw may be null, and then it does exactly what adamw_f32 does.
//
// Gradient norm: sum of squares of one or more buffers, accumulated in fp64 and reduced in a
// fixed order, so the result does not depend on scheduling or on the device:
//   1. sumsq_partial_*: block b sums x[b*chunk .. min((b+1)*chunk, n)) into part[b]. The
//      chunk is a launch parameter, not the grid size, so a fixed chunk gives the same
//      partials on every GPU. Several buffers may write consecutive ranges of one part array.
//   2. sumsq_final_f64: one block adds part[0..nparts) (thread-strided, then a fixed tree)
//      and writes *out; the launcher takes sqrt on the host or keeps *out on the device.
//
// Launch geometry:
//   adamw_*:          1-D grid-stride loop over n (64-bit); 256 threads per block,
//                     min(ceil(n/256), 32*SMs) blocks. No shared memory.
//   sumsq_partial_*:  grid = ceil(n/chunk) blocks, block = 256 threads (a multiple of 32, at
//                     most 1024); chunk = 65536 suits both variants. Static shared memory:
//                     32 doubles.
//   sumsq_final_f64:  grid = 1 block of 1024 threads (a multiple of 32 is required; the
//                     result depends on blockDim, so keep it fixed). Static shared memory:
//                     32 doubles.

#include "common.cuh"

// ---- update ---------------------------------------------------------------------------

__device__ __forceinline__ void adamw_body(float *p, const float *g, float *m, float *v, bf16_t *pw, long long n,
                                           float b1, float b2, float lrc1, float isc2, float eps, float decay,
                                           float gradScale)
{
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float gi = g[i] * gradScale;
        float mi = b1 * m[i] + (1.0f - b1) * gi;
        float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float pi = p[i] * decay - lrc1 * mi / (sqrtf(vi) * isc2 + eps);
        p[i] = pi;
        if (pw != 0) pw[i] = f32_to_bf16(pi);
    }
}

extern "C" __global__ void adamw_f32(float *p, const float *g, float *m, float *v, long long n, float b1, float b2,
                                     float lrc1, float isc2, float eps, float decay, float gradScale)
{
    adamw_body(p, g, m, v, 0, n, b1, b2, lrc1, isc2, eps, decay, gradScale);
}

extern "C" __global__ void adamw_bf16(float *p, const float *g, float *m, float *v, bf16_t *pw, long long n,
                                      float b1, float b2, float lrc1, float isc2, float eps, float decay,
                                      float gradScale)
{
    adamw_body(p, g, m, v, pw, n, b1, b2, lrc1, isc2, eps, decay, gradScale);
}

// ---- gradient norm --------------------------------------------------------------------

// block_sum returns the block's total to thread 0 (other threads get partial values), in an
// order fixed by blockDim. sh must hold 32 doubles.
__device__ double block_sum(double x, double *sh)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarp = blockDim.x >> 5;
    x = warp_sum(x);
    if (lane == 0) sh[warp] = x;
    __syncthreads();
    x = lane < nwarp ? sh[lane] : 0.0;
    return warp_sum(x);
}

template <typename T>
__device__ void sumsq_partial_body(double *part, const T *x, long long n, long long chunk)
{
    __shared__ double sh[32];
    long long lo = (long long)blockIdx.x * chunk;
    long long hi = min(lo + chunk, n);
    double s = 0.0;
    for (long long i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        double e = (double)ld(x, i);
        s += e * e;
    }
    s = block_sum(s, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

extern "C" __global__ void sumsq_partial_f32(double *part, const float *x, long long n, long long chunk)
{
    sumsq_partial_body(part, x, n, chunk);
}

extern "C" __global__ void sumsq_partial_bf16(double *part, const bf16_t *x, long long n, long long chunk)
{
    sumsq_partial_body(part, x, n, chunk);
}

extern "C" __global__ void sumsq_final_f64(double *out, const double *part, int nparts)
{
    __shared__ double sh[32];
    double s = 0.0;
    for (int i = threadIdx.x; i < nparts; i += blockDim.x) s += part[i];
    s = block_sum(s, sh);
    if (threadIdx.x == 0) *out = s;
}

// Launch helpers: none on the device side. For a clipped step the launcher runs the partials
// over every gradient buffer into one part array, then sumsq_final_f64, reads *out, and passes
// gradScale = min(1, maxNorm/sqrt(*out)) (times any averaging factor) to adamw_*.
