// attention.cu: causal multi-head attention (FlashAttention-2), forward, backward and the
// KV-cached generation step, for one head size D fixed at compile time.
//
// q, k, v, out, dout, dq, dk, dv are bf16 [B, T, H, D] (row b*T + t, column h*D + d); lse and
// delta are fp32 [B, H, T]; scale = 1/sqrt(D) arrives as an argument. Query t sees keys 0..t.
//
//   forward:  S = scale q k^T (causal),  out = softmax(S) v,  lse[t] = log sum_j exp(S[t, j])
//   backward: delta[t] = sum_d dout[t, d] out[t, d]            (attention_bwd_delta_bf16)
//             P = exp(S - lse),  dP = dout v^T,  dS = P * (dP - delta)
//             dv = P^T dout,  dk = scale dS^T q               (attention_bwd_dkdv_bf16)
//             dq = scale dS k                                 (attention_bwd_dq_bf16)
//   cached:   q [tq, H, D] holds positions tk-tq .. tk-1; row i attends to keys 0 .. tk-tq+i
//             of k, v [>=tk, H, D]; out [tq, H, D]            (attention_cached_bf16)
//
// Nothing T x T is stored. Scores live in registers one tile at a time; the forward keeps a
// running max m and denominator l per row (online softmax), in the base-2 domain: scores are
// multiplied by scale*log2(e) so that every exponential is one exp2f, and lse is converted
// back to the natural log on store. All sums are fp32; bf16 is rounded to nearest-even once
// per store (and, on the tensor-core path, when P and dS are fed to the tensor cores). Every
// output element is summed in a fixed order, so results are bitwise reproducible; the
// backward writes each of dq, dk, dv from exactly one block (no atomics) and overwrites them.
//
// HERD_HD (the head size D, 1..256; 64 when not defined) is set by the launcher with
// -DHERD_HD=<D>, one compilation per head size. Two implementations share the kernel names:
//
// Tensor-core path (D % 16 == 0), mma.sync.m16n8k16 bf16 x bf16 -> fp32. Each warp owns 16
// rows of the output tile (queries for forward and dq, keys for dkdv) and keeps their
// accumulators in registers; the other operand streams through shared memory in tiles.
// Shared tiles are row-major with rows padded to D+8 elements, which spreads the fragment
// reads of the 8 rows a warp touches at once over all 32 banks.
//   forward: block = 4 warps = 64 queries; Q fragments are read once from global into
//     registers; key tiles of BK = 64 (D <= 128) or 32 (D > 128) rows of K and V go through
//     shared memory: 2*BK*(D+8)*2 bytes, at most 34816 (D = 128). Key tiles past the block's
//     last query are never loaded; tiles a warp cannot see are skipped by that warp; the
//     causal mask is applied only to tiles that cross the warp's diagonal.
//   dkdv: block = NW warps owning 16*NW keys (NW = 4 for D <= 128, 1 above); query tiles of
//     BQ = 64 (D <= 64) or 16 (D > 64) rows of q and dout, plus their lse and delta, stream
//     from the diagonal to T. Shared: (2*16*NW + 2*BQ)*(D+8)*2 + 8*BQ bytes, at most 43648
//     (D = 128).
//   dq: block = NW warps owning 16*NW queries; key tiles of BQ rows of k and v stream from 0
//     to the diagonal. Shared: (2*16*NW + 2*BQ)*(D+8)*2 bytes, at most 43520.
//   Fragment layout (PTX ISA, m16n8k16, g = lane/4, c = lane%4, low half = lower index):
//     A 16x16 row-major, 4 regs: (g, 2c..2c+1), (g+8, 2c..), (g, 2c+8..), (g+8, 2c+8..)
//     B 16x8 "col", 2 regs: (k = 2c..2c+1, n = g), (k = 2c+8..2c+9, n = g)
//     C 16x8 fp32, 4 regs: (g, 2c), (g, 2c+1), (g+8, 2c), (g+8, 2c+1)
//   A C tile pair (n-tiles 2j, 2j+1) is exactly the A fragment of k-step j, so P and dS go
//   from accumulators to the next product without touching shared memory.
//   q, k, v, dout, out, dq, dk, dv must be 16-byte aligned (tiles are copied with 16-byte
//   loads); the launcher checks.
//
// Scalar path (any other D): one thread per query (forward, dq) or key (dkdv) row, 64 rows
// per block, holding its rows of length D in registers; tiles of TS = 64 (D <= 64), 32
// (D <= 128) or 16 rows of the other operand are staged in shared memory as fp32:
// 2*TS*D*4 (+ 8*TS for dkdv) bytes, at most 32768 + 512.
//
// Launch geometry (both paths; the launcher reads it from attention_geometry below, so the
// two cannot disagree). Blocks are numbered tile-major, blockIdx.x = rank*(B*H) + b*H + h, and
// the forward and dq visit the heaviest (last) query tiles first, dkdv the heaviest (first)
// key tiles first, which keeps the triangle's tail short.
//   attention_fwd_bf16:       grid = ceil(T/FR)*B*H, block = FT threads (FR rows per block)
//   attention_bwd_delta_bf16: grid = ceil(B*T*H/8), block = 256 (a warp per row), no shared
//   attention_bwd_dkdv_bf16:  grid = ceil(T/BR)*B*H, block = BT threads (BR keys per block)
//   attention_bwd_dq_bf16:    grid = ceil(T/BR)*B*H, block = BT threads (BR queries per block)
//   attention_cached_bf16:    grid = ceil(tq*H/4), block = 128 (a warp per query row and
//                             head, lanes split d; scalar FMAs; no shared memory)
// with (FR, FT, BR, BT) = (64, 128, 64, 128) for D % 16 == 0 and D <= 128, (64, 128, 16, 32)
// for D % 16 == 0 and D > 128, and (64, 64, 64, 64) on the scalar path. All shared memory is
// static (under 48 KB), so no launch attribute is needed. The backward runs delta, dkdv and
// dq in that order on one stream.

