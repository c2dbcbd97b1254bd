/* atomic.c — atomic output files: every writer writes PATH.tmp and renames it over
 * PATH only once it is complete, so a crash or a full disk never leaves a torn file. */
#include "io_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

lp_status lp_file_commit(const char *tmp_path, const char *path) {
    /* No fsync: the writers fclose (flush) first; durability across power loss is not
     * worth a disk sync per heatmap, while rename() already gives all-or-nothing. */
    if (rename(tmp_path, path) != 0) {
        int e = errno;
        remove(tmp_path);
        return lp_fail(LP_ERR_IO, "%s: cannot rename from %s: %s", path, tmp_path, strerror(e));
    }
    return LP_OK;
}

lp_status lp_atomic_open(const char *path, FILE **f, char **tmp) {
    *f = NULL;
    *tmp = NULL;
    size_t n = strlen(path);
    char *t = lp_malloc(n + 5);
    if (!t) return LP_ERR_OOM;
    memcpy(t, path, n);
    memcpy(t + n, ".tmp", 5);
    FILE *fp = fopen(t, "wb");
    if (!fp) {
        int e = errno;
        free(t);
        return lp_fail(LP_ERR_IO, "%s: cannot write: %s", path, strerror(e));
    }
    *f = fp;
    *tmp = t;
    return LP_OK;
}

lp_status lp_atomic_finish(FILE *f, char *tmp, const char *path, lp_status st) {
    int bad = ferror(f);
    int e = errno;
    if (fclose(f) != 0 && !bad) {
        bad = 1;
        e = errno;
    }
    if (st == LP_OK && bad) st = lp_fail(LP_ERR_IO, "%s: write failed: %s", path, strerror(e));
    if (st == LP_OK) st = lp_file_commit(tmp, path);
    else remove(tmp);
    free(tmp);
    return st;
}
