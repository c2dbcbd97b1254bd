/* cam.c — placeholder table until the family lands (filled in this session). */
#include "attrib_internal.h"

const _lp_method _lp_methods_cam[] = {{NULL, NULL, NULL}};
