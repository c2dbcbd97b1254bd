// tsne_bh.cu — Barnes-Hut t-SNE repulsion on the GPU, 2-D and 3-D: a tree rebuilt every
// iteration from Morton codes, then one stack traversal per point. CPU twin:
// engine/tsne/tsne_bhtree.c (_lp_cpu_tsne_repulsion_bh); host side: engine/cuda/tsne_cuda.c.
//
// Design: a Karras (2012) binary radix tree over the Morton-sorted points, not the
// Burtscher-Pingali (2011) quadtree/octree. B-P inserts points into a 2^d-ary tree with
// locks and retries, so node numbering (and with it every summation order) changes from
// run to run, and clustered or duplicate points make the insertions spin; the radix
// tree is a pure function of the sorted keys: each internal node is built by one thread
// without locks, the bottom-up pass combines children in a fixed (left, right) order,
// and all sums are ordered, so results are bitwise reproducible for a given input.
// Cost per iteration: one 64-bit key radix sort, three O(n) passes and the traversal.
//
// Keys are 64-bit Morton codes (2 x 32 or 3 x 21 bits on one cubic grid over the
// bounding box); equal keys (duplicate or very close points) are ordered by point
// index (a stable sort of index values) and split by index bits (Karras section 4),
// so any amount of coincident points still gives a valid tree. Depth is bounded by
// the 64 + 31 key bits, hence the fixed traversal stack.
//
// Theta: the CPU accepts a square cell of side L seen from distance d to its centre
// of mass when L < theta d. A radix-tree node is not a square cell; its "L" is the
// diagonal of its points' tight bounding box. The tight box is often much smaller than
// the quadtree cell around the same points, so its largest side accepted nodes too
// eagerly (in a serial emulation of these kernels on clustered 3-D points, 1.8x the
// CPU's force error and 6x its Z error at theta 0.5); the diagonal gave the CPU's
// error within ~10% on clustered 2-D and 3-D points and less on uniform ones. Leaves
// (one point) and nodes of identical points have size 0 and are summed exactly,
// excluding the point itself, so theta = 0 descends to the exact sum.
//
// No float atomics anywhere: the only atomics are the integer "second child arrived"
// counters of the bottom-up pass, and Z is a fixed-shape tree reduction of per-point
// sums. Launchers (C linkage) return a cudaError_t.
#include <cuda_runtime.h>
#include <cub/device/device_radix_sort.cuh>
#include <math.h>
#include <stdint.h>

#define BH_THREADS 128
#define BH_STACK 128      // > the tree's depth bound (96 distinct split levels + 1)
#define BH_RED_BLOCKS 256 // fixed grid of the reductions: their order never depends on n's timing

// Device scratch, carved from one allocation owned by the caller (tsne_cuda.c).
typedef struct bh_scratch {
    uint64_t *keys, *keys_sorted;
    int32_t *idx, *perm;   // perm[p] = point at sorted position p
    int32_t *parent, *flag;
    float4 *node;          // 2n-1: centre of mass xyz, squared box diagonal (w)
    int4 *meta;            // 2n-1: left, right, count, first sorted position
    float4 *lo, *hi;       // n-1 internal nodes' bounding boxes
    double *q;             // per-point sum of w (sorted order)
    double *part;          // BH_RED_BLOCKS partial sums
    float *box;            // BH_RED_BLOCKS x 6 partial boxes, then lo[3] + scale at the end
    void *cub;
    size_t cub_bytes;
} bh_scratch;

static size_t align256(size_t b) { return (b + 255) & ~(size_t)255; }

// Bytes of the key range the sort looks at.
static int key_bits(int dims) { return dims == 2 ? 64 : 63; }

