/* SPDX-License-Identifier: Apache-2.0 */
/*
 * File helpers. Reads are bounded (a file larger than max_size is refused with -EFBIG, so an
 * attacker-supplied path cannot exhaust memory). Writes that must survive a crash go through
 * write_file_atomic(): temp file in the same directory, write, fsync, rename, fsync(dir); a
 * reader sees either the old or the new content, never a mix.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Reads the whole file (or stdin if path is "-"). *ret is NUL-terminated (not counted in
 * *ret_len). Returns 0, -EFBIG if larger than max_size, or a negative errno. */
int read_full_file(const char *path, size_t max_size, uint8_t **ret, size_t *ret_len);
/* Reads from an fd until EOF, same rules. */
int read_full_fd(int fd, size_t max_size, uint8_t **ret, size_t *ret_len);
/* Writes all of buf to fd, retrying on EINTR and short writes. */
int write_all(int fd, const void *buf, size_t len);
/* Reads exactly len bytes; -EPIPE on early EOF. */
int read_exact(int fd, void *buf, size_t len);
/* Atomically replaces path with data (mode applies to the new file). */
int write_file_atomic(const char *path, const void *data, size_t len, mode_t mode);
/* mkdir -p with mode for missing components. */
int mkdir_p(const char *path, mode_t mode);
