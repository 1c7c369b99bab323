/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vhsmd wire protocol: header and TLV codec (see proto.h and docs/protocol.md).
 * Every length read from the wire is checked against the remaining bytes before use; sizes are
 * computed in size_t after that check, so no arithmetic on attacker values can wrap.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

static inline uint16_t get16(const uint8_t *p) {
    return (uint16_t)((uint16_t)p[0] << 8 | p[1]);
}
static inline uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static inline void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* The errno <-> status table. The first row for a status is its canonical errno. */
static const struct {
    int err; /* positive errno */
    VhsmStatus status;
} status_table[] = {
    {EBADMSG, VHSM_STATUS_BAD_REQUEST},
    {EPROTO, VHSM_STATUS_BAD_REQUEST},
    {EPROTONOSUPPORT, VHSM_STATUS_UNSUPPORTED_VERSION},
    {EBADRQC, VHSM_STATUS_UNKNOWN_OPCODE},
    {EMSGSIZE, VHSM_STATUS_TOO_LARGE},
    {E2BIG, VHSM_STATUS_TOO_LARGE},
    {EFBIG, VHSM_STATUS_TOO_LARGE},
    {ENAMETOOLONG, VHSM_STATUS_TOO_LARGE},
    {EINVAL, VHSM_STATUS_INVALID_ARGUMENT},
    {ERANGE, VHSM_STATUS_INVALID_ARGUMENT},
    {ENOKEY, VHSM_STATUS_NOT_FOUND},
    {ENOENT, VHSM_STATUS_NOT_FOUND},
    {EEXIST, VHSM_STATUS_EXISTS},
    {ESTALE, VHSM_STATUS_EXISTS}, /* a newer version is imported already */
    {EACCES, VHSM_STATUS_PERMISSION_DENIED},
    {EPERM, VHSM_STATUS_PERMISSION_DENIED},
    {EKEYEXPIRED, VHSM_STATUS_ATTESTATION_REQUIRED},
    {EKEYREJECTED, VHSM_STATUS_VERIFY_FAILED},
    {EOPNOTSUPP, VHSM_STATUS_UNSUPPORTED},
    {EKEYREVOKED, VHSM_STATUS_RETIRED},
    {EAGAIN, VHSM_STATUS_BUSY},
    {EBUSY, VHSM_STATUS_BUSY},
    {ENOMEM, VHSM_STATUS_NO_MEMORY},
    {ESHUTDOWN, VHSM_STATUS_SHUTTING_DOWN},
    {EDQUOT, VHSM_STATUS_QUOTA_EXCEEDED},
    {ENOTUNIQ, VHSM_STATUS_NOT_OWNER},
    {EREMOTEIO, VHSM_STATUS_REFUSED},
    {EHOSTUNREACH, VHSM_STATUS_SERVICE_UNAVAILABLE},
    {ETIMEDOUT, VHSM_STATUS_TIMEOUT},
    {EBADE, VHSM_STATUS_PIN_INCORRECT},
    {ENOLCK, VHSM_STATUS_PIN_LOCKED},
    {EBADR, VHSM_STATUS_NOT_LOGGED_IN},
    {EALREADY, VHSM_STATUS_ALREADY_LOGGED_IN},
    {EISCONN, VHSM_STATUS_ALREADY_LOGGED_IN},
    {ENOMEDIUM, VHSM_STATUS_TOKEN_STATE},
    {ENODATA, VHSM_STATUS_TOKEN_STATE},
    {ENOTEMPTY, VHSM_STATUS_TOKEN_STATE},
    {EIO, VHSM_STATUS_INTERNAL},
    /* hard-wrap: the reasons a key wrap is refused, and an unwrapped key not of the type asked */
    {ENOEXEC, VHSM_STATUS_PERMISSION_DENIED},    /* the key to wrap is not extractable */
    {EBADSLT, VHSM_STATUS_PERMISSION_DENIED},    /* wrap-with-trusted, wrapping key not trusted */
    {EMEDIUMTYPE, VHSM_STATUS_INVALID_ARGUMENT}, /* unwrapped key: another type or length */
};

