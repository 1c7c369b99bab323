/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The sealed keystore: all keys of a vault (every retained version, ACLs, policies, metadata)
 * in one file, sealed with AES-256-GCM under the SNP derived key (MSG_KEY_REQ through the
 * evidence provider), so it opens only in a VM whose selected launch state matches.
 *
 * File (docs/vault.md): a 64-byte header, authenticated as GCM AAD, then the ciphertext and a
 * 16-byte tag:
 *   "NTKS" | u16 format (2) | u16 header size (64) | u32 root_key_select |
 *   u64 guest_field_select | u32 vmpl | u32 guest_svn | u64 tcb_version | u8 nonce[12] |
 *   u64 generation | u8 reserved[8] (zero)                             (integers big-endian)
 * Format 1 (u8 reserved[16] after the nonce) is still read, as generation 0.
 * The derived-key request is read back from the header, so a file opens with the parameters
 * it was sealed with; saves use the Keystore's configured parameters.
 * On disk the file has two slots (keystore_slots_parse): a save seals the next generation into
 * the slot that does not hold the current one, in place, and fdatasyncs it (one flush; a new
 * file, or one that outgrew its slots, is written atomically with core/fileio.h
 * write_file_atomic). A crash leaves the old or the new generation: a torn slot does not
 * authenticate and the other slot still holds the previous, acknowledged one. A single sealed
 * image (the file before the slots) is still read; the next save writes two slots.
 *
 * Never overwritten after a failed open: keystore_save() refuses (-ESTALE) unless
 * keystore_load() on this Keystore returned 0 or -ENOENT (no file yet), so a daemon that
 * cannot open its keystore cannot replace it with an empty one.
 *
 * Freshness (docs/vault.md "Freshness and rollback"): every save writes the next generation
 * (monotonic, authenticated in the header); with an anchor (freshness.h), each save then
 * records the generation there, and a load refuses a file older than the anchor (an old copy
 * restored by the host, or a deleted file: generation 0) unless the operator accepted exactly
 * that generation (keystore_accept_rollback).
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "core/secret.h"
#include "snp/provider.h"
#include "vhsm/freshness.h"
#include "vhsm/vault.h"

#define KEYSTORE_MAX_FILE (64u * 1024u * 1024u)

typedef struct KeystoreSealParams {
    uint32_t root_key_select;    /* SNP_KEY_ROOT_VCEK (default) or SNP_KEY_ROOT_VMRK */
    uint64_t guest_field_select; /* default KEYSTORE_DEFAULT_GFS */
    uint32_t vmpl;               /* default 0 */
    uint32_t guest_svn;          /* default 0 */
    uint64_t tcb_version;        /* default 0 */
} KeystoreSealParams;

/* Default field selection: the key changes with the measurement, the guest policy, the family
 * and image id. Not the guest SVN or TCB (those are passed as minimums in the request, so a
 * TCB/SVN upgrade keeps the keystore readable while a downgrade below them cannot open it). */
#define KEYSTORE_DEFAULT_GFS                                                                       \
    (SNP_GFS_MEASUREMENT | SNP_GFS_GUEST_POLICY | SNP_GFS_FAMILY_ID | SNP_GFS_IMAGE_ID)

void keystore_seal_params_default(KeystoreSealParams *ret);

/* provider is borrowed (must outlive the keystore). params NULL = defaults.
 * Returns 0, -EINVAL, -ENOMEM. */
int keystore_new(SnpProvider *provider, const char *path, const KeystoreSealParams *params,
                 Keystore **ret);
Keystore *keystore_free(Keystore *ks);
DEFINE_TRIVIAL_CLEANUP_FUNC(Keystore *, keystore_free);

/* Freshness anchor (borrowed, must outlive the keystore; NULL = none, the default): set before
 * keystore_load(), which derives its key and checks it. */
void keystore_set_anchor(Keystore *ks, FreshnessAnchor *anchor);
/* Operator override for the next keystore_load(): a file of exactly this generation (0 = no
 * file) is accepted although it is older than the anchor, or the anchor is unusable (forged,
 * malformed). The content is then resealed above the anchor's generation and the anchor
 * rewritten, so that the newer files stay refused. */
