/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The vhsmd wire protocol (docs/protocol.md is the normative description): frame header
 * encode/decode, the TLV body encoding, the opcode/tag/status vocabulary and the one table that
 * maps negative errnos to wire status codes and back. Shared by vhsmd and libvhsm.
 *
 * Frame: a 16-byte header followed by body_len bytes of TLVs. All integers are big-endian.
 *   0  u32 magic 0x5648534D ("VHSM")
 *   4  u8  protocol version (VHSM_PROTO_VERSION)
 *   5  u8  kind (VHSM_KIND_REQUEST / VHSM_KIND_RESPONSE)
 *   6  u16 opcode (request) or status (response)
 *   8  u32 request id, echoed in the response (pipelining)
 *  12  u32 body length, <= VHSM_MAX_BODY
 * TLV: u16 tag, u32 length, value[length].
 *
 * Invariants: the decoders never read outside the buffer they are given and never allocate; a
 * body that passed vhsm_body_validate() holds only complete TLVs, at most VHSM_MAX_TLVS of them.
 * VhsmBuf wipes its contents when freed or reset (responses carry plaintext).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/macro.h"

#define VHSM_PROTO_MAGIC 0x5648534Du
#define VHSM_PROTO_VERSION 1u
#define VHSM_HEADER_SIZE 16u
#define VHSM_TLV_HEADER_SIZE 6u
#define VHSM_MAX_BODY (1024u * 1024u)
#define VHSM_MAX_TLVS 1024u
#define VHSM_MAX_NAME 139u           /* key names ("<namespace>/<name>"), bytes, excluding NUL */
#define VHSM_MAX_STRING 4096u        /* any other string field (cgroup paths, formats, messages) */
#define VHSM_MAX_RANDOM 65536u       /* largest RANDOM request */
#define VHSM_MAX_RELEASE 65536u      /* a RELEASE field, bytes */
#define VHSM_MAX_TOKEN 16384u        /* a TOKEN field, bytes */
#define VHSM_MAX_PATTERNS 256u       /* PATTERN fields per AGENT_WAIT */
#define VHSM_MAX_PATTERN 255u        /* a PATTERN field, bytes */
#define VHSM_MAX_AGENT_MESSAGE 1024u /* AGENT_DONE's MESSAGE, bytes */
#define VHSM_AGENT_WAIT_DEFAULT_MS 25000u
#define VHSM_AGENT_WAIT_MAX_MS 60000u

enum {
    VHSM_KIND_REQUEST = 1,
    VHSM_KIND_RESPONSE = 2,
};

