/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Small language helpers used everywhere: the cleanup attribute, ownership transfer, array sizes.
 * Invariant: every _cleanup_ function accepts a pointer to NULL (or to -EBADF for fds) and does
 * nothing, so variables can be declared initialised and freed on every exit path.
 */
#pragma once

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _noreturn_ __attribute__((noreturn))
#define _likely_(x) (__builtin_expect(!!(x), 1))
#define _unlikely_(x) (__builtin_expect(!!(x), 0))
#define _warn_unused_result_ __attribute__((warn_unused_result))

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define STRLEN(s) (sizeof("" s "") - 1)

/* Take ownership of a pointer: returns it and sets the variable to NULL. */
#define TAKE_PTR(p)                                                                                \
    ({                                                                                             \
        __typeof__(p) _tp_ = (p);                                                                  \
        (p) = NULL;                                                                                \
        _tp_;                                                                                      \
    })
#define TAKE_FD(fd)                                                                                \
    ({                                                                                             \
        int _tfd_ = (fd);                                                                          \
        (fd) = -EBADF;                                                                             \
        _tfd_;                                                                                     \
    })

/* Defines name(type *p) { if (*p) func(*p); } for a type's free function. */
#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)                                                    \
    static inline void func##p(type *p) {                                                          \
        if (*p)                                                                                    \
            func(*p);                                                                              \
    }
#define DEFINE_TRIVIAL_CLEANUP_FUNC_FULL(type, name, func)                                         \
    static inline void name(type *p) {                                                             \
        if (*p)                                                                                    \
            func(*p);                                                                              \
    }

static inline void freep(void *p) {
    free(*(void **)p);
}
#define _cleanup_free_ _cleanup_(freep)

static inline void closep(int *fd) {
    if (*fd >= 0) {
        int saved = errno;
        (void)close(*fd);
        errno = saved;
    }
}
#define _cleanup_close_ _cleanup_(closep)

#include <stdio.h>
static inline void fclosep(FILE **f) {
    if (*f)
        (void)fclose(*f);
}
#define _cleanup_fclose_ _cleanup_(fclosep)

/* Wipes a stack buffer when it goes out of scope. Use: CLEANUP_ERASE(buf). */
struct nt_erase_ {
    void *p;
    size_t n;
};
static inline void nt_erase_cleanup_(struct nt_erase_ *e) {
    explicit_bzero(e->p, e->n);
}
#define NT_CONCAT_(a, b) a##b
#define NT_CONCAT(a, b) NT_CONCAT_(a, b)
#define CLEANUP_ERASE(buf)                                                                         \
    _cleanup_(nt_erase_cleanup_) _unused_ struct nt_erase_ NT_CONCAT(nt_erase_, __COUNTER__) = {   \
        &(buf), sizeof(buf)}

/* Returns -errno of the last failed libc call, never 0 (a defensive -EIO if errno was 0). */
static inline int negative_errno(void) {
    return errno > 0 ? -errno : -EIO;
}

static inline int streq_ptr(const char *a, const char *b) {
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}
#define streq(a, b) (strcmp((a), (b)) == 0)
