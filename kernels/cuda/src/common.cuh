// common.cuh: the device helpers every kernel file shares. The .cu files include it; the Go
// package inlines it into each source (Files) so NVRTC compiles every file on its own.
//
// bf16 is stored as unsigned short (bf16_t): widening is exact (its bits are the high half of
// a float); narrowing rounds to nearest, ties to even, keeps NaN a (quiet) NaN and infinities
// infinite. ld/st read and write either element type as float. gtid/gstride drive grid-stride
// loops. warp_sum and block_sum reduce in a fixed order, so results do not depend on
// scheduling.

typedef unsigned short bf16_t;

__device__ __forceinline__ float bf16_to_f32(bf16_t h) { return __uint_as_float(((unsigned int)h) << 16); }

__device__ __forceinline__ bf16_t f32_to_bf16(float f)
{
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16_t)(u >> 16);
}

__device__ __forceinline__ float ld(const float *p, long long i) { return p[i]; }
__device__ __forceinline__ float ld(const bf16_t *p, long long i) { return bf16_to_f32(p[i]); }
__device__ __forceinline__ void st(float *p, long long i, float v) { p[i] = v; }
__device__ __forceinline__ void st(bf16_t *p, long long i, float v) { p[i] = f32_to_bf16(v); }

__device__ __forceinline__ long long gtid() { return (long long)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ long long gstride() { return (long long)gridDim.x * blockDim.x; }

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ double warp_sum(double x)
{
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}
