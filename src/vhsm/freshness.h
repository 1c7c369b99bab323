/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Freshness anchor of the sealed keystore (docs/vault.md "Freshness and rollback"): a small
 * file, outside the host's reach (default /run/vhsm, a tmpfs in the encrypted VM memory), that
 * records the generation of the last keystore write. A keystore file whose generation is below
 * the anchor's is an old copy put back by the host and is refused.
 *
 * File (48 bytes, integers big-endian):
 *   0 "NTFA" | 4 u16 format (1) | 6 u16 size (48) | 8 u64 generation | 16 u8 mac[32]
 * mac = HMAC-SHA256(anchor key, bytes 0..15). The anchor key is derived by the keystore from
 * the same SNP derived key as its sealing key (other HKDF info), so only this VM (same launch
 * state) can write a valid anchor; the host can neither forge one nor lower the generation.
 * An anchor on host-controlled storage would still be replayable together with an old keystore:
 * it must live in VM-private storage.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/macro.h"
#include "core/secret.h"

#define FRESHNESS_DEFAULT_ANCHOR "/run/vhsm/keystore.anchor"
#define FRESHNESS_ANCHOR_SIZE 48u
#define FRESHNESS_KEY_SIZE 32u

typedef struct FreshnessAnchor FreshnessAnchor;

/* Parses an anchor specification: "none" (*ret_path = NULL) or "file:PATH" (*ret_path a
 * malloc'd copy of PATH, which must be absolute). Returns 0, -EINVAL, -ENOMEM. */
int freshness_anchor_spec_parse(const char *spec, char **ret_path);

/* An anchor file at path (copied). It needs a key (freshness_anchor_set_key) before reading or
 * writing. Returns 0, -EINVAL, -ENOMEM. */
int freshness_anchor_new(const char *path, FreshnessAnchor **ret);
FreshnessAnchor *freshness_anchor_free(FreshnessAnchor *a);
DEFINE_TRIVIAL_CLEANUP_FUNC(FreshnessAnchor *, freshness_anchor_free);
const char *freshness_anchor_path(const FreshnessAnchor *a);
bool freshness_anchor_has_key(const FreshnessAnchor *a);
/* Takes ownership of *key (FRESHNESS_KEY_SIZE bytes; *key set to NULL). Returns 0, -EINVAL. */
int freshness_anchor_set_key(FreshnessAnchor *a, Secret **key);

/* Reads the anchor. Returns 0 and *ret_generation, -ENOENT (no anchor yet), -EBADMSG
 * (malformed), -EOPNOTSUPP (unknown format), -EKEYREJECTED (MAC wrong: forged, tampered, or
 * written under another key), -ENOKEY (no key set), or the read error. */
int freshness_anchor_read(FreshnessAnchor *a, uint64_t *ret_generation);
/* Atomically replaces the anchor with generation (mode 0600; the directory is created 0700 if
 * missing). Returns 0, -ENOKEY, or the write error. */
int freshness_anchor_write(FreshnessAnchor *a, uint64_t generation);

/* The file image, for the reader/writer above, tests and the fuzzer. decode returns 0,
 * -EBADMSG, -EOPNOTSUPP or -EKEYREJECTED (as freshness_anchor_read). */
int freshness_anchor_encode(const Secret *key, uint64_t generation,
                            uint8_t ret[FRESHNESS_ANCHOR_SIZE]);
int freshness_anchor_decode(const Secret *key, const uint8_t *data, size_t len,
                            uint64_t *ret_generation);
