/* status.c — the thread's last error message and the allocation helpers that set
 * it. The library reports; only front ends print. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static _Thread_local char g_msg[1024];

const char *lp_status_str(lp_status s) {
    switch (s) {
    case LP_OK: return "ok";
    case LP_ERR_IO: return "I/O error";
    case LP_ERR_PARSE: return "malformed input";
    case LP_ERR_UNSUPPORTED: return "unsupported";
    case LP_ERR_SHAPE: return "shape mismatch";
    case LP_ERR_ARG: return "bad argument";
    case LP_ERR_OOM: return "out of memory";
    case LP_ERR_DEVICE: return "device error";
    case LP_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

const char *lp_last_error(void) { return g_msg; }
void lp_clear_error(void) { g_msg[0] = 0; }

lp_status lp_fail(lp_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_msg, sizeof g_msg, fmt, ap);
    va_end(ap);
    return s;
}

lp_status lp_fail_prefix(lp_status s, const char *fmt, ...) {
    char pre[512], old[sizeof g_msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    memcpy(old, g_msg, sizeof old);
    size_t n = strlen(pre);
    if (n > sizeof g_msg - 3) n = sizeof g_msg - 3;
    memcpy(g_msg, pre, n);
    memcpy(g_msg + n, ": ", 2);
    size_t rest = sizeof g_msg - n - 3, ol = strlen(old);
    if (ol > rest) ol = rest;
    memcpy(g_msg + n + 2, old, ol);
    g_msg[n + 2 + ol] = 0;
    return s;
}

void *lp_malloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) lp_fail(LP_ERR_OOM, "out of host memory allocating %zu bytes", n);
    return p;
}

void *lp_calloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) lp_fail(LP_ERR_OOM, "out of host memory allocating %zu x %zu bytes", n, size);
    return p;
}

char *lp_strdup(const char *s) {
    size_t n = strlen(s ? s : "") + 1;
    char *p = lp_malloc(n);
    if (p) memcpy(p, s ? s : "", n);
    return p;
}
