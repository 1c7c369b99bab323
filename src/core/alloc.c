/* SPDX-License-Identifier: Apache-2.0 */
#include "alloc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static atomic_long fail_countdown = -1;

void nt_alloc_fail_after(long n) {
    atomic_store(&fail_countdown, n);
}

bool nt_alloc_should_fail(void) {
    long v = atomic_load(&fail_countdown);
    if (v < 0)
        return false;
    if (v == 0)
        return true;
    atomic_fetch_sub(&fail_countdown, 1);
    return false;
}

void *nt_malloc(size_t n) {
    if (nt_alloc_should_fail())
        return NULL;
    return malloc(n ? n : 1);
}

void *nt_calloc(size_t nmemb, size_t size) {
    if (nt_alloc_should_fail())
        return NULL;
    return calloc(nmemb ? nmemb : 1, size ? size : 1);
}

char *nt_strdup(const char *s) {
    if (nt_alloc_should_fail())
        return NULL;
    return strdup(s);
}

void *nt_memdup(const void *p, size_t n) {
    void *q = nt_malloc(n);
    if (q && n)
        memcpy(q, p, n);
    return q;
}
