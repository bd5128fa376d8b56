// harness.cpp: runs CUDA kernels of kernels/cuda/src, compiled as C++ into modules (shared
// libraries, see kernels/cuda/emu), on the CPU, one fiber per GPU thread.
//
// The Go side (emu.Device) drives it over stdin/stdout, one command per line, and reads and
// writes device memory through the memory file it shares with this process:
//   alloc N / free ADDR / zero ADDR N / copy DST SRC N      device memory
//   load ID PATH / symbol ID NAME                           modules and their globals
//   launch ID KERNEL GRID BLOCK SEED ARGS...                one kernel launch, 1-D grid
//   gemm TA TB M N K A B C CTYPE BETA                       the reference matrix multiply
// Each answer is "ok ..." or "err MESSAGE". A fault inside a kernel (an access past a buffer's
// end hits a guard page) or a broken CUDA rule (a shuffle some lanes of the warp do not reach,
// a __syncthreads only part of the block reaches) ends the process with a message naming the
// kernel, the block and the thread.
//
// Device memory: every allocation is 256-byte aligned and ends right before a PROT_NONE guard
// page; the rest of its pages is filled with 0xfd bytes (a huge negative number in fp32 and
// bf16, which no kernel computes by chance) and checked after each launch, so a write past
// either end is caught whether or not it reaches the guard, and a read there yields garbage.
// The allocation itself is filled with 0xff (a NaN in fp32 and bf16): a kernel that reads
// memory it never wrote sees NaN.
//
// Scheduling: blocks run on a pool of OS threads in a random order per launch; the threads of
// a block are fibers on one OS thread, each running until it reaches a synchronization point
// (a barrier, a shuffle, an mma) or exits, in a random order per round. Barriers and warp
// operations complete when every thread they wait for has arrived, which is the guarantee CUDA
// gives and no more: code that relies on warps running in lockstep, or on one warp finishing
// before another starts, sees different interleavings here.
#include "cuda_emu.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <dlfcn.h>
#include <fcntl.h>
#include <map>
#include <mutex>
#include <random>
#include <signal.h>
#include <string>
#include <sys/mman.h>
#include <thread>
#include <unistd.h>
#include <vector>

#if !defined(__x86_64__)
#error "the fiber switch below is written for x86-64"
#endif

// herd_fiber_switch saves the callee-saved registers, MXCSR and the x87 control word on the
// current stack, stores the stack pointer in *save and continues on the stack load.
extern "C" void herd_fiber_switch(void **save, void *load);
asm(R"(
.text
.globl herd_fiber_switch
.type herd_fiber_switch,@function
herd_fiber_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
.size herd_fiber_switch, .-herd_fiber_switch
)");

