// emu_order_test.cu — the emulator's run order (LOUPE_EMU_ORDER) does what it says:
// blocks and the threads of a block between barriers run forward, reversed or shuffled,
// barriers still hold in every order, and a real race (a read of another thread's
// shared-memory write with no barrier between) passes in forward order but shows in
// the others. And shared memory starts each block as NaN (cu2cpp.py's lp_emu_shared):
// a slot no thread of this block wrote reads NaN, not zero nor an earlier block's value.
// Built only for the emulator (tests/emu/emu.cmake).
//   emu_order_test forward|reverse|shuffle   (LOUPE_EMU_ORDER set to match)
//   emu_order_test barrier-after-return:odd|high|warp
//                                            (must abort: a barrier some threads skip)
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BLOCKS 4
#define THREADS 64

// when[i] = the turn thread i (of the whole grid) ran in.
__global__ void stamp(unsigned *counter, unsigned *when) {
    when[blockIdx.x * blockDim.x + threadIdx.x] = atomicAdd(counter, 1u);
}

// y[t] = x[t - 1] through shared memory; `sync` puts the barrier the exchange needs
// between the write and the read, and without it the kernel has a race.
__global__ void left_neighbour(const float *x, float *y, int sync) {
    __shared__ float s[THREADS];
    s[threadIdx.x] = x[blockIdx.x * THREADS + threadIdx.x];
    if (sync) __syncthreads();
    y[blockIdx.x * THREADS + threadIdx.x] = threadIdx.x ? s[threadIdx.x - 1] : 0.f;
}

// Only block 0's even threads write their slot; every thread reads its own after the barrier.
__global__ void partly_written(float *y) {
    __shared__ float s[THREADS];
    if (blockIdx.x == 0 && threadIdx.x % 2 == 0) s[threadIdx.x] = 1.f;
    __syncthreads();
    y[blockIdx.x * THREADS + threadIdx.x] = s[threadIdx.x];
}

// Some threads return before the barrier (or warp exchange) the others reach: not
// allowed in CUDA. how: 0 the odd threads (a return before others wait), 1 the upper
// half (others wait first), 2 lanes 16-31 of a full-mask shuffle.
__global__ void barrier_after_return(float *y, int how) {
    const unsigned t = threadIdx.x;
    if (how == 0 ? t % 2 : t >= THREADS / 2 || (how == 2 && t % 32 >= 16)) return;
    float v = (float)t;
    if (how == 2) v += __shfl_down_sync(0xffffffffu, v, 1);
    else __syncthreads();
    y[t] = v;
}

static int fails;
#define CHECK(cond, ...)                                                                                               \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            printf("FAIL: " __VA_ARGS__);                                                                              \
            printf("\n");                                                                                              \
            fails++;                                                                                                   \
        }                                                                                                              \
    } while (0)

// How many elements of y differ from x shifted right by one within each block.
static int shifted_wrong(const float *x, const float *y) {
    int bad = 0;
    for (int b = 0; b < BLOCKS; b++)
        for (int t = 0; t < THREADS; t++) bad += y[b * THREADS + t] != (t ? x[b * THREADS + t - 1] : 0.f);
    return bad;
}

static int run_left(const float *dx, float *dy, int sync, const float *x, float *y) {
    cudaMemset(dy, 0, sizeof(float) * BLOCKS * THREADS);
    left_neighbour<<<BLOCKS, THREADS>>>(dx, dy, sync);
    cudaMemcpy(y, dy, sizeof(float) * BLOCKS * THREADS, cudaMemcpyDeviceToHost);
    return shifted_wrong(x, y);
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    const int fwd = !strcmp(mode, "forward"), rev = !strcmp(mode, "reverse"), shuf = !strcmp(mode, "shuffle");
    if (!strncmp(mode, "barrier-after-return:", 21)) { /* must end in the emulator's abort, naming the fault */
        const char *how = mode + 21;
        float *d;
        if (cudaMalloc((void **)&d, sizeof(float) * THREADS)) return 1;
        barrier_after_return<<<1, THREADS>>>(d, !strcmp(how, "odd") ? 0 : !strcmp(how, "high") ? 1 : 2);
        cudaDeviceSynchronize();
        printf("FAIL: the emulator let a barrier after a return pass (%s)\n", how);
        return 1;
    }
    if (!fwd && !rev && !shuf) {
        fprintf(stderr, "usage: emu_order_test forward|reverse|shuffle|barrier-after-return:odd|high|warp\n");
        return 2;
    }
    enum { N = BLOCKS * THREADS };
    unsigned *counter, *dwhen, when[N];
    float *dx, *dy, x[N], y[N];
    if (cudaMalloc((void **)&counter, sizeof *counter) || cudaMalloc((void **)&dwhen, sizeof when) ||
        cudaMalloc((void **)&dx, sizeof x) || cudaMalloc((void **)&dy, sizeof y)) {
        printf("FAIL: cudaMalloc\n");
        return 1;
    }
    cudaMemset(counter, 0, sizeof *counter);
    stamp<<<BLOCKS, THREADS>>>(counter, dwhen);
    cudaMemcpy(when, dwhen, sizeof when, cudaMemcpyDeviceToHost);

    int seen[N] = {0}, ascending = 1, descending = 1, blocks_forward = 1;
    for (int i = 0; i < N; i++) {
        CHECK(when[i] < N && !seen[when[i]]++, "turn %u of thread %d is not one of 0..%d once", when[i], i, N - 1);
        if (i) ascending &= when[i] > when[i - 1], descending &= when[i] < when[i - 1];
    }
    for (int b = 1; b < BLOCKS; b++) blocks_forward &= when[b * THREADS] > when[(b - 1) * THREADS];
    CHECK(!fwd || ascending, "forward order: threads did not run in index order");
    CHECK(!rev || descending, "reverse order: threads did not run in reverse index order");
    CHECK(!shuf || (!ascending && !descending && !blocks_forward), "shuffle order: the run order was not shuffled");

    for (int i = 0; i < N; i++) x[i] = (float)(i + 1);
    cudaMemcpy(dx, x, sizeof x, cudaMemcpyHostToDevice);
    int bad_sync = run_left(dx, dy, 1, x, y);
    CHECK(bad_sync == 0, "%s order: %d values wrong across a barrier", mode, bad_sync);
    int bad_race = run_left(dx, dy, 0, x, y);
    if (fwd) CHECK(bad_race == 0, "forward order: the left-neighbour race should go unseen (%d wrong)", bad_race);
    else CHECK(bad_race > 0, "%s order: the left-neighbour race went unseen", mode);
    partly_written<<<BLOCKS, THREADS>>>(dy);
    cudaMemcpy(y, dy, sizeof y, cudaMemcpyDeviceToHost);
    int unwritten_ok = 0;
    for (int i = 0; i < N; i++) unwritten_ok += i < THREADS && i % 2 == 0 ? y[i] == 1.f : y[i] != y[i];
    CHECK(unwritten_ok == N, "%d of %d shared slots read wrong: unwritten ones must be NaN", N - unwritten_ok, N);
    printf("%s: run order %s; race without the barrier: %d of %d values wrong; with it: %d\n", mode,
           ascending ? "ascending" : descending ? "descending" : "shuffled", bad_race, N, bad_sync);
    cudaFree(counter);
    cudaFree(dwhen);
    cudaFree(dx);
    cudaFree(dy);
    return fails ? 1 : 0;
}
