/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Secret: a buffer for key material, PINs, passphrases and unwrapped DEKs.
 * Invariants: the memory is page-backed (mmap), locked (mlock), excluded from core dumps
 * (MADV_DONTDUMP), surrounded by PROT_NONE guard pages, and wiped with explicit_bzero before it
 * is unmapped. A Secret never grows (no realloc): allocate a new one and copy.
 * If mlock fails, secret_new() fails with -ENOMEM unless secret_set_allow_unlocked(true) was
 * called (an explicit, logged operator choice).
 *
 * Packed secrets (secret_new_packed()) are for many small, long-lived secrets (symmetric key
 * versions): one mapping per secret would exhaust vm.max_map_count (65530) at ~32k secrets.
 * They share slots of 64/128/256 bytes (header included) in chunks of 16 KiB doubling to 1 MiB;
 * each chunk keeps the invariants above (guard pages, mlock, MADV_DONTDUMP, MADV_WIPEONFORK),
 * but slots of one chunk have no guard pages between them. A freed slot is wiped and reused.
 * Packed and page secrets share the API below; secret_free() tells them apart.
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
/* Like secret_new() / secret_new_copy(), but the secret goes into a slot of a shared locked chunk
 * when SECRET_PACKED_SLOT_SIZE(size) > 0, else it is a page secret as from secret_new().
 * Returns 0 or -ENOMEM / -EINVAL. Thread-safe. Free with secret_free(). */
int secret_new_packed(size_t size, Secret **ret);
int secret_new_packed_copy(const void *data, size_t size, Secret **ret);

/* Bytes of each slot taken by the header (size, owner chunk, flags). */
#define SECRET_PACKED_HEADER 32u
/* The slot size (64, 128 or 256) a packed secret of n bytes takes, or 0 if n is too large to be
 * packed (secret_new_packed() then makes a page secret). */
#define SECRET_PACKED_SLOT_SIZE(n)                                                                 \
    ((size_t)(n) <= 64u - SECRET_PACKED_HEADER    ? (size_t)64u                                    \
     : (size_t)(n) <= 128u - SECRET_PACKED_HEADER ? (size_t)128u                                   \
     : (size_t)(n) <= 256u - SECRET_PACKED_HEADER ? (size_t)256u                                   \
                                                  : (size_t)0u)
/* Bytes of locked memory that one secret_new_packed(n) secret pins (its slot, or the locked pages
 * of a page secret), for quotas. Never fails; saturates at SIZE_MAX. */
size_t secret_packed_cost(size_t n);

typedef struct SecretPackedStats {
    size_t chunks;       /* chunks currently mapped */
    size_t slots_used;   /* live packed secrets */
    size_t slots_total;  /* slots in all mapped chunks */
    size_t bytes_locked; /* usable (locked) bytes of all chunks */
    size_t bytes_mapped; /* the same plus guard pages */
} SecretPackedStats;
/* A snapshot of the packed pool (for tests and diagnostics). Thread-safe. */
SecretPackedStats secret_packed_stats(void);
/* Wiped page-secret mappings kept for reuse (secret_free()), for tests. Thread-safe. */
size_t secret_kept_count(void);

/* Wipes and unmaps (a page secret) or wipes the slot and returns it to its chunk (a packed
 * secret); accepts NULL; returns NULL. A page secret of at most 64 KiB is wiped and its mapping
 * kept (locked, not dumped, wiped on fork, guard pages) for the next secret_new() of the same
 * size, up to 16 mappings: no munlock/munmap/mmap/mlock per operation. */
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