#include "common.cuh"

#ifndef HERD_HD
#define HERD_HD 64
#endif
#if HERD_HD < 1 || HERD_HD > 256
#error "HERD_HD (the attention head size) must be in 1..256"
#endif

constexpr int HD = HERD_HD;
constexpr float LOG2E = 1.4426950408889634f;
constexpr float LN2 = 0.6931471805599453f;

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

// ---- shared by both paths: delta and the cached step ------------------------------------

constexpr int DELTA_ROWS = 8, DELTA_THREADS = 32 * DELTA_ROWS;
constexpr int CACHED_ROWS = 4, CACHED_THREADS = 32 * CACHED_ROWS;

// attention_bwd_delta_bf16: warp w of block blk owns row r = blk*8 + w of the [B*T*H, D] view
// (r = (b*T + t)*H + h) and writes delta[(b*H + h)*T + t]. The lane-strided partial sums are
// reduced with a fixed butterfly, so the result does not depend on scheduling.
extern "C" __global__ void attention_bwd_delta_bf16(float *delta, const bf16_t *dout, const bf16_t *out, int B, int T,
                                                    int H)
{
    long long r = (long long)blockIdx.x * DELTA_ROWS + (threadIdx.x >> 5);
    if (r >= (long long)B * T * H) return; // uniform per warp: r depends on the warp only
    int lane = threadIdx.x & 31;
    const bf16_t *a = dout + r * HD, *o = out + r * HD;
    float s = 0.0f;
    for (int d = lane; d < HD; d += 32) s += bf16_to_f32(a[d]) * bf16_to_f32(o[d]);
    s = warp_sum(s);
    if (lane == 0) {
        long long bt = r / H;
        int h = (int)(r % H), t = (int)(bt % T);
        long long b = bt / T;
        delta[(b * H + h) * T + t] = s;
    }
}

// attention_cached_bf16: warp w of block blk owns query row i and head h, where
// blk*4 + w = i*H + h. Lane l holds elements d = l, l+32, ... of the query and of the output
// accumulator; each key's score is a warp_sum, which every lane receives bit-identically, so
// the running max and denominator agree across the warp. Keys are visited in order 0..last.
constexpr int CACHED_NJ = (HD + 31) / 32;

extern "C" __global__ void attention_cached_bf16(bf16_t *out, const bf16_t *q, const bf16_t *k, const bf16_t *v,
                                                 int tq, int tk, int H, float scale)
{
    long long p = (long long)blockIdx.x * CACHED_ROWS + (threadIdx.x >> 5);
    if (p >= (long long)tq * H) return; // uniform per warp
    int lane = threadIdx.x & 31;
    int i = (int)(p / H), h = (int)(p % H);
    long long rs = (long long)H * HD;
    const bf16_t *qr = q + i * rs + h * HD;
    float qv[CACHED_NJ], o[CACHED_NJ];
#pragma unroll
    for (int j = 0; j < CACHED_NJ; j++) {
        int d = lane + 32 * j;
        qv[j] = d < HD ? bf16_to_f32(qr[d]) : 0.0f;
        o[j] = 0.0f;
    }
    const float sl2 = scale * LOG2E;
    float m = neg_inf(), l = 0.0f;
    int last = tk - tq + i;
    for (int key = 0; key <= last; key++) {
        const bf16_t *kr = k + key * rs + h * HD, *vr = v + key * rs + h * HD;
        float s = 0.0f;
#pragma unroll
        for (int j = 0; j < CACHED_NJ; j++) {
            int d = lane + 32 * j;
            if (d < HD) s += qv[j] * bf16_to_f32(kr[d]);
        }
        s = warp_sum(s) * sl2;
        // key 0 comes first and m is finite from then on, so m - mn is never -inf - -inf.
        float mn = fmaxf(m, s), c = exp2f(m - mn), e = exp2f(s - mn);
        l = l * c + e;
#pragma unroll
        for (int j = 0; j < CACHED_NJ; j++) {
            int d = lane + 32 * j;
            if (d < HD) o[j] = o[j] * c + e * bf16_to_f32(vr[d]);
        }
        m = mn;
    }
    bf16_t *orow = out + i * rs + h * HD;
    float inv = 1.0f / l;
#pragma unroll
    for (int j = 0; j < CACHED_NJ; j++) {
        int d = lane + 32 * j;
        if (d < HD) orow[d] = f32_to_bf16(o[j] * inv);
    }
}

#if HERD_HD % 16 == 0
// ---- tensor-core path -------------------------------------------------------------------

