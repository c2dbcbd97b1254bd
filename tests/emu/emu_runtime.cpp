/* emu_runtime.cpp (Loupe's CUDA emulator) — the CUDA runtime on the CPU.
 * Device memory: each cudaMalloc is its own mapping, its end against a guard page, so
 * a kernel running past the end of a buffer faults; outside device work every
 * allocation is PROT_NONE, so host code that reads a device pointer directly (which
 * a GPU would not allow either) faults at once. New allocations are filled with NaN
 * bytes, as the GPU leaves them undefined. The device has LOUPE_EMU_MEM_MIB of memory
 * (default 4096), so out-of-memory paths can be driven. Streams run their work at
 * once, in order; a capturing stream records it into a graph instead, and the calls
 * a real capture refuses (sync, cudaMemcpy, cudaFree, other streams) invalidate it.
 * Blocks, and a block's threads between barriers, run one at a time in the order
 * LOUPE_EMU_ORDER names: forward (default), reverse, or shuffle[:seed] (a new
 * permutation each round). A race (a thread reading what another thread or block
 * writes with no barrier between them) passes in some order; run in another, it shows. */
#include "emu_internal.h"

#include <cub/device/device_radix_sort.cuh>
#include <cuda_bf16.h>

#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <vector>

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

namespace {

/* ---- memory ------------------------------------------------------------------- */
struct Alloc {
    char *map;   /* the mapping: data pages then one guard page */
    size_t span; /* data pages' bytes */
    size_t size; /* as asked */
};
std::map<uintptr_t, Alloc> allocs; /* by user pointer */
size_t used, capacity;
int protect = -1; /* LOUPE_EMU_PROTECT, default on */
int device_depth;
const size_t page = 4096;
enum { ORDER_FORWARD, ORDER_REVERSE, ORDER_SHUFFLE };
int order_mode;
uint64_t order_state; /* shuffle's generator (splitmix64) */

void settings() {
    if (protect >= 0) return;
    const char *p = getenv("LOUPE_EMU_PROTECT");
    protect = !(p && !strcmp(p, "0"));
    const char *m = getenv("LOUPE_EMU_MEM_MIB");
    capacity = (size_t)(m ? atoll(m) : 4096) << 20;
    const char *o = getenv("LOUPE_EMU_ORDER");
    if (!o || !*o || !strcmp(o, "forward")) order_mode = ORDER_FORWARD;
    else if (!strcmp(o, "reverse")) order_mode = ORDER_REVERSE;
    else if (!strncmp(o, "shuffle", 7) && (!o[7] || o[7] == ':')) {
        order_mode = ORDER_SHUFFLE;
        order_state = o[7] ? strtoull(o + 8, nullptr, 10) : 1;
    } else {
        fprintf(stderr, "lp_emu: LOUPE_EMU_ORDER=%s: expected forward, reverse or shuffle[:seed]\n", o);
        abort();
    }
}

uint64_t order_next() {
    uint64_t z = (order_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* 0..n-1 in the order LOUPE_EMU_ORDER asks for (a fresh draw each call when shuffled). */
void order_fill(std::vector<uint64_t> &p, uint64_t n) {
    p.resize(n);
    for (uint64_t i = 0; i < n; i++) p[i] = order_mode == ORDER_REVERSE ? n - 1 - i : i;
    if (order_mode == ORDER_SHUFFLE)
        for (uint64_t i = n; i > 1; i--) std::swap(p[i - 1], p[order_next() % i]);
}

void set_prot(int prot) {
    for (auto &a : allocs)
        if (mprotect(a.second.map, a.second.span, prot)) {
            perror("lp_emu: mprotect");
            abort();
        }
}

struct DeviceScope { /* device memory readable while device work runs */
    DeviceScope() {
        if (device_depth++ == 0 && protect) set_prot(PROT_READ | PROT_WRITE);
    }
    ~DeviceScope() {
        if (--device_depth == 0 && protect) set_prot(PROT_NONE);
    }
};

const Alloc *find(const void *p, uintptr_t *start) {
    auto it = allocs.upper_bound((uintptr_t)p);
    if (it == allocs.begin()) return nullptr;
    --it;
    *start = it->first;
    return &it->second;
}

/* ---- errors, streams, capture --------------------------------------------------- */
cudaError_t last_error = cudaSuccess;
cudaError_t fail(cudaError_t e) {
    if (e != cudaSuccess) last_error = e;
    return e;
}

struct Graph {
    std::vector<std::function<void()>> ops;
};
cudaStream_t cap_stream;
Graph *cap_graph;
bool cap_invalid;
size_t n_launches, n_graph_launches;

/* The legacy default stream (0) synchronises with our blocking streams: using it, or
 * syncing, during a capture invalidates the capture, as on a GPU. */
cudaError_t refuse_in_capture(const char *what) {
    if (!cap_graph) return cudaSuccess;
    cap_invalid = true;
    fprintf(stderr, "lp_emu: %s during a stream capture invalidates it\n", what);
    return fail(cudaErrorStreamCaptureImplicit);
}

/* ---- fibers ---------------------------------------------------------------------
 * Fiber t runs thread t of every block: made once (makecontext), then switched with
 * _setjmp/_longjmp, which save no signal mask, so a switch costs no system call. */
enum { READY, WAIT_BLOCK, WAIT_WARP, DONE };
struct Fiber {
    ucontext_t ctx;
    jmp_buf jb;
    char *stack;
    int state;
    bool started;
};
const size_t fiber_stack = 256 << 10;
std::vector<Fiber *> fibers;
std::vector<unsigned> warp_alive, warp_waiting, warp_mask; /* warp_mask: lanes named by waiting exchanges */
std::vector<uint64_t> lane_slots;
ucontext_t sched_uc;
jmp_buf sched_jb;
unsigned cur, n_threads, alive, block_waiting;
const std::function<void()> *body;
bool direct, used_barrier, force_fibers;
const void *cur_kernel;
uint64_t block_serial; /* the block now running, counted over every launch */
std::map<const void *, uint64_t> shared_block; /* __shared__ array -> the block that last poisoned it */

void set_thread(unsigned t) {
    threadIdx.x = t % blockDim.x;
    threadIdx.y = (t / blockDim.x) % blockDim.y;
    threadIdx.z = t / (blockDim.x * blockDim.y);
}

void yield_to_scheduler(Fiber *f) {
    if (!_setjmp(f->jb)) _longjmp(sched_jb, 1);
}

void fiber_main() {
    Fiber *f = fibers[cur];
    for (;;) { /* one block's thread a turn */
        (*body)();
        f->state = DONE;
        yield_to_scheduler(f);
    }
}

void resume(unsigned t) {
    Fiber *f = fibers[t];
    cur = t;
    set_thread(t);
    if (_setjmp(sched_jb)) return; /* the fiber yielded */
    if (!f->started) {
        f->started = true;
        swapcontext(&sched_uc, &f->ctx);
    } else _longjmp(f->jb, 1);
}

[[noreturn]] void fatal(const char *what) {
    fprintf(stderr, "lp_emu: kernel %p, block (%u,%u,%u), thread (%u,%u,%u): %s\n", cur_kernel, blockIdx.x, blockIdx.y,
            blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z, what);
    abort();
}

const char *const RETURNED_BLOCK = "__syncthreads after some threads of the block returned";
const char *const RETURNED_WARP = "a warp exchange after some lanes it names returned";

void wait(int state, unsigned mask = 0) {
    if (direct)
        fatal("a barrier in a block run without fibers (its first block had none): set LOUPE_EMU_FIBERS=1");
    used_barrier = true;
    /* CUDA asks every thread of the block (every lane the mask names, for a warp
     * exchange) to reach the barrier: one that returned is a GPU's hang or undefined
     * result, however the emulator could carry on. Caught here when the return came
     * first, in run_block_fibers when the wait did. */
    if (state == WAIT_BLOCK && alive != n_threads) fatal(RETURNED_BLOCK);
    if (state == WAIT_WARP) {
        const unsigned w = cur / 32;
        for (unsigned l = 0; l < 32 && w * 32 + l < n_threads; l++)
            if ((mask >> l & 1) && fibers[w * 32 + l]->state == DONE) fatal(RETURNED_WARP);
        warp_mask[w] |= mask;
    }
    Fiber *f = fibers[cur];
    f->state = state;
    if (state == WAIT_BLOCK) block_waiting++;
    else warp_waiting[cur / 32]++;
    yield_to_scheduler(f);
}

void run_block_fibers() {
    while (fibers.size() < n_threads) {
        Fiber *f = new Fiber();
        f->stack = (char *)mmap(nullptr, fiber_stack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                                -1, 0);
        if (f->stack == MAP_FAILED) {
            perror("lp_emu: fiber stack");
            abort();
        }
        getcontext(&f->ctx);
        f->ctx.uc_stack.ss_sp = f->stack;
        f->ctx.uc_stack.ss_size = fiber_stack;
        f->ctx.uc_link = nullptr; /* fiber_main never returns */
        makecontext(&f->ctx, fiber_main, 0);
        fibers.push_back(f);
    }
    warp_alive.assign((n_threads + 31) / 32, 0);
    warp_waiting.assign(warp_alive.size(), 0);
    warp_mask.assign(warp_alive.size(), 0);
    for (unsigned t = 0; t < n_threads; t++) fibers[t]->state = READY, warp_alive[t / 32]++;
    alive = n_threads;
    block_waiting = 0;
    static std::vector<uint64_t> perm;
    while (alive) {
        bool ran = false;
        if (order_mode != ORDER_FORWARD) order_fill(perm, n_threads);
        for (unsigned i = 0; i < n_threads; i++) {
            const unsigned t = order_mode == ORDER_FORWARD ? i : (unsigned)perm[i];
            if (fibers[t]->state != READY) continue;
            resume(t);
            ran = true;
            if (fibers[t]->state == DONE) {
                alive--, warp_alive[t / 32]--;
                if (block_waiting) fatal(RETURNED_BLOCK); /* others wait at a barrier it never reached */
                if (warp_mask[t / 32] >> (t % 32) & 1) fatal(RETURNED_WARP);
            }
        }
        /* Release the warps whose live lanes all wait, then the block if all wait. */
        bool released = false;
        for (size_t w = 0; w < warp_alive.size(); w++)
            if (warp_waiting[w] && warp_waiting[w] == warp_alive[w]) {
                for (unsigned t = (unsigned)w * 32; t < n_threads && t < (unsigned)w * 32 + 32; t++)
                    if (fibers[t]->state == WAIT_WARP) fibers[t]->state = READY;
                warp_waiting[w] = 0;
                warp_mask[w] = 0;
                released = true;
            }
        if (block_waiting && block_waiting == alive) {
            for (unsigned t = 0; t < n_threads; t++)
                if (fibers[t]->state == WAIT_BLOCK) fibers[t]->state = READY;
            block_waiting = 0;
            released = true;
        }
        if (alive && !released && !ran) fatal("deadlock: threads wait at barriers that can never complete");
    }
}

void run_grid(dim3 g, dim3 b, const std::function<void()> &fn, const void *kernel) {
    DeviceScope scope;
    n_launches++;
    gridDim = g;
    blockDim = b;
    body = &fn;
    cur_kernel = kernel;
    n_threads = b.x * b.y * b.z;
    if (lane_slots.size() < n_threads) lane_slots.resize(n_threads);
    bool first = true;
    used_barrier = false;
    static std::vector<uint64_t> blocks, threads;
    const uint64_t nb = (uint64_t)g.x * g.y * g.z;
    if (order_mode == ORDER_FORWARD) blocks.clear();
    else order_fill(blocks, nb);
    for (uint64_t i = 0; i < nb; i++) {
        const uint64_t k = blocks.empty() ? i : blocks[i];
        block_serial++;
        blockIdx = {(unsigned)(k % g.x), (unsigned)(k / g.x % g.y), (unsigned)(k / ((uint64_t)g.x * g.y))};
        if (first || used_barrier || force_fibers) {
            direct = false;
            run_block_fibers();
        } else { /* no barrier in the first block: the rest run as plain calls */
            direct = true;
            if (order_mode != ORDER_FORWARD) order_fill(threads, n_threads);
            for (unsigned j = 0; j < n_threads; j++) {
                cur = order_mode == ORDER_FORWARD ? j : (unsigned)threads[j];
                set_thread(cur);
                fn();
            }
        }
        first = false;
    }
    direct = false;
}

} // namespace

namespace lp_emu {

bool capturing() { return cap_graph != nullptr; }

bool knob(const char *name) {
    const char *v = getenv(name);
    return v && !strcmp(v, "1");
}

cudaError_t submit(void *stream, std::function<void()> op) {
    settings();
    if (cap_graph) {
        if ((cudaStream_t)stream == cap_stream) {
            cap_graph->ops.push_back([op]() {
                DeviceScope s;
                op();
            });
            return cudaSuccess;
        }
        return refuse_in_capture("work on another stream");
    }
    DeviceScope s;
    op();
    return cudaSuccess;
}

bool device_range(const void *p, size_t bytes, const char *who) {
    uintptr_t start;
    const Alloc *a = find(p, &start);
    if (a && (uintptr_t)p + bytes <= start + a->size) return true;
    fprintf(stderr, "lp_emu: %s: %zu bytes at %p are not inside one device allocation\n", who, bytes, p);
    return false;
}

float tf32(float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0xfffu + ((u >> 13) & 1u)) & ~0x1fffu;
    memcpy(&v, &u, 4);
    return v;
}
float bf16_to_float(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
uint16_t float_to_bf16(float v) { return __float2bfloat16_rn(v).x; }

void launch(dim3 g, dim3 b, size_t shmem, void *stream, std::function<void()> fn, const void *kernel) {
    settings();
    force_fibers = lp_emu::knob("LOUPE_EMU_FIBERS");
    const unsigned long long nt = (unsigned long long)b.x * b.y * b.z;
    if (!g.x || !g.y || !g.z || !b.x || !b.y || !b.z || g.y > 65535 || g.z > 65535 || b.x > 1024 || b.y > 1024 ||
        b.z > 64 || nt > 1024 || shmem > 48 * 1024) {
        fprintf(stderr, "lp_emu: kernel %p: invalid launch grid (%u,%u,%u) block (%u,%u,%u) shared %zu\n", kernel, g.x,
                g.y, g.z, b.x, b.y, b.z, shmem);
        fail(cudaErrorInvalidConfiguration);
        return;
    }
    cudaError_t e = submit(stream, [g, b, fn, kernel]() { run_grid(g, b, fn, kernel); });
    if (e != cudaSuccess) fail(e);
}

} // namespace lp_emu

extern "C" {

void lp_emu_syncthreads(void) { wait(WAIT_BLOCK); }
void lp_emu_syncwarp(unsigned mask) { wait(WAIT_WARP, mask); }
void *lp_emu_lane_slot(unsigned tid) { return &lane_slots[tid]; }

void lp_emu_shared(const volatile void *p, size_t bytes) {
    void *q = const_cast<void *>(p);
    uint64_t &b = shared_block[q];
    if (b == block_serial) return; /* another thread of this block got here first */
    b = block_serial;
    memset(q, 0xff, bytes);
}

cudaError_t lp_emu_device_op(void *stream, void (*fn)(void *), void *arg) {
    settings();
    if (cap_graph) return refuse_in_capture("an uncapturable device call");
    (void)stream;
    DeviceScope s;
    fn(arg);
    return cudaSuccess;
}

size_t lp_emu_launches(void) { return n_launches; }
size_t lp_emu_graph_launches(void) { return n_graph_launches; }

cudaError_t cudaGetDeviceCount(int *n) {
    *n = 1;
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int *d) {
    *d = 0;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : fail(cudaErrorInvalidValue); }
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int d) {
    settings();
    if (d != 0) return fail(cudaErrorInvalidValue);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "Loupe CUDA emulator (CPU, not a GPU)");
    p->totalGlobalMem = capacity;
    p->major = 9, p->minor = 0, p->multiProcessorCount = 1, p->warpSize = 32, p->maxThreadsPerBlock = 1024;
    return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags) {
    (void)flags;
    *s = (cudaStream_t)malloc(1);
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
    free(s);
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    if (cap_graph && s == cap_stream) {
        cap_invalid = true;
        return fail(cudaErrorStreamCaptureUnsupported);
    }
    return refuse_in_capture("a legacy-stream sync");
}
cudaError_t cudaDeviceSynchronize(void) { return refuse_in_capture("cudaDeviceSynchronize"); }

cudaError_t cudaMalloc(void **out, size_t bytes) {
    settings();
    *out = nullptr;
    if (!bytes) return cudaSuccess;
    if (used + bytes > capacity) return fail(cudaErrorMemoryAllocation);
    const size_t span = (bytes + page - 1) / page * page;
    char *m = (char *)mmap(nullptr, span + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return fail(cudaErrorMemoryAllocation);
    mprotect(m + span, page, PROT_NONE); /* the guard page */
    char *p = (char *)(((uintptr_t)(m + span - bytes)) & ~(uintptr_t)255); /* cudaMalloc's 256-byte alignment */
    memset(p, 0xff, bytes); /* NaN floats: uninitialised device memory must not pass as zeros */
    if (protect && device_depth == 0) mprotect(m, span, PROT_NONE);
    allocs[(uintptr_t)p] = Alloc{m, span, bytes};
    used += bytes;
    *out = p;
    return cudaSuccess;
}
cudaError_t cudaFree(void *p) {
    if (!p) return cudaSuccess;
    if (cap_graph) return refuse_in_capture("cudaFree");
    auto it = allocs.find((uintptr_t)p);
    if (it == allocs.end()) {
        fprintf(stderr, "lp_emu: cudaFree(%p): not a device allocation\n", p);
        return fail(cudaErrorInvalidDevicePointer);
    }
    munmap(it->second.map, it->second.span + page);
    used -= it->second.size;
    allocs.erase(it);
    return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b) {
    settings();
    *free_b = capacity - used;
    *total_b = capacity;
    return cudaSuccess;
}

static cudaError_t check_copy(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind) {
    const bool dd = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    const bool sd = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    if (kind == cudaMemcpyDefault || kind == cudaMemcpyHostToHost) {
        fprintf(stderr, "lp_emu: cudaMemcpy kind %d is not used by Loupe\n", (int)kind);
        return cudaErrorInvalidValue;
    }
    if (dd && !lp_emu::device_range(dst, bytes, "cudaMemcpy destination")) return cudaErrorInvalidValue;
    if (sd && !lp_emu::device_range(src, bytes, "cudaMemcpy source")) return cudaErrorInvalidValue;
    uintptr_t st;
    if (!dd && find(dst, &st) && (uintptr_t)dst < st + find(dst, &st)->size) {
        fprintf(stderr, "lp_emu: cudaMemcpy to the host into device memory %p\n", dst);
        return cudaErrorInvalidValue;
    }
    if (!sd && find(src, &st) && (uintptr_t)src < st + find(src, &st)->size) {
        fprintf(stderr, "lp_emu: cudaMemcpy from the host out of device memory %p\n", src);
        return cudaErrorInvalidValue;
    }
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind, cudaStream_t s) {
    if (!bytes) return cudaSuccess;
    cudaError_t e = check_copy(dst, src, bytes, kind);
    if (e) return fail(e);
    return fail(lp_emu::submit(s, [dst, src, bytes]() { memcpy(dst, src, bytes); }));
}
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind) {
    if (cap_graph) return refuse_in_capture("cudaMemcpy");
    return cudaMemcpyAsync(dst, src, bytes, kind, 0);
}
cudaError_t cudaMemsetAsync(void *p, int v, size_t bytes, cudaStream_t s) {
    if (!bytes) return cudaSuccess;
    if (!lp_emu::device_range(p, bytes, "cudaMemset")) return fail(cudaErrorInvalidValue);
    return fail(lp_emu::submit(s, [p, v, bytes]() { memset(p, v, bytes); }));
}
cudaError_t cudaMemset(void *p, int v, size_t bytes) {
    if (cap_graph) return refuse_in_capture("cudaMemset");
    return cudaMemsetAsync(p, v, bytes, 0);
}

cudaError_t cudaGetLastError(void) {
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError(void) { return last_error; }
const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorMisalignedAddress: return "misaligned address";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureImplicit: return "operation would make the legacy stream depend on a capturing blocking stream";
    }
    return "unknown error";
}

