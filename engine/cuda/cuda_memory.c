/* cuda_memory.c — the CUDA context (device, stream, cuDNN and cuBLAS handles, made
 * once), device memory through a caching allocator, host<->device copies, and error
 * statuses. cudaMalloc and cudaFree synchronise the device and cost tens of
 * microseconds, so freed blocks are kept by size and handed out again: a pass that
 * repeats with the same shapes allocates nothing after its first run. When the
 * driver is out of memory the cache is returned and the allocation tried once more;
 * then the caller gets LP_ERR_OOM naming the size. No managed memory. */
#include "cuda/cuda_internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static lp_cuda ctx;
static int ctx_state; /* 0 not tried, 1 ready, -1 failed */
static lp_status ctx_status;
static char ctx_error[512];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

lp_status _lp_cuda_fail(int code, const char *what, const char *call, const char *file, int line) {
    const char *msg = "unknown error";
    if (!strcmp(what, "CUDA")) {
        msg = cudaGetErrorString((cudaError_t)code);
        cudaGetLastError(); /* clear a non-sticky error so later calls can proceed */
    } else if (!strcmp(what, "cuDNN")) {
        msg = cudnnGetErrorString((cudnnStatus_t)code);
    } else if (!strcmp(what, "cuBLAS")) {
        msg = cublasGetStatusString((cublasStatus_t)code);
    }
    const char *base = strstr(file, "engine/");
    base = base ? base : file;
    int oom = (!strcmp(what, "CUDA") && code == cudaErrorMemoryAllocation) ||
              (!strcmp(what, "cuBLAS") && code == CUBLAS_STATUS_ALLOC_FAILED) ||
              (!strcmp(what, "cuDNN") && (code == CUDNN_STATUS_ALLOC_FAILED ||
                                          code == CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED));
    /* cuDNN's 3000-3999 codes: the configuration is not supported (a bf16 shape
     * without a kernel, say), which callers may route around. */
    int unsupported = !strcmp(what, "cuDNN") && code >= CUDNN_STATUS_NOT_SUPPORTED && code < 4000;
    return lp_fail(oom ? LP_ERR_OOM : unsupported ? LP_ERR_UNSUPPORTED : LP_ERR_DEVICE, "%s error at %s:%d: %s (%s)",
                   what, base, line, msg, call);
}

static lp_status ctx_init(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n <= 0) {
        cudaGetLastError();
        return lp_fail(LP_ERR_DEVICE, "no CUDA device is present on this machine; use --device cpu");
    }
    LP_CUDA(cudaGetDevice(&ctx.device));
    struct cudaDeviceProp prop;
    LP_CUDA(cudaGetDeviceProperties(&prop, ctx.device));
    snprintf(ctx.name, sizeof ctx.name, "%s", prop.name);
    /* A blocking stream: ordered against the legacy default stream, which t-SNE's
     * kernels and plain cudaMemcpy use, so the two never race. */
    LP_CUDA(cudaStreamCreateWithFlags(&ctx.stream, cudaStreamDefault));
    LP_DNN(cudnnCreate(&ctx.dnn));
    LP_DNN(cudnnSetStream(ctx.dnn, ctx.stream));
    LP_BLAS(cublasCreate(&ctx.blas));
    LP_BLAS(cublasSetStream(ctx.blas, ctx.stream));
    /* A fixed cuBLAS workspace (32 MiB, as NVIDIA advises for Hopper): cuBLAS then
     * allocates nothing per call, which CUDA graph capture requires. */
    LP_CUDA(cudaMalloc(&ctx.blas_ws, (size_t)32 << 20));
    LP_BLAS(cublasSetWorkspace(ctx.blas, ctx.blas_ws, (size_t)32 << 20));
    return LP_OK;
}

lp_cuda *_lp_cuda(void) {
    pthread_mutex_lock(&mu);
    if (ctx_state == 0) {
        ctx_status = ctx_init();
        ctx_state = ctx_status == LP_OK ? 1 : -1;
        if (ctx_state < 0) snprintf(ctx_error, sizeof ctx_error, "%s", lp_last_error());
    }
    pthread_mutex_unlock(&mu);
    if (ctx_state < 0) {
        lp_fail(ctx_status, "%s", ctx_error);
        return NULL;
    }
    return &ctx;
}

int lp_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* clear the sticky "no driver" error */
        return 0;
    }
    return n;
}

const char *lp_cuda_device_name(void) {
    lp_cuda *c = _lp_cuda();
    if (!c) {
        lp_clear_error();
        return "no CUDA device";
    }
    return c->name;
}