namespace herd_emu {

namespace {

constexpr size_t kStack = 256 << 10;
constexpr unsigned char kCanary = 0xfd;
const size_t kPage = (size_t)sysconf(_SC_PAGESIZE);

enum State { RUNNABLE, WAIT_BLOCK, WAIT_WARP, DONE };
enum WarpOp { OP_SHFL_XOR = 1, OP_MMA = 2 };

struct Fiber {
    void *sp = nullptr;
    char *stack = nullptr; // kStack bytes above a guard page
    uint3 tid{};
    int lane = 0, warp = 0;
    State state = DONE;
    // The warp operation this fiber waits at, and its result.
    int op = 0, arg = 0;
    unsigned mask = 0;
    uint64_t in[10]{}, out[4]{};
};

// Launch is what the workers share about the launch in progress.
struct Launch {
    const char *kernel = "";
    void (*call)(const uint64_t *) = nullptr;
    const uint64_t *slots = nullptr;
    uint3 grid{}, block{};
    std::vector<unsigned> order; // block indices in the order they are handed out
    std::atomic<size_t> next{0};
    uint64_t seed = 0;
};

struct Worker {
    int index = 0;
    std::vector<Fiber> fibers;
    void *sched_sp = nullptr;
    Fiber *cur = nullptr;
    uint3 bid{}, bdim{}, gdim{};
    Launch *launch = nullptr;
    std::mt19937_64 rng;
};

thread_local Worker *tw = nullptr;

void fiber_main()
{
    Worker *w = tw;
    w->launch->call(w->launch->slots);
    w->cur->state = DONE;
    herd_fiber_switch(&w->cur->sp, w->sched_sp);
    __builtin_unreachable();
}

void init_stack(Fiber &f)
{
    if (f.stack == nullptr) {
        char *m = (char *)mmap(nullptr, kStack + kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) {
            fprintf(stderr, "herd-emu: cannot map a fiber stack\n");
            _exit(3);
        }
        mprotect(m, kPage, PROT_NONE); // a fiber that overflows its stack faults here
        f.stack = m + kPage;
    }
    uint64_t *sp = (uint64_t *)(((uintptr_t)(f.stack + kStack)) & ~(uintptr_t)15);
    *--sp = 0;                        // the return address fiber_main never uses
    *--sp = (uint64_t)(&fiber_main);  // where the first switch returns to
    for (int i = 0; i < 6; i++) *--sp = 0; // rbp rbx r12 r13 r14 r15
    *--sp = 0x1F80ull | (0x037Full << 32); // default MXCSR, then the x87 control word
    f.sp = sp;
}

// yield returns to the block's scheduler; the fiber continues when it is runnable again.
void yield()
{
    Worker *w = tw;
    herd_fiber_switch(&w->cur->sp, w->sched_sp);
}

[[noreturn]] void failf(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    Worker *w = tw;
    if (w != nullptr && w->launch != nullptr) {
        if (w->cur != nullptr)
            fprintf(stderr, "herd-emu: kernel %s, block %u, thread %u: %s\n", w->launch->kernel, w->bid.x, w->cur->tid.x,
                    msg);
        else
            fprintf(stderr, "herd-emu: kernel %s, block %u: %s\n", w->launch->kernel, w->bid.x, msg);
    } else {
        fprintf(stderr, "herd-emu: %s\n", msg);
    }
    fflush(stderr);
    _exit(3);
}

// complete_warp performs the operation every lane of warp wp waits at.
void complete_warp(Worker *w, int wp, int lanes)
{
    Fiber *f = &w->fibers[wp * 32];
    int op = -1;
    for (int l = 0; l < lanes; l++) {
        if (f[l].state == DONE) continue;
        if (op == -1) op = f[l].op;
        if (f[l].op != op) failf("lanes of warp %d wait at different warp operations (%d, %d)", wp, op, f[l].op);
    }
    for (int l = 0; l < lanes; l++) {
        if (f[l].state != WAIT_WARP) continue;
        for (int m = 0; m < 32; m++) {
            if (!(f[l].mask >> m & 1)) continue;
            if (m >= lanes || f[m].state == DONE)
                failf("warp %d: lane %d shuffles with mask %#x, but lane %d has exited or does not exist", wp, l, f[l].mask, m);
        }
    }
    if (op == OP_SHFL_XOR) {
        for (int l = 0; l < lanes; l++) {
            int src = l ^ f[l].arg;
            if (src >= lanes) failf("warp %d: lane %d reads lane %d, which does not exist", wp, l, src);
            f[l].out[0] = f[src].in[0];
        }
    } else if (op == OP_MMA) {
        // Gather the 16x16 A, 16x8 B and 16x8 C tiles from the lanes' fragments (PTX ISA,
        // mma.m16n8k16 with .bf16 A and B and .f32 C and D; g = lane/4, c = lane%4; the lower
        // index sits in the lower 16 bits of a register), then scatter D = A B + C back.
        if (lanes != 32) failf("warp %d: mma.sync needs all 32 lanes", wp);
        float A[16][16], B[16][8], C[16][8];
        auto bf = [](unsigned h) { return from_bits<float>((uint64_t)((h & 0xffffu) << 16)); };
        for (int l = 0; l < 32; l++) {
            int g = l >> 2, c = l & 3;
            const uint64_t *in = f[l].in;
            unsigned a0 = (unsigned)in[0], a1 = (unsigned)in[1], a2 = (unsigned)in[2], a3 = (unsigned)in[3];
            unsigned b0 = (unsigned)in[4], b1 = (unsigned)in[5];
            A[g][2 * c] = bf(a0), A[g][2 * c + 1] = bf(a0 >> 16);
            A[g + 8][2 * c] = bf(a1), A[g + 8][2 * c + 1] = bf(a1 >> 16);
            A[g][2 * c + 8] = bf(a2), A[g][2 * c + 9] = bf(a2 >> 16);
            A[g + 8][2 * c + 8] = bf(a3), A[g + 8][2 * c + 9] = bf(a3 >> 16);
            B[2 * c][g] = bf(b0), B[2 * c + 1][g] = bf(b0 >> 16);
            B[2 * c + 8][g] = bf(b1), B[2 * c + 9][g] = bf(b1 >> 16);
            C[g][2 * c] = from_bits<float>(in[6]), C[g][2 * c + 1] = from_bits<float>(in[7]);
            C[g + 8][2 * c] = from_bits<float>(in[8]), C[g + 8][2 * c + 1] = from_bits<float>(in[9]);
        }
        float D[16][8];
        for (int i = 0; i < 16; i++)
            for (int j = 0; j < 8; j++) {
                double s = C[i][j];
                for (int k = 0; k < 16; k++) s += (double)A[i][k] * (double)B[k][j];
                D[i][j] = (float)s;
            }
        for (int l = 0; l < 32; l++) {
            int g = l >> 2, c = l & 3;
            f[l].out[0] = to_bits(D[g][2 * c]), f[l].out[1] = to_bits(D[g][2 * c + 1]);
            f[l].out[2] = to_bits(D[g + 8][2 * c]), f[l].out[3] = to_bits(D[g + 8][2 * c + 1]);
        }
    } else {
        failf("warp %d: unknown warp operation %d", wp, op);
    }
    for (int l = 0; l < lanes; l++)
        if (f[l].state == WAIT_WARP) f[l].state = RUNNABLE;
}

void run_block(Worker *w, unsigned b)
{
    Launch *L = w->launch;
    unsigned n = L->block.x;
    w->bid = {b, 0, 0};
    w->bdim = L->block;
    w->gdim = L->grid;
    if (w->fibers.size() < n) w->fibers.resize(n);
    for (unsigned i = 0; i < n; i++) {
        Fiber &f = w->fibers[i];
        f.tid = {i, 0, 0};
        f.lane = (int)(i & 31);
        f.warp = (int)(i >> 5);
        f.state = RUNNABLE;
        init_stack(f);
    }
    std::vector<unsigned> order(n);
    for (unsigned i = 0; i < n; i++) order[i] = i;
    int nwarps = (int)((n + 31) / 32);
    for (;;) {
        std::shuffle(order.begin(), order.end(), w->rng);
        for (unsigned i : order) {
            Fiber &f = w->fibers[i];
            if (f.state != RUNNABLE) continue;
            w->cur = &f;
            herd_fiber_switch(&w->sched_sp, f.sp);
            w->cur = nullptr;
        }
        unsigned done = 0, atBarrier = 0;
        for (unsigned i = 0; i < n; i++) {
            done += w->fibers[i].state == DONE;
            atBarrier += w->fibers[i].state == WAIT_BLOCK;
        }
        if (done == n) return;
        bool released = false;
        for (int wp = 0; wp < nwarps; wp++) {
            int lanes = (int)std::min<unsigned>(32, n - wp * 32);
            int waiting = 0, blocked = 0;
            for (int l = 0; l < lanes; l++) {
                waiting += w->fibers[wp * 32 + l].state == WAIT_WARP;
                blocked += w->fibers[wp * 32 + l].state == WAIT_BLOCK;
            }
            if (waiting > 0 && blocked == 0) {
                complete_warp(w, wp, lanes);
                released = true;
            }
        }
        if (!released && atBarrier + done == n) {
            for (unsigned i = 0; i < n; i++)
                if (w->fibers[i].state == WAIT_BLOCK) w->fibers[i].state = RUNNABLE;
            released = true;
        }
        if (!released) {
            for (int wp = 0; wp < nwarps; wp++) {
                int lanes = (int)std::min<unsigned>(32, n - wp * 32), waiting = 0, blocked = 0;
                for (int l = 0; l < lanes; l++) {
                    waiting += w->fibers[wp * 32 + l].state == WAIT_WARP;
                    blocked += w->fibers[wp * 32 + l].state == WAIT_BLOCK;
                }
                if (waiting > 0)
                    failf("deadlock: in warp %d, %d lanes wait at a warp operation while %d wait at __syncthreads "
                          "(a shuffle or barrier not reached by every thread it needs)",
                          wp, waiting, blocked);
            }
            failf("deadlock: %u threads wait at __syncthreads and %u have exited, of %u", atBarrier, done, n);
        }
    }
}

// ---- worker pool ------------------------------------------------------------------------

struct Pool {
    std::vector<std::thread> threads;
    std::vector<Worker> workers;
    std::mutex mu;
    std::condition_variable cv, doneCv;
    uint64_t generation = 0;
    int finished = 0;
    Launch *launch = nullptr;
};

Pool pool;

void install_altstack()
{
    stack_t ss{};
    ss.ss_size = 64 << 10;
    ss.ss_sp = malloc(ss.ss_size);
    sigaltstack(&ss, nullptr);
}

void worker_loop(Worker *w)
{
    tw = w;
    install_altstack();
    uint64_t seen = 0;
    for (;;) {
        Launch *L;
        {
            std::unique_lock<std::mutex> lk(pool.mu);
            pool.cv.wait(lk, [&] { return pool.generation != seen; });
            seen = pool.generation;
            L = pool.launch;
        }
        w->launch = L;
        w->rng.seed(L->seed * 0x9e3779b97f4a7c15ull + (uint64_t)w->index);
        for (size_t i; (i = L->next.fetch_add(1)) < L->order.size();) run_block(w, L->order[i]);
        w->launch = nullptr;
        {
            std::lock_guard<std::mutex> lk(pool.mu);
            pool.finished++;
        }
        pool.doneCv.notify_all();
    }
}

void run_launch(Launch &L)
{
    std::mt19937_64 rng(L.seed);
    L.order.resize(L.grid.x);
    for (unsigned i = 0; i < L.grid.x; i++) L.order[i] = i;
    std::shuffle(L.order.begin(), L.order.end(), rng);
    std::unique_lock<std::mutex> lk(pool.mu);
    pool.launch = &L;
    pool.finished = 0;
    pool.generation++;
    pool.cv.notify_all();
    pool.doneCv.wait(lk, [&] { return pool.finished == (int)pool.workers.size(); });
    pool.launch = nullptr;
}

// ---- device memory ----------------------------------------------------------------------

char *memBase = nullptr;
size_t memSize = 0, memTop = 0;

struct Alloc {
    uintptr_t start;     // what the Go side sees
    size_t size;         // bytes requested
    uintptr_t span;      // first page
    size_t pages;        // pages before the guard page
};
std::map<uintptr_t, Alloc> live;
std::multimap<size_t, uintptr_t> freeSpans; // pages -> span

std::string mem_alloc(size_t size)
{
    size_t padded = (std::max<size_t>(size, 1) + 255) / 256 * 256;
    size_t pages = (padded + kPage - 1) / kPage;
    uintptr_t span;
    auto it = freeSpans.find(pages);
    if (it != freeSpans.end()) {
        span = it->second;
        freeSpans.erase(it);
    } else {
        if (memTop + (pages + 1) * kPage > memSize) return "err device memory exhausted";
        span = (uintptr_t)memBase + memTop;
        memTop += (pages + 1) * kPage;
        mprotect((void *)(span + pages * kPage), kPage, PROT_NONE);
    }
    Alloc a{span + pages * kPage - padded, size, span, pages};
    memset((void *)span, kCanary, pages * kPage);
    memset((void *)a.start, 0xff, size);
    live[a.start] = a;
    return "ok " + std::to_string(a.start);
}

std::string mem_free(uintptr_t p)
{
    auto it = live.find(p);
    if (it == live.end()) return "err free of an address not allocated";
    freeSpans.emplace(it->second.pages, it->second.span);
    live.erase(it);
    return "ok";
}

// check_guards returns "" or a message naming the first allocation whose bytes outside the
// requested range are no longer kCanary.
std::string check_guards()
{
    for (auto &kv : live) {
        const Alloc &a = kv.second;
        const unsigned char *p = (const unsigned char *)a.span;
        size_t before = a.start - a.span, end = a.pages * kPage;
        for (size_t i = 0; i < end; i++) {
            if (i == before) i += a.size;
            if (i >= end) break;
            if (p[i] != kCanary) {
                long off = i < before ? -(long)(before - i) : (long)(i - before - a.size);
                char msg[256];
                snprintf(msg, sizeof msg, "a kernel wrote outside the buffer at %#lx of %zu bytes: byte %s%ld %s it",
                         (unsigned long)a.start, a.size, off < 0 ? "" : "+", off < 0 ? -off : off,
                         off < 0 ? "before the start of" : "past the end of");
                return msg;
            }
        }
    }
    return "";
}

void on_fault(int sig, siginfo_t *si, void *)
{
    uintptr_t addr = (uintptr_t)si->si_addr;
    char where[256] = "outside device memory";
    for (auto &kv : live) {
        const Alloc &a = kv.second;
        uintptr_t guard = a.span + a.pages * kPage;
        if (addr >= guard && addr < guard + kPage) {
            snprintf(where, sizeof where, "%zu bytes past the end of the buffer at %#lx of %zu bytes", (size_t)(addr - a.start - a.size),
                     (unsigned long)a.start, a.size);
            break;
        }
    }
    if (addr >= (uintptr_t)memBase && addr < (uintptr_t)memBase + memSize && where[0] == 'o')
        snprintf(where, sizeof where, "in device memory but in no live buffer");
    Worker *w = tw;
    if (w != nullptr && w->cur != nullptr && addr >= (uintptr_t)w->cur->stack - kPage && addr < (uintptr_t)w->cur->stack)
        snprintf(where, sizeof where, "the thread's stack overflowed");
    char msg[512];
    int n = snprintf(msg, sizeof msg, "herd-emu: %s at address %#lx (%s)", sig == SIGSEGV ? "SIGSEGV" : "SIGBUS",
                     (unsigned long)addr, where);
    if (w != nullptr && w->launch != nullptr)
        n += snprintf(msg + n, sizeof msg - n, " in kernel %s, block %u, thread %u", w->launch->kernel, w->bid.x,
                      w->cur ? w->cur->tid.x : 0u);
    msg[n++] = '\n';
    (void)!write(2, msg, n);
    _exit(4);
}

// ---- modules ------------------------------------------------------------------------------

struct Module {
    std::map<std::string, void (*)(const uint64_t *)> kernels;
    std::map<std::string, symbol> symbols;
};
std::map<int, Module> modules;

std::string load_module(int id, const std::string &path)
{
    void *h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr) return std::string("err dlopen: ") + dlerror();
    auto table = (const kernel *(*)(int *))dlsym(h, "herd_emu_kernels");
    auto syms = (const symbol *(*)(int *))dlsym(h, "herd_emu_symbols");
    if (table == nullptr || syms == nullptr) return "err " + path + " is not an emulator module";
    Module m;
    int n = 0;
    const kernel *k = table(&n);
    for (int i = 0; i < n; i++) m.kernels[k[i].name] = k[i].call;
    const symbol *s = syms(&n);
    for (int i = 0; i < n; i++) m.symbols[s[i].name] = s[i];
    modules[id] = m;
    return "ok";
}

// ---- reference GEMM -------------------------------------------------------------------------

float bf16_to_f32(uint16_t h) { return from_bits<float>((uint64_t)h << 16); }

uint16_t f32_to_bf16(float f)
{
    uint32_t u = (uint32_t)to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

// gemm is BLASLt.Gemm's contract: C[m,n] = op(A) op(B) + beta C, row-major; A stored [m,k]
// ([k,m] when ta), B stored [k,n] ([n,k] when tb); bf16 inputs, sums in double rounded once.
// With beta = 0, C is not read.
void gemm(bool ta, bool tb, long m, long n, long k, const uint16_t *A, const uint16_t *B, void *C, bool cf32, float beta)
{
    for (long i = 0; i < m; i++)
        for (long j = 0; j < n; j++) {
            double s = 0;
            for (long p = 0; p < k; p++) {
                float a = bf16_to_f32(ta ? A[p * m + i] : A[i * k + p]);
                float b = bf16_to_f32(tb ? B[j * k + p] : B[p * n + j]);
                s += (double)a * (double)b;
            }
            if (cf32) {
                float *c = (float *)C + i * n + j;
                float r = (float)s;
                if (beta != 0) r += beta * *c;
                *c = r;
            } else {
                uint16_t *c = (uint16_t *)C + i * n + j;
                float r = (float)s;
                if (beta != 0) r += beta * bf16_to_f32(*c);
                *c = f32_to_bf16(r);
            }
        }
}

} // namespace

// ---- the builtins of cuda_emu.h -------------------------------------------------------------

const uint3 &thread_idx() { return tw->cur->tid; }
const uint3 &block_idx() { return tw->bid; }
const uint3 &block_dim() { return tw->bdim; }
const uint3 &grid_dim() { return tw->gdim; }

void syncthreads()
{
    tw->cur->state = WAIT_BLOCK;
    yield();
}

uint64_t warp_shfl_xor(unsigned mask, uint64_t v, int lane_mask)
{
    Fiber *f = tw->cur;
    f->op = OP_SHFL_XOR;
    f->mask = mask;
    f->arg = lane_mask;
    f->in[0] = v;
    f->state = WAIT_WARP;
    yield();
    return f->out[0];
}

void mma_m16n8k16(float &d0, float &d1, float &d2, float &d3, unsigned a0, unsigned a1, unsigned a2, unsigned a3,
                  unsigned b0, unsigned b1)
{
    Fiber *f = tw->cur;
    f->op = OP_MMA;
    f->mask = 0xffffffffu;
    uint64_t in[10] = {a0, a1, a2, a3, b0, b1, to_bits(d0), to_bits(d1), to_bits(d2), to_bits(d3)};
    memcpy(f->in, in, sizeof in);
    f->state = WAIT_WARP;
    yield();
    d0 = from_bits<float>(f->out[0]), d1 = from_bits<float>(f->out[1]);
    d2 = from_bits<float>(f->out[2]), d3 = from_bits<float>(f->out[3]);
}

void fail(const char *what) { failf("%s", what); }

} // namespace herd_emu