cudaError_t cudaStreamBeginCapture(cudaStream_t s, enum cudaStreamCaptureMode mode) {
    (void)mode;
    if (cap_graph || !s) return fail(cudaErrorInvalidValue);
    cap_graph = new Graph;
    cap_stream = s;
    cap_invalid = false;
    return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g) {
    *g = nullptr;
    if (!cap_graph || s != cap_stream) return fail(cudaErrorInvalidValue);
    Graph *gr = cap_graph;
    cap_graph = nullptr;
    cap_stream = nullptr;
    if (cap_invalid) {
        delete gr;
        return fail(cudaErrorStreamCaptureInvalidated);
    }
    *g = (cudaGraph_t)gr;
    return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *x, cudaGraph_t g, unsigned long long flags) {
    (void)flags;
    *x = (cudaGraphExec_t) new Graph(*(Graph *)g);
    return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t x, cudaStream_t s) {
    if (!x) return fail(cudaErrorInvalidResourceHandle);
    n_graph_launches++;
    Graph *g = (Graph *)x;
    return fail(lp_emu::submit(s, [g]() {
        for (auto &op : g->ops) op();
    }));
}
cudaError_t cudaGraphDestroy(cudaGraph_t g) {
    delete (Graph *)g;
    return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t x) {
    delete (Graph *)x;
    return cudaSuccess;
}

/* An event holds the host time its record ran at (negative: never recorded). Recording
 * into a capture is refused: Loupe times only outside graphs. */
struct CUevent_st {
    double ms;
};
cudaError_t cudaEventCreate(cudaEvent_t *e) {
    static const bool fail_all = lp_emu::knob("LOUPE_EMU_EVENT_FAIL"); /* a driver that cannot make events */
    if (fail_all) return fail(cudaErrorMemoryAllocation);
    *e = new CUevent_st{-1.0};
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
    delete e;
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    if (!e) return fail(cudaErrorInvalidResourceHandle);
    if (cap_graph) return refuse_in_capture("cudaEventRecord");
    return fail(lp_emu::submit(s, [e]() {
        e->ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
    }));
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    if (!e) return fail(cudaErrorInvalidResourceHandle);
    return refuse_in_capture("cudaEventSynchronize");
}
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    if (!start || !end || start->ms < 0 || end->ms < 0) return fail(cudaErrorInvalidResourceHandle);
    *ms = (float)(end->ms - start->ms);
    return cudaSuccess;
}

} /* extern "C" */