static const char *const status_names[_VHSM_STATUS_MAX] = {
    [VHSM_STATUS_OK] = "ok",
    [VHSM_STATUS_BAD_REQUEST] = "bad-request",
    [VHSM_STATUS_UNSUPPORTED_VERSION] = "unsupported-version",
    [VHSM_STATUS_UNKNOWN_OPCODE] = "unknown-opcode",
    [VHSM_STATUS_TOO_LARGE] = "too-large",
    [VHSM_STATUS_INVALID_ARGUMENT] = "invalid-argument",
    [VHSM_STATUS_NOT_FOUND] = "not-found",
    [VHSM_STATUS_EXISTS] = "exists",
    [VHSM_STATUS_PERMISSION_DENIED] = "permission-denied",
    [VHSM_STATUS_ATTESTATION_REQUIRED] = "attestation-required",
    [VHSM_STATUS_VERIFY_FAILED] = "verify-failed",
    [VHSM_STATUS_UNSUPPORTED] = "unsupported",
    [VHSM_STATUS_RETIRED] = "retired",
    [VHSM_STATUS_BUSY] = "busy",
    [VHSM_STATUS_NO_MEMORY] = "no-memory",
    [VHSM_STATUS_SHUTTING_DOWN] = "shutting-down",
    [VHSM_STATUS_INTERNAL] = "internal",
    [VHSM_STATUS_QUOTA_EXCEEDED] = "quota-exceeded",
    [VHSM_STATUS_NOT_OWNER] = "not-owner",
    [VHSM_STATUS_REFUSED] = "refused",
    [VHSM_STATUS_SERVICE_UNAVAILABLE] = "service-unavailable",
    [VHSM_STATUS_TIMEOUT] = "timeout",
    [VHSM_STATUS_PIN_INCORRECT] = "pin-incorrect",
    [VHSM_STATUS_PIN_LOCKED] = "pin-locked",
    [VHSM_STATUS_NOT_LOGGED_IN] = "not-logged-in",
    [VHSM_STATUS_ALREADY_LOGGED_IN] = "already-logged-in",
    [VHSM_STATUS_TOKEN_STATE] = "token-state",
};

VhsmStatus vhsm_status_from_errno(int negative_errno) {
    if (negative_errno >= 0)
        return VHSM_STATUS_OK;
    for (size_t i = 0; i < ELEMENTSOF(status_table); i++)
        if (status_table[i].err == -negative_errno)
            return status_table[i].status;
    return VHSM_STATUS_INTERNAL;
}

int vhsm_status_to_errno(uint16_t status) {
    if (status == VHSM_STATUS_OK)
        return 0;
    for (size_t i = 0; i < ELEMENTSOF(status_table); i++)
        if ((uint16_t)status_table[i].status == status)
            return -status_table[i].err;
    return -EIO;
}

const char *vhsm_status_to_string(uint16_t status) {
    if (status < _VHSM_STATUS_MAX && status_names[status])
        return status_names[status];
    return "unknown";
}

bool vhsm_opcode_changes_keys(uint16_t opcode) {
    switch (opcode) {
    case VHSM_OP_KEY_CREATE:
    case VHSM_OP_KEY_ROTATE:
    case VHSM_OP_KEY_DELETE:
    case VHSM_OP_KEY_SET_ACL:
    case VHSM_OP_KEY_SET_MIN_VERSION:
    case VHSM_OP_ECDH_DERIVE:
    case VHSM_OP_IMPORT_RELEASE:
    /* PIN checks: a slow KDF and a durable counter write each. */
    case VHSM_OP_TOKEN_INIT:
    case VHSM_OP_LOGIN:
    case VHSM_OP_INIT_PIN:
    case VHSM_OP_SET_PIN:
    case VHSM_OP_TOKEN_RESET_SO_PIN:
    case VHSM_OP_OBJECT_CREATE:
    case VHSM_OP_OBJECT_SET:
    case VHSM_OP_OBJECT_COPY:
    case VHSM_OP_UNWRAP_KEY:
    case VHSM_OP_DERIVE_KEY:
        return true;
    default:
        return false;
    }
}