void keystore_accept_rollback(Keystore *ks, uint64_t generation);

typedef struct KeystoreFreshness {
    bool anchored;                /* an anchor is configured */
    uint64_t generation;          /* of the file loaded (0: no file or format 1), then of the
                                   * last file written */
    int anchor_read;              /* at load: 0, -ENOENT (no anchor yet) or the anchor's error */
    int anchor_write;             /* the last anchor write: 0 or its error */
    uint64_t anchor_generation;   /* at load, when anchor_read == 0 */
    bool rollback_accepted;       /* load accepted a stale file through the override */
    uint64_t resealed_generation; /* then: what it was resealed as (0: there was no file) */
} KeystoreFreshness;
/* What the last load and save saw (for vhsmd's messages and audit line). */
void keystore_get_freshness(const Keystore *ks, KeystoreFreshness *ret);

/* Opens the file and adds its keys to v, which must be empty (-EBUSY otherwise).
 * Returns 0, -ENOENT (no keystore yet: v stays empty and later saves may create it),
 * -EBADMSG (malformed or truncated file or content), -EKEYREJECTED (authentication failed:
 * tampered, or sealed in a VM with different launch state), -EOPNOTSUPP (unknown format
 * version), -EFBIG, or the provider's error. With an anchor also: -EKEYREVOKED (the file, or
 * its absence, is older than the anchor: rollback), the anchor's read error (-EKEYREJECTED
 * forged or tampered, -EBADMSG, -EOPNOTSUPP, I/O) or write error; keystore_get_freshness()
 * tells which. On failure v is unchanged. */
int keystore_load(Keystore *ks, Vault *v);
/* Seals v's current state as the next generation and atomically replaces the file, then the
 * anchor. Returns 0, -ESTALE (load not done or failed), -EOVERFLOW, or a negative errno (an
 * anchor write error comes after the file was replaced: the next save retries). Takes v's table
 * lock (read); the vault calls the _locked variant itself while it holds the lock. */
int keystore_save(Keystore *ks, Vault *v);

/* Content (de)serialization without the seal (docs/vault.md "keystore content"), for the
 * sealing code and the fuzzer. serialize: *ret is a new Secret. deserialize: adds the keys to
 * the empty vault v; returns 0, -EBADMSG (malformed, inconsistent, duplicate names, wrong key
 * material for a type), -EBUSY (v not empty), -ENOMEM; v unchanged on failure. */
int keystore_serialize(Vault *v, Secret **ret);
int keystore_deserialize(Vault *v, const uint8_t *data, size_t len);

/* Sealing primitives (exposed for tests and tools): seal content with params and generation
 * through the provider into a malloc'd file image; open such an image into a Secret and its
 * authenticated generation (ret_generation may be NULL). Unsealing derives the
 * key with the expected parameters only: a header that records any other derivation is
 * refused with -EKEYREJECTED before any key is requested (the file is untrusted until its tag
 * verifies, so it must never choose a weaker derivation). */
int keystore_seal(SnpProvider *provider, const KeystoreSealParams *params, uint64_t generation,
                  const Secret *content, uint8_t **ret, size_t *ret_len);
int keystore_unseal(SnpProvider *provider, const KeystoreSealParams *expected, const uint8_t *file,
                    size_t len, Secret **ret_content, uint64_t *ret_generation);

/* The two-slot file (docs/vault.md "Keystore file"): splits it into its two sealed images
 * (ret_image[i] NULL and ret_len[i] 0: empty or spoiled). A slot whose length exceeds the
 * capacity or whose padding is not zero is spoiled (ret_err[i] = -EBADMSG), not an error of the
 * whole file: a torn write leaves it. Returns 0, -EBADMSG (header, size) or -EOPNOTSUPP. */
int keystore_slots_parse(const uint8_t *file, size_t len, const uint8_t *ret_image[2],
                         size_t ret_len[2], int ret_err[2], size_t *ret_capacity);