constexpr int LDS = HD + 8;         // shared row stride in elements (16-byte multiple)
constexpr int KSTEPS = HD / 16;     // k-steps of a product over d
constexpr int NTILES = HD / 8;      // n-tiles of an accumulator over d
constexpr int FWD_ROWS = 64, FWD_THREADS = 128, FWD_BK = HD <= 128 ? 64 : 32;
constexpr int BWD_WARPS = HD <= 128 ? 4 : 1, BWD_THREADS = 32 * BWD_WARPS, BWD_ROWS = 16 * BWD_WARPS;
constexpr int BWD_TILE = HD <= 64 ? 64 : 16;

// vec16 is 8 bf16 moved as one 16-byte load or store. Shared tiles are declared as vec16 arrays
// so that they are 16-byte aligned with standard C++ alone (no CUDA header macros).
struct alignas(16) vec16 {
    unsigned x, y, z, w;
};

__device__ __forceinline__ unsigned ld_u32(const bf16_t *p) { return *reinterpret_cast<const unsigned *>(p); }

// pack2 rounds two floats to bf16 and packs them, lo in the low half (the lower index).
__device__ __forceinline__ unsigned pack2(float lo, float hi)
{
    return (unsigned)f32_to_bf16(lo) | ((unsigned)f32_to_bf16(hi) << 16);
}

// pack_rows packs p[0] (low half) and p[LDS], the same column of two consecutive shared rows:
// a B register of a product whose k index runs down the rows of a row-major tile.
__device__ __forceinline__ unsigned pack_rows(const bf16_t *p) { return (unsigned)p[0] | ((unsigned)p[LDS] << 16); }