typedef enum VhsmOpcode {
    VHSM_OP_PING = 0x0001,
    VHSM_OP_ATTESTATION_STATUS = 0x0002,
    VHSM_OP_ATTESTATION_SET = 0x0003,
    VHSM_OP_KEY_CREATE = 0x0010,
    VHSM_OP_KEY_LIST = 0x0011,
    VHSM_OP_KEY_INFO = 0x0012,
    VHSM_OP_KEY_ROTATE = 0x0013,
    VHSM_OP_KEY_DELETE = 0x0014,
    VHSM_OP_KEY_SET_ACL = 0x0015,
    VHSM_OP_KEY_SET_MIN_VERSION = 0x0016,
    VHSM_OP_ENCRYPT = 0x0020,
    VHSM_OP_DECRYPT = 0x0021,
    VHSM_OP_SIGN = 0x0022,
    VHSM_OP_VERIFY = 0x0023,
    VHSM_OP_MAC = 0x0024,
    VHSM_OP_MAC_VERIFY = 0x0025,
    VHSM_OP_WRAP = 0x0026,
    VHSM_OP_UNWRAP = 0x0027,
    VHSM_OP_RANDOM = 0x0028,
    VHSM_OP_PUBKEY = 0x0029,
    VHSM_OP_ECDH_DERIVE = 0x002A,
    VHSM_OP_TRANSFER_KEY_CREATE = 0x0030,
    /* 0x0031 was IMPORT_JWE (an unsigned JWE, name and attributes chosen by the caller): removed,
     * answered unknown-opcode. */
    VHSM_OP_IMPORT_RELEASE = 0x0032,
    /* The agent channel (docs/protocol.md "Agent channel"), root only. */
    VHSM_OP_AGENT_WAIT = 0x0040,
    VHSM_OP_AGENT_DONE = 0x0041,
    /* Revision 2: tokens and PINs (docs/protocol.md "Tokens and PINs"). */
    VHSM_OP_TOKEN_INFO = 0x0050,
    VHSM_OP_TOKEN_INIT = 0x0051,
    VHSM_OP_LOGIN = 0x0052,
    VHSM_OP_LOGIN_TICKET = 0x0053,
    VHSM_OP_LOGOUT = 0x0054,
    VHSM_OP_INIT_PIN = 0x0055,
    VHSM_OP_SET_PIN = 0x0056,
    /* Revision 2: objects (docs/protocol.md "Objects"). */
    VHSM_OP_OBJECT_CREATE = 0x0060,
    VHSM_OP_OBJECT_SET = 0x0063,
    VHSM_OP_OBJECT_COPY = 0x0061, /* branch obj: C_CopyObject */
    /* Revision 2: mechanisms with caller parameters (docs/protocol.md "Mechanisms"). */
    VHSM_OP_ENCRYPT_EX = 0x0070,
    VHSM_OP_DECRYPT_EX = 0x0071,
    VHSM_OP_SIGN_EX = 0x0072,
    VHSM_OP_VERIFY_EX = 0x0073,
    /* Revision 2, branch par: root resets a token's SO PIN (docs/protocol.md "Tokens and PINs"). */
    VHSM_OP_TOKEN_RESET_SO_PIN = 0x0057,
    /* Revision 2, hard-wrap: key wrapping and derivation into objects (docs/protocol.md "Key
     * wrapping and derivation"). */
    VHSM_OP_WRAP_KEY = 0x0074,
    VHSM_OP_UNWRAP_KEY = 0x0075,
    VHSM_OP_DERIVE_KEY = 0x0076,
} VhsmOpcode;

