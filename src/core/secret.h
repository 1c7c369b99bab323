/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Secret: a buffer for key material, PINs, passphrases and unwrapped DEKs.
 * Invariants: the memory is page-backed (mmap), locked (mlock), excluded from core dumps
 * (MADV_DONTDUMP), surrounded by PROT_NONE guard pages, and wiped with explicit_bzero before it
 * is unmapped. A Secret never grows (no realloc): allocate a new one and copy.
 * If mlock fails, secret_new() fails with -ENOMEM unless secret_set_allow_unlocked(true) was
 * called (an explicit, logged operator choice).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

typedef struct Secret Secret;

/* Allocates a zeroed secret of size bytes (size may be 0). Returns 0 or -ENOMEM / -EINVAL.
 * On success *ret owns the secret; free with secret_free(). */
int secret_new(size_t size, Secret **ret);
/* Allocates a secret holding a copy of data[0..size). Returns 0 or a negative errno. */
int secret_new_copy(const void *data, size_t size, Secret **ret);
/* Wipes and unmaps; accepts NULL; returns NULL. */
Secret *secret_free(Secret *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(Secret *, secret_free);

uint8_t *secret_data(Secret *s);
const uint8_t *secret_const_data(const Secret *s);
size_t secret_size(const Secret *s);
/* Shrinks the visible size (e.g. after a decrypt whose output is shorter). new_size <= size. */
void secret_truncate(Secret *s, size_t new_size);
/* True if the pages are locked (false only when running with allow_unlocked). */
bool secret_is_locked(const Secret *s);

/* Process-wide policy: allow secrets in unlocked memory when mlock fails. Default false. */
void secret_set_allow_unlocked(bool allow);

/* Process hardening for programs that hold secrets: PR_SET_DUMPABLE 0 and RLIMIT_CORE 0.
 * Returns 0 or a negative errno. */
int nt_harden_process(void);

/* Checks whether this process can lock memory at all (RLIMIT_MEMLOCK / CAP_IPC_LOCK): tries to
 * lock one page. Returns 0 if it can, else a negative errno. */
int nt_check_mlock(void);
