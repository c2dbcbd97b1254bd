/* cub/device/device_radix_sort.cuh (Loupe's CUDA emulator) — DeviceRadixSort::SortPairs
 * as a stable sort on bits [begin_bit, end_bit) of the keys, on the CPU. */
#ifndef LP_EMU_CUB_RADIX_H
#define LP_EMU_CUB_RADIX_H
#include <cuda_runtime.h>

#include <algorithm>
#include <numeric>
#include <vector>

extern "C" cudaError_t lp_emu_device_op(void *stream, void (*fn)(void *), void *arg);

namespace cub {
struct DeviceRadixSort {
    template <class K, class V>
    static cudaError_t SortPairs(void *temp, size_t &temp_bytes, const K *keys_in, K *keys_out, const V *vals_in,
                                 V *vals_out, int n, int begin_bit = 0, int end_bit = (int)sizeof(K) * 8,
                                 cudaStream_t stream = 0) {
        if (!temp) {
            temp_bytes = 256 + (size_t)n * sizeof(int); /* as cub: some scratch, sized by n */
            return cudaSuccess;
        }
        struct job {
            const K *ki;
            K *ko;
            const V *vi;
            V *vo;
            int n, b0, b1;
        } j = {keys_in, keys_out, vals_in, vals_out, n, begin_bit, end_bit};
        return lp_emu_device_op((void *)stream,
                                [](void *a) {
                                    job &j = *(job *)a;
                                    const int width = j.b1 - j.b0;
                                    const K mask = width >= (int)sizeof(K) * 8 ? (K)~(K)0 : (K)(((K)1 << width) - 1);
                                    std::vector<int> ord(j.n);
                                    std::iota(ord.begin(), ord.end(), 0);
                                    std::stable_sort(ord.begin(), ord.end(), [&](int x, int y) {
                                        return ((j.ki[x] >> j.b0) & mask) < ((j.ki[y] >> j.b0) & mask);
                                    });
                                    std::vector<K> k(j.n);
                                    std::vector<V> v(j.n);
                                    for (int i = 0; i < j.n; i++) k[i] = j.ki[ord[i]], v[i] = j.vi[ord[i]];
                                    std::copy(k.begin(), k.end(), j.ko);
                                    std::copy(v.begin(), v.end(), j.vo);
                                },
                                &j);
    }
};
} // namespace cub
#endif