typedef enum VhsmTag {
    VHSM_TAG_KEY_NAME = 0x0001,     /* string */
    VHSM_TAG_KEY_TYPE = 0x0002,     /* string: aes256, hmac-sha256, ..., rsa4096 */
    VHSM_TAG_KEY_VERSION = 0x0003,  /* u32 */
    VHSM_TAG_DATA = 0x0004,         /* bytes: plaintext, message, digest, key to wrap */
    VHSM_TAG_AAD = 0x0005,          /* bytes */
    VHSM_TAG_CIPHERTEXT = 0x0006,   /* bytes */
    VHSM_TAG_SIGNATURE = 0x0007,    /* bytes (also MAC tags) */
    VHSM_TAG_ALGORITHM = 0x0008,    /* string */
    VHSM_TAG_FLAGS = 0x0009,        /* u32: VHSM_FLAG_* */
    VHSM_TAG_FORMAT = 0x000A,       /* string: pem | jwk */
    VHSM_TAG_POLICY = 0x000B,       /* string: local | attested */
    VHSM_TAG_MAX_AGE = 0x000C,      /* u64 seconds */
    VHSM_TAG_USE_UID = 0x000D,      /* u32, repeatable */
    VHSM_TAG_USE_GID = 0x000E,      /* u32, repeatable */
    VHSM_TAG_USE_CGROUP = 0x000F,   /* string, repeatable */
    VHSM_TAG_ADMIN_UID = 0x0010,    /* u32, repeatable */
    VHSM_TAG_ADMIN_GID = 0x0011,    /* u32, repeatable */
    VHSM_TAG_ADMIN_CGROUP = 0x0012, /* string, repeatable */
    VHSM_TAG_LENGTH = 0x0013,       /* u32 */
    VHSM_TAG_OUTPUT = 0x0014,       /* bytes: the result of an operation */
    VHSM_TAG_JSON = 0x0015,         /* string: a JSON document (info, list, status, JWK) */
    VHSM_TAG_MESSAGE = 0x0016,      /* string: human readable error message */
    VHSM_TAG_ERRNO = 0x0017,        /* u32: the positive errno behind an error status */
    VHSM_TAG_JWE = 0x0018,          /* string: compact JWE */
    VHSM_TAG_PEER_KEY = 0x0019,     /* bytes: peer public key, DER SubjectPublicKeyInfo or PEM */
    VHSM_TAG_NEW_KEY_NAME = 0x001A, /* string */
    VHSM_TAG_LIFETIME = 0x001B,     /* u32 seconds */
    VHSM_TAG_MIN_VERSION = 0x001C,  /* u32 */
    VHSM_TAG_TIMESTAMP = 0x001D,    /* u64 seconds since the epoch */
    VHSM_TAG_INFO = 0x001E,         /* bytes: ECDH HKDF info */
    VHSM_TAG_LABEL = 0x001F,        /* string: free text shown by key info */
    VHSM_TAG_RELEASE = 0x0020,      /* string: a signed KMS release (JWS compact, <= 64 KiB) */
    VHSM_TAG_TOKEN = 0x0021,        /* string: an EAR attestation token (JWS compact) */
    VHSM_TAG_JOB_ID = 0x0022,       /* u64: an agent job */
    VHSM_TAG_WAIT_MS = 0x0023,      /* u32: how long AGENT_WAIT may wait */
    VHSM_TAG_STATUS_CODE = 0x0024,  /* u32: a protocol status number (AGENT_DONE) */
    VHSM_TAG_PATTERN = 0x0025,      /* string, repeatable: key name or prefix ending in '*' */
    /* Revision 2. */
    VHSM_TAG_PIN = 0x0026,             /* bytes 4..64: a PIN (SO or user; the old PIN of SET_PIN) */
    VHSM_TAG_NEW_PIN = 0x0027,         /* bytes 4..64 */
    VHSM_TAG_USER_TYPE = 0x0028,       /* u32: 0 SO, 1 user (CKU_SO, CKU_USER) */
    VHSM_TAG_TOKEN_LABEL = 0x0029,     /* bytes 0..32 */
    VHSM_TAG_TICKET = 0x002A,          /* bytes 32: a login ticket */
    VHSM_TAG_OBJ_FLAGS = 0x002B,       /* u32: VHSM_OBJ_* (object create; object set: to set) */
    VHSM_TAG_ATTR = 0x002C,            /* bytes, repeatable: u32 type (BE) | value */
    VHSM_TAG_OBJ_FLAGS_CLEAR = 0x0040, /* u32: object set: bits to clear */
    VHSM_TAG_VALUE = 0x0041,    /* bytes (secret): object create: plaintext key (raw or PKCS#8) */
    VHSM_TAG_IV = 0x002D,       /* bytes: IV / counter block (encrypt-ex, decrypt-ex) */
    VHSM_TAG_TAG_BITS = 0x002E, /* u32: GCM tag length in bits */
    VHSM_TAG_COUNTER_BITS = 0x002F,  /* u32: CTR counter bits */
    VHSM_TAG_REVISION = 0x0039,      /* u32: protocol revision (PING reply) */
    VHSM_TAG_TOKEN_FLAGS = 0x003A,   /* u32: VHSM_TOKEN_* (token info) */
    VHSM_TAG_USER_FAILURES = 0x003B, /* u32 */
    VHSM_TAG_SO_FAILURES = 0x003C,   /* u32 */
    VHSM_TAG_MAX_TRIES = 0x003D,     /* u32 */
    VHSM_TAG_SERIAL = 0x003E,        /* string, 16 hex digits */
    VHSM_TAG_UID = 0x003F,           /* u32 */
    /* Revision 2, branch par: mechanism parameters (sign-ex, verify-ex, encrypt-ex, decrypt-ex) */
    VHSM_TAG_HASH = 0x0030,       /* string: sha1 sha224 sha256 sha384 sha512 */
    VHSM_TAG_MGF_HASH = 0x0031,   /* string: the MGF1 hash (absent: HASH) */
    VHSM_TAG_SALT_LEN = 0x0032,   /* u32: PSS salt length in bytes */
    VHSM_TAG_OAEP_LABEL = 0x0033, /* bytes: OAEP label (absent: empty) */
    VHSM_TAG_FEATURES = 0x0034,   /* u32: VHSM_FEATURE_* (PING reply) */
    VHSM_TAG_MAC_LEN = 0x0035,    /* u32: HMAC tag length in bytes (absent: the hash's) */
    /* hard-wrap */
    VHSM_TAG_TARGET_NAME = 0x0048, /* string: WRAP_KEY: the key to wrap */
    VHSM_TAG_KDF = 0x0049,         /* string: DERIVE_KEY: null | sha1 | sha224 | ... | sha512 */
    VHSM_TAG_SHARED_DATA = 0x004A, /* bytes: DERIVE_KEY: the KDF's shared data (<= 1024) */
    VHSM_TAG_EC_POINT = 0x004B,    /* bytes: DERIVE_KEY: the peer's raw SEC1 EC point */
    VHSM_TAG_VALUE_LEN = 0x004C,   /* u32: UNWRAP_KEY / DERIVE_KEY: the new key's length, bytes */
    VHSM_TAG_LENGTH_ONLY = 0x004D, /* u8 1: WRAP_KEY: reply LENGTH only, no OUTPUT */
} VhsmTag;

