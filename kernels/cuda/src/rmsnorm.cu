// rmsnorm.cu: RMSNorm of each row of x [rows, dim] with a learned gain, forward and backward.
//
//   forward:  rstd[r] = 1 / sqrt(mean_j x[r,j]^2 + eps),  out[r,j] = x[r,j] * rstd[r] * gain[j]
//   backward: with c = sum_j dout[r,j] gain[j] x[r,j],
//             dx[r,j]  += rstd * (dout[r,j] gain[j] - x[r,j] rstd^2 c / dim)   (accumulated)
//             dgain[j] += sum_r dout[r,j] x[r,j] rstd[r]                       (accumulated)
//
// Variants: _f32 (all fp32), _bf16 (x, out, dout, dx in bf16) and _f32_bf16, the one mixed
// precision training uses: x and dx are the fp32 residual stream, out and dout bf16 (the
// normalized activation feeds a bf16 matmul, and its gradient comes from one). gain, dgain,
// rstd and the dgain partials are fp32 in every variant; every sum is accumulated in fp32.
// bf16 is stored as unsigned short and rounded to nearest-even once per store.
//
// dgain is reduced deterministically in two kernels, without atomics:
//   1. rmsnorm_bwd_*: block b owns rows [b*rowsPerBlock, min((b+1)*rowsPerBlock, rows)),
//      computes their dx and writes its partial dgain to part[b*dim .. b*dim+dim). Thread
//      tid owns columns tid, tid+blockDim, ... of the partial, so no two threads share one.
//   2. rmsnorm_bwd_dgain_f32: one thread per column adds part[0..nblocks) in block order
//      and then adds the sum into dgain.
// The result depends on rowsPerBlock and blockDim but not on scheduling. The launcher must
// pick rowsPerBlock from (rows, dim) alone, not from the device, for runs to reproduce
// across machines. part holds nblocks*dim floats, nblocks = ceil(rows/rowsPerBlock).
//
// Launch geometry:
//   rmsnorm_fwd_*:        grid = rows blocks, block = 256 threads (a multiple of 32, at most
//                         1024). Static shared memory: 32 floats for the block reduction.
//   rmsnorm_bwd_*:        grid = ceil(rows/rowsPerBlock) blocks, block = 256 threads. Static
//                         shared memory: 32 floats. rowsPerBlock = max(1, rows/(4*132)) fits
//                         an H100/H200; any fixed choice is correct.
//   rmsnorm_bwd_dgain_f32: grid = ceil(dim/256), block = 256, one thread per column.

#include "common.cuh"

// block_sum returns the sum of v over the block to every thread, in a fixed order. blockDim.x
// must be a multiple of 32. sh must hold 32 floats; the trailing barrier lets a caller reuse it.
__device__ float block_sum(float v, float *sh)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarp = blockDim.x >> 5;
    v = warp_sum(v);
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = lane < nwarp ? sh[lane] : 0.0f;
    v = warp_sum(v);
    __syncthreads();
    return v;
}

// ---- forward --------------------------------------------------------------------------

template <typename TO, typename TX>
__device__ void rmsnorm_fwd_body(TO *out, float *rstd, const TX *x, const float *gain, int rows, int dim, float eps)
{
    __shared__ float sh[32];
    int r = blockIdx.x;
    if (r >= rows) return;
    const TX *xr = x + (long long)r * dim;
    TO *orow = out + (long long)r * dim;
    float ss = 0.0f;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) {
        float v = ld(xr, j);
        ss += v * v;
    }
    ss = block_sum(ss, sh);
    float s = rsqrtf(ss / (float)dim + eps);
    if (threadIdx.x == 0) rstd[r] = s;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) st(orow, j, ld(xr, j) * s * gain[j]);
}

extern "C" __global__ void rmsnorm_fwd_f32(float *out, float *rstd, const float *x, const float *gain, int rows,
                                           int dim, float eps)
{
    rmsnorm_fwd_body(out, rstd, x, gain, rows, dim, eps);
}

extern "C" __global__ void rmsnorm_fwd_bf16(bf16_t *out, float *rstd, const bf16_t *x, const float *gain, int rows,
                                            int dim, float eps)
{
    rmsnorm_fwd_body(out, rstd, x, gain, rows, dim, eps);
}

extern "C" __global__ void rmsnorm_fwd_f32_bf16(bf16_t *out, float *rstd, const float *x, const float *gain, int rows,
                                                int dim, float eps)
{
    rmsnorm_fwd_body(out, rstd, x, gain, rows, dim, eps);
}

// ---- backward -------------------------------------------------------------------------

template <typename TX, typename TG>
__device__ void rmsnorm_bwd_body(TX *dx, float *part, const TG *dout, const TX *x, const float *gain,
                                 const float *rstd, int rows, int dim, int rowsPerBlock)
{
    __shared__ float sh[32];
    int r0 = blockIdx.x * rowsPerBlock;
    int r1 = min(r0 + rowsPerBlock, rows);
    float *pb = part + (long long)blockIdx.x * dim;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) pb[j] = 0.0f;
    for (int r = r0; r < r1; r++) {
        const TX *xr = x + (long long)r * dim;
        const TG *gr = dout + (long long)r * dim;
        TX *dxr = dx + (long long)r * dim;
        float c = 0.0f;
        for (int j = threadIdx.x; j < dim; j += blockDim.x) c += ld(gr, j) * gain[j] * ld(xr, j);
        c = block_sum(c, sh);
        float s = rstd[r];
        float k = s * s * (c / (float)dim);
        for (int j = threadIdx.x; j < dim; j += blockDim.x) {
            float xv = ld(xr, j), gv = ld(gr, j);
            st(dxr, j, ld(dxr, j) + s * (gv * gain[j] - xv * k));
            pb[j] += gv * xv * s;
        }
    }
}

extern "C" __global__ void rmsnorm_bwd_f32(float *dx, float *part, const float *dout, const float *x,
                                           const float *gain, const float *rstd, int rows, int dim, int rowsPerBlock)
{
    rmsnorm_bwd_body(dx, part, dout, x, gain, rstd, rows, dim, rowsPerBlock);
}

extern "C" __global__ void rmsnorm_bwd_bf16(bf16_t *dx, float *part, const bf16_t *dout, const bf16_t *x,
                                            const float *gain, const float *rstd, int rows, int dim, int rowsPerBlock)
{
    rmsnorm_bwd_body(dx, part, dout, x, gain, rstd, rows, dim, rowsPerBlock);
}

extern "C" __global__ void rmsnorm_bwd_f32_bf16(float *dx, float *part, const bf16_t *dout, const float *x,
                                                const float *gain, const float *rstd, int rows, int dim,
                                                int rowsPerBlock)
{
    rmsnorm_bwd_body(dx, part, dout, x, gain, rstd, rows, dim, rowsPerBlock);
}

// rmsnorm_bwd_dgain_f32 sets dgain[j] += sum over b in [0, nblocks) of part[b*dim + j],
// adding in ascending b. Shared by both variants: dgain and part are fp32 in each.
extern "C" __global__ void rmsnorm_bwd_dgain_f32(float *dgain, const float *part, int nblocks, int dim)
{
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= dim) return;
    float acc = 0.0f;
    for (int b = 0; b < nblocks; b++) acc += part[(long long)b * dim + j];
    dgain[j] += acc;
}

// Launch helpers: none on the device side; rmsnorm_bwd_* and rmsnorm_bwd_dgain_f32 run back
// to back on one stream, with part sized nblocks*dim floats from the step's scratch.