// mma adds the 16x16 (A, 4 regs) by 16x8 (B, 2 regs) product into the fp32 16x8 tile c.
__device__ __forceinline__ void mma(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// load_a reads the A fragment of the 16x16 block whose top-left element is s (row-major, stride
// LDS).
__device__ __forceinline__ void load_a(unsigned (&a)[4], const bf16_t *s, int g, int c)
{
    a[0] = ld_u32(s + g * LDS + 2 * c);
    a[1] = ld_u32(s + (g + 8) * LDS + 2 * c);
    a[2] = ld_u32(s + g * LDS + 2 * c + 8);
    a[3] = ld_u32(s + (g + 8) * LDS + 2 * c + 8);
}

// a_from_c turns the accumulators of n-tiles 2j and 2j+1 (16 rows x 16 columns) into the A
// fragment of k-step j of a product over those columns, rounding to bf16.
__device__ __forceinline__ void a_from_c(unsigned (&a)[4], const float (&c0)[4], const float (&c1)[4])
{
    a[0] = pack2(c0[0], c0[1]);
    a[1] = pack2(c0[2], c0[3]);
    a[2] = pack2(c1[0], c1[1]);
    a[3] = pack2(c1[2], c1[3]);
}

// load_rows copies rows r0 .. r0+R-1 of one head (row t at x + t*rs) into the shared tile s,
// 16 bytes at a time, writing zeros for rows at or past T so that padded rows contribute
// nothing (their scores are masked, or belong to rows that are never stored).
template <int R, int NT>
__device__ __forceinline__ void load_rows(bf16_t *s, const bf16_t *x, long long rs, int r0, int T)
{
    constexpr int CH = HD / 8;
#pragma unroll
    for (int i = threadIdx.x; i < R * CH; i += NT) {
        int r = i / CH, col = (i % CH) * 8;
        vec16 val = {0u, 0u, 0u, 0u};
        if (r0 + r < T) val = *reinterpret_cast<const vec16 *>(x + (r0 + r) * rs + col);
        *reinterpret_cast<vec16 *>(s + r * LDS + col) = val;
    }
}

extern "C" __global__ void attention_fwd_bf16(bf16_t *out, float *lse, const bf16_t *q, const bf16_t *k,
                                              const bf16_t *v, int B, int T, int H, float scale)
{
    __shared__ vec16 smK[FWD_BK * LDS / 8], smV[FWD_BK * LDS / 8];
    bf16_t *sK = reinterpret_cast<bf16_t *>(smK), *sV = reinterpret_cast<bf16_t *>(smV);
    int nbh = B * H, ntiles = (T + FWD_ROWS - 1) / FWD_ROWS;
    int bh = blockIdx.x % nbh, qt = ntiles - 1 - (int)(blockIdx.x / nbh);
    int b = bh / H, h = bh % H;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
    long long rs = (long long)H * HD, base = (long long)b * T * rs + (long long)h * HD;
    const bf16_t *qb = q + base, *kb = k + base, *vb = v + base;
    int q0 = qt * FWD_ROWS, w0 = q0 + warp * 16, rA = w0 + g, rB = rA + 8;

    // The warp's 16 query rows as A fragments, for all of d; rows past T are zero.
    unsigned qa[KSTEPS][4];
#pragma unroll
    for (int kk = 0; kk < KSTEPS; kk++) {
        int col = kk * 16 + 2 * c;
        qa[kk][0] = rA < T ? ld_u32(qb + rA * rs + col) : 0u;
        qa[kk][1] = rB < T ? ld_u32(qb + rB * rs + col) : 0u;
        qa[kk][2] = rA < T ? ld_u32(qb + rA * rs + col + 8) : 0u;
        qa[kk][3] = rB < T ? ld_u32(qb + rB * rs + col + 8) : 0u;
    }
    float o[NTILES][4];
#pragma unroll
    for (int n = 0; n < NTILES; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    // Per thread: running max (shared by the thread's 4-lane group) and partial denominator of
    // rows rA ([0]) and rB ([1]), over the columns this thread holds.
    float m[2] = {neg_inf(), neg_inf()}, l[2] = {0.0f, 0.0f};
    const float sl2 = scale * LOG2E;

    int kend = min(q0 + FWD_ROWS, T);
    for (int k0 = 0; k0 < kend; k0 += FWD_BK) {
        __syncthreads(); // the previous tile is no longer read
        load_rows<FWD_BK, FWD_THREADS>(sK, kb, rs, k0, T);
        load_rows<FWD_BK, FWD_THREADS>(sV, vb, rs, k0, T);
        __syncthreads();
        if (k0 > w0 + 15) continue; // every key is above all of this warp's rows

        float s[FWD_BK / 8][4];
#pragma unroll
        for (int n = 0; n < FWD_BK / 8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KSTEPS; kk++) {
#pragma unroll
            for (int n = 0; n < FWD_BK / 8; n++) {
                const bf16_t *kr = sK + (n * 8 + g) * LDS + kk * 16 + 2 * c; // B[d][key] = K[key][d]
                mma(s[n], qa[kk], ld_u32(kr), ld_u32(kr + 8));
            }
        }
        // Keys past T are zero rows, and past every valid query, so the causal mask covers
        // them; it is needed only where the tile reaches past the warp's first row.
        bool diag = k0 + FWD_BK - 1 > w0;
        float mx[2] = {m[0], m[1]};
#pragma unroll
        for (int n = 0; n < FWD_BK / 8; n++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float x = s[n][e] * sl2;
                if (diag && k0 + n * 8 + 2 * c + (e & 1) > (e < 2 ? rA : rB)) x = neg_inf();
                s[n][e] = x;
                mx[e >> 1] = fmaxf(mx[e >> 1], x);
            }
        }
        float corr[2], ps[2] = {0.0f, 0.0f};
#pragma unroll
        for (int r = 0; r < 2; r++) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            // Tile 0 holds key 0, which every row sees, so mx is finite from the first tile on
            // and exp2f(m - mx) is 0 (first tile) or a true correction, never NaN.
            corr[r] = exp2f(m[r] - mx[r]);
            m[r] = mx[r];
        }
#pragma unroll
        for (int n = 0; n < FWD_BK / 8; n++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                s[n][e] = exp2f(s[n][e] - mx[e >> 1]);
                ps[e >> 1] += s[n][e];
            }
        }
#pragma unroll
        for (int r = 0; r < 2; r++) l[r] = l[r] * corr[r] + ps[r];
#pragma unroll
        for (int n = 0; n < NTILES; n++) {
            o[n][0] *= corr[0];
            o[n][1] *= corr[0];
            o[n][2] *= corr[1];
            o[n][3] *= corr[1];
        }
        // o += P V: P (16 x BK) from the score accumulators, B[key][d] = V[key][d].
#pragma unroll
        for (int kk = 0; kk < FWD_BK / 16; kk++) {
            unsigned pa[4];
            a_from_c(pa, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
            for (int n = 0; n < NTILES; n++) {
                const bf16_t *vr = sV + (kk * 16 + 2 * c) * LDS + n * 8 + g;
                mma(o[n], pa, pack_rows(vr), pack_rows(vr + 8 * LDS));
            }
        }
    }

    // The 4 lanes of a group hold disjoint columns of the same two rows; the butterfly gives
    // all four the same total.
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    }
    float inv0 = 1.0f / l[0], inv1 = 1.0f / l[1];
    bf16_t *ob = out + base;
#pragma unroll
    for (int n = 0; n < NTILES; n++) {
        int col = n * 8 + 2 * c;
        if (rA < T) *reinterpret_cast<unsigned *>(ob + rA * rs + col) = pack2(o[n][0] * inv0, o[n][1] * inv0);
        if (rB < T) *reinterpret_cast<unsigned *>(ob + rB * rs + col) = pack2(o[n][2] * inv1, o[n][3] * inv1);
    }
    if (c == 0) {
        float *lb = lse + (long long)bh * T;
        if (rA < T) lb[rA] = m[0] * LN2 + logf(l[0]);
        if (rB < T) lb[rB] = m[1] * LN2 + logf(l[1]);
    }
}