using namespace herd_emu;

static std::string launch_cmd(const std::vector<std::string> &t)
{
    // launch ID KERNEL GRID BLOCK SEED ARG...; an argument is p:HEX, i:DEC, l:DEC, f:HEX (bits), d:HEX (bits)
    if (t.size() < 6) return "err launch: too few fields";
    auto mod = modules.find(atoi(t[1].c_str()));
    if (mod == modules.end()) return "err launch: no module " + t[1];
    auto k = mod->second.kernels.find(t[2]);
    if (k == mod->second.kernels.end()) return "err launch: no kernel " + t[2] + " in module " + t[1];
    long grid = atol(t[3].c_str()), block = atol(t[4].c_str());
    if (grid <= 0 || block <= 0 || block > 1024) return "err launch: grid " + t[3] + " block " + t[4];
    std::vector<uint64_t> slots;
    for (size_t i = 6; i < t.size(); i++) {
        const std::string &a = t[i];
        if (a.size() < 3 || a[1] != ':') return "err launch: bad argument " + a;
        const char *v = a.c_str() + 2;
        uint64_t s = 0;
        switch (a[0]) {
        case 'p': case 'f': case 'd': s = strtoull(v, nullptr, 16); break;
        case 'i': s = (uint64_t)(uint32_t)(int32_t)strtol(v, nullptr, 10); break;
        case 'l': s = (uint64_t)strtoll(v, nullptr, 10); break;
        default: return "err launch: bad argument " + a;
        }
        slots.push_back(s);
    }
    Launch L;
    L.kernel = k->first.c_str();
    L.call = k->second;
    L.slots = slots.data();
    L.grid = {(unsigned)grid, 1, 1};
    L.block = {(unsigned)block, 1, 1};
    L.seed = strtoull(t[5].c_str(), nullptr, 10);
    run_launch(L);
    std::string bad = check_guards();
    if (!bad.empty()) return "err kernel " + k->first + ": " + bad;
    return "ok";
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: harness MEMFILE BYTES WORKERS\n");
        return 2;
    }
    memSize = strtoull(argv[2], nullptr, 10);
    int fd = open(argv[1], O_RDWR);
    if (fd < 0 || ftruncate(fd, (off_t)memSize) != 0) {
        perror("herd-emu: memory file");
        return 2;
    }
    memBase = (char *)mmap(nullptr, memSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (memBase == MAP_FAILED) {
        perror("herd-emu: mmap");
        return 2;
    }
    struct sigaction sa {};
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigaction(SIGSEGV, &sa, nullptr);
    sigaction(SIGBUS, &sa, nullptr);
    install_altstack();
    int nw = std::max(1, atoi(argv[3]));
    pool.workers.resize(nw);
    for (int i = 0; i < nw; i++) {
        pool.workers[i].index = i;
        pool.threads.emplace_back(worker_loop, &pool.workers[i]);
    }
    printf("ready %lu %zu\n", (unsigned long)(uintptr_t)memBase, memSize);
    fflush(stdout);
    char *line = nullptr;
    size_t cap = 0;
    while (getline(&line, &cap, stdin) > 0) {
        std::vector<std::string> t;
        for (char *s = strtok(line, " \n"); s != nullptr; s = strtok(nullptr, " \n")) t.push_back(s);
        if (t.empty()) continue;
        std::string r;
        const std::string &c = t[0];
        auto u = [&](size_t i) { return i < t.size() ? (uintptr_t)strtoull(t[i].c_str(), nullptr, 10) : 0; };
        if (c == "quit") {
            fflush(stdout);
            _exit(0);
        } else if (c == "alloc") {
            r = mem_alloc(u(1));
        } else if (c == "free") {
            r = mem_free(u(1));
        } else if (c == "zero") {
            memset((void *)u(1), 0, u(2));
            r = "ok";
        } else if (c == "copy") {
            memmove((void *)u(1), (const void *)u(2), u(3));
            r = "ok";
        } else if (c == "load" && t.size() == 3) {
            r = load_module((int)u(1), t[2]);
        } else if (c == "symbol" && t.size() == 3) {
            auto m = modules.find((int)u(1));
            auto s = m == modules.end() ? std::map<std::string, symbol>::iterator() : m->second.symbols.find(t[2]);
            if (m == modules.end() || s == m->second.symbols.end()) {
                r = "err no symbol " + t[2];
            } else {
                r = "ok ";
                char hex[3];
                for (size_t i = 0; i < s->second.size; i++) {
                    snprintf(hex, sizeof hex, "%02x", ((const unsigned char *)s->second.addr)[i]);
                    r += hex;
                }
            }
        } else if (c == "launch") {
            r = launch_cmd(t);
        } else if (c == "gemm" && t.size() == 11) {
            gemm(u(1) != 0, u(2) != 0, (long)u(3), (long)u(4), (long)u(5), (const uint16_t *)u(6), (const uint16_t *)u(7),
                 (void *)u(8), t[9] == "f32", from_bits<float>(strtoull(t[10].c_str(), nullptr, 16)));
            r = "ok";
        } else {
            r = "err unknown command " + c;
        }
        printf("%s\n", r.c_str());
        fflush(stdout);
    }
    return 0;
}