// Lays the scratch out from base (NULL: sizes only); returns the bytes needed.
static size_t bh_carve(int64_t n, int dims, char *base, bh_scratch *s, cudaError_t *err) {
    size_t off = 0, nn = (size_t)n, nodes = 2 * nn - 1, inner = nn > 1 ? nn - 1 : 1;
#define BH_TAKE(field, type, count)                       \
    s->field = (type *)(base ? base + off : NULL);        \
    off += align256((size_t)(count) * sizeof(type));
    BH_TAKE(keys, uint64_t, nn);
    BH_TAKE(keys_sorted, uint64_t, nn);
    BH_TAKE(idx, int32_t, nn);
    BH_TAKE(perm, int32_t, nn);
    BH_TAKE(parent, int32_t, nodes);
    BH_TAKE(flag, int32_t, inner);
    BH_TAKE(node, float4, nodes);
    BH_TAKE(meta, int4, nodes);
    BH_TAKE(lo, float4, inner);
    BH_TAKE(hi, float4, inner);
    BH_TAKE(q, double, nn);
    BH_TAKE(part, double, BH_RED_BLOCKS);
    BH_TAKE(box, float, BH_RED_BLOCKS * 6 + 8);
#undef BH_TAKE
    size_t cub_bytes = 0;
    *err = cub::DeviceRadixSort::SortPairs(NULL, cub_bytes, (const uint64_t *)NULL, (uint64_t *)NULL,
                                           (const int32_t *)NULL, (int32_t *)NULL, (int)n, 0, key_bits(dims));
    s->cub = base ? base + off : NULL;
    s->cub_bytes = cub_bytes;
    return off + align256(cub_bytes);
}

// ---- kernels ----------------------------------------------------------------

// Per-block bounding boxes (min/max are order-free, so any grid gives the same box).
__global__ void bh_box_partial_kernel(const float *y, int64_t n, int dims, float *part) {
    __shared__ float s_lo[BH_THREADS * 3], s_hi[BH_THREADS * 3];
    float lo[3] = {INFINITY, INFINITY, INFINITY}, hi[3] = {-INFINITY, -INFINITY, -INFINITY};
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        for (int d = 0; d < dims; d++) {
            float v = y[i * dims + d];
            lo[d] = fminf(lo[d], v), hi[d] = fmaxf(hi[d], v);
        }
    for (int d = 0; d < 3; d++) s_lo[threadIdx.x * 3 + d] = lo[d], s_hi[threadIdx.x * 3 + d] = hi[d];
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w /= 2) {
        if ((int)threadIdx.x < w)
            for (int d = 0; d < 3; d++) {
                int a = threadIdx.x * 3 + d, b = (threadIdx.x + w) * 3 + d;
                s_lo[a] = fminf(s_lo[a], s_lo[b]), s_hi[a] = fmaxf(s_hi[a], s_hi[b]);
            }
        __syncthreads();
    }
    if (threadIdx.x < 3) {
        part[blockIdx.x * 6 + threadIdx.x] = s_lo[threadIdx.x];
        part[blockIdx.x * 6 + 3 + threadIdx.x] = s_hi[threadIdx.x];
    }
}

// One thread: the whole box, then out = lo[3], scale (grid units per unit length).
__global__ void bh_box_final_kernel(const float *part, int blocks, int dims, float *out) {
    float lo[3] = {INFINITY, INFINITY, INFINITY}, hi[3] = {-INFINITY, -INFINITY, -INFINITY};
    for (int b = 0; b < blocks; b++)
        for (int d = 0; d < 3; d++) lo[d] = fminf(lo[d], part[b * 6 + d]), hi[d] = fmaxf(hi[d], part[b * 6 + 3 + d]);
    float ext = 0;
    for (int d = 0; d < dims; d++) ext = fmaxf(ext, hi[d] - lo[d]);
    const double cells = dims == 2 ? 4294967295.0 : 2097151.0;
    for (int d = 0; d < 3; d++) out[d] = d < dims ? lo[d] : 0.0f;
    out[3] = ext > 0 && isfinite(ext) ? (float)(cells / ext) : 0.0f; // all points equal: every key 0
}

__device__ uint64_t bh_spread2(uint32_t v) {
    uint64_t x = v;
    x = (x | x << 16) & 0x0000FFFF0000FFFFull;
    x = (x | x << 8) & 0x00FF00FF00FF00FFull;
    x = (x | x << 4) & 0x0F0F0F0F0F0F0F0Full;
    x = (x | x << 2) & 0x3333333333333333ull;
    x = (x | x << 1) & 0x5555555555555555ull;
    return x;
}

