/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Nitride's LUKS2 support (docs/luks.md): the `nitride` LUKS2 token, keyslots for high-entropy
 * keys, and the sealed-local flow (a random volume key sealed under the SNP derived key).
 *
 * Token JSON (in the LUKS2 header, crypt_token_json_set), parsed strictly (luks_token_parse:
 * unknown members, duplicates, wrong types, more than one keyslot are refused):
 *   {"type":"nitride","keyslots":["N"],"nitride_version":1,"flow":"sealed"|"kms",
 *    "volume":"<LUKS UUID>",
 *    "sealed":{"root_key":"vcek"|"vmrk","bind":["measurement","policy",...],
 *              "guest_svn":N,"tcb":"<16 hex>",
 *              "policy":{"allow_debug":false,"min_tcb":"<16 hex>","min_guest_svn":N},
 *              "blob":"<base64: nonce(12) | AES-256-GCM(volume key, 32 bytes) | tag(16)>",
 *              "expect":{"measurement":"<96 hex>","bind":["policy",...],"blob":"<base64>"}},
 *    ("expect", optional: the same key sealed for a pre-authorised next image, see
 *    luks_seal_expect)
 *    "kms":{"url":"https://...","attestd":"https://...","secret":"ID"}}
 * "flow" names the slots present: "sealed" (only "sealed"), "kms" (only "kms"), "sealed+kms"
 * (both: a remote slot with a sealed cache; version-1 tokens written before "sealed+kms"
 * existed still parse unchanged).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/macro.h"
#include "core/secret.h"
#include "snp/provider.h"

#define LUKS_TOKEN_TYPE "nitride"
#define LUKS_TOKEN_VERSION 1
#define LUKS_TOKEN_MAX_JSON (32u * 1024u)
#define LUKS_KEY_SIZE 32u
#define LUKS_NONCE_SIZE 12u
#define LUKS_TAG_SIZE 16u
#define LUKS_BLOB_SIZE (LUKS_NONCE_SIZE + LUKS_KEY_SIZE + LUKS_TAG_SIZE)
#define LUKS_UUID_MAX 40u
#define LUKS_PBKDF2_ITERATIONS 1000u

typedef enum LuksFlow {
    LUKS_FLOW_SEALED,     /* "sealed": the sealed slot only */
    LUKS_FLOW_KMS,        /* "kms": the remote slot only */
    LUKS_FLOW_SEALED_KMS, /* "sealed+kms": both; sealed first, remote fallback, re-seal */
} LuksFlow;

static inline bool luks_flow_has_sealed(LuksFlow f) {
    return f == LUKS_FLOW_SEALED || f == LUKS_FLOW_SEALED_KMS;
}
static inline bool luks_flow_has_kms(LuksFlow f) {
    return f == LUKS_FLOW_KMS || f == LUKS_FLOW_SEALED_KMS;
}

typedef struct LuksLocalPolicy {
    bool allow_debug;       /* default false: a VM with the debug policy bit is refused */
    uint64_t min_tcb;       /* the reported TCB must be >= this, component-wise */
    uint32_t min_guest_svn; /* the guest SVN must be >= this */
} LuksLocalPolicy;

typedef struct LuksToken {
    int keyslot;
    LuksFlow flow;
    char volume[LUKS_UUID_MAX]; /* the LUKS UUID of the volume the token was written for */
    /* sealed */
    uint32_t root_key_select;
    uint64_t guest_field_select;
    uint32_t guest_svn;   /* derived-key request floor */
    uint64_t tcb_version; /* derived-key request floor */
    LuksLocalPolicy policy;
    uint8_t blob[LUKS_BLOB_SIZE];
    /* sealed, optional: the key pre-authorised for the next image (seal --expect-measurement) */
    bool has_expect;
    uint8_t expect_measurement[48];
    uint64_t expect_field_select; /* never has measurement; always has policy */
    uint8_t expect_blob[LUKS_BLOB_SIZE];
    /* kms */
    char *kms_url;
    char *attestd_url;
    char *secret_id;
} LuksToken;

void luks_token_done(LuksToken *t);

/* Strict parse of untrusted token JSON (len bytes, need not be NUL-terminated).
 * Returns 0, -EBADMSG (malformed; *ret_error names the member, a static string, may be NULL),
 * -EMEDIUMTYPE (valid JSON of another token type: not ours), -EOPNOTSUPP (other version),
 * -ENOMEM. *ret is written only on success. */
int luks_token_parse(const char *json, size_t len, LuksToken *ret, const char **ret_error);
/* Serializes a token into a malloc'd NUL-terminated string. Returns 0, -EINVAL, -ENOMEM. */
int luks_token_format(const LuksToken *t, char **ret);

/* "measurement,policy,..." <-> GUEST_FIELD_SELECT bits (names: policy, image_id, family_id,
 * measurement, guest_svn, tcb_version). Returns 0 or -EINVAL (unknown or repeated name). */
int luks_bind_parse(const char *list, uint64_t *ret);

/* ---- sealed flow (luks-seal.c) ---- */