extern "C" __global__ void attention_bwd_dkdv_bf16(bf16_t *dk, bf16_t *dv, const bf16_t *dout, const float *lse,
                                                   const float *delta, const bf16_t *q, const bf16_t *k,
                                                   const bf16_t *v, int B, int T, int H, float scale)
{
    __shared__ vec16 smK[BWD_ROWS * LDS / 8], smV[BWD_ROWS * LDS / 8];
    __shared__ vec16 smQ[BWD_TILE * LDS / 8], smO[BWD_TILE * LDS / 8];
    bf16_t *sK = reinterpret_cast<bf16_t *>(smK), *sV = reinterpret_cast<bf16_t *>(smV);
    bf16_t *sQ = reinterpret_cast<bf16_t *>(smQ), *sO = reinterpret_cast<bf16_t *>(smO);
    __shared__ float sL[BWD_TILE], sD[BWD_TILE];
    int nbh = B * H;
    int bh = blockIdx.x % nbh, kt = (int)(blockIdx.x / nbh);
    int b = bh / H, h = bh % H;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
    long long rs = (long long)H * HD, base = (long long)b * T * rs + (long long)h * HD;
    const bf16_t *qb = q + base, *kb = k + base, *vb = v + base, *dob = dout + base;
    const float *lb = lse + (long long)bh * T, *db = delta + (long long)bh * T;
    int k0 = kt * BWD_ROWS, w0 = k0 + warp * 16, kA = w0 + g, kB = kA + 8;

    load_rows<BWD_ROWS, BWD_THREADS>(sK, kb, rs, k0, T);
    load_rows<BWD_ROWS, BWD_THREADS>(sV, vb, rs, k0, T);
    const bf16_t *wK = sK + warp * 16 * LDS, *wV = sV + warp * 16 * LDS;
    float dK[NTILES][4], dV[NTILES][4];
#pragma unroll
    for (int n = 0; n < NTILES; n++) {
        dK[n][0] = dK[n][1] = dK[n][2] = dK[n][3] = 0.0f;
        dV[n][0] = dV[n][1] = dV[n][2] = dV[n][3] = 0.0f;
    }
    const float sl2 = scale * LOG2E;

    // Query tiles from the one holding the block's first key to the end, in order. This
    // block's keys are rows of S^T (16 per warp), the tile's queries its columns.
    for (int i0 = k0 / BWD_TILE * BWD_TILE; i0 < T; i0 += BWD_TILE) {
        __syncthreads(); // the previous tile is no longer read (first time: orders sK, sV)
        load_rows<BWD_TILE, BWD_THREADS>(sQ, qb, rs, i0, T);
        load_rows<BWD_TILE, BWD_THREADS>(sO, dob, rs, i0, T);
        for (int r = threadIdx.x; r < BWD_TILE; r += BWD_THREADS) {
            bool ok = i0 + r < T;
            sL[r] = ok ? lb[i0 + r] * LOG2E : 0.0f;
            sD[r] = ok ? db[i0 + r] : 0.0f;
        }
        __syncthreads();
        if (i0 + BWD_TILE - 1 < w0) continue; // every query precedes all of this warp's keys

        // S^T = K Q^T and dP^T = V dout^T for the warp's 16 keys x BWD_TILE queries.
        float st[BWD_TILE / 8][4], dp[BWD_TILE / 8][4];
#pragma unroll
        for (int n = 0; n < BWD_TILE / 8; n++) {
            st[n][0] = st[n][1] = st[n][2] = st[n][3] = 0.0f;
            dp[n][0] = dp[n][1] = dp[n][2] = dp[n][3] = 0.0f;
        }
#pragma unroll
        for (int kk = 0; kk < KSTEPS; kk++) {
            unsigned a[4];
            load_a(a, wK + kk * 16, g, c);
#pragma unroll
            for (int n = 0; n < BWD_TILE / 8; n++) {
                const bf16_t *qr = sQ + (n * 8 + g) * LDS + kk * 16 + 2 * c; // B[d][query] = Q[query][d]
                mma(st[n], a, ld_u32(qr), ld_u32(qr + 8));
            }
            load_a(a, wV + kk * 16, g, c);
#pragma unroll
            for (int n = 0; n < BWD_TILE / 8; n++) {
                const bf16_t *orow = sO + (n * 8 + g) * LDS + kk * 16 + 2 * c;
                mma(dp[n], a, ld_u32(orow), ld_u32(orow + 8));
            }
        }
        // P^T and dS^T. Masked: queries before the key (causal) and queries past T (their rows
        // of q and dout are zero but their lse is not real, so P must be forced to 0). Both
        // are set by selection, so an overflowing exp2f there cannot leak a NaN.
        bool needMask = i0 < w0 + 15 || i0 + BWD_TILE > T;
#pragma unroll
        for (int n = 0; n < BWD_TILE / 8; n++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int col = n * 8 + 2 * c + (e & 1), qi = i0 + col;
                float p = exp2f(st[n][e] * sl2 - sL[col]);
                float ds = p * (dp[n][e] - sD[col]);
                if (needMask && (qi < (e < 2 ? kA : kB) || qi >= T)) p = ds = 0.0f;
                st[n][e] = p;
                dp[n][e] = ds;
            }
        }
        // dV += P^T dout and dK += dS^T Q (scale applied on store): B[query][d] from the
        // row-major tiles, k running down their rows.
#pragma unroll
        for (int kk = 0; kk < BWD_TILE / 16; kk++) {
            unsigned pa[4], sa[4];
            a_from_c(pa, st[2 * kk], st[2 * kk + 1]);
            a_from_c(sa, dp[2 * kk], dp[2 * kk + 1]);
#pragma unroll
            for (int n = 0; n < NTILES; n++) {
                const bf16_t *orow = sO + (kk * 16 + 2 * c) * LDS + n * 8 + g;
                mma(dV[n], pa, pack_rows(orow), pack_rows(orow + 8 * LDS));
                const bf16_t *qr = sQ + (kk * 16 + 2 * c) * LDS + n * 8 + g;
                mma(dK[n], sa, pack_rows(qr), pack_rows(qr + 8 * LDS));
            }
        }
    }

    bf16_t *dkb = dk + base, *dvb = dv + base;