__device__ uint64_t bh_spread3(uint32_t v) {
    uint64_t x = v & 0x1FFFFFu;
    x = (x | x << 32) & 0x001F00000000FFFFull;
    x = (x | x << 16) & 0x001F0000FF0000FFull;
    x = (x | x << 8) & 0x100F00F00F00F00Full;
    x = (x | x << 4) & 0x10C30C30C30C30C3ull;
    x = (x | x << 2) & 0x1249249249249249ull;
    return x;
}

__global__ void bh_morton_kernel(const float *y, int64_t n, int dims, const float *box, uint64_t *keys,
                                 int32_t *idx) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const double cells = dims == 2 ? 4294967295.0 : 2097151.0, scale = box[3];
    uint32_t c[3] = {0, 0, 0};
    for (int d = 0; d < dims; d++) {
        double g = ((double)y[i * dims + d] - box[d]) * scale;
        g = g > 0 ? (g < cells ? g : cells) : 0; // also maps NaN to 0: the caller sees Z = NaN
        c[d] = (uint32_t)g;
    }
    keys[i] = dims == 2 ? bh_spread2(c[0]) | bh_spread2(c[1]) << 1
                        : bh_spread3(c[0]) | bh_spread3(c[1]) << 1 | bh_spread3(c[2]) << 2;
    idx[i] = (int32_t)i;
}

// Length of the common prefix of the keys at sorted positions i and j, made unique by
// the positions themselves when the keys are equal; -1 outside [0, n).
__device__ int bh_delta(const uint64_t *keys, int64_t n, int64_t i, int64_t j) {
    if (j < 0 || j >= n) return -1;
    uint64_t a = keys[i], b = keys[j];
    if (a != b) return __clzll((long long)(a ^ b));
    return 64 + __clz((int)((uint32_t)i ^ (uint32_t)j));
}

// Internal node i of the Karras tree (0 is the root). Nodes 0..n-2 are internal,
// n-1+p is the leaf of sorted position p.
__global__ void bh_build_kernel(const uint64_t *keys, int64_t n, int4 *meta, int32_t *parent, int32_t *flag) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n - 1) return;
    const int d = bh_delta(keys, n, i, i + 1) > bh_delta(keys, n, i, i - 1) ? 1 : -1;
    const int dmin = bh_delta(keys, n, i, i - d);
    int64_t lmax = 2;
    while (bh_delta(keys, n, i, i + lmax * d) > dmin) lmax *= 2;
    int64_t l = 0;
    for (int64_t t = lmax / 2; t >= 1; t /= 2)
        if (bh_delta(keys, n, i, i + (l + t) * d) > dmin) l += t;
    const int64_t j = i + l * d;
    const int dnode = bh_delta(keys, n, i, j);
    int64_t s = 0, t = l;
    do {
        t = (t + 1) / 2;
        if (bh_delta(keys, n, i, i + (s + t) * d) > dnode) s += t;
    } while (t > 1);
    const int64_t gamma = i + s * d + (d < 0 ? -1 : 0);
    const int64_t first = i < j ? i : j, last = i < j ? j : i;
    const int32_t left = (int32_t)(first == gamma ? n - 1 + gamma : gamma);
    const int32_t right = (int32_t)(last == gamma + 1 ? n - 1 + gamma + 1 : gamma + 1);
    meta[i] = make_int4(left, right, (int)(last - first + 1), (int)first);
    parent[left] = (int32_t)i;
    parent[right] = (int32_t)i;
    flag[i] = 0;
    if (i == 0) parent[0] = -1;
}

