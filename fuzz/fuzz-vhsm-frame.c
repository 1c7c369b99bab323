/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: the vhsmd wire protocol as the daemon sees it. The input is a byte stream of
 * frames: each header is decoded, each body validated and walked, and every well-formed request
 * with a non-mutating opcode is dispatched to a real in-memory vault holding one key of each
 * cheap type (so field parsing, defaults, envelopes and error replies are all reached). Every
 * reply must itself be a well-formed response frame. AGENT_WAIT / AGENT_DONE bodies go through
 * the agent channel's parsers (agentq.c; the server answers those opcodes itself). Token and PIN
 * requests (revision 2) go to a fresh key-less vault per input (cheap PIN hashing), so that a
 * token initialised or a PIN locked by one input never changes how the next one runs; so do
 * data, certificate and public key objects, session objects (destroyed when the input's
 * connection closes) and object copies.
 */
#include <openssl/crypto.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "vhsm/agentq.h"
#include "vhsm/client/proto.h"
#include "vhsm/dispatch.h"
#include "vhsm/vault.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static Vault *vault;
static Dispatch *dispatch;
static Peer peer = {.uid = 0, .gid = 0, .pid = 1, .cgroup = (char *)"/fuzz"};

/* Requests that change a vault (revision 2): run on a fresh per-input vault. OBJECT_CREATE only
 * for cheap key types (no RSA generation per input). */
static bool token_opcode(uint16_t op, const uint8_t *body, size_t len) {
    char type[32];
    if ((op >= VHSM_OP_TOKEN_INFO && op <= VHSM_OP_SET_PIN) || op == VHSM_OP_TOKEN_RESET_SO_PIN)
        return true;
    if (op == VHSM_OP_OBJECT_SET || op == VHSM_OP_OBJECT_COPY || op == VHSM_OP_KEY_DELETE ||
        op == VHSM_OP_UNWRAP_KEY || op == VHSM_OP_DERIVE_KEY)
        return true; /* UNWRAP_KEY, DERIVE_KEY (branch wrap): they create keys */
    /* data objects, certificates and public keys (branch obj): values checked by OpenSSL */
    if (op == VHSM_OP_OBJECT_CREATE)
        return vhsm_body_validate(body, len) == 0 &&
               vhsm_body_get_str(body, len, VHSM_TAG_KEY_TYPE, 31, type, sizeof type) == 0 &&
               (strcmp(type, "aes256") == 0 || strcmp(type, "hmac-sha256") == 0 ||
                strcmp(type, "data") == 0 || strcmp(type, "cert") == 0 ||
                strcmp(type, "public") == 0);
    return false;
}

static void teardown(void) {
    dispatch = dispatch_free(dispatch);
    vault = vault_free(vault);
    OPENSSL_thread_stop();
}

static void setup(void) {
    static const char *const types[][2] = {
        {"aes", "aes256"}, {"hm", "hmac-sha256"}, {"ec", "ec-p256"}, {"ed", "ed25519"}};
    VaultPeer vp = {.uid = 0, .gid = 0, .pid = 1, .cgroup = "/fuzz"};
    log_set_max_level(LOG_CRIT);
    secret_set_allow_unlocked(true);
    if (vault_init(0) < 0 || vault_new(&vault) < 0 || dispatch_new(vault, &dispatch) < 0)
        abort();
    for (size_t i = 0; i < ELEMENTSOF(types); i++) {
        VaultKeySpec spec = {.type = vault_key_type_from_string(types[i][1]),
                             .policy = {.kind = VAULT_POLICY_LOCAL}};
        if (vault_key_generate(vault, &vp, types[i][0], &spec) < 0)
            abort();
    }
    (void)atexit(teardown);
}

static bool mutating(uint16_t op) {
    switch (op) {
    case VHSM_OP_PING:
    case VHSM_OP_ATTESTATION_STATUS:
    case VHSM_OP_KEY_LIST:
    case VHSM_OP_KEY_INFO:
    case VHSM_OP_ENCRYPT:
    case VHSM_OP_DECRYPT:
    case VHSM_OP_SIGN:
    case VHSM_OP_VERIFY:
    case VHSM_OP_MAC:
    case VHSM_OP_MAC_VERIFY:
    case VHSM_OP_WRAP:
    case VHSM_OP_UNWRAP:
    case VHSM_OP_PUBKEY:
    case VHSM_OP_RANDOM:
    case VHSM_OP_ENCRYPT_EX:
    case VHSM_OP_DECRYPT_EX:
    case VHSM_OP_SIGN_EX:
    case VHSM_OP_VERIFY_EX:
    case VHSM_OP_WRAP_KEY:
    case 0x7777: /* an unknown opcode */
        return false;
    default:
        return true;
    }
}

/* The frame's body as an exact-size heap copy: dispatch reads the body in place, so that ASan
 * sees any read past the frame. */
static uint8_t *body_copy(const uint8_t *body, size_t len) {
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        abort();
    memcpy(copy, body, len);
    return copy;
}