#pragma unroll
    for (int n = 0; n < NTILES; n++) {
        int col = n * 8 + 2 * c;
        if (kA < T) {
            *reinterpret_cast<unsigned *>(dkb + kA * rs + col) = pack2(dK[n][0] * scale, dK[n][1] * scale);
            *reinterpret_cast<unsigned *>(dvb + kA * rs + col) = pack2(dV[n][0], dV[n][1]);
        }
        if (kB < T) {
            *reinterpret_cast<unsigned *>(dkb + kB * rs + col) = pack2(dK[n][2] * scale, dK[n][3] * scale);
            *reinterpret_cast<unsigned *>(dvb + kB * rs + col) = pack2(dV[n][2], dV[n][3]);
        }
    }
}

extern "C" __global__ void attention_bwd_dq_bf16(bf16_t *dq, const bf16_t *dout, const float *lse,
                                                 const float *delta, const bf16_t *q, const bf16_t *k,
                                                 const bf16_t *v, int B, int T, int H, float scale)
{
    __shared__ vec16 smQ[BWD_ROWS * LDS / 8], smO[BWD_ROWS * LDS / 8];
    __shared__ vec16 smK[BWD_TILE * LDS / 8], smV[BWD_TILE * LDS / 8];
    bf16_t *sQ = reinterpret_cast<bf16_t *>(smQ), *sO = reinterpret_cast<bf16_t *>(smO);
    bf16_t *sK = reinterpret_cast<bf16_t *>(smK), *sV = reinterpret_cast<bf16_t *>(smV);
    int nbh = B * H, ntiles = (T + BWD_ROWS - 1) / BWD_ROWS;
    int bh = blockIdx.x % nbh, qt = ntiles - 1 - (int)(blockIdx.x / nbh);
    int b = bh / H, h = bh % H;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
    long long rs = (long long)H * HD, base = (long long)b * T * rs + (long long)h * HD;
    const bf16_t *qb = q + base, *kb = k + base, *vb = v + base, *dob = dout + base;
    const float *lb = lse + (long long)bh * T, *db = delta + (long long)bh * T;
    int q0 = qt * BWD_ROWS, w0 = q0 + warp * 16, rA = w0 + g, rB = rA + 8;

    load_rows<BWD_ROWS, BWD_THREADS>(sQ, qb, rs, q0, T);
    load_rows<BWD_ROWS, BWD_THREADS>(sO, dob, rs, q0, T);
    const bf16_t *wQ = sQ + warp * 16 * LDS, *wO = sO + warp * 16 * LDS;
    // lse (base 2) and delta of rows rA, rB. Rows past T get 0: their dq is never stored, and
    // each accumulator row depends on its own query row only.
    float L[2] = {rA < T ? lb[rA] * LOG2E : 0.0f, rB < T ? lb[rB] * LOG2E : 0.0f};
    float Dl[2] = {rA < T ? db[rA] : 0.0f, rB < T ? db[rB] : 0.0f};
    float dQ[NTILES][4];
#pragma unroll
    for (int n = 0; n < NTILES; n++) dQ[n][0] = dQ[n][1] = dQ[n][2] = dQ[n][3] = 0.0f;
    const float sl2 = scale * LOG2E;

    int kend = min(q0 + BWD_ROWS, T);
    for (int k0 = 0; k0 < kend; k0 += BWD_TILE) {
        __syncthreads(); // the previous tile is no longer read (first time: orders sQ, sO)
        load_rows<BWD_TILE, BWD_THREADS>(sK, kb, rs, k0, T);
        load_rows<BWD_TILE, BWD_THREADS>(sV, vb, rs, k0, T);
        __syncthreads();
        if (k0 > w0 + 15) continue; // every key is above all of this warp's rows

        float s[BWD_TILE / 8][4], dp[BWD_TILE / 8][4];
#pragma unroll
        for (int n = 0; n < BWD_TILE / 8; n++) {
            s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
            dp[n][0] = dp[n][1] = dp[n][2] = dp[n][3] = 0.0f;
        }
#pragma unroll
        for (int kk = 0; kk < KSTEPS; kk++) {
            unsigned a[4];
            load_a(a, wQ + kk * 16, g, c);
#pragma unroll
            for (int n = 0; n < BWD_TILE / 8; n++) {
                const bf16_t *kr = sK + (n * 8 + g) * LDS + kk * 16 + 2 * c; // B[d][key] = K[key][d]
                mma(s[n], a, ld_u32(kr), ld_u32(kr + 8));
            }
            load_a(a, wO + kk * 16, g, c);
#pragma unroll
            for (int n = 0; n < BWD_TILE / 8; n++) {
                const bf16_t *vr = sV + (n * 8 + g) * LDS + kk * 16 + 2 * c;
                mma(dp[n], a, ld_u32(vr), ld_u32(vr + 8));
            }
        }
        // dS = P (dP - delta); keys after the query (this covers keys past T) are set to 0.
        bool diag = k0 + BWD_TILE - 1 > w0;
#pragma unroll
        for (int n = 0; n < BWD_TILE / 8; n++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int r = e >> 1;
                float p = exp2f(s[n][e] * sl2 - L[r]);
                float ds = p * (dp[n][e] - Dl[r]);
                if (diag && k0 + n * 8 + 2 * c + (e & 1) > (r ? rB : rA)) ds = 0.0f;
                s[n][e] = ds;
            }
        }
        // dQ += dS K (scale applied on store): B[key][d] = K[key][d].
#pragma unroll
        for (int kk = 0; kk < BWD_TILE / 16; kk++) {
            unsigned sa[4];
            a_from_c(sa, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
            for (int n = 0; n < NTILES; n++) {
                const bf16_t *kr = sK + (kk * 16 + 2 * c) * LDS + n * 8 + g;
                mma(dQ[n], sa, pack_rows(kr), pack_rows(kr + 8 * LDS));
            }
        }
    }

    bf16_t *dqb = dq + base;
#pragma unroll
    for (int n = 0; n < NTILES; n++) {
        int col = n * 8 + 2 * c;
        if (rA < T) *reinterpret_cast<unsigned *>(dqb + rA * rs + col) = pack2(dQ[n][0] * scale, dQ[n][1] * scale);
        if (rB < T) *reinterpret_cast<unsigned *>(dqb + rB * rs + col) = pack2(dQ[n][2] * scale, dQ[n][3] * scale);
    }
}