// Leaves, then each internal node's centre of mass and box, computed by the second of
// its two children to arrive. Data another thread wrote in this kernel is read through
// L2 (__ldcg): L1 is not coherent between SMs.
__global__ void bh_summarize_kernel(const float *y, int64_t n, int dims, const int32_t *perm,
                                    const int32_t *parent, int32_t *flag, float4 *node, int4 *meta, float4 *lo,
                                    float4 *hi) {
    int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= n) return;
    const int64_t i = perm[p], leaf = n - 1 + p;
    float4 c = make_float4(y[i * dims], y[i * dims + 1], dims == 3 ? y[i * dims + 2] : 0.0f, 0.0f);
    __stcg(&node[leaf], c);
    __stcg(&meta[leaf], make_int4(-1, -1, 1, (int)p));
    int32_t cur = parent[leaf];
    while (cur >= 0) {
        __threadfence(); // this thread's writes reach L2 before its sibling can see the count
        if (atomicAdd(&flag[cur], 1) == 0) return;
        __threadfence();
        const int4 m = meta[cur]; // from bh_build_kernel: an earlier kernel
        float4 cc[2], bl[2], bh[2];
        int nc[2];
        const int ch[2] = {m.x, m.y};
        for (int k = 0; k < 2; k++) {
            cc[k] = __ldcg(&node[ch[k]]);
            if (ch[k] >= n - 1) {
                bl[k] = bh[k] = cc[k];
                nc[k] = 1;
            } else {
                bl[k] = __ldcg(&lo[ch[k]]);
                bh[k] = __ldcg(&hi[ch[k]]);
                nc[k] = meta[ch[k]].z;
            }
        }
        float4 l4 = make_float4(fminf(bl[0].x, bl[1].x), fminf(bl[0].y, bl[1].y), fminf(bl[0].z, bl[1].z), 0.0f);
        float4 h4 = make_float4(fmaxf(bh[0].x, bh[1].x), fmaxf(bh[0].y, bh[1].y), fmaxf(bh[0].z, bh[1].z), 0.0f);
        const float sx = h4.x - l4.x, sy = h4.y - l4.y, sz = h4.z - l4.z;
        float4 com;
        if (sx == 0.0f && sy == 0.0f && sz == 0.0f) {
            com = cc[0]; // identical points: keep their exact coordinates (the traversal's test)
        } else {
            const double tot = (double)nc[0] + nc[1];
            com.x = (float)(((double)cc[0].x * nc[0] + (double)cc[1].x * nc[1]) / tot);
            com.y = (float)(((double)cc[0].y * nc[0] + (double)cc[1].y * nc[1]) / tot);
            com.z = (float)(((double)cc[0].z * nc[0] + (double)cc[1].z * nc[1]) / tot);
        }
        com.w = sx * sx + sy * sy + sz * sz; // squared diagonal: see the file's top
        __stcg(&node[cur], com);
        __stcg(&lo[cur], l4);
        __stcg(&hi[cur], h4);
        cur = parent[cur];
    }
}

// One thread per point, in sorted order so a warp walks nearby points' similar paths.
// Accepted node: count * w (and count * w^2 * dv), as the CPU's cell test. A node of
// size 0 (a leaf, or identical points) is exact: its points minus the point itself.
__global__ void bh_traverse_kernel(int64_t n, int dims, double th2, const int32_t *perm, const float4 *node,
                                   const int4 *meta, float *rep, double *q) {
    int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= n) return;
    const float4 me = node[n - 1 + p];
    const double yi[3] = {me.x, me.y, me.z};
    double f[3] = {0, 0, 0}, sq = 0;
    int32_t stack[BH_STACK];
    int top = 0;
    stack[top++] = 0;
    while (top > 0) {
        const int32_t id = stack[--top];
        const float4 c = node[id];
        const int4 m = meta[id];
        const double dv[3] = {yi[0] - c.x, yi[1] - c.y, yi[2] - c.z};
        const double d2 = dv[0] * dv[0] + dv[1] * dv[1] + dv[2] * dv[2];
        double cnt = -1;
        if (c.w < th2 * d2) cnt = m.z;
        else if (c.w == 0.0f) cnt = m.z - (m.w <= p && p < (int64_t)m.w + m.z ? 1 : 0);
        else if (top + 2 > BH_STACK) cnt = m.z; // cannot happen (depth bound); never overflow
        if (cnt >= 0) {
            const double w = 1.0 / (1.0 + d2), cw = cnt * w;
            sq += cw;
            for (int d = 0; d < 3; d++) f[d] += cw * w * dv[d];
            continue;
        }
        stack[top++] = m.y; // right after left: a fixed order, so fixed sums
        stack[top++] = m.x;
    }
    const int64_t i = perm[p];
    rep[i * dims] = (float)f[0]; // unrolled by hand: a dims-indexed f would live in local memory
    rep[i * dims + 1] = (float)f[1];
    if (dims == 3) rep[i * dims + 2] = (float)f[2];
    q[p] = sq;
}