const char *vhsm_opcode_to_string(uint16_t opcode) {
    switch (opcode) {
    case VHSM_OP_PING:
        return "ping";
    case VHSM_OP_ATTESTATION_STATUS:
        return "attestation-status";
    case VHSM_OP_ATTESTATION_SET:
        return "attestation-set";
    case VHSM_OP_KEY_CREATE:
        return "key-create";
    case VHSM_OP_KEY_LIST:
        return "key-list";
    case VHSM_OP_KEY_INFO:
        return "key-info";
    case VHSM_OP_KEY_ROTATE:
        return "key-rotate";
    case VHSM_OP_KEY_DELETE:
        return "key-delete";
    case VHSM_OP_KEY_SET_ACL:
        return "key-set-acl";
    case VHSM_OP_KEY_SET_MIN_VERSION:
        return "key-set-min-version";
    case VHSM_OP_ENCRYPT:
        return "encrypt";
    case VHSM_OP_DECRYPT:
        return "decrypt";
    case VHSM_OP_SIGN:
        return "sign";
    case VHSM_OP_VERIFY:
        return "verify";
    case VHSM_OP_MAC:
        return "mac";
    case VHSM_OP_MAC_VERIFY:
        return "mac-verify";
    case VHSM_OP_WRAP:
        return "wrap";
    case VHSM_OP_UNWRAP:
        return "unwrap";
    case VHSM_OP_RANDOM:
        return "random";
    case VHSM_OP_PUBKEY:
        return "pubkey";
    case VHSM_OP_ECDH_DERIVE:
        return "ecdh-derive";
    case VHSM_OP_TRANSFER_KEY_CREATE:
        return "transfer-key-create";
    case VHSM_OP_IMPORT_RELEASE:
        return "import-release";
    case VHSM_OP_AGENT_WAIT:
        return "agent-wait";
    case VHSM_OP_AGENT_DONE:
        return "agent-done";
    case VHSM_OP_TOKEN_INFO:
        return "token-info";
    case VHSM_OP_TOKEN_INIT:
        return "token-init";
    case VHSM_OP_LOGIN:
        return "login";
    case VHSM_OP_LOGIN_TICKET:
        return "login-ticket";
    case VHSM_OP_LOGOUT:
        return "logout";
    case VHSM_OP_INIT_PIN:
        return "init-pin";
    case VHSM_OP_SET_PIN:
        return "set-pin";
    case VHSM_OP_OBJECT_CREATE:
        return "object-create";
    case VHSM_OP_OBJECT_SET:
        return "object-set";
    case VHSM_OP_OBJECT_COPY:
        return "object-copy";
    case VHSM_OP_ENCRYPT_EX:
        return "encrypt-ex";
    case VHSM_OP_DECRYPT_EX:
        return "decrypt-ex";
    case VHSM_OP_SIGN_EX:
        return "sign-ex";
    case VHSM_OP_VERIFY_EX:
        return "verify-ex";
    case VHSM_OP_TOKEN_RESET_SO_PIN:
        return "token-reset-so-pin";
    case VHSM_OP_WRAP_KEY:
        return "wrap-key";
    case VHSM_OP_UNWRAP_KEY:
        return "unwrap-key";
    case VHSM_OP_DERIVE_KEY:
        return "derive-key";
    default:
        return "unknown";
    }
}

int vhsm_header_decode(const uint8_t buf[VHSM_HEADER_SIZE], VhsmHeader *ret) {
    VhsmHeader h;

    if (get32(buf) != VHSM_PROTO_MAGIC)
        return -EBADMSG;
    h.version = buf[4];
    h.kind = buf[5];
    h.code = get16(buf + 6);
    h.id = get32(buf + 8);
    h.body_len = get32(buf + 12);
    if (h.kind != VHSM_KIND_REQUEST && h.kind != VHSM_KIND_RESPONSE)
        return -EBADMSG;
    *ret = h;
    if (h.version != VHSM_PROTO_VERSION)
        return -EPROTONOSUPPORT;
    if (h.body_len > VHSM_MAX_BODY)
        return -EMSGSIZE;
    return 0;
}

void vhsm_header_encode(const VhsmHeader *h, uint8_t out[VHSM_HEADER_SIZE]) {
    put32(out, VHSM_PROTO_MAGIC);
    out[4] = h->version;
    out[5] = h->kind;
    put16(out + 6, h->code);
    put32(out + 8, h->id);
    put32(out + 12, h->body_len);
}

int vhsm_tlv_next(const uint8_t *body, size_t len, size_t *offset, VhsmTlv *ret) {
    size_t off = *offset, vlen;

    if (off >= len)
        return 0;
    if (len - off < VHSM_TLV_HEADER_SIZE)
        return -EBADMSG;
    vlen = get32(body + off + 2);
    if (vlen > len - off - VHSM_TLV_HEADER_SIZE)
        return -EBADMSG;
    ret->tag = get16(body + off);
    ret->len = (uint32_t)vlen;
    ret->value = body + off + VHSM_TLV_HEADER_SIZE;
    *offset = off + VHSM_TLV_HEADER_SIZE + vlen;
    return 1;
}

