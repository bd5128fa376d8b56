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

typedef unsigned short bf16_t;

// bf16_to_f32 widens a bf16 value exactly: its bits are the high half of a float.
__device__ __forceinline__ float bf16_to_f32(bf16_t h) { return __uint_as_float(((unsigned int)h) << 16); }

// f32_to_bf16 rounds to nearest, ties to even; NaN stays a (quiet) NaN, infinities stay.
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