// Fixed-shape sum: BH_RED_BLOCKS grid-strided partials, then one block; the same n
// always adds in the same order.
__global__ void bh_sum_partial_kernel(const double *v, int64_t n, double *part) {
    __shared__ double s[256];
    double a = 0;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        a += v[i];
    s[threadIdx.x] = a;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w /= 2) {
        if ((int)threadIdx.x < w) s[threadIdx.x] += s[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) part[blockIdx.x] = s[0];
}

__global__ void bh_sum_final_kernel(double *part, int blocks) {
    __shared__ double s[256];
    s[threadIdx.x] = (int)threadIdx.x < blocks ? part[threadIdx.x] : 0.0;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w /= 2) {
        if ((int)threadIdx.x < w) s[threadIdx.x] += s[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) part[0] = s[0];
}

// ---- launchers --------------------------------------------------------------

static unsigned bh_blocks(int64_t n, int t) { return (unsigned)((n + t - 1) / t); }

// Device bytes lp_cuda_tsne_bh_repulsion needs for n points (0 when the sort's query fails).
extern "C" size_t lp_cuda_tsne_bh_scratch_bytes(int64_t n, int dims) {
    bh_scratch s;
    cudaError_t e;
    size_t b = bh_carve(n < 2 ? 2 : n, dims, NULL, &s, &e);
    return e == cudaSuccess ? b : 0;
}

// rep (n x dims) and *sum_q (host) as _lp_cpu_tsne_repulsion_bh; scratch: device memory of
// at least lp_cuda_tsne_bh_scratch_bytes(n, dims) bytes. n < 2^31 - 1.
extern "C" int lp_cuda_tsne_bh_repulsion(int64_t n, int dims, double theta, const float *y, float *rep,
                                         double *sum_q, void *scratch, size_t scratch_bytes) {
    if (n < 2 || n >= INT32_MAX / 2 || (dims != 2 && dims != 3)) return (int)cudaErrorInvalidValue;
    bh_scratch s;
    cudaError_t e;
    if (bh_carve(n, dims, (char *)scratch, &s, &e) > scratch_bytes || e != cudaSuccess)
        return (int)(e != cudaSuccess ? e : cudaErrorInvalidValue);
    bh_box_partial_kernel<<<BH_RED_BLOCKS, BH_THREADS>>>(y, n, dims, s.box);
    bh_box_final_kernel<<<1, 1>>>(s.box, BH_RED_BLOCKS, dims, s.box + BH_RED_BLOCKS * 6);
    const float *box = s.box + BH_RED_BLOCKS * 6;
    bh_morton_kernel<<<bh_blocks(n, 256), 256>>>(y, n, dims, box, s.keys, s.idx);
    if ((e = cudaGetLastError()) != cudaSuccess) return (int)e;
    // LSD radix sort is stable and idx is ascending: equal keys stay in index order.
    size_t cub_bytes = s.cub_bytes;
    e = cub::DeviceRadixSort::SortPairs(s.cub, cub_bytes, s.keys, s.keys_sorted, s.idx, s.perm, (int)n, 0,
                                        key_bits(dims));
    if (e != cudaSuccess) return (int)e;
    bh_build_kernel<<<bh_blocks(n - 1, 256), 256>>>(s.keys_sorted, n, s.meta, s.parent, s.flag);
    bh_summarize_kernel<<<bh_blocks(n, 256), 256>>>(y, n, dims, s.perm, s.parent, s.flag, s.node, s.meta, s.lo,
                                                    s.hi);
    bh_traverse_kernel<<<bh_blocks(n, BH_THREADS), BH_THREADS>>>(n, dims, theta * theta, s.perm, s.node, s.meta,
                                                                 rep, s.q);
    bh_sum_partial_kernel<<<BH_RED_BLOCKS, 256>>>(s.q, n, s.part);
    bh_sum_final_kernel<<<1, 256>>>(s.part, BH_RED_BLOCKS);
    if ((e = cudaGetLastError()) != cudaSuccess) return (int)e;
    return (int)cudaMemcpy(sum_q, s.part, sizeof(double), cudaMemcpyDeviceToHost);
}