int vhsm_body_validate(const uint8_t *body, size_t len) {
    size_t off = 0, n = 0;
    VhsmTlv t;
    int r;

    while ((r = vhsm_tlv_next(body, len, &off, &t)) > 0)
        if (++n > VHSM_MAX_TLVS)
            return -E2BIG;
    return r;
}

int vhsm_body_get(const uint8_t *body, size_t len, uint16_t tag, const uint8_t **ret,
                  size_t *ret_len) {
    size_t off = 0;
    VhsmTlv t;
    int r;

    while ((r = vhsm_tlv_next(body, len, &off, &t)) > 0)
        if (t.tag == tag) {
            *ret = t.value;
            *ret_len = t.len;
            return 0;
        }
    return r < 0 ? r : -ENOENT;
}

int vhsm_body_get_u8(const uint8_t *body, size_t len, uint16_t tag, uint8_t *ret) {
    const uint8_t *v;
    size_t n;
    int r = vhsm_body_get(body, len, tag, &v, &n);
    if (r < 0)
        return r;
    if (n != 1)
        return -EBADMSG;
    *ret = v[0];
    return 0;
}

int vhsm_body_get_u32(const uint8_t *body, size_t len, uint16_t tag, uint32_t *ret) {
    const uint8_t *v;
    size_t n;
    int r = vhsm_body_get(body, len, tag, &v, &n);
    if (r < 0)
        return r;
    if (n != 4)
        return -EBADMSG;
    *ret = get32(v);
    return 0;
}

int vhsm_body_get_u64(const uint8_t *body, size_t len, uint16_t tag, uint64_t *ret) {
    const uint8_t *v;
    size_t n;
    int r = vhsm_body_get(body, len, tag, &v, &n);
    if (r < 0)
        return r;
    if (n != 8)
        return -EBADMSG;
    *ret = (uint64_t)get32(v) << 32 | get32(v + 4);
    return 0;
}

int vhsm_body_get_str(const uint8_t *body, size_t len, uint16_t tag, size_t max_len, char *out,
                      size_t out_size) {
    const uint8_t *v;
    size_t n;
    int r = vhsm_body_get(body, len, tag, &v, &n);
    if (r < 0)
        return r;
    if (n > max_len || n >= out_size)
        return -ENAMETOOLONG;
    if (memchr(v, 0, n))
        return -EBADMSG;
    memcpy(out, v, n);
    out[n] = 0;
    return 0;
}

int vhsm_body_get_str_alloc(const uint8_t *body, size_t len, uint16_t tag, size_t max_len,
                            char **ret) {
    const uint8_t *v;
    size_t n;
    char *s;
    int r = vhsm_body_get(body, len, tag, &v, &n);
    if (r < 0)
        return r;
    if (n > max_len)
        return -ENAMETOOLONG;
    if (memchr(v, 0, n))
        return -EBADMSG;
    s = malloc(n + 1);
    if (!s)
        return -ENOMEM;
    memcpy(s, v, n);
    s[n] = 0;
    *ret = s;
    return 0;
}

void vhsm_buf_done(VhsmBuf *b) {
    bool wipe_if_secret = b->wipe_if_secret;
    if (b->data) {
        explicit_bzero(b->data, b->cap);
        free(b->data);
    }
    *b = VHSM_BUF_INIT;
    b->wipe_if_secret = wipe_if_secret;
}

void vhsm_buf_reset(VhsmBuf *b) {
    if (b->data && (!b->wipe_if_secret || b->secret))
        explicit_bzero(b->data, b->len);
    b->secret = false;
    b->len = 0;
    b->frame_start = 0;
    b->pending_tlv = SIZE_MAX;
    b->error = 0;
}