/* ---- caching allocator -------------------------------------------------------- */

typedef struct blk {
    void *p;
    size_t size;
} blk;

static blk *cache;           /* free blocks */
static size_t n_cache, cap_cache;
static blk *live;            /* open-addressed table of blocks handed out (p == NULL: empty) */
static size_t cap_live, n_live;
static int64_t st_in_use, st_peak, st_cached;

static size_t round_size(size_t b) {
    const size_t small = 512, big = (size_t)2 << 20;
    if (b == 0) b = 1;
    return b < ((size_t)1 << 20) ? (b + small - 1) / small * small : (b + big - 1) / big * big;
}

/* Large blocks are 2 MiB aligned: mix, then take the product's high bits. */
static size_t ptr_hash(const void *p, size_t cap) {
    uint64_t x = (uint64_t)(uintptr_t)p >> 9;
    x ^= x >> 31;
    x *= 0x9E3779B97F4A7C15ull;
    return (size_t)(x >> 32) & (cap - 1);
}

static int live_put(void *p, size_t size) {
    if ((n_live + 1) * 2 > cap_live) {
        size_t ncap = cap_live ? cap_live * 2 : 1024;
        blk *t = calloc(ncap, sizeof *t);
        if (!t) return -1;
        for (size_t i = 0; i < cap_live; i++)
            if (live[i].p) {
                size_t h = ptr_hash(live[i].p, ncap);
                while (t[h].p) h = (h + 1) & (ncap - 1);
                t[h] = live[i];
            }
        free(live);
        live = t;
        cap_live = ncap;
    }
    size_t h = ptr_hash(p, cap_live);
    while (live[h].p) h = (h + 1) & (cap_live - 1);
    live[h].p = p;
    live[h].size = size;
    n_live++;
    return 0;
}

/* Remove p from the live table; its size, or 0 if it was not ours. */
static size_t live_take(void *p) {
    if (!cap_live) return 0;
    size_t h = ptr_hash(p, cap_live);
    while (live[h].p && live[h].p != p) h = (h + 1) & (cap_live - 1);
    if (!live[h].p) return 0;
    size_t size = live[h].size;
    live[h].p = NULL;
    n_live--;
    /* re-insert the rest of the probe run so lookups still find them */
    for (size_t j = (h + 1) & (cap_live - 1); live[j].p; j = (j + 1) & (cap_live - 1)) {
        blk b = live[j];
        live[j].p = NULL;
        size_t k = ptr_hash(b.p, cap_live);
        while (live[k].p) k = (k + 1) & (cap_live - 1);
        live[k] = b;
    }
    return size;
}

static void cache_release_all(void) {
    for (size_t i = 0; i < n_cache; i++) cudaFree(cache[i].p);
    n_cache = 0;
    st_cached = 0;
}

lp_status _lp_cuda_alloc(size_t bytes, void **out) {
    *out = NULL;
    if (!_lp_cuda()) return LP_ERR_DEVICE;
    if (_lp_cuda_capturing()) return _lp_cuda_capture_refuse("a device allocation");
    size_t size = round_size(bytes);
    pthread_mutex_lock(&mu);
    /* best fit among cached blocks no more than 1/8 larger */
    size_t best = n_cache;
    for (size_t i = 0; i < n_cache; i++)
        if (cache[i].size >= size && cache[i].size - size <= size / 8 &&
            (best == n_cache || cache[i].size < cache[best].size))
            best = i;
    void *p = NULL;
    const int reused = best < n_cache;
    if (reused) {
        p = cache[best].p;
        size = cache[best].size;
        st_cached -= (int64_t)size;
        cache[best] = cache[--n_cache];
    } else {
        cudaError_t e = cudaMalloc(&p, size);
        if (e == cudaErrorMemoryAllocation) {
            cudaGetLastError();
            cache_release_all();
            e = cudaMalloc(&p, size);
        }
        if (e != cudaSuccess) {
            cudaGetLastError();
            size_t fr = 0, tot = 0;
            cudaMemGetInfo(&fr, &tot);
            int64_t used = st_in_use;
            pthread_mutex_unlock(&mu);
            if (e == cudaErrorMemoryAllocation)
                return lp_fail(LP_ERR_OOM,
                               "out of GPU memory: %.1f MiB requested, %.1f MiB in use by Loupe, %.1f of %.1f MiB free on "
                               "the device; try a smaller --batch",
                               size / 1048576.0, used / 1048576.0, fr / 1048576.0, tot / 1048576.0);
            return lp_fail(LP_ERR_DEVICE, "cudaMalloc of %.1f MiB: %s", size / 1048576.0, cudaGetErrorString(e));
        }
    }
#ifdef LOUPE_POISON_FRESH
    /* Test builds: a block handed out again holds NaN bytes, as a new one does on the
     * emulator, so nothing passes by reading a value an earlier pass left there. */
    if (reused && cudaMemsetAsync(p, 0xff, size, ctx.stream) != cudaSuccess) cudaGetLastError();
#endif
    if (live_put(p, size)) {
        cudaFree(p);
        pthread_mutex_unlock(&mu);
        return lp_fail(LP_ERR_OOM, "out of host memory for the GPU allocator's table");
    }
    st_in_use += (int64_t)size;
    if (st_in_use > st_peak) st_peak = st_in_use;
    pthread_mutex_unlock(&mu);
    *out = p;
    return LP_OK;
}