/* VHSM_TAG_FEATURES bits: what a revision-2 daemon implements beyond the base of revision 2. */
#define VHSM_FEATURE_MECH_PARAMS (1u << 0)  /* rsa-pss, rsa-oaep, hmac with HASH/MGF/...  */
#define VHSM_FEATURE_SO_PIN_RESET (1u << 1) /* TOKEN_RESET_SO_PIN */
#define VHSM_FEATURES_PAR (VHSM_FEATURE_MECH_PARAMS | VHSM_FEATURE_SO_PIN_RESET)
#define VHSM_OAEP_LABEL_MAX 65536u

#define VHSM_PROTO_REVISION 2u
#define VHSM_PIN_LEN_MIN 4u
#define VHSM_PIN_LEN_MAX 64u
#define VHSM_LABEL_LEN_MAX 32u
#define VHSM_TICKET_LEN 32u

/* VHSM_TAG_FLAGS bits (same meaning as the vault's VAULT_OP_* flags). */
#define VHSM_FLAG_RAW (1u << 0)        /* no vault envelope on output/input (not for GCM) */
#define VHSM_FLAG_PREHASHED (1u << 1)  /* DATA is a digest */
#define VHSM_FLAG_SIG_RAW_RS (1u << 2) /* ECDSA signature as r||s instead of DER */
#define VHSM_FLAGS_ALL (VHSM_FLAG_RAW | VHSM_FLAG_PREHASHED | VHSM_FLAG_SIG_RAW_RS)