int vhsm_buf_reserve(VhsmBuf *b, size_t extra) {
    size_t need, cap;
    uint8_t *p;

    if (extra > SIZE_MAX / 2 - b->len)
        return -ENOMEM;
    need = b->len + extra;
    if (need <= b->cap)
        return 0;
    cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    /* Never realloc: the old block may hold plaintext, so copy and wipe it. */
    p = malloc(cap);
    if (!p)
        return -ENOMEM;
    if (b->data) {
        memcpy(p, b->data, b->len);
        explicit_bzero(b->data, b->cap);
        free(b->data);
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

static bool buf_room(VhsmBuf *b, size_t extra) {
    int r;
    if (b->error)
        return false;
    r = vhsm_buf_reserve(b, extra);
    if (r < 0) {
        b->error = r;
        return false;
    }
    return true;
}

void vhsm_buf_begin(VhsmBuf *b, uint8_t kind, uint16_t code, uint32_t id) {
    VhsmHeader h = {
        .version = VHSM_PROTO_VERSION, .kind = kind, .code = code, .id = id, .body_len = 0};

    b->error = 0;
    b->pending_tlv = SIZE_MAX;
    b->frame_start = b->len;
    if (!buf_room(b, VHSM_HEADER_SIZE))
        return;
    vhsm_header_encode(&h, b->data + b->len);
    b->len += VHSM_HEADER_SIZE;
}

void vhsm_buf_put(VhsmBuf *b, uint16_t tag, const void *value, size_t len) {
    uint8_t *p = vhsm_buf_put_reserve(b, tag, len);
    if (!p)
        return;
    if (len > 0)
        memcpy(p, value, len);
    vhsm_buf_commit(b, len);
}

void vhsm_buf_put_u8(VhsmBuf *b, uint16_t tag, uint8_t v) {
    vhsm_buf_put(b, tag, &v, 1);
}

void vhsm_buf_put_u32(VhsmBuf *b, uint16_t tag, uint32_t v) {
    uint8_t x[4];
    put32(x, v);
    vhsm_buf_put(b, tag, x, 4);
}

void vhsm_buf_put_u64(VhsmBuf *b, uint16_t tag, uint64_t v) {
    uint8_t x[8];
    put32(x, (uint32_t)(v >> 32));
    put32(x + 4, (uint32_t)v);
    vhsm_buf_put(b, tag, x, 8);
}

void vhsm_buf_put_str(VhsmBuf *b, uint16_t tag, const char *s) {
    vhsm_buf_put(b, tag, s, strlen(s));
}

uint8_t *vhsm_buf_put_reserve(VhsmBuf *b, uint16_t tag, size_t max_len) {
    uint8_t *p;

    if (b->error)
        return NULL;
    if (b->pending_tlv != SIZE_MAX || b->len < b->frame_start + VHSM_HEADER_SIZE) {
        b->error = -EINVAL; /* misuse: no frame begun, or a reservation not committed */
        return NULL;
    }
    if (max_len > VHSM_MAX_BODY) {
        b->error = -EMSGSIZE;
        return NULL;
    }
    if (!buf_room(b, VHSM_TLV_HEADER_SIZE + max_len))
        return NULL;
    p = b->data + b->len;
    put16(p, tag);
    put32(p + 2, 0);
    b->pending_tlv = b->len;
    return p + VHSM_TLV_HEADER_SIZE;
}

void vhsm_buf_commit(VhsmBuf *b, size_t len) {
    if (b->error || b->pending_tlv == SIZE_MAX)
        return;
    if (len > b->cap - b->pending_tlv - VHSM_TLV_HEADER_SIZE) {
        b->error = -EINVAL;
        return;
    }
    put32(b->data + b->pending_tlv + 2, (uint32_t)len);
    b->len = b->pending_tlv + VHSM_TLV_HEADER_SIZE + len;
    b->pending_tlv = SIZE_MAX;
}

int vhsm_buf_end(VhsmBuf *b) {
    size_t body;
    int r = b->error;

    if (r == 0 && b->pending_tlv != SIZE_MAX)
        r = -EINVAL;
    if (r == 0 && b->len < b->frame_start + VHSM_HEADER_SIZE)
        r = -EINVAL;
    if (r == 0) {
        body = b->len - b->frame_start - VHSM_HEADER_SIZE;
        if (body > VHSM_MAX_BODY)
            r = -EMSGSIZE;
        else
            put32(b->data + b->frame_start + 12, (uint32_t)body);
    }
    if (r < 0) {
        /* Drop the partial frame, wiping whatever it held. */
        if (b->data && b->len > b->frame_start)
            explicit_bzero(b->data + b->frame_start, b->cap - b->frame_start);
        b->len = b->frame_start;
    }
    b->error = 0;
    b->pending_tlv = SIZE_MAX;
    return r;
}

void vhsm_buf_abort(VhsmBuf *b) {
    if (b->data && b->cap > b->frame_start)
        explicit_bzero(b->data + b->frame_start, b->cap - b->frame_start);
    if (b->len > b->frame_start)
        b->len = b->frame_start;
    b->error = 0;
    b->pending_tlv = SIZE_MAX;
}
