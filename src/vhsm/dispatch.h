/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Dispatch: turns one decoded request frame into calls on the vault engine and one response
 * frame. The vault decides every access (vault_acl_check inside each operation, with the
 * connection's peer identity); dispatch adds the daemon-level rules: transfer keys, release
 * import and attestation verdicts are root-only (the nitride agent) and need proofs (a release
 * signed by a pinned kmsd key, a token signed by a pinned attestd key and bound to a transfer
 * key of this vault), everything else is open to any peer and left to the key's ACL. Negative
 * errnos become wire statuses through proto's one table. Thread-safe: called concurrently by all
 * workers (the vault is thread-safe; the verdict time is atomic). No allocation survives a call;
 * buffers that held plaintext are wiped.
 */
#pragma once

#include <jansson.h>
#include <stdint.h>

#include "client/proto.h"
#include "peer.h"
#include "vhsm/vault.h"

typedef struct Dispatch Dispatch;

/* vault is borrowed. Returns 0 or -ENOMEM. */
int dispatch_new(Vault *vault, Dispatch **ret);
Dispatch *dispatch_free(Dispatch *d);
/* Pins the keys vhsmd trusts (copied): kmsd's release keys (IMPORT_RELEASE; NULL: unsupported)
 * and attestd's token keys with the required issuer (ATTESTATION_SET, IMPORT_RELEASE's TOKEN;
 * NULL: unsupported). Call before serving. Returns 0 or -ENOMEM. */
int dispatch_set_trust(Dispatch *d, const json_t *kms_jwks, const json_t *attestd_jwks,
                       const char *attestd_issuer);
/* The server's worker count: non-root key changes may occupy all workers but one (default 1). */
void dispatch_set_workers(Dispatch *d, unsigned workers);
/* Refuse OBJECT_CREATE with a VALUE (plaintext key import) with -EPERM (vhsmd
 * --no-plaintext-import). Call before serving. */
void dispatch_set_no_plaintext_import(Dispatch *d, bool refuse);
/* A connection closed: its session objects (CKA_TOKEN false) are destroyed. */
void dispatch_conn_closed(Dispatch *d, const Peer *peer);
DEFINE_TRIVIAL_CLEANUP_FUNC(Dispatch *, dispatch_free);

/* Handles one request (header already validated: kind request, version, size). peer is the
 * connection's identity; LOGIN, LOGIN_TICKET and LOGOUT change its session. Appends exactly
 * one complete response frame to out (an error frame if the request fails). Returns 0, 1 if the
 * request was denied (-EPERM/-EACCES, answered with an error frame: the server closes connections
 * that keep sending denied requests), or -ENOMEM if not even an error frame could be appended (the
 * caller closes the connection). */
int dispatch_request(Dispatch *d, Peer *peer, const VhsmHeader *h, const uint8_t *body,
                     VhsmBuf *out);

/* The agent channel (docs/protocol.md "Agent channel"). park(): an operation on key failed with
 * error (-ENOKEY or -EKEYEXPIRED); returns 1 if the request was parked (no reply is appended,
 * dispatch_request_park() returns DISPATCH_PARKED), 0 to answer as usual, or -EBUSY to answer as
 * usual with msg (why it could not wait) added to the message. */
typedef struct DispatchPark {
    int (*park)(void *userdata, const char *key, int error, char *msg, size_t msg_size);
    void *userdata;
} DispatchPark;
#define DISPATCH_PARKED 2
/* dispatch_request() with parking: park may be NULL (never park). */
int dispatch_request_park(Dispatch *d, Peer *peer, const VhsmHeader *h, const uint8_t *body,
                          VhsmBuf *out, const DispatchPark *park);
/* Called after a key was imported (key, the full name) and/or an attestation verdict recorded
 * (verdict), before the reply is sent. Set before serving. */
typedef void (*DispatchKeyEventFn)(void *userdata, const char *key, bool verdict);
void dispatch_set_key_event(Dispatch *d, DispatchKeyEventFn fn, void *userdata);

/* Appends an error response for request id (used by the server for frames it refuses before
 * dispatch: bad version, oversized). Returns 0 or -ENOMEM. */
int dispatch_reply_error(VhsmBuf *out, uint32_t id, int error, const char *message);
