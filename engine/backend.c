/* backend.c — choosing a backend by device, device names, and the broadcast
 * descriptor every backend's binary ops share. */
#include "internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

const lp_backend *lp_backend_get(lp_device dev) {
    if (dev == LP_DEVICE_CPU) return lp_backend_cpu();
    if (dev == LP_DEVICE_CUDA) return lp_backend_cuda();
    lp_fail(LP_ERR_ARG, "unknown device %d", (int)dev);
    return NULL;
}

const char *lp_device_name(lp_device d) { return d == LP_DEVICE_CUDA ? "cuda" : "cpu"; }

const char *lp_device_description(lp_device d) {
    static char cpu[256];
    if (d == LP_DEVICE_CUDA) return lp_cuda_device_name();
    if (!cpu[0]) {
        snprintf(cpu, sizeof cpu, "unknown CPU");
        FILE *f = fopen("/proc/cpuinfo", "r");
        char line[512];
        while (f && fgets(line, sizeof line, f)) {
            char *c = strchr(line, ':');
            if (!strncmp(line, "model name", 10) && c) {
                snprintf(cpu, sizeof cpu, "%s", c + 2);
                cpu[strcspn(cpu, "\n")] = 0;
                break;
            }
        }
        if (f) fclose(f);
    }
    return cpu;
}

lp_status lp_device_sync(lp_device d) {
    const lp_backend *be = lp_backend_get(d);
    return be ? be->sync() : LP_ERR_DEVICE;
}

lp_status lp_device_memory(lp_device d, lp_memory_stats *out) {
    memset(out, 0, sizeof *out);
    if (d == LP_DEVICE_CUDA) return lp_cuda_memory_stats(out);
    return lp_fail(LP_ERR_DEVICE, "memory statistics are kept for the CUDA device only");
}
void lp_device_memory_reset_peak(lp_device d) {
    if (d == LP_DEVICE_CUDA) lp_cuda_memory_reset_peak();
}
void lp_device_memory_trim(lp_device d) {
    if (d == LP_DEVICE_CUDA) lp_cuda_memory_trim();
}
lp_status lp_device_fusion_stats(lp_device d, lp_fusion_stats *out) {
    memset(out, 0, sizeof *out);
    if (d == LP_DEVICE_CUDA) return lp_cuda_fusion_stats(out);
    return lp_fail(LP_ERR_DEVICE, "fused convolutions are a CUDA device's only");
}

static const char *const precision_names[] = {"fp32", "tf32", "bf16"};

const char *lp_precision_name(lp_precision p) {
    return (unsigned)p < 3 ? precision_names[p] : "?";
}

lp_status lp_precision_parse(const char *s, lp_precision *out) {
    for (int i = 0; i < 3; i++)
        if (!strcmp(s, precision_names[i])) {
            *out = (lp_precision)i;
            return LP_OK;
        }
    return lp_fail(LP_ERR_ARG, "unknown precision '%s' (valid: fp32, tf32, bf16)", s);
}

lp_status lp_device_parse(const char *s, lp_device *out) {
    if (!strcmp(s, "cpu")) {
        *out = LP_DEVICE_CPU;
        return LP_OK;
    }
    if (!strcmp(s, "cuda") || !strcmp(s, "gpu")) {
        if (lp_cuda_device_count() <= 0)
#ifdef LOUPE_HAVE_CUDA
            return lp_fail(LP_ERR_DEVICE, "--device cuda: no CUDA device is present on this machine");
#else
            return lp_fail(LP_ERR_DEVICE, "--device cuda: this build of Loupe has no CUDA backend (configure with -DLOUPE_CUDA=ON)");
#endif
        *out = LP_DEVICE_CUDA;
        return LP_OK;
    }
    if (!strcmp(s, "auto")) {
        *out = (lp_cuda_device_count() > 0 && lp_backend_cuda()) ? LP_DEVICE_CUDA : LP_DEVICE_CPU;
        lp_clear_error();
        return LP_OK;
    }
    return lp_fail(LP_ERR_ARG, "unknown device '%s' (valid: cpu, cuda, auto)", s);
}

lp_status lp_bcast_make(int na, const int64_t *a, int nb, const int64_t *b, lp_bcast *out) {
    memset(out, 0, sizeof *out);
    int nd = na > nb ? na : nb;
    if (nd > LP_MAX_DIMS) return lp_fail(LP_ERR_SHAPE, "broadcast rank %d is over %d", nd, LP_MAX_DIMS);
    out->ndim = nd;
    int64_t stride_a = 1, stride_b = 1;
    for (int i = nd - 1; i >= 0; i--) {
        int ia = i - (nd - na), ib = i - (nd - nb);
        int64_t da = ia >= 0 ? a[ia] : 1, db = ib >= 0 ? b[ib] : 1;
        if (da != db && da != 1 && db != 1) {
            char sa[96], sb[96];
            return lp_fail(LP_ERR_SHAPE, "shapes %s and %s cannot be broadcast together",
                           lp_shape_str(na, a, sa, sizeof sa), lp_shape_str(nb, b, sb, sizeof sb));
        }
        out->shape[i] = da > db ? da : db;
        if (da == 1 && db == 0) out->shape[i] = 0;
        if (db == 1 && da == 0) out->shape[i] = 0;
        out->sa[i] = (da == 1 && out->shape[i] != 1) ? 0 : stride_a;
        out->sb[i] = (db == 1 && out->shape[i] != 1) ? 0 : stride_b;
        /* Shapes come from files: a product past int64 is an error, not undefined. */
        if (__builtin_mul_overflow(stride_a, da, &stride_a) || __builtin_mul_overflow(stride_b, db, &stride_b)) {
            char sa[96], sb[96];
            return lp_fail(LP_ERR_SHAPE, "shapes %s and %s are too large to broadcast",
                           lp_shape_str(na, a, sa, sizeof sa), lp_shape_str(nb, b, sb, sizeof sb));
        }
    }
    return LP_OK;
}
