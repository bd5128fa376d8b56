// rope.cu: rotary position embedding of q or k [B, T, H, D], forward and backward.
//
// Meta's layout: each adjacent pair (x[2i], x[2i+1]) of every head is rotated by the angle
// a = (pos0 + t) * theta^(-2i/D), i in [0, D/2):
//   forward:  o[2i] = x[2i] cos a - x[2i+1] sin a,   o[2i+1] = x[2i] sin a + x[2i+1] cos a
//   backward: the transpose, i.e. the same rotation by -a (dx overwritten).
// out may alias x and dx may alias dout: each thread reads a pair before writing it.
//
// Precision: the angle is formed in fp64 (theta^(-2i/D) with pow, times the position) and
// its sine and cosine are taken in fp64, as in the CPU reference. In fp32, a position of 8192
// alone would carry an angle error near 5e-4 rad. One thread handles one (b, t, i) and loops
// over the H heads, so the trigonometry is paid once per H pairs and the kernel stays bound
// by memory. The pair itself is rotated in fp32.
//
// Variants: _f32 (x, out fp32) and _bf16 (x, out bf16, stored as unsigned short, rounded to
// nearest-even once per store).
//
// Launch geometry: a 1-D grid-stride loop over B*T*(D/2) items, 256 threads per block,
// min(ceil(items/256), 32*SMs) blocks. D must be even. No shared memory.

#include "common.cuh"

// rotate applies the rotation by sign*a to every pair; sign is +1 forward and -1 backward.
template <typename T>
__device__ void rotate(T *out, const T *x, int B, int T_, int H, int D, int pos0, double theta, double sign)
{
    int half = D / 2;
    long long items = (long long)B * T_ * half;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long it = (long long)blockIdx.x * blockDim.x + threadIdx.x; it < items; it += stride) {
        int i = (int)(it % half);
        long long row = it / half; // b*T + t
        int t = (int)(row % T_);
        double a = (double)(pos0 + t) * pow(theta, -2.0 * (double)i / (double)D);
        double sd, cd;
        sincos(a, &sd, &cd);
        float c = (float)cd, s = (float)(sign * sd);
        long long base = row * H * D + 2 * i;
        for (int h = 0; h < H; h++) {
            long long k = base + (long long)h * D;
            float x0 = ld(x, k), x1 = ld(x, k + 1);
            st(out, k, x0 * c - x1 * s);
            st(out, k + 1, x0 * s + x1 * c);
        }
    }
}

// ---- forward --------------------------------------------------------------------------

extern "C" __global__ void rope_fwd_f32(float *out, const float *x, int B, int T, int H, int D, int pos0, double theta)
{
    rotate(out, x, B, T, H, D, pos0, theta, 1.0);
}

extern "C" __global__ void rope_fwd_bf16(bf16_t *out, const bf16_t *x, int B, int T, int H, int D, int pos0,
                                         double theta)
{
    rotate(out, x, B, T, H, D, pos0, theta, 1.0);
}

// ---- backward -------------------------------------------------------------------------

extern "C" __global__ void rope_bwd_f32(float *dx, const float *dout, int B, int T, int H, int D, int pos0,
                                        double theta)
{
    rotate(dx, dout, B, T, H, D, pos0, theta, -1.0);
}

extern "C" __global__ void rope_bwd_bf16(bf16_t *dx, const bf16_t *dout, int B, int T, int H, int D, int pos0,
                                         double theta)
{
    rotate(dx, dout, B, T, H, D, pos0, theta, -1.0);
}

// Launch helpers: none on the device side; theta is passed as a double, as the op receives it.
