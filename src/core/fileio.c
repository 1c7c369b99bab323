/* SPDX-License-Identifier: Apache-2.0 */
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "macro.h"

int read_full_fd(int fd, size_t max_size, uint8_t **ret, size_t *ret_len) {
    _cleanup_free_ uint8_t *buf = NULL;
    size_t len = 0, cap = 0;

    for (;;) {
        ssize_t n;
        if (cap - len < 4096) {
            size_t ncap = cap ? cap * 2 : 8192;
            uint8_t *nb;
            if (ncap > max_size + 2)
                ncap = max_size + 2;
            if (ncap <= len + 1)
                return -EFBIG;
            nb = realloc(buf, ncap);
            if (!nb)
                return -ENOMEM;
            buf = nb;
            cap = ncap;
        }
        n = read(fd, buf + len, cap - len - 1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return negative_errno();
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > max_size)
            return -EFBIG;
    }
    if (!buf) {
        buf = nt_malloc(1);
        if (!buf)
            return -ENOMEM;
    }
    buf[len] = 0;
    *ret = TAKE_PTR(buf);
    *ret_len = len;
    return 0;
}

int read_full_file(const char *path, size_t max_size, uint8_t **ret, size_t *ret_len) {
    _cleanup_close_ int fd = -EBADF;
    struct stat st;

    if (streq(path, "-"))
        return read_full_fd(STDIN_FILENO, max_size, ret, ret_len);
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return negative_errno();
    if (fstat(fd, &st) < 0)
        return negative_errno();
    if (S_ISDIR(st.st_mode))
        return -EISDIR;
    if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > max_size)
        return -EFBIG;
    return read_full_fd(fd, max_size, ret, ret_len);
}

int write_all(int fd, const void *buf, size_t len) {
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return negative_errno();
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int read_exact(int fd, void *buf, size_t len) {
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return negative_errno();
        }
        if (n == 0)
            return -EPIPE;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int fsync_dir_of(const char *path) {
    _cleanup_free_ char *copy = nt_strdup(path);
    _cleanup_close_ int dfd = -EBADF;
    if (!copy)
        return -ENOMEM;
    dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return negative_errno();
    if (fsync(dfd) < 0)
        return negative_errno();
    return 0;
}

static int write_tmp_and_rename(int fd, const char *tmp, const char *path, const void *data,
                                size_t len, mode_t mode) {
    int r;
    if (fchmod(fd, mode) < 0)
        return negative_errno();
    r = write_all(fd, data, len);
    if (r < 0)
        return r;
    if (fsync(fd) < 0)
        return negative_errno();
    if (rename(tmp, path) < 0)
        return negative_errno();
    return 0;
}

int write_file_atomic(const char *path, const void *data, size_t len, mode_t mode) {
    _cleanup_free_ char *tmp = NULL;
    _cleanup_close_ int fd = -EBADF;
    int r;

    if (asprintf(&tmp, "%s.tmpXXXXXX", path) < 0)
        return -ENOMEM;
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return negative_errno();
    r = write_tmp_and_rename(fd, tmp, path, data, len, mode);
    if (r < 0) {
        (void)unlink(tmp);
        return r;
    }
    return fsync_dir_of(path);
}

int mkdir_p(const char *path, mode_t mode) {
    _cleanup_free_ char *p = nt_strdup(path);
    if (!p)
        return -ENOMEM;
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = 0;
        if (mkdir(p, mode) < 0 && errno != EEXIST)
            return negative_errno();
        *s = '/';
    }
    if (mkdir(p, mode) < 0 && errno != EEXIST)
        return negative_errno();
    return 0;
}
