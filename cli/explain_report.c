/* explain_report.c — the files `loupe explain` leaves: per input and method the raw
 * map as .npy (1 x C' x H' x W'). */
#include "cli.h"
#include "explain.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

int explain_report_write(const explain_report *r) {
    if (mkdir(r->out_dir, 0777) && errno != EEXIST) return cli_fail("%s: cannot create folder: %s", r->out_dir, strerror(errno));
    for (int k = 0; k < r->n_res; k++) {
        const lp_tensor *a = r->res[k].attr;
        int64_t per = lp_tensor_numel(a) / a->shape[0];
        for (int i = 0; i < r->n; i++) {
            lp_tensor one = *a;
            one.shape[0] = 1;
            one.data = (float *)a->data + (int64_t)i * per;
            one.nbytes = (size_t)per * sizeof(float);
            one.owns = 0;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s_%s.npy", r->out_dir, r->input_names[i], r->res[k].method);
            if (lp_npy_save(path, &one) != LP_OK) return cli_lib_fail();
        }
    }
    return 0;
}
