// cast.cu: conversions between fp32 and bf16 buffers, used to fill bf16 activations and
// working copies from fp32 and to read them back.
//
// bf16 is stored as unsigned short. Widening is exact (the bf16 bits are the high half of a
// float); narrowing rounds to nearest, ties to even, keeps infinities and turns every NaN
// into a quiet NaN. This matches the CPU backend's conversion, so a cast is bit-exact
// against the reference.
//
// Launch geometry: any 1-D grid and 1-D block, grid-stride loop over n (64-bit); 256 threads
// per block and min(ceil(n/256), 32*SMs) blocks. No shared memory. dst and src must not
// overlap (their element sizes differ).

#include "common.cuh"

// cast_f32_to_bf16 sets dst[i] = round_bf16(src[i]).
extern "C" __global__ void cast_f32_to_bf16(bf16_t *dst, const float *src, long long n)
{
    for (long long i = gtid(); i < n; i += gstride()) dst[i] = f32_to_bf16(src[i]);
}

// cast_bf16_to_f32 sets dst[i] = src[i] exactly.
extern "C" __global__ void cast_bf16_to_f32(float *dst, const bf16_t *src, long long n)
{
    for (long long i = gtid(); i < n; i += gstride()) dst[i] = bf16_to_f32(src[i]);
}

// Launch helpers: none on the device side; see the header for the geometry.