/* Dispatches one request and checks that its reply is one well-formed response frame. */
static void dispatch_checked(Dispatch *d, Peer *p, const VhsmHeader *h, const uint8_t *frame_body,
                             VhsmBuf *out) {
    uint8_t *body = body_copy(frame_body, h->body_len);
    size_t start = out->len;
    VhsmHeader rh;
    if (dispatch_request(d, p, h, body, out) < 0)
        abort();
    free(body);
    if (out->len - start < VHSM_HEADER_SIZE || vhsm_header_decode(out->data + start, &rh) < 0 ||
        rh.id != h->id || rh.kind != VHSM_KIND_RESPONSE ||
        rh.body_len != out->len - start - VHSM_HEADER_SIZE ||
        vhsm_body_validate(out->data + start + VHSM_HEADER_SIZE, rh.body_len) < 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    VhsmBuf out = VHSM_BUF_INIT;
    size_t off = 0;

    Vault *tvault = NULL;
    Dispatch *tdispatch = NULL;
    Peer tpeer = {.uid = 1000, .gid = 1000, .pid = 2, .cgroup = (char *)"/fuzz/t", .conn_id = 7};
    /* TOKEN_RESET_SO_PIN comes from root (anyone else is refused before any parsing) */
    Peer troot = {.uid = 0, .gid = 0, .pid = 3, .cgroup = (char *)"/fuzz/root", .conn_id = 8};

    if (!vault)
        setup();
    while (size - off >= VHSM_HEADER_SIZE) {
        VhsmHeader h;
        size_t toff = 0;
        VhsmTlv t;
        int r = vhsm_header_decode(data + off, &h);
        if (r < 0) {
            /* The server answers with an error frame and closes. */
            if (dispatch_reply_error(&out, h.id, r, "bad frame") < 0)
                abort();
            break;
        }
        off += VHSM_HEADER_SIZE;
        if (size - off < h.body_len)
            break; /* truncated: the server waits for more */
        if (vhsm_body_validate(data + off, h.body_len) == 0)
            while (vhsm_tlv_next(data + off, h.body_len, &toff, &t) > 0)
                if (t.value + t.len > data + off + h.body_len)
                    abort();
        if (h.kind == VHSM_KIND_REQUEST &&
            (h.code == VHSM_OP_AGENT_WAIT || h.code == VHSM_OP_AGENT_DONE) &&
            vhsm_body_validate(data + off, h.body_len) == 0) {
            static AgentqWaitRequest w;
            char msg[VHSM_MAX_AGENT_MESSAGE + 1];
            const char *error = NULL;
            uint16_t status = 0;
            uint64_t id;
            uint8_t *body = body_copy(data + off, h.body_len);
            if (h.code == VHSM_OP_AGENT_WAIT) {
                if (agentq_wait_request_parse(body, h.body_len, &w, &error) == 0) {
                    if (w.n_patterns > VHSM_MAX_PATTERNS || w.wait_ms > VHSM_AGENT_WAIT_MAX_MS)
                        abort();
                    for (size_t i = 0; i < w.n_patterns; i++)
                        if (!agentq_pattern_valid(w.patterns[i]))
                            abort();
                } else if (!error)
                    abort();
            } else if (agentq_done_request_parse(body, h.body_len, &id, &status, msg, &error) ==
                       0) {
                if (status >= _VHSM_STATUS_MAX || strlen(msg) > VHSM_MAX_AGENT_MESSAGE)
                    abort();
            } else if (!error)
                abort();
            free(body);
        }
        if (h.kind == VHSM_KIND_REQUEST && token_opcode(h.code, data + off, h.body_len)) {
            if (!tvault) {
                VaultPeer tvp = {.uid = 1000, .gid = 1000, .pid = 2};
                if (vault_new(&tvault) < 0 || vault_set_pin_policy(tvault, 3, 1000) < 0 ||
                    dispatch_new(tvault, &tdispatch) < 0 ||
                    vault_key_generate(tvault, &tvp, "aes",
                                       &(VaultKeySpec){.type = VAULT_KEY_AES256}) < 0 ||
                    vault_key_generate(tvault, &tvp, "ec",
                                       &(VaultKeySpec){.type = VAULT_KEY_EC_P256}) < 0)
                    abort();
            }
            dispatch_checked(tdispatch, h.code == VHSM_OP_TOKEN_RESET_SO_PIN ? &troot : &tpeer, &h,
                             data + off, &out);
        } else if (h.kind == VHSM_KIND_REQUEST && !mutating(h.code))
            dispatch_checked(dispatch, &peer, &h, data + off, &out);
        off += h.body_len;
        vhsm_buf_reset(&out);
    }
    vhsm_buf_done(&out);
    tpeer.session = vault_session_unref(tpeer.session);
    dispatch_conn_closed(tdispatch, &tpeer); /* its session objects go */
    if (tvault && vault_session_object_count(tvault) != 0)
        abort();
    troot.session = vault_session_unref(troot.session);
    dispatch_conn_closed(tdispatch, &troot);
    tdispatch = dispatch_free(tdispatch);
    tvault = vault_free(tvault);
    return 0;
}