typedef enum VhsmStatus {
    VHSM_STATUS_OK = 0,
    VHSM_STATUS_BAD_REQUEST = 1,          /* malformed frame, TLV or field (EBADMSG) */
    VHSM_STATUS_UNSUPPORTED_VERSION = 2,  /* protocol version (EPROTONOSUPPORT) */
    VHSM_STATUS_UNKNOWN_OPCODE = 3,       /* (EBADRQC) */
    VHSM_STATUS_TOO_LARGE = 4,            /* frame or field over a limit (EMSGSIZE) */
    VHSM_STATUS_INVALID_ARGUMENT = 5,     /* well-formed but invalid value (EINVAL) */
    VHSM_STATUS_NOT_FOUND = 6,            /* no such key or version (ENOKEY) */
    VHSM_STATUS_EXISTS = 7,               /* key name taken (EEXIST) */
    VHSM_STATUS_PERMISSION_DENIED = 8,    /* ACL refuses the peer (EACCES, EPERM) */
    VHSM_STATUS_ATTESTATION_REQUIRED = 9, /* attested key, no fresh verdict (EKEYEXPIRED) */
    VHSM_STATUS_VERIFY_FAILED = 10,       /* bad signature, MAC, tag, JWE (EKEYREJECTED) */
    VHSM_STATUS_UNSUPPORTED = 11,         /* operation not valid for the key type (EOPNOTSUPP) */
    VHSM_STATUS_RETIRED = 12,             /* key version below min version (EKEYREVOKED) */
    VHSM_STATUS_BUSY = 13,                /* try again (EAGAIN, EBUSY) */
    VHSM_STATUS_NO_MEMORY = 14,           /* (ENOMEM) */
    VHSM_STATUS_SHUTTING_DOWN = 15,       /* daemon stopping (ESHUTDOWN) */
    VHSM_STATUS_INTERNAL = 16,            /* anything else (EIO) */
    VHSM_STATUS_QUOTA_EXCEEDED = 17,      /* the owner's key/version/byte quota (EDQUOT) */
    VHSM_STATUS_NOT_OWNER = 18,           /* name in a namespace owned by another (ENOTUNIQ) */
    VHSM_STATUS_REFUSED = 19,             /* a service's policy refused (EREMOTEIO); MESSAGE: its
                                           * reason */
    VHSM_STATUS_SERVICE_UNAVAILABLE = 20, /* a service cannot be reached (EHOSTUNREACH) */
    VHSM_STATUS_TIMEOUT = 21,             /* gave up waiting (ETIMEDOUT) */
    VHSM_STATUS_PIN_INCORRECT = 22,       /* wrong PIN, counted (EBADE) */
    VHSM_STATUS_PIN_LOCKED = 23,          /* too many wrong PINs (ENOLCK) */
    VHSM_STATUS_NOT_LOGGED_IN = 24,       /* the token needs a user login (EBADR) */
    VHSM_STATUS_ALREADY_LOGGED_IN = 25,   /* EALREADY same user type, EISCONN the other */
    VHSM_STATUS_TOKEN_STATE = 26,         /* ENOMEDIUM not initialised, ENODATA no user PIN,
                                           * ENOTEMPTY re-initialising a token with objects */
    _VHSM_STATUS_MAX,
    _VHSM_STATUS_INVALID = -EINVAL,
} VhsmStatus;

/* The one errno <-> status table of this edge. vhsm_status_from_errno() takes a negative errno
 * (0 gives OK); vhsm_status_to_errno() returns the canonical negative errno (0 for OK, -EIO for
 * unknown statuses). */
VhsmStatus vhsm_status_from_errno(int negative_errno);
int vhsm_status_to_errno(uint16_t status);
/* Stable lowercase name ("permission-denied"), or "unknown". */
const char *vhsm_status_to_string(uint16_t status);
/* Whether the opcode changes keys (each such request is a durable keystore write: vhsmd
 * serialises them, and may answer busy; docs/protocol.md "Key changes and the disk"). */
bool vhsm_opcode_changes_keys(uint16_t opcode);
const char *vhsm_opcode_to_string(uint16_t opcode);

typedef struct VhsmHeader {
    uint8_t version;
    uint8_t kind;
    uint16_t code; /* opcode or status */
    uint32_t id;
    uint32_t body_len;
} VhsmHeader;

/* Decodes a header. Returns 0, -EBADMSG (bad magic or kind), -EPROTONOSUPPORT (version),
 * -EMSGSIZE (body_len > VHSM_MAX_BODY). On -EPROTONOSUPPORT and -EMSGSIZE *ret is still filled
 * so that an error reply can echo the request id. */
int vhsm_header_decode(const uint8_t buf[VHSM_HEADER_SIZE], VhsmHeader *ret);
void vhsm_header_encode(const VhsmHeader *h, uint8_t out[VHSM_HEADER_SIZE]);

typedef struct VhsmTlv {
    uint16_t tag;
    uint32_t len;
    const uint8_t *value; /* points into the body */
} VhsmTlv;

/* Checks that body is a sequence of complete TLVs (at most VHSM_MAX_TLVS).
 * Returns 0 or -EBADMSG (overrun, truncated TLV header) / -E2BIG (too many TLVs). */
int vhsm_body_validate(const uint8_t *body, size_t len);

/* Iteration over a validated body: start with *offset = 0. Returns 1 and fills *ret, 0 at the
 * end, -EBADMSG on a malformed TLV (bodies not validated first). */
