/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Page-backed secret buffers. Layout of one allocation:
 *   [guard page][header + data, rounded up to pages][guard page]
 * The header lives on the locked pages too, so the size is never on an unlocked page.
 * mmap results are checked against MAP_FAILED (never NULL).
 */
#include "secret.h"

#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "alloc.h"

struct Secret {
    size_t size;     /* visible size */
    size_t capacity; /* bytes available after the header */
    size_t map_size; /* whole mapping including guards */
    bool locked;
    uint8_t data[];
};

static atomic_bool allow_unlocked;

void secret_set_allow_unlocked(bool allow) {
    atomic_store(&allow_unlocked, allow);
}

static size_t page_size(void) {
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? (size_t)p : 4096;
}

int secret_new(size_t size, Secret **ret) {
    size_t ps = page_size(), inner, total;
    uint8_t *base;
    Secret *s;
    bool locked = true;

    if (!ret)
        return -EINVAL;
    if (nt_alloc_should_fail())
        return -ENOMEM;
    if (size > SIZE_MAX / 2 - 3 * ps)
        return -ENOMEM;

    inner = (sizeof(Secret) + size + ps - 1) / ps * ps;
    total = inner + 2 * ps;
    base = mmap(NULL, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED)
        return -ENOMEM;
    if (mprotect(base + ps, inner, PROT_READ | PROT_WRITE) < 0) {
        (void)munmap(base, total);
        return -ENOMEM;
    }
    (void)madvise(base + ps, inner, MADV_DONTDUMP);
    (void)madvise(base + ps, inner, MADV_WIPEONFORK);
    if (mlock(base + ps, inner) < 0) {
        if (!atomic_load(&allow_unlocked)) {
            (void)munmap(base, total);
            return -ENOMEM;
        }
        locked = false;
    }

    s = (Secret *)(base + ps);
    s->size = size;
    s->capacity = inner - sizeof(Secret);
    s->map_size = total;
    s->locked = locked;
    *ret = s;
    return 0;
}

int secret_new_copy(const void *data, size_t size, Secret **ret) {
    Secret *s = NULL;
    int r = secret_new(size, &s);
    if (r < 0)
        return r;
    if (size > 0)
        memcpy(s->data, data, size);
    *ret = s;
    return 0;
}

Secret *secret_free(Secret *s) {
    size_t ps = page_size(), total;
    uint8_t *base;

    if (!s)
        return NULL;
    total = s->map_size;
    base = (uint8_t *)s - ps;
    explicit_bzero(s, total - 2 * ps);
    (void)munlock(s, total - 2 * ps);
    (void)munmap(base, total);
    return NULL;
}

uint8_t *secret_data(Secret *s) {
    return s->data;
}

const uint8_t *secret_const_data(const Secret *s) {
    return s->data;
}

size_t secret_size(const Secret *s) {
    return s->size;
}

void secret_truncate(Secret *s, size_t new_size) {
    if (new_size < s->size) {
        explicit_bzero(s->data + new_size, s->size - new_size);
        s->size = new_size;
    }
}

bool secret_is_locked(const Secret *s) {
    return s->locked;
}

int nt_harden_process(void) {
    struct rlimit rl = {0, 0};
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
        return negative_errno();
    if (setrlimit(RLIMIT_CORE, &rl) < 0)
        return negative_errno();
    return 0;
}

int nt_check_mlock(void) {
    size_t ps = page_size();
    void *p = mmap(NULL, ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int r = 0;
    if (p == MAP_FAILED)
        return -ENOMEM;
    if (mlock(p, ps) < 0)
        r = negative_errno();
    else
        (void)munlock(p, ps);
    (void)munmap(p, ps);
    return r;
}
