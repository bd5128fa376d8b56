// swiglu.cu: the SwiGLU gate of the LLaMA feed-forward block, forward and backward.
//
//   forward:  out = silu(a) * b,  silu(x) = x * sigmoid(x)
//   backward: da = dout * b * s * (1 + a*(1-s)),  db = dout * silu(a),  s = sigmoid(a)
//
// da and db are overwritten, as kernels.Backend says. Variants: _f32 (all fp32) and _bf16
// (a, b, out, dout, da, db in bf16; every value is widened to fp32, computed in fp32, and
// rounded once to nearest-even on store). bf16 is stored as unsigned short.
//
// Launch geometry: any 1-D grid and 1-D block, grid-stride loop over n (64-bit); 256 threads
// per block and min(ceil(n/256), 32*SMs) blocks. No shared memory. Each element is read
// before it is written by the same thread, so outputs may alias inputs element for element.

#include "common.cuh"

// sigmoid saturates cleanly: expf(-x) overflows to +inf for x < -88 and 1/(1+inf) = 0.
__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// ---- forward --------------------------------------------------------------------------

template <typename T>
__device__ void swiglu_fwd_body(T *out, const T *a, const T *b, long long n)
{
    for (long long i = gtid(); i < n; i += gstride()) {
        float x = ld(a, i);
        st(out, i, x * sigmoid(x) * ld(b, i));
    }
}

extern "C" __global__ void swiglu_fwd_f32(float *out, const float *a, const float *b, long long n)
{
    swiglu_fwd_body(out, a, b, n);
}

extern "C" __global__ void swiglu_fwd_bf16(bf16_t *out, const bf16_t *a, const bf16_t *b, long long n)
{
    swiglu_fwd_body(out, a, b, n);
}

// ---- backward -------------------------------------------------------------------------

template <typename T>
__device__ void swiglu_bwd_body(T *da, T *db, const T *dout, const T *a, const T *b, long long n)
{
    for (long long i = gtid(); i < n; i += gstride()) {
        float x = ld(a, i), y = ld(b, i), g = ld(dout, i);
        float s = sigmoid(x);
        float silu = x * s;
        st(da, i, g * y * (s + silu * (1.0f - s)));
        st(db, i, g * silu);
    }
}

extern "C" __global__ void swiglu_bwd_f32(float *da, float *db, const float *dout, const float *a, const float *b,
                                          long long n)
{
    swiglu_bwd_body(da, db, dout, a, b, n);
}

extern "C" __global__ void swiglu_bwd_bf16(bf16_t *da, bf16_t *db, const bf16_t *dout, const bf16_t *a,
                                           const bf16_t *b, long long n)
{
    swiglu_bwd_body(da, db, dout, a, b, n);
}

// Launch helpers: none on the device side; see the header for the geometry.