int vhsm_tlv_next(const uint8_t *body, size_t len, size_t *offset, VhsmTlv *ret);

/* Field getters (first occurrence of tag). All return 0, -ENOENT if absent, -EBADMSG if the
 * value has the wrong size or content. Output is written only on success. */
int vhsm_body_get(const uint8_t *body, size_t len, uint16_t tag, const uint8_t **ret,
                  size_t *ret_len);
int vhsm_body_get_u8(const uint8_t *body, size_t len, uint16_t tag, uint8_t *ret);
int vhsm_body_get_u32(const uint8_t *body, size_t len, uint16_t tag, uint32_t *ret);
int vhsm_body_get_u64(const uint8_t *body, size_t len, uint16_t tag, uint64_t *ret);
/* Copies a string (no NUL bytes allowed inside, at most max_len bytes) into a NUL-terminated
 * buffer of out_size >= max_len + 1. -ENAMETOOLONG if longer than max_len. */
int vhsm_body_get_str(const uint8_t *body, size_t len, uint16_t tag, size_t max_len, char *out,
                      size_t out_size);
/* Same, but allocates the string (free()). */
int vhsm_body_get_str_alloc(const uint8_t *body, size_t len, uint16_t tag, size_t max_len,
                            char **ret);

/* A growing output buffer for one frame. Its memory is wiped before it is released or reused;
 * an owner whose contents are usually public (vhsmd's replies: ciphertexts, signatures) may set
 * wipe_if_secret, and then vhsm_buf_reset() wipes only if vhsm_buf_mark_secret() was called since
 * the last reset (release and abort always wipe). */
typedef struct VhsmBuf {
    uint8_t *data;
    size_t len;
    size_t cap;
    size_t frame_start; /* offset of the header of the frame being built */
    size_t pending_tlv; /* offset of a reserved TLV, or SIZE_MAX */
    int error;          /* sticky: first failure while building */
    bool wipe_if_secret;
    bool secret;
} VhsmBuf;

static inline void vhsm_buf_mark_secret(VhsmBuf *b) {
    b->secret = true;
}

#define VHSM_BUF_INIT                                                                              \
    (VhsmBuf) {                                                                                    \
        .pending_tlv = SIZE_MAX                                                                    \
    }
/* Wipes and frees the memory. */
void vhsm_buf_done(VhsmBuf *b);
/* Wipes the contents (see wipe_if_secret), keeps the allocation. */
void vhsm_buf_reset(VhsmBuf *b);
/* Ensures room for extra more bytes. Returns 0 or -ENOMEM. */
int vhsm_buf_reserve(VhsmBuf *b, size_t extra);

/* Starts a frame at the end of the buffer (several frames may be queued in one buffer). */
void vhsm_buf_begin(VhsmBuf *b, uint8_t kind, uint16_t code, uint32_t id);
void vhsm_buf_put(VhsmBuf *b, uint16_t tag, const void *value, size_t len);
void vhsm_buf_put_u8(VhsmBuf *b, uint16_t tag, uint8_t v);
void vhsm_buf_put_u32(VhsmBuf *b, uint16_t tag, uint32_t v);
void vhsm_buf_put_u64(VhsmBuf *b, uint16_t tag, uint64_t v);
void vhsm_buf_put_str(VhsmBuf *b, uint16_t tag, const char *s);
/* Reserves a TLV with room for max_len value bytes and returns where to write them (NULL after
 * an error). vhsm_buf_commit() fixes the TLV length to the bytes actually written. */
uint8_t *vhsm_buf_put_reserve(VhsmBuf *b, uint16_t tag, size_t max_len);
void vhsm_buf_commit(VhsmBuf *b, size_t len);
/* Completes the frame: writes the body length. Returns 0, or the first error met while building
 * (-ENOMEM, -EMSGSIZE if the body exceeds VHSM_MAX_BODY); on error the partial frame is removed
 * (wiped) so the buffer holds only complete frames. */
int vhsm_buf_end(VhsmBuf *b);
/* Drops (wipes) the frame being built, e.g. to replace a half-built success reply by an error. */
void vhsm_buf_abort(VhsmBuf *b);