/* Why an unseal was refused (static string), for the caller's message. */
typedef struct LuksRefusal {
    const char *check;
    char detail[512];
} LuksRefusal;

/* Seals key (LUKS_KEY_SIZE bytes) for volume/keyslot under the derived key with gfs, filling the
 * sealed members of t (t->keyslot and t->volume must be set). The local policy is the current
 * state's (min TCB = reported TCB, min guest SVN = current) unless allow_debug; refuses
 * (-EPERM, *refusal) to seal in a VM that fails it. */
int luks_seal(SnpProvider *p, uint64_t gfs, bool allow_debug, const Secret *key, LuksToken *t,
              LuksRefusal *refusal);
/* Checks the VM's own report against t's local policy, then derives and opens the blob for
 * volume. Returns 0 and *ret_key, -EPERM (local policy refused: *refusal says which check),
 * -EKEYREJECTED (the blob does not open here: another VM state, another volume, tampered
 * token), or the provider's error. */
int luks_unseal(SnpProvider *p, const LuksToken *t, const char *volume, Secret **ret_key,
                LuksRefusal *refusal);

/* Pre-authorises the next image (seal --expect-measurement): seals key (the sealed slot's) for a
 * VM with measurement, under the derived key over t's bound fields WITHOUT the measurement (the
 * firmware derives keys only for the running measurement) plus the guest policy, with t's floors
 * and local policy; the AAD adds the expected measurement. Unseal then also requires the VM's
 * report to carry that measurement. t must have a sealed slot. Returns 0, -EPERM (local policy
 * of this VM: *refusal), -EINVAL. */
int luks_seal_expect(SnpProvider *p, const uint8_t measurement[48], const Secret *key, LuksToken *t,
                     LuksRefusal *refusal);
/* Opens the pre-authorised slot: the VM's report must pass the local policy and carry the
 * expected measurement. 0 and *ret_key, -EPERM (local policy), -EKEYREJECTED (another
 * measurement, or the blob does not open), -ENOENT (no such slot). */
int luks_unseal_expect(SnpProvider *p, const LuksToken *t, const char *volume, Secret **ret_key,
                       LuksRefusal *refusal);

/* ---- device operations (luks-device.c), through libcryptsetup ---- */

struct crypt_device;
/* Loads a LUKS2 header. Returns 0, -EMEDIUMTYPE (not LUKS2), or a negative errno. */
int luks_device_open(const char *path, struct crypt_device **ret);
void luks_device_closep(struct crypt_device **cd);

/* Fault injection for tests: called at each step of luks_enroll_sealed; a negative return
 * fails the enrolment there. NULL (default) = none. */
typedef int (*LuksFaultHook)(const char *step);
void luks_set_fault_hook(LuksFaultHook hook);

/* Atomic seal enrolment: a new random key, a PBKDF2 (1000 iterations) keyslot for it
 * authorised by auth (a passphrase or key-file content of an existing keyslot), the sealed
 * token. On any failure nothing remains (keyslot destroyed, token removed). Returns 0 and the
 * token id / keyslot, -EPERM (auth refused or local policy: *refusal), or a negative errno. */
int luks_enroll_sealed(struct crypt_device *cd, SnpProvider *p, const Secret *auth, uint64_t gfs,
                       bool allow_debug, int *ret_token, int *ret_keyslot, LuksRefusal *refusal);

/* Reads token id (our type only): 0, -ENOENT (no such token), -EMEDIUMTYPE (not nitride),
 * -EBADMSG (malformed). */
int luks_token_read(struct crypt_device *cd, int id, LuksToken *ret);
#define LUKS_MAX_TOKENS 32

/* Tries key on the token's keyslot only. name NULL: test mode (checks the key, no
 * device-mapper). Returns 0, -EPERM (wrong key), or a negative errno. */
int luks_activate(struct crypt_device *cd, const char *name, int keyslot, const Secret *key);

/* ---- unlock (luks-unlock.c): the interface the CLI and the token plugin share ---- */

#define LUKS_CONF_DEFAULT "/etc/nitride/luks.conf"
#define LUKS_UNLOCK_DEFAULT_TIMEOUT_MS 30000u
#define LUKS_CONF_MAX (64u * 1024u)

typedef struct LuksUnlockOptions {
    char *provider;      /* evidence provider spec as `nitride --provider` takes; NULL = auto */
    char *vhsm_socket;   /* NULL = default */
    char *ca_file;       /* TLS trust for kmsd/attestd; NULL = system */
    unsigned timeout_ms; /* whole unlock deadline, default 30000 */
    bool allow_remote;   /* default true */
    bool reseal;         /* self-healing re-seal after a remote unlock, default true */
} LuksUnlockOptions;

/* Defaults, then the JSON file path (NULL = $NITRIDE_LUKS_CONF, else /etc/nitride/luks.conf;
 * a missing default file is not an error; a malformed one is -EBADMSG). The file is one JSON
 * object with the members "provider", "vhsm_socket", "ca_file" (strings), "timeout_ms"
 * (1..3600000), "allow_remote", "reseal" (booleans), all optional; anything else (unknown or
 * duplicate members, wrong types) is -EBADMSG. A missing file named by path or
 * $NITRIDE_LUKS_CONF is -ENOENT. *ret is written only on success. */
