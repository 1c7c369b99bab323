/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libvhsm: the client API of vhsmd (the vHSM daemon). Used by the vhsm CLI, the nitride agent
 * and the PKCS#11 module; exported from libvhsm.so (symbols vhsm_* only).
 *
 * Every function returns >= 0 on success or a negative errno on failure. Daemon refusals map
 * through the protocol's status table (docs/protocol.md): -ENOKEY no such key, -EEXIST name taken,
 * -EACCES permission denied, -EKEYEXPIRED attestation required, -EKEYREJECTED bad signature /
 * MAC / tag / JWE, -EOPNOTSUPP operation not valid for the key, -EKEYREVOKED retired version,
 * -EDQUOT quota exceeded, -ENOTUNIQ name in another owner's namespace,
 * -EINVAL invalid argument, -EBADMSG malformed request, -EMSGSIZE too large. Transport failures:
 * -ECONNREFUSED / -ENOENT (daemon not running), -EPIPE / -ECONNRESET (connection lost),
 * -ETIMEDOUT, -EPROTO (the daemon's reply was malformed). vhsm_last_error() gives the daemon's
 * message for the last failure of the calling thread.
 *
 * Threads: a VhsmClient is one connection. It may be shared between threads (an internal mutex
 * serializes calls), but calls on one connection are answered one at a time; for parallel
 * throughput open one connection per thread. After fork() the child must not use the parent's
 * VhsmClient (open a new one).
 *
 * Latency: a call polls for its reply for up to $VHSM_SPIN_US microseconds (default 0 = off)
 * before sleeping, yielding the CPU between polls. For throughput, pipeline: queue several
 * operations in a VhsmBatch and run it (one write, the replies read together; see below).
 *
 * Ownership: outputs named ret_* are malloc'd and owned by the caller, written only on success.
 * Outputs that may hold secret data (decrypt, unwrap, random) should be released with
 * vhsm_free_secret(), which wipes them first.
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VHSM_DEFAULT_SOCKET "/run/vhsm/vhsm.sock"

typedef struct VhsmClient VhsmClient;

/* Who may use / administer a key. Empty lists in a create request mean "the creator's uid". */
typedef struct VhsmAcl {
    const uint32_t *use_uids;
    size_t n_use_uids;
    const uint32_t *use_gids;
    size_t n_use_gids;
    const char *const *use_cgroups; /* cgroup path prefixes, e.g. "/system.slice/app.service" */
    size_t n_use_cgroups;
    const uint32_t *admin_uids;
    size_t n_admin_uids;
    const uint32_t *admin_gids;
    size_t n_admin_gids;
    const char *const *admin_cgroups;
    size_t n_admin_cgroups;
} VhsmAcl;

typedef struct VhsmKeySpec {
    const char *type; /* aes256 hmac-sha256 hmac-sha384 p256 p384 ed25519 rsa2048 rsa3072 rsa4096 */
    const char *policy; /* NULL or "local", or "attested" */
    uint64_t max_age;   /* seconds, for "attested" */
    const VhsmAcl *acl; /* NULL: default ACL */
    const char *label;  /* NULL or free text (<= 128 printable chars) */
} VhsmKeySpec;

/* Connects to path (NULL: $VHSM_SOCKET, else VHSM_DEFAULT_SOCKET). Returns 0 or a negative errno
 * (-ENOMEM, -ENAMETOOLONG, or the connect() error). */
int vhsm_connect(const char *path, VhsmClient **ret);
/* Closes the connection and frees. Accepts NULL, returns NULL. */
VhsmClient *vhsm_disconnect(VhsmClient *c);
/* Per-call I/O timeout in milliseconds (default 120000; 0 = none). */
int vhsm_set_timeout(VhsmClient *c, unsigned timeout_ms);
/* Adaptive busy-polling for replies on this connection: after sending a single request, poll the
 * socket for up to max_us microseconds (0 = off, the default unless $VHSM_SPIN_US is set; at
 * most VHSM_SPIN_MAX_US) before sleeping in recv. The budget adapts to the reply latency seen on
 * the connection (about twice the recent average, none when replies take longer than max_us),
 * and a thread spins only while fewer threads of the process spin than it has CPUs minus one
 * (sched_getaffinity): never on one CPU. Batches do not use it. 0 or -EINVAL. */
#define VHSM_SPIN_MAX_US 10000u
int vhsm_set_spin(VhsmClient *c, unsigned max_us);
/* The daemon's message (or a transport description) for the last failed call of this thread;
 * "" if none. Valid until the next call on this thread. */
const char *vhsm_last_error(void);
/* Wipes and frees an output buffer. Accepts NULL. */
void vhsm_free_secret(void *p, size_t len);

/* Raw call: sends one request frame with the given TLV body and returns the response body
 * (malloc'd, possibly NULL for an empty body) if the status is OK, else the mapped errno.
 * For protocol tests and future operations. */
int vhsm_call_raw(VhsmClient *c, uint16_t opcode, const uint8_t *body, size_t body_len,
                  uint8_t **ret_body, size_t *ret_body_len);

int vhsm_ping(VhsmClient *c);

/* Keys. Names: a plain name, 1..128 bytes of [A-Za-z0-9._:@-] (not starting with '.' or '-'),
 * lies in the caller's own namespace; another owner's key is addressed by its full name
 * "<uid>/<name>" (or "kms/<name>" for keys the agent imported). Creating a key under another
 * owner's namespace fails with -ENOTUNIQ; over the owner's quota with -EDQUOT. */
int vhsm_key_create(VhsmClient *c, const char *name, const VhsmKeySpec *spec);
/* JSON array of key summaries (key descriptions without their versions, docs/protocol.md) the
 * caller may see, sorted by full name: every page of vhsm_key_list_page() joined. */
int vhsm_key_list(VhsmClient *c, char **ret_json);
/* One page: {"keys": [...], "next": full name or null}, at most `limit` keys (0 = the daemon's
 * default, 256; at most 1000) after the full name `after` (NULL = from the start). Pass "next"
 * as `after` for the following page. */
int vhsm_key_list_page(VhsmClient *c, const char *after, uint32_t limit, char **ret_json);
int vhsm_key_info(VhsmClient *c, const char *name, char **ret_json);
/* Creates a new version; *ret_version (may be NULL) gets its number. */
int vhsm_key_rotate(VhsmClient *c, const char *name, uint32_t *ret_version);
int vhsm_key_delete(VhsmClient *c, const char *name);
/* Replaces the whole ACL (use and admin lists). */
int vhsm_key_set_acl(VhsmClient *c, const char *name, const VhsmAcl *acl);
/* Retires (wipes) every version below min_version. */
int vhsm_key_set_min_version(VhsmClient *c, const char *name, uint32_t min_version);

/* Operations. algorithm NULL = the key's default (docs/protocol.md lists the names).
 * flags: VHSM_OP_* below. version: with VHSM_OP_RAW input to decrypt/unwrap/verify, the key
 * version that produced it (0 = latest); enveloped input names its version itself. */
#define VHSM_OP_RAW (1u << 0)       /* bare algorithm output/input, no vault envelope (not GCM) */
#define VHSM_OP_PREHASHED (1u << 1) /* sign/verify: data is a digest of the algorithm's hash */
#define VHSM_OP_RAW_RS (1u << 2)    /* ECDSA signature as r||s (implies RAW), for JOSE/PKCS#11 */
#define VHSM_SIGN_RAW VHSM_OP_RAW
#define VHSM_SIGN_PREHASHED VHSM_OP_PREHASHED
#define VHSM_SIGN_RAW_RS VHSM_OP_RAW_RS

/* encrypt/decrypt: AES-256-GCM (the vault's versioned ciphertext format; aad optional) or
 * RSA-OAEP (encryption with the public key). */
int vhsm_encrypt(VhsmClient *c, const char *name, const char *algorithm, unsigned flags,
                 const void *pt, size_t pt_len, const void *aad, size_t aad_len, uint8_t **ret_ct,
                 size_t *ret_ct_len);
int vhsm_decrypt(VhsmClient *c, const char *name, const char *algorithm, unsigned flags,
                 uint32_t version, const void *ct, size_t ct_len, const void *aad, size_t aad_len,
                 uint8_t **ret_pt, size_t *ret_pt_len);
int vhsm_sign(VhsmClient *c, const char *name, const char *algorithm, unsigned flags,
              const void *data, size_t len, uint8_t **ret_sig, size_t *ret_sig_len);
/* Returns 0 if valid, -EKEYREJECTED if not. version: for RAW signatures, the key version that
 * made it (0 = latest); enveloped signatures name their version themselves. */
int vhsm_verify(VhsmClient *c, const char *name, const char *algorithm, unsigned flags,
                uint32_t version, const void *data, size_t len, const void *sig, size_t sig_len);
int vhsm_mac(VhsmClient *c, const char *name, const void *data, size_t len, uint8_t **ret_tag,
             size_t *ret_tag_len);
int vhsm_mac_verify(VhsmClient *c, const char *name, const void *data, size_t len, const void *tag,
                    size_t tag_len);
/* algorithm: "aes256-kw" (RFC 3394) or "aes256-kwp" (RFC 5649, default). Output in the vault
 * envelope (names the key version) unless VHSM_OP_RAW. */
int vhsm_wrap(VhsmClient *c, const char *name, const char *algorithm, unsigned flags,
              const void *data, size_t len, uint8_t **ret, size_t *ret_len);
int vhsm_unwrap(VhsmClient *c, const char *name, const char *algorithm, unsigned flags,
                uint32_t version, const void *data, size_t len, uint8_t **ret, size_t *ret_len);
/* Fills out with n random bytes from the daemon (n <= 65536). */
int vhsm_random(VhsmClient *c, void *out, size_t n);
/* format "pem" or "jwk"; version 0 = latest. *ret is NUL-terminated text. */
int vhsm_pubkey(VhsmClient *c, const char *name, const char *format, uint32_t version, char **ret);
/* ECDH between key name (p256/p384) and the peer's public key (DER SubjectPublicKeyInfo or PEM),
 * stored as a new AES-256 key new_name (HKDF-SHA256); spec gives its ACL/policy (type ignored). */
int vhsm_ecdh_derive(VhsmClient *c, const char *name, const void *peer_pub, size_t peer_pub_len,
                     const void *info, size_t info_len, const char *new_name,
                     const VhsmKeySpec *spec);

/* Transfer: an ephemeral P-384 key in the daemon, valid lifetime seconds (0 = daemon default);
 * *ret_jwk is the public JWK (JSON text, with kid). */
int vhsm_transfer_key_create(VhsmClient *c, uint32_t lifetime, char **ret_jwk);
/* Imports a signed KMS release (docs/token.md "Signed releases"): vhsmd checks its signature
 * against the pinned kmsd keys, decrypts it with the transfer key it names, and stores the key
 * under the name, type, version and attributes the release carries. token (optional): the EAR
 * token the release was made for, recorded as the attestation verdict (as
 * vhsm_attestation_set_token()). *ret_json (optional): {"name","version"}. Root only. */
int vhsm_import_release(VhsmClient *c, const char *release, const char *token, char **ret_json);

/* Attestation verdict state (JSON: {"verdict_time": N or null, "verdict_expires": N or null,
 * "now": N}). */
int vhsm_attestation_status(VhsmClient *c, char **ret_json);
/* Records an attestation verdict from attestd's EAR token (compact JWS): vhsmd checks it
 * against its pinned attestd keys, and its cnf.jwk must be a transfer key vhsmd made. Keys with
 * the attested policy are then usable until min(token exp, token iat + their max age). Root
 * only. */
int vhsm_attestation_set_token(VhsmClient *c, const char *token);

/* The agent channel (docs/protocol.md "Agent channel"; root only): vhsmd hands the agent a job
 * when an application's operation finds a key it serves missing ("missing") or its attestation
 * stale ("stale"); the application's request waits (parked) until the agent reports the job
 * done. A job belongs to the connection that received it: if that connection closes before
 * AGENT_DONE, the job goes to another agent or fails (service-unavailable). While a connection
 * is in vhsm_agent_wait it serves no other call (calls on one connection are serialized):
 * import and report from a second connection if jobs are handled while the next wait runs.
 * Requests on an agent's connection never park. */
typedef struct VhsmAgentJob {
    uint64_t id;
    char key[256];
    char reason[16];
    uint32_t parked; /* requests waiting on the job when it was handed out */
} VhsmAgentJob;
/* Long-poll for a job. patterns: the key names this connection serves, each an exact name
 * ("kms/a/b") or a prefix ending in '*' ("kms/" followed by '*' serves every kms/ key); at most
 * 256, each <= 255 bytes; n_patterns 0 keeps the set of the previous wait. wait_ms: 0 = the
 * daemon's default (25000), at most 60000. Returns 1 and fills *ret_job when a job came, 0 when
 * wait_ms passed idle, < 0 on error. The connection's read timeout is extended to wait_ms + 5 s
 * for this call. */
int vhsm_agent_wait(VhsmClient *c, const char *const *patterns, size_t n_patterns, uint32_t wait_ms,
                    VhsmAgentJob *ret_job);
/* Reports job id finished. status: 0 done (the key was imported / the verdict set: waiting
 * requests are run again), or a negative errno mapped to the protocol status the waiting
 * requests get: -EREMOTEIO refused, -EHOSTUNREACH unavailable, -ETIMEDOUT timeout, others as the
 * status table. message (optional, <= 1024 bytes): the service's reason, shown to them.
 * -ENOKEY: unknown or already finished job. */
int vhsm_agent_done(VhsmClient *c, uint64_t id, int status, const char *message);

/* Pipelining (docs/protocol.md, "Pipelining"). A VhsmBatch queues requests for one connection
 * without waiting; vhsm_batch_run() sends them all (with as few writes as the socket allows) and
 * reads every reply (with as few reads as they arrive in), so N operations cost one round trip
 * instead of N. The daemon answers them in order, each on its own: a failing operation gets its
 * own error and does not disturb the others. A batch belongs to one thread (it is not locked);
 * its connection may be shared (the run holds the connection's lock). The connection must
 * outlive the batch.
 *
 * vhsm_batch_new: 0, -EINVAL, -ENOMEM. vhsm_batch_free: wipes, frees, accepts NULL, returns NULL.
 * vhsm_batch_reset: wipes requests and results; the batch can be filled again.
 */
#define VHSM_BATCH_MAX 4096 /* operations per batch */
typedef struct VhsmBatch VhsmBatch;
int vhsm_batch_new(VhsmClient *c, VhsmBatch **ret);
VhsmBatch *vhsm_batch_free(VhsmBatch *b);
void vhsm_batch_reset(VhsmBatch *b);
/* Number of queued operations. */
size_t vhsm_batch_size(const VhsmBatch *b);

/* Queue one operation (same arguments and meaning as the single calls above, without outputs).
 * Return its index in the batch (>= 0), or -EINVAL (bad arguments, or the batch already ran:
 * reset it first), -E2BIG (VHSM_BATCH_MAX reached), -EMSGSIZE (request over the frame limit),
 * -ENOMEM; on error nothing is queued. The data is copied: the caller's buffers are free again
 * on return. */
int vhsm_batch_encrypt(VhsmBatch *b, const char *name, const char *algorithm, unsigned flags,
                       const void *pt, size_t pt_len, const void *aad, size_t aad_len);
int vhsm_batch_decrypt(VhsmBatch *b, const char *name, const char *algorithm, unsigned flags,
                       uint32_t version, const void *ct, size_t ct_len, const void *aad,
                       size_t aad_len);
int vhsm_batch_sign(VhsmBatch *b, const char *name, const char *algorithm, unsigned flags,
                    const void *data, size_t len);
int vhsm_batch_verify(VhsmBatch *b, const char *name, const char *algorithm, unsigned flags,
                      uint32_t version, const void *data, size_t len, const void *sig,
                      size_t sig_len);
int vhsm_batch_mac(VhsmBatch *b, const char *name, const void *data, size_t len);
int vhsm_batch_mac_verify(VhsmBatch *b, const char *name, const void *data, size_t len,
                          const void *tag, size_t tag_len);
int vhsm_batch_wrap(VhsmBatch *b, const char *name, const char *algorithm, unsigned flags,
                    const void *data, size_t len);
int vhsm_batch_unwrap(VhsmBatch *b, const char *name, const char *algorithm, unsigned flags,
                      uint32_t version, const void *data, size_t len);
/* Any request (opcode and TLV body as in vhsm_call_raw); its result has no output. */
int vhsm_batch_raw(VhsmBatch *b, uint16_t opcode, const uint8_t *body, size_t body_len);

/* Sends every queued request and reads every reply. Returns 0 when all replies arrived (each
 * operation's own result: vhsm_batch_result), or a transport error as for single calls
 * (-ENOTCONN, -EPIPE, -ECONNRESET, -ETIMEDOUT for the whole batch, -EPROTO, -ENOMEM); then no
 * result is available and the connection is broken. -EINVAL if the batch already ran. An empty
 * batch returns 0 without I/O. The requests are wiped once answered. */
int vhsm_batch_run(VhsmBatch *b);

/* Windowed pipelining: vhsm_batch_run() split in two, so that several batches can be in flight
 * on one connection at once (e.g. double buffering: send batch k+1, then receive batch k, then
 * refill k while k+1 is computed). Replies still come back in send order, each operation with its
 * own result. While a send waits for socket space it reads the replies already due (into the
 * batches they belong to), so no window size can deadlock against the daemon's output limit;
 * the replies of a batch are buffered by the client until it is received.
 *
 * vhsm_batch_send: sends every queued request of b and returns without waiting for replies.
 * 0, -EINVAL (not a freshly filled batch: sent already, or answered and not reset), -ENOTCONN,
 * or a transport error, which fails every batch in flight on the connection (their
 * vhsm_batch_recv returns it) and breaks the connection. An empty batch sends nothing.
 * vhsm_batch_recv: waits until every reply of b has arrived (reading those of batches sent
 * before it on the way; their own recv then returns at once). 0 (results as after
 * vhsm_batch_run), -EINVAL (b was not sent, or already received), or the transport error that
 * failed the flight (no results; the connection is broken). Batches may be received in any
 * order; each must be received (or reset) before it is refilled.
 * Resetting or freeing a batch in flight abandons its replies: every batch in flight on the
 * connection fails with -ECONNABORTED and the connection is broken. A single call on a
 * connection with batches in flight first reads their replies. A connection must outlive its
 * batches. */
int vhsm_batch_send(VhsmBatch *b);
int vhsm_batch_recv(VhsmBatch *b);
/* Result of operation i after a successful run: 0, or the negative errno the single call would
 * have returned (verify / mac_verify: -EKEYREJECTED for a bad signature or tag); -EINVAL if i is
 * out of range or the batch did not run. On 0, *ret_out / *ret_len (either may be NULL) give the
 * output (NULL, 0 for operations without one), borrowed: valid until the batch is reset or freed,
 * which wipe it (decrypt / unwrap outputs are plaintext). */
int vhsm_batch_result(const VhsmBatch *b, size_t i, const uint8_t **ret_out, size_t *ret_len);
/* The daemon's message for failed operation i, "" if it succeeded or i is invalid. Valid until
 * the batch is reset or freed. */
const char *vhsm_batch_message(const VhsmBatch *b, size_t i);

/* ======================================================================================
 * Protocol revision 2 (issue 12: tokens, PINs, objects and mechanisms for the PKCS#11 module).
 * Contract: /work/notes/issue12-design.md and docs/protocol.md "Tokens and PINs". Calls the
 * daemon does not know yet fail with -EBADRQC (unknown opcode).
 * ====================================================================================== */

#define VHSM_REVISION 2
/* The daemon's protocol revision: 1 (no REVISION in PING's reply) or 2. */
int vhsm_revision(VhsmClient *c, uint32_t *ret);

/* Errnos of the new statuses (docs/protocol.md status table). */
#define VHSM_EPIN_INCORRECT EBADE     /* status 22 pin-incorrect (the failure was counted) */
#define VHSM_EPIN_LOCKED ENOLCK       /* status 23 pin-locked */
#define VHSM_ENOT_LOGGED_IN EBADR     /* status 24 not-logged-in */
#define VHSM_EALREADY_LOGGED EALREADY /* status 25: this user type is logged in already */
#define VHSM_EOTHER_LOGGED EISCONN    /* status 25: the other user type is logged in */
#define VHSM_ETOKEN_UNINIT ENOMEDIUM  /* status 26: token not initialised */
#define VHSM_EPIN_UNINIT ENODATA      /* status 26: user PIN not initialised */
#define VHSM_ETOKEN_NOT_EMPTY                                                                      \
    ENOTEMPTY /* status 26: re-initialising a token that holds objects                             \
               */
/* PIN length outside VHSM_PIN_MIN..VHSM_PIN_MAX: -ERANGE (status invalid-argument). */

/* Tokens: the caller's own uid namespace is its token. */
#define VHSM_PIN_MIN 4
#define VHSM_PIN_MAX 64
#define VHSM_TOKEN_LABEL_MAX 32 /* bytes, UTF-8 */
#define VHSM_TICKET_SIZE 32
#define VHSM_USER_SO 0u   /* = CKU_SO */
#define VHSM_USER_USER 1u /* = CKU_USER */
#define VHSM_USER_NONE 0xFFFFFFFFu

#define VHSM_TOKEN_INITIALIZED (1u << 0)
#define VHSM_TOKEN_USER_PIN_INITIALIZED (1u << 1)
#define VHSM_TOKEN_LOGIN_REQUIRED (1u << 2) /* = a user PIN is set */
#define VHSM_TOKEN_USER_PIN_COUNT_LOW (1u << 3)
#define VHSM_TOKEN_USER_PIN_FINAL_TRY (1u << 4)
#define VHSM_TOKEN_USER_PIN_LOCKED (1u << 5)
#define VHSM_TOKEN_SO_PIN_COUNT_LOW (1u << 6)
#define VHSM_TOKEN_SO_PIN_FINAL_TRY (1u << 7)
#define VHSM_TOKEN_SO_PIN_LOCKED (1u << 8)

typedef struct VhsmTokenInfo {
    uint32_t uid;                        /* the token is the namespace "<uid>/" */
    uint8_t label[VHSM_TOKEN_LABEL_MAX]; /* label_len bytes, the rest zero */
    size_t label_len;
    char serial[17];        /* 16 hex digits, "" while uninitialised */
    uint32_t flags;         /* VHSM_TOKEN_* */
    uint32_t user_failures; /* consecutive failed user PIN checks */
    uint32_t so_failures;
    uint32_t max_tries; /* vhsmd --pin-max-tries */
    uint32_t pin_min, pin_max;
    uint32_t login; /* this connection: VHSM_USER_NONE, VHSM_USER_SO or VHSM_USER_USER */
} VhsmTokenInfo;

/* 0 or transport errors. */
int vhsm_token_info(VhsmClient *c, VhsmTokenInfo *ret);
/* C_InitToken. Uninitialised: sets the SO PIN, label (label_len <= 32) and a new serial; existing
 * keys of the namespace stay. Initialised: so_pin must match (else -EBADE, counted; -ENOLCK when
 * locked), then -ENOTEMPTY if the namespace holds token objects, else the label is replaced, the
 * user PIN cleared and every login of the token revoked. -ERANGE PIN length, -EINVAL label.
 * Needs no login. */
int vhsm_token_init(VhsmClient *c, const void *so_pin, size_t so_pin_len, const void *label,
                    size_t label_len);
/* C_Login on this connection. user: VHSM_USER_SO or VHSM_USER_USER. Returns 0 and, if ret_ticket
 * is not NULL, a ticket other connections of this uid and pid can attach with. Errors: -EBADE
 * wrong PIN (counted), -ENOLCK locked, -ENOMEDIUM token not initialised, -ENODATA user PIN not
 * set (USER), -EALREADY / -EISCONN (already logged in as that / the other type), -ERANGE. */
int vhsm_login(VhsmClient *c, uint32_t user, const void *pin, size_t pin_len,
               uint8_t ret_ticket[VHSM_TICKET_SIZE]);
/* Attaches this connection to the login of ticket (same uid and pid as the login's connection).
 * 0, -EBADE (unknown, revoked, or another uid/pid's ticket; not counted), -EALREADY/-EISCONN. */
int vhsm_login_ticket(VhsmClient *c, const uint8_t ticket[VHSM_TICKET_SIZE]);
/* C_Logout: revokes this connection's ticket (every connection attached to it is logged out).
 * 0, -EBADR (not logged in). */
int vhsm_logout(VhsmClient *c);
/* C_InitPIN: needs the SO logged in on this connection (-EBADR); sets the user PIN, resets the
 * user counter (unlocks), revokes user logins. -ERANGE. */
int vhsm_init_pin(VhsmClient *c, const void *pin, size_t pin_len);
/* C_SetPIN: the PIN of the user logged in on this connection (SO or USER), or the user PIN when
 * none is. old_pin must match (-EBADE counted, -ENOLCK). Revokes no login: the caller's ticket
 * (and every connection attached to it) and other processes' logins stay valid (PKCS#11: C_SetPIN
 * does not log anyone out; docs/pkcs11.md "Tokens, PINs and lockout"). -ERANGE, -ENODATA,
 * -ENOMEDIUM. */
int vhsm_set_pin(VhsmClient *c, const void *old_pin, size_t old_len, const void *new_pin,
                 size_t new_len);

/* Objects (revision 2, landing after tokens). Types: the key types of VhsmKeySpec plus "aes128",
 * "aes192", "generic-secret" (16..64 bytes), "data", "cert" (value 1..32768 bytes). */
#define VHSM_OBJ_SIGN (1u << 0)
#define VHSM_OBJ_VERIFY (1u << 1)
#define VHSM_OBJ_ENCRYPT (1u << 2)
#define VHSM_OBJ_DECRYPT (1u << 3)
#define VHSM_OBJ_WRAP (1u << 4)
#define VHSM_OBJ_UNWRAP (1u << 5)
#define VHSM_OBJ_DERIVE (1u << 6)
#define VHSM_OBJ_EXTRACTABLE (1u << 7)
#define VHSM_OBJ_SENSITIVE (1u << 8)
#define VHSM_OBJ_TRUSTED (1u << 9) /* set only by the SO */
#define VHSM_OBJ_WRAP_WITH_TRUSTED (1u << 10)
#define VHSM_OBJ_PRIVATE (1u << 11)
#define VHSM_OBJ_MODIFIABLE (1u << 12)
#define VHSM_OBJ_COPYABLE (1u << 13)
#define VHSM_OBJ_DESTROYABLE (1u << 14)
#define VHSM_OBJ_SESSION (1u << 15) /* CKA_TOKEN false: lives with the creating connection */
/* Read-only, set by vhsmd. */
#define VHSM_OBJ_LOCAL (1u << 16)
#define VHSM_OBJ_ALWAYS_SENSITIVE (1u << 17)
#define VHSM_OBJ_NEVER_EXTRACTABLE (1u << 18)
/* read-only usage history: the key has had ENCRYPT/DECRYPT (then it never wraps, and never unwraps
 * under vhsmd --no-plaintext-import), or WRAP/UNWRAP */
#define VHSM_OBJ_HAD_CIPHER (1u << 19)
#define VHSM_OBJ_HAD_WRAPPER (1u << 20)
#define VHSM_OBJ_DEFAULT 0u /* in a spec: vhsmd's defaults (design note section 4) */

#define VHSM_ATTR_MAX 32 /* opaque attributes per object */
#define VHSM_ATTR_VALUE_MAX 1024
#define VHSM_ATTR_TOTAL_MAX 4096
#define VHSM_OBJ_VALUE_MAX 32768
#define VHSM_DATA_MAX (1024u * 1024u - 4096u) /* data per operation request */

typedef struct VhsmAttr {
    uint32_t type; /* CKA_* number, stored verbatim; vhsmd-owned types are refused (-EINVAL) */
    const void *value;
    size_t len;
} VhsmAttr;

typedef struct VhsmObjectSpec {
    const char *type; /* see above */
    uint32_t flags;   /* VHSM_OBJ_* (read-only bits ignored) or VHSM_OBJ_DEFAULT */
    const VhsmAttr *attrs;
    size_t n_attrs;
    const VhsmAcl *acl;   /* NULL: default */
    size_t value_len_gen; /* generic-secret generation: key length in bytes (16..64) */
} VhsmObjectSpec;

typedef struct VhsmObject {
    char name[140]; /* full name */
    char type[24];
    uint32_t flags; /* VHSM_OBJ_*, read-only bits included */
    uint32_t bits;  /* key size in bits (RSA modulus, EC field, secret length); 0 data/cert */
    uint8_t *value; /* asymmetric: public key SubjectPublicKeyInfo DER; cert; data when readable;
                     * else NULL */
    size_t value_len;
    VhsmAttr *attrs; /* values owned by the object */
    size_t n_attrs;
} VhsmObject;
void vhsm_object_free(VhsmObject *o); /* frees the members, not o */
void vhsm_objects_free(VhsmObject *o, size_t n);

/* value NULL: generate; else import (raw secret key bytes, PKCS#8 DER PrivateKeyInfo, data or
 * cert bytes). Imported keys lack LOCAL/ALWAYS_SENSITIVE/NEVER_EXTRACTABLE. -EPERM: vhsmd runs
 * with --no-plaintext-import; -EEXIST, -ENOTUNIQ, -EDQUOT, -EINVAL, -EBADR. */
int vhsm_object_create(VhsmClient *c, const char *name, const VhsmObjectSpec *spec,
                       const void *value, size_t value_len);
int vhsm_object_get(VhsmClient *c, const char *name, VhsmObject *ret);
/* Every object the caller may use or administer, its session objects included. */
int vhsm_object_list(VhsmClient *c, VhsmObject **ret, size_t *ret_n);
/* flags_set / flags_clear: only the one-way changes (SENSITIVE on, EXTRACTABLE off) and usage
 * bits on MODIFIABLE objects (-EPERM otherwise); attrs replace the listed types (len 0 removes). */
int vhsm_object_set(VhsmClient *c, const char *name, uint32_t flags_set, uint32_t flags_clear,
                    const VhsmAttr *attrs, size_t n_attrs);
/* The key delete works for every object type: vhsm_key_delete() (-EPERM for an object that is not
 * DESTROYABLE).
 * Branch obj (docs/protocol.md "Objects"): type "data" (value 1..4096 bytes), "cert" (one DER
 * X.509 certificate, 1..8192 bytes, refused with -EBADMSG otherwise), "public" (a
 * SubjectPublicKeyInfo DER of EC P-256/P-384, Ed25519, RSA 2048..4096, <= 2048 bytes) are created
 * with vhsm_object_create() and their value; VHSM_OBJ_TRUSTED needs the SO logged in (-EPERM);
 * objects without VHSM_OBJ_PRIVATE are listed with their value without a login. VHSM_OBJ_SESSION
 * (any type, keys too): the object lives with this connection only (invisible to others, never
 * saved, destroyed when the connection closes or by vhsm_key_delete()).
 * vhsm_object_copy (C_CopyObject): new_name gets name's type, value or key material, policy,
 * label, ACL and attributes, with attrs merged and flags changed: SENSITIVE only on, EXTRACTABLE
 * only off, usage bits if MODIFIABLE, PRIVATE / MODIFIABLE / COPYABLE / DESTROYABLE / SESSION
 * freely, TRUSTED never; the source must be COPYABLE (-EPERM). */
int vhsm_object_copy(VhsmClient *c, const char *name, const char *new_name, uint32_t flags_set,
                     uint32_t flags_clear, const VhsmAttr *attrs, size_t n_attrs);

/* Mechanisms (revision 2) with the caller's parameters, raw output (no vault envelope).
 * vhsm_encrypt_ex / vhsm_decrypt_ex, AES keys: "aes-cbc" (IV 16 bytes, data a multiple of 16),
 * "aes-cbc-pad" (PKCS#7), "aes-ctr" (IV = the 16-byte counter block; counter_bits; a request that
 * would wrap the counter bits: -EINVAL), "aes-gcm" (IV 1..128 bytes, AAD, tag_bits 96..128 step 8;
 * encrypt returns ct || tag, decrypt takes ct || tag: -EKEYREJECTED on a bad tag). Needs the
 * ENCRYPT / DECRYPT object flag (-EPERM) and the login rule (-EBADR). -EBADMSG: bad CBC padding.
 * Data per request: at most VHSM_DATA_MAX. The module buffers multi-part operations itself. */
typedef struct VhsmParams {
    const uint8_t *iv; /* CBC: 16; CTR: 16-byte counter block; GCM: 1..128 bytes */
    size_t iv_len;
    const uint8_t *aad; /* GCM */
    size_t aad_len;
    uint32_t tag_bits;     /* GCM: 96..128, multiple of 8 (0 = 128) */
    uint32_t counter_bits; /* CTR: 1..128 (0 = 128) */
    const char *hash;      /* OAEP/PSS/PKCS#1: "sha1" (OAEP only), "sha256", "sha384", "sha512" */
    const char *mgf_hash;  /* OAEP/PSS MGF1 hash (NULL = hash) */
    uint32_t salt_len;     /* PSS */
    const uint8_t *label;  /* OAEP label */
    size_t label_len;
} VhsmParams;
int vhsm_encrypt_ex(VhsmClient *c, const char *name, const char *algorithm, const VhsmParams *p,
                    const void *in, size_t in_len, uint8_t **ret, size_t *ret_len);
int vhsm_decrypt_ex(VhsmClient *c, const char *name, const char *algorithm, const VhsmParams *p,
                    const void *in, size_t in_len, uint8_t **ret, size_t *ret_len);
/* Mechanisms with free parameters (daemons with VHSM_FEATURE_MECH_PARAMS, see vhsm_features):
 * - vhsm_encrypt_ex / vhsm_decrypt_ex "rsa-oaep": p->hash ("sha1", "sha224", "sha256", "sha384",
 *   "sha512"), p->mgf_hash (NULL = hash), p->label / label_len (0..VHSM_OAEP_LABEL_MAX; the
 *   decryption checks it); iv/aad unused. Decrypt: -EKEYREJECTED on any failure (no oracle).
 * - vhsm_sign_ex / vhsm_verify_ex "rsa-pss": data = the digest of p->hash, MGF1 with
 *   p->mgf_hash (NULL = hash), salt p->salt_len bytes (up to emLen - hLen - 2, else -EINVAL).
 * - vhsm_sign_ex / vhsm_verify_ex "hmac": HMAC with p->hash over data (may be empty) with any
 *   HMAC key, tag truncated to p->tag_bits / 8 bytes (0 = the full hash size); verify compares in
 *   constant time inside vhsmd.
 * Older daemons answer -EOPNOTSUPP (unknown algorithm). */
#define VHSM_OAEP_LABEL_MAX 65536u
/* Raw signatures: "ecdsa-raw" (CKM_ECDSA: data = a hash of 1..64 bytes, any hash; signature
 * r || s) and "rsa-pkcs1-raw" (CKM_RSA_PKCS: data = the DigestInfo, at most k - 11 bytes). flags
 * must be 0 and p NULL for these. sign: the SIGN flag and the login rule; verify: the
 * VERIFY flag only (0 valid, -EKEYREJECTED not). For the hashed mechanisms use vhsm_sign /
 * vhsm_verify with VHSM_OP_PREHASHED | VHSM_OP_RAW (| VHSM_OP_RAW_RS for ECDSA): "ecdsa",
 * "rsa-pss-sha256/384", "rsa-pkcs1-sha256/384", "ed25519" (CKM_EDDSA, not prehashed), "hmac".
 * Not in libvhsm yet (planned, /work/notes/issue12-design.md section 5): PSS/OAEP with free
 * parameters, SHA-512 variants, vhsm_wrap_key and vhsm_unwrap_key. */
int vhsm_sign_ex(VhsmClient *c, const char *name, const char *algorithm, unsigned flags,
                 const VhsmParams *p, const void *data, size_t len, uint8_t **ret_sig,
                 size_t *ret_sig_len);
int vhsm_verify_ex(VhsmClient *c, const char *name, const char *algorithm, unsigned flags,
                   const VhsmParams *p, const void *data, size_t len, const void *sig,
                   size_t sig_len);

/* ---- Branch par (issue 12): features and root's SO PIN recovery ---- */
#define VHSM_FEATURE_MECH_PARAMS (1u << 0)  /* rsa-pss, rsa-oaep, hmac with parameters */
#define VHSM_FEATURE_SO_PIN_RESET (1u << 1) /* vhsm_token_reset_so_pin */
/* The daemon's features (VHSM_FEATURE_*, 0 for a daemon that predates them). */
int vhsm_features(VhsmClient *c, uint32_t *ret);
/* Root only (-EPERM otherwise): sets a new SO PIN on uid's token, clears its SO failure counter
 * (unlocks it) and logs its SO sessions out; keys, the user PIN and its counter stay. Audited by
 * vhsmd. -ENOMEDIUM: the token is not initialised; -ERANGE: PIN length. */
int vhsm_token_reset_so_pin(VhsmClient *c, uint32_t uid, const void *new_pin, size_t new_len);

/* ---- hard-wrap: key wrapping and derivation into objects (revision 2; docs/protocol.md "Key
 * wrapping and derivation"). Key material never crosses the socket in clear: a wrapped key
 * leaves encrypted under a vault key, an unwrapped or derived key goes into a new object. An
 * older daemon answers -EBADRQC. Refusals: -EPERM (ACL, or the WRAP/UNWRAP/DERIVE usage flag),
 * -VHSM_EKEY_UNEXTRACTABLE, -VHSM_EKEY_NOT_WRAPPABLE (wrap-with-trusted, wrapping key not
 * trusted), -ERANGE (RFC 3394 on a length it cannot wrap), -EKEYREJECTED (the wrapped blob does
 * not unwrap, or holds no valid key: nothing is created), -VHSM_EKEY_TYPE (the unwrapped key is
 * not of the type or length asked), -EBADMSG (a peer EC point not on the curve), -EOPNOTSUPP
 * (key type), plus the creation errors of vhsm_object_create(). */
#define VHSM_EKEY_UNEXTRACTABLE ENOEXEC
#define VHSM_EKEY_NOT_WRAPPABLE EBADSLT
#define VHSM_EKEY_TYPE EMEDIUMTYPE

/* C_WrapKey: algorithm "aes-kw" (RFC 3394) or "aes-kwp" (RFC 5649); wrapping: an AES key
 * (128/192/256) with VHSM_OBJ_WRAP; target: EXTRACTABLE (raw secret or PKCS#8 DER private key
 * is what gets wrapped). ret NULL: only *ret_len (the exact length), nothing is wrapped. */
int vhsm_wrap_key(VhsmClient *c, const char *wrapping, const char *algorithm, const char *target,
                  uint8_t **ret, size_t *ret_len);
/* C_UnwrapKey into the new object new_name: spec->type an exact type or a family resolved from
 * the content ("aes", "generic-secret", "ec", "rsa"); value_len 0 or the secret length the
 * caller expects; spec->flags/attrs/acl as for vhsm_object_create. *ret_type (may be NULL,
 * >= 24 bytes): the type the key got. */
int vhsm_unwrap_key(VhsmClient *c, const char *unwrapping, const char *algorithm,
                    const void *wrapped, size_t wrapped_len, const char *new_name,
                    const VhsmObjectSpec *spec, size_t value_len, char *ret_type,
                    size_t ret_type_size);
/* CKM_ECDH1_DERIVE into the new secret key new_name: base an EC P-256/P-384 key with
 * VHSM_OBJ_DERIVE; point: the peer's raw SEC1 point; kdf "null", "sha1", "sha224", "sha256",
 * "sha384", "sha512" (X9.63); spec->type "aes" or "generic-secret" (or an exact secret type);
 * value_len the key length in bytes. */
int vhsm_derive_key(VhsmClient *c, const char *base, const void *point, size_t point_len,
                    const char *kdf, const void *shared_data, size_t shared_len,
                    const char *new_name, const VhsmObjectSpec *spec, size_t value_len,
                    char *ret_type, size_t ret_type_size);