void _lp_cuda_free(void *p) {
    if (!p) return;
    if (_lp_cuda_capturing()) _lp_cuda_capture_refuse("a device free"); /* the block may be handed out again */
    pthread_mutex_lock(&mu);
    size_t size = live_take(p);
    if (size) {
        st_in_use -= (int64_t)size;
        if (n_cache == cap_cache) {
            size_t ncap = cap_cache ? cap_cache * 2 : 256;
            blk *t = realloc(cache, ncap * sizeof *t);
            if (t) {
                cache = t;
                cap_cache = ncap;
            }
        }
        if (n_cache < cap_cache) {
            cache[n_cache].p = p;
            cache[n_cache++].size = size;
            st_cached += (int64_t)size;
        } else {
            cudaFree(p);
        }
    }
    pthread_mutex_unlock(&mu);
}

static void *slot_ptr[LP_SLOT_COUNT];
static size_t slot_size[LP_SLOT_COUNT];
static uint64_t slot_epoch;

uint64_t lp_cuda_scratch_epoch(void) { return slot_epoch; }

lp_status _lp_cuda_scratch(lp_cuda_slot slot, size_t bytes, void **p) {
    if (bytes > slot_size[slot]) {
        if (_lp_cuda_capturing()) return _lp_cuda_capture_refuse("a scratch slot growing");
        slot_epoch++;
        _lp_cuda_free(slot_ptr[slot]);
        slot_ptr[slot] = NULL;
        slot_size[slot] = 0;
        size_t want = bytes + bytes / 4; /* room to grow a little without churn */
        void *q = NULL;
        lp_status s = _lp_cuda_alloc(want, &q);
        if (s) { /* no room for the margin: exactly what was asked */
            want = bytes;
            s = _lp_cuda_alloc(want, &q);
        }
        if (s) return s;
        slot_ptr[slot] = q;
        slot_size[slot] = want;
    }
    *p = slot_ptr[slot];
#ifdef LOUPE_POISON_FRESH
    /* Test builds: what a slot held for its last user is NaN to the next (queued on the
     * stream, so a capture records it too). */
    LP_CUDA(cudaMemsetAsync(*p, 0xff, bytes, ctx.stream));
#endif
    return LP_OK;
}

lp_status lp_cuda_memory_stats(lp_memory_stats *out) {
    if (!_lp_cuda()) return LP_ERR_DEVICE;
    pthread_mutex_lock(&mu);
    out->in_use = st_in_use;
    out->peak = st_peak;
    out->cached = st_cached;
    pthread_mutex_unlock(&mu);
    return LP_OK;
}

void lp_cuda_memory_reset_peak(void) {
    pthread_mutex_lock(&mu);
    st_peak = st_in_use;
    pthread_mutex_unlock(&mu);
}

void _lp_cuda_release_cache(void) {
    if (ctx_state != 1 || _lp_cuda_capturing()) return; /* a capture cannot sync: the next call will */
    cudaStreamSynchronize(ctx.stream);
    pthread_mutex_lock(&mu);
    cache_release_all();
    pthread_mutex_unlock(&mu);
}

void lp_cuda_memory_trim(void) {
    if (ctx_state != 1) return;
    slot_epoch++;
    for (int i = 0; i < LP_SLOT_COUNT; i++) { /* scratch grows back on demand */
        _lp_cuda_free(slot_ptr[i]);
        slot_ptr[i] = NULL;
        slot_size[i] = 0;
    }
    _lp_cuda_release_cache();
}