int luks_unlock_options_load(const char *path, LuksUnlockOptions *ret);
void luks_unlock_options_done(LuksUnlockOptions *o);

/* Opens the evidence provider named by spec (NULL or auto, sev-guest, tsm, sim = sim with
 * $NITRIDE_SIM_DIR, sim:DIR): -EAGAIN when none is usable, -EINVAL for an unknown spec. */
int luks_provider_open(const char *spec, SnpProvider **ret);
bool luks_provider_spec_ok(const char *spec);

/* Unlocks with nitride token `token` (or the first that works when token < 0): sealed path
 * first, then the remote KMS path, then re-seal. Returns 0 with *ret_key (the keyslot
 * passphrase, LUKS_KEY_SIZE bytes, a Secret) and *ret_keyslot; -EAGAIN when what the token
 * needs is absent (no provider, vhsmd down, service unreachable: callers fall back to other
 * tokens/passphrase); -ECONNREFUSED a service of the remote path (attestd or kmsd) refused the
 * connection LUKS_REMOTE_MAX_REFUSED times in a row: it is down, and the unlock gives up at
 * once instead of at the deadline (*refusal: check "connect", the service and its URL; callers
 * fall back as for -EAGAIN); -EPERM refused (refusal says which check, expected and found);
 * -EKEYREJECTED the sealed blob does not open and no remote path; -EBADMSG malformed token;
 * -ENOENT no nitride token. Never logs key material. The key returned has been checked
 * against the keyslot (libcryptsetup activation without a name). o NULL = defaults. */
int luks_unlock(struct crypt_device *cd, int token, const LuksUnlockOptions *o, Secret **ret_key,
                int *ret_keyslot, LuksRefusal *refusal);

/* seal --expect-measurement: unlocks token (or the first nitride token with a sealed slot when
 * token < 0) here, then adds or replaces its pre-authorised slot for the image with measurement
 * (luks_seal_expect) in one token write. Returns 0 and the token id, -ENOENT (no token with a
 * sealed slot), or luks_unlock's / luks_seal_expect's error; the header is unchanged on error. */
int luks_preauthorise(struct crypt_device *cd, int token, const LuksUnlockOptions *o,
                      const uint8_t measurement[48], int *ret_token, LuksRefusal *refusal);

/* ---- the remote flow (luks-remote.c) ---- */

/* Connection refusals in a row (with backoff, about 0.75 s at most) after which the remote path
 * takes a service for down. Other transient failures (timeouts, resets, unreachable hosts, 5xx,
 * 429) are retried with backoff until the unlock's deadline. */
#define LUKS_REMOTE_MAX_REFUSED 3u

typedef struct LuksRemoteRequest {
    const char *kms_url, *attestd_url, *secret_id;
    const char *volume_uuid; /* sent with the release request (kmsd's volume_uuid_eq rule) */
    const char *purpose;     /* sent and audited by kmsd: luks-enroll, luks-unlock, luks-reseal */
} LuksRemoteRequest;

/* Attestation with a one-shot transfer key of this process, kmsd's release of the secret sealed
 * to it, the release verified against kmsd's release keys and opened here. *prov is opened from
 * o->provider when NULL. Returns 0 and the LUKS_KEY_SIZE-byte key, -EAGAIN (no provider, a
 * service unreachable before deadline_ms), -ECONNREFUSED (a service refused the connection
 * LUKS_REMOTE_MAX_REFUSED times in a row, with backoff: it is down; *refusal "connect" names
 * it), -EPERM (attestd or kmsd refused: *refusal names the
 * rule, expected and found), -EBADMSG (bad answer, unknown secret, wrong type or size). */
int luks_remote_fetch(const LuksRemoteRequest *rq, const LuksUnlockOptions *o, int64_t deadline_ms,
                      SnpProvider **prov, Secret **ret_key, LuksRefusal *refusal);

/* Atomic KMS enrolment: a PBKDF2 keyslot for key (from luks_remote_fetch) authorised by auth,
 * then the token with t's kms members (t->kms_url, attestd_url, secret_id; keyslot and volume
 * are filled in); with prov and gfs != 0 the token also gets a sealed slot for the same key
 * ("sealed+kms"). On any failure nothing remains. Returns 0 and token id / keyslot, -EPERM (auth
 * refused, or the sealing's local policy: *refusal), or a negative errno. */
int luks_enroll_kms(struct crypt_device *cd, const Secret *auth, const Secret *key, LuksToken *t,
                    SnpProvider *prov, uint64_t gfs, bool allow_debug, int *ret_token,
                    int *ret_keyslot, LuksRefusal *refusal);

/* Removes token id and its keyslot; refuses (-EBUSY) to destroy the last active keyslot unless
 * force. On a keyslot failure the token is restored. */
int luks_remove(struct crypt_device *cd, int id, bool force);
/* Number of active keyslots. */
int luks_active_keyslots(struct crypt_device *cd);
