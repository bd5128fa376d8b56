// add.cu: elementwise residual add, scale and zero, for the Add, Scale and Zero ops of
// kernels.Backend.
//
// Variants: _f32 works on float buffers; _bf16 works on bf16 buffers (activations) and
// computes in fp32, rounding once to nearest-even on store. bf16 is stored as unsigned short
// and converted with the bit helpers below, so the file needs no CUDA header under NVRTC.
//
// Launch geometry: any 1-D grid and 1-D block; every kernel walks its n elements with a
// grid-stride loop, so 256 threads per block and min(ceil(n/256), 32*SMs) blocks is a good
// default. No shared memory. n is a 64-bit element count.
//
// Aliasing: add may write out over a or b (each element is read before it is written by the
// same thread).

#include "common.cuh"

// ---- add: out = a + b -----------------------------------------------------------------

template <typename T>
__device__ void add_body(T *out, const T *a, const T *b, long long n)
{
    for (long long i = gtid(); i < n; i += gstride()) st(out, i, ld(a, i) + ld(b, i));
}

extern "C" __global__ void add_f32(float *out, const float *a, const float *b, long long n) { add_body(out, a, b, n); }
extern "C" __global__ void add_bf16(bf16_t *out, const bf16_t *a, const bf16_t *b, long long n) { add_body(out, a, b, n); }

// ---- scale: x = s * x (s is the fp32 rounding of the host's float64) ----------------------

template <typename T>
__device__ void scale_body(T *x, float s, long long n)
{
    for (long long i = gtid(); i < n; i += gstride()) st(x, i, s * ld(x, i));
}

extern "C" __global__ void scale_f32(float *x, float s, long long n) { scale_body(x, s, n); }
extern "C" __global__ void scale_bf16(bf16_t *x, float s, long long n) { scale_body(x, s, n); }

// ---- zero: x = 0 (a memset would do; the kernel keeps slices and streams uniform) ---------

template <typename T>
__device__ void zero_body(T *x, long long n)
{
    for (long long i = gtid(); i < n; i += gstride()) x[i] = (T)0;
}

extern "C" __global__ void zero_f32(float *x, long long n) { zero_body(x, n); }
extern "C" __global__ void zero_bf16(bf16_t *x, long long n) { zero_body(x, n); }

// Launch helpers: none on the device side. The host launcher (kernels/cuda) picks
// block = 256, grid = min(ceil(n/256), 32*SMs) and passes n as a 64-bit integer.
