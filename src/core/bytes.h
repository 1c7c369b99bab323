/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fixed-width integers in byte buffers, and an all-zero check. Header-only (static inline): the
 * accessors are on parsing hot paths and compile to a single load or store.
 *
 * Invariants:
 *  - Every accessor is unaligned-safe: it goes through memcpy, never through a cast pointer, so
 *    any byte offset into a wire or file buffer is valid (no UB, no bus error on strict-alignment
 *    CPUs) and the result does not depend on the host's byte order.
 *  - The caller guarantees that p points at 2, 4 or 8 readable (get) or writable (put) bytes;
 *    nothing here checks lengths.
 *  - _le_ accessors are for the SEV-SNP ABI (reports, certificate tables, guest messages);
 *    _be_ accessors are for our own formats, which are big-endian (network order): the vhsmd
 *    protocol and the sealed keystore.
 */
#pragma once

#include <endian.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Little-endian loads from p (unaligned-safe). */
static inline uint16_t bytes_get_le16(const void *p) {
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return le16toh(v);
}
static inline uint32_t bytes_get_le32(const void *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return le32toh(v);
}
static inline uint64_t bytes_get_le64(const void *p) {
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return le64toh(v);
}

/* Little-endian stores of v at p (unaligned-safe). */
static inline void bytes_put_le16(void *p, uint16_t v) {
    v = htole16(v);
    memcpy(p, &v, sizeof v);
}
static inline void bytes_put_le32(void *p, uint32_t v) {
    v = htole32(v);
    memcpy(p, &v, sizeof v);
}
static inline void bytes_put_le64(void *p, uint64_t v) {
    v = htole64(v);
    memcpy(p, &v, sizeof v);
}

/* Big-endian (network order) loads from p (unaligned-safe). */
static inline uint16_t bytes_get_be16(const void *p) {
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return be16toh(v);
}
static inline uint32_t bytes_get_be32(const void *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return be32toh(v);
}
static inline uint64_t bytes_get_be64(const void *p) {
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return be64toh(v);
}

/* Big-endian (network order) stores of v at p (unaligned-safe). */
static inline void bytes_put_be16(void *p, uint16_t v) {
    v = htobe16(v);
    memcpy(p, &v, sizeof v);
}
static inline void bytes_put_be32(void *p, uint32_t v) {
    v = htobe32(v);
    memcpy(p, &v, sizeof v);
}
static inline void bytes_put_be64(void *p, uint64_t v) {
    v = htobe64(v);
    memcpy(p, &v, sizeof v);
}

/* Returns true if all n bytes at p are zero (true for n == 0). The loop ORs every byte and has
 * no early exit, so its running time depends only on n, not on where a nonzero byte sits: fit
 * for checking reserved fields and padding of buffers that may hold secrets. ("Constant-time-ish":
 * the compiler is free to vectorise but, with no data-dependent branch in the source, has no
 * reason to add one. For MACs and tokens use CRYPTO_memcmp.) */
static inline bool bytes_is_zero(const void *p, size_t n) {
    const uint8_t *b = p;
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= b[i];
    return acc == 0;
}
