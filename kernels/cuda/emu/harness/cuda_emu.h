// cuda_emu.h: what a kernel file of kernels/cuda/src needs from CUDA, for g++. The emulator
// compiles each .cu file as C++ with this header first; every GPU thread of a launch runs as a
// fiber of runtime.cpp, so the builtins below read the running fiber's indices and the
// synchronizing ones (__syncthreads, warp shuffles, mma.sync) yield to the block's scheduler
// until every thread they wait for has arrived.
//
// __shared__ becomes static thread_local: the runtime runs all fibers of one block on one OS
// thread and one block at a time per OS thread, so each block sees one copy, as on a GPU.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace herd_emu {

struct uint3 {
    unsigned x, y, z;
};

// The running fiber's CUDA indices (defined in runtime.cpp).
const uint3 &thread_idx();
const uint3 &block_idx();
const uint3 &block_dim();
const uint3 &grid_dim();

// __syncthreads: waits until every thread of the block that has not exited arrives.
void syncthreads();

// warp_shfl_xor returns the 8-byte value v of lane (this lane ^ lane_mask). Every lane in mask
// must take part; mask must hold the whole warp.
uint64_t warp_shfl_xor(unsigned mask, uint64_t v, int lane_mask);

// mma_m16n8k16 is mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 for one lane: the
// warp's A (4 regs), B (2 regs) and C/D (4 floats) fragments in the PTX ISA's layout.
void mma_m16n8k16(float &d0, float &d1, float &d2, float &d3, unsigned a0, unsigned a1, unsigned a2, unsigned a3,
                  unsigned b0, unsigned b1);

// fail stops the harness with a message naming the kernel, block and thread.
[[noreturn]] void fail(const char *what);

template <class T> inline T from_bits(uint64_t bits)
{
    T v;
    std::memcpy(&v, &bits, sizeof v);
    return v;
}

template <class T> inline uint64_t to_bits(T v)
{
    static_assert(sizeof(T) <= 8, "shuffled values are at most 8 bytes");
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof v);
    return bits;
}

// kernel is one entry of a module's table: the kernel's name and a trampoline that calls it
// with arguments from 8-byte slots.
struct kernel {
    const char *name;
    void (*call)(const uint64_t *slots);
};

// symbol is a named global of a module (attention_geometry).
struct symbol {
    const char *name;
    const void *addr;
    size_t size;
};

} // namespace herd_emu

#define threadIdx (::herd_emu::thread_idx())
#define blockIdx (::herd_emu::block_idx())
#define blockDim (::herd_emu::block_dim())
#define gridDim (::herd_emu::grid_dim())

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static thread_local
#define __syncthreads() ::herd_emu::syncthreads()

template <class T> inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask)
{
    return ::herd_emu::from_bits<T>(::herd_emu::warp_shfl_xor(mask, ::herd_emu::to_bits(v), lane_mask));
}

inline float __uint_as_float(unsigned u) { return ::herd_emu::from_bits<float>(u); }
inline float __int_as_float(int i) { return ::herd_emu::from_bits<float>((unsigned)i); }
inline unsigned __float_as_uint(float f) { return (unsigned)::herd_emu::to_bits(f); }
inline int __float_as_int(float f) { return (int)(unsigned)::herd_emu::to_bits(f); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }

// CUDA's device min and max take mixed integer types and return the wider.
template <class A, class B> inline auto min(A a, B b) -> decltype(a + b) { return a < b ? a : b; }
template <class A, class B> inline auto max(A a, B b) -> decltype(a + b) { return a > b ? a : b; }