#else
// ---- scalar path (D not a multiple of 16) -----------------------------------------------

constexpr int FWD_ROWS = 64, FWD_THREADS = 64, BWD_ROWS = 64, BWD_THREADS = 64;
constexpr int SC_TILE = HD <= 64 ? 64 : HD <= 128 ? 32 : 16;

// load_rows_f32 copies rows r0 .. r0+SC_TILE-1 of one head (row t at x + t*rs) into s as
// fp32 (stride HD), zeros for rows at or past T. Every thread of the 64-thread block calls it.
__device__ __forceinline__ void load_rows_f32(float *s, const bf16_t *x, long long rs, int r0, int T)
{
    for (int i = threadIdx.x; i < SC_TILE * HD; i += 64) {
        int r = i / HD, d = i % HD;
        s[i] = r0 + r < T ? bf16_to_f32(x[(r0 + r) * rs + d]) : 0.0f;
    }
}

// load_row reads one row of HD elements into registers, zeros when the row is past T.
__device__ __forceinline__ void load_row(float (&dst)[HD], const bf16_t *x, bool ok)
{
#pragma unroll
    for (int d = 0; d < HD; d++) dst[d] = ok ? bf16_to_f32(x[d]) : 0.0f;
}

__device__ __forceinline__ float dot_row(const float (&a)[HD], const float *b)
{
    float s = 0.0f;
#pragma unroll
    for (int d = 0; d < HD; d++) s += a[d] * b[d];
    return s;
}

extern "C" __global__ void attention_fwd_bf16(bf16_t *out, float *lse, const bf16_t *q, const bf16_t *k,
                                              const bf16_t *v, int B, int T, int H, float scale)
{
    __shared__ float sK[SC_TILE * HD], sV[SC_TILE * HD];
    int nbh = B * H, ntiles = (T + FWD_ROWS - 1) / FWD_ROWS;
    int bh = blockIdx.x % nbh, qt = ntiles - 1 - (int)(blockIdx.x / nbh);
    int b = bh / H, h = bh % H;
    long long rs = (long long)H * HD, base = (long long)b * T * rs + (long long)h * HD;
    int q0 = qt * FWD_ROWS, row = q0 + (int)threadIdx.x;
    float qv[HD], o[HD];
    load_row(qv, q + base + row * rs, row < T);
#pragma unroll
    for (int d = 0; d < HD; d++) o[d] = 0.0f;
    const float sl2 = scale * LOG2E;
    float m = neg_inf(), l = 0.0f;
    int kend = min(q0 + FWD_ROWS, T), last = min(kend - 1, row); // keys 0..last
    for (int k0 = 0; k0 < kend; k0 += SC_TILE) {
        __syncthreads();
        load_rows_f32(sK, k + base, rs, k0, T);
        load_rows_f32(sV, v + base, rs, k0, T);
        __syncthreads();
        int jn = min(SC_TILE, last + 1 - k0);
        for (int j = 0; j < jn; j++) {
            float s = dot_row(qv, sK + j * HD) * sl2;
            // Key 0 comes first and m is finite from then on.
            float mn = fmaxf(m, s), cr = exp2f(m - mn), e = exp2f(s - mn);
            l = l * cr + e;
#pragma unroll
            for (int d = 0; d < HD; d++) o[d] = o[d] * cr + e * sV[j * HD + d];
            m = mn;
        }
    }
    if (row < T) {
        bf16_t *orow = out + base + row * rs;
        float inv = 1.0f / l;
#pragma unroll
        for (int d = 0; d < HD; d++) orow[d] = f32_to_bf16(o[d] * inv);
        lse[(long long)bh * T + row] = m * LN2 + logf(l);
    }
}

extern "C" __global__ void attention_bwd_dkdv_bf16(bf16_t *dk, bf16_t *dv, const bf16_t *dout, const float *lse,
                                                   const float *delta, const bf16_t *q, const bf16_t *k,
                                                   const bf16_t *v, int B, int T, int H, float scale)
{
    __shared__ float sQ[SC_TILE * HD], sO[SC_TILE * HD], sL[SC_TILE], sD[SC_TILE];
    int nbh = B * H;
    int bh = blockIdx.x % nbh, kt = (int)(blockIdx.x / nbh);
    int b = bh / H, h = bh % H;
    long long rs = (long long)H * HD, base = (long long)b * T * rs + (long long)h * HD;
    const float *lb = lse + (long long)bh * T, *db = delta + (long long)bh * T;
    int k0 = kt * BWD_ROWS, key = k0 + (int)threadIdx.x;
    float kv[HD], vv[HD], dK[HD], dV[HD];
    load_row(kv, k + base + key * rs, key < T);
    load_row(vv, v + base + key * rs, key < T);
#pragma unroll
    for (int d = 0; d < HD; d++) dK[d] = dV[d] = 0.0f;
    const float sl2 = scale * LOG2E;
    for (int i0 = k0; i0 < T; i0 += SC_TILE) {
        __syncthreads();
        load_rows_f32(sQ, q + base, rs, i0, T);
        load_rows_f32(sO, dout + base, rs, i0, T);
        for (int r = threadIdx.x; r < SC_TILE; r += 64) {
            bool ok = i0 + r < T;
            sL[r] = ok ? lb[i0 + r] * LOG2E : 0.0f;
            sD[r] = ok ? db[i0 + r] : 0.0f;
        }
        __syncthreads();
        // Queries key .. T-1 of this tile; none when the key is past T.
        int jn = min(SC_TILE, T - i0);
        for (int j = max(0, key - i0); j < jn; j++) {
            const float *qr = sQ + j * HD, *orow = sO + j * HD;
            float p = exp2f(dot_row(kv, qr) * sl2 - sL[j]);
            float ds = p * (dot_row(vv, orow) - sD[j]);
#pragma unroll
            for (int d = 0; d < HD; d++) {
                dV[d] += p * orow[d];
                dK[d] += ds * qr[d];
            }
        }
    }
    if (key < T) {
        bf16_t *dkr = dk + base + key * rs, *dvr = dv + base + key * rs;
#pragma unroll
        for (int d = 0; d < HD; d++) {
            dkr[d] = f32_to_bf16(dK[d] * scale);
            dvr[d] = f32_to_bf16(dV[d]);
        }
    }
}

extern "C" __global__ void attention_bwd_dq_bf16(bf16_t *dq, const bf16_t *dout, const float *lse,
                                                 const float *delta, const bf16_t *q, const bf16_t *k,
                                                 const bf16_t *v, int B, int T, int H, float scale)
{
    __shared__ float sK[SC_TILE * HD], sV[SC_TILE * HD];
    int nbh = B * H, ntiles = (T + BWD_ROWS - 1) / BWD_ROWS;
    int bh = blockIdx.x % nbh, qt = ntiles - 1 - (int)(blockIdx.x / nbh);
    int b = bh / H, h = bh % H;
    long long rs = (long long)H * HD, base = (long long)b * T * rs + (long long)h * HD;
    int q0 = qt * BWD_ROWS, row = q0 + (int)threadIdx.x;
    bool ok = row < T;
    float qv[HD], ov[HD], dQ[HD];
    load_row(qv, q + base + row * rs, ok);
    load_row(ov, dout + base + row * rs, ok);
#pragma unroll
    for (int d = 0; d < HD; d++) dQ[d] = 0.0f;
    float L = ok ? lse[(long long)bh * T + row] * LOG2E : 0.0f;
    float Dl = ok ? delta[(long long)bh * T + row] : 0.0f;
    const float sl2 = scale * LOG2E;
    int kend = min(q0 + BWD_ROWS, T), last = min(kend - 1, row);
    for (int k0 = 0; k0 < kend; k0 += SC_TILE) {
        __syncthreads();
        load_rows_f32(sK, k + base, rs, k0, T);
        load_rows_f32(sV, v + base, rs, k0, T);
        __syncthreads();
        int jn = min(SC_TILE, last + 1 - k0);
        for (int j = 0; j < jn; j++) {
            const float *kr = sK + j * HD;
            float p = exp2f(dot_row(qv, kr) * sl2 - L);
            float ds = p * (dot_row(ov, sV + j * HD) - Dl);
#pragma unroll
            for (int d = 0; d < HD; d++) dQ[d] += ds * kr[d];
        }
    }
    if (ok) {
        bf16_t *dqr = dq + base + row * rs;
#pragma unroll
        for (int d = 0; d < HD; d++) dqr[d] = f32_to_bf16(dQ[d] * scale);
    }
}

#endif

// attention_geometry is read by the launcher after loading the module: rows and threads per
// block of the forward, of dkdv and dq (the same), of delta and of the cached kernel.
extern "C" __device__ const int attention_geometry[8] = {FWD_ROWS,   FWD_THREADS,   BWD_ROWS,    BWD_THREADS,
                                                         DELTA_ROWS, DELTA_THREADS, CACHED_ROWS, CACHED_THREADS};
