/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The audit chain (audit.h): row construction, the chained hash and its verification.
 * Invariant: the JSON a row is hashed from and the JSON it is exported as are built by the same
 * function (kms_audit_row_build()) from the same sanitised text, so a row read back from the
 * database re-hashes to the stored hash unless the database was changed.
 */
#include "kmsd/audit.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "core/alloc.h"
#include "core/encoding.h"
#include "core/jcs.h"
#include "core/openssl-util.h"

/* Integers JCS can represent exactly (I-JSON). */
#define JSON_SAFE_MAX ((int64_t)1 << 53)

static bool action_is_valid(const char *a) {
    size_t n;
    if (!a || !(a[0] >= 'a' && a[0] <= 'z'))
        return false;
    n = strlen(a);
    if (n > 32)
        return false;
    for (size_t i = 1; i < n; i++)
        if (!((a[i] >= 'a' && a[i] <= 'z') || (a[i] >= '0' && a[i] <= '9') || a[i] == '-'))
            return false;
    return true;
}

int kms_audit_event_check(const KmsAuditEvent *ev) {
    if (!ev || !action_is_valid(ev->action) || !ev->actor || !ev->actor[0] || !ev->result)
        return -EINVAL;
    if (!streq(ev->result, "ok") && !streq(ev->result, "refused") && !streq(ev->result, "error"))
        return -EINVAL;
    return 0;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if the bytes there are not one
 * (overlong forms, surrogates, code points above U+10FFFF and truncated sequences included). */
static size_t utf8_seq_len(const unsigned char *s) {
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        return (s[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        unsigned char lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
        return s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 ? 3 : 0;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        unsigned char lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
        return s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 && (s[3] & 0xc0) == 0x80 ? 4 : 0;
    }
    return 0;
}

int kms_audit_text_sanitize(const char *s, size_t max, char **ret) {
    const unsigned char *p = (const unsigned char *)s;
    size_t n, o = 0;
    char *out;

    if (!ret)
        return -EINVAL;
    if (!s) {
        *ret = NULL;
        return 0;
    }
    n = strlen(s);
    out = nt_malloc(MIN(n, max) + 1);
    if (!out)
        return -ENOMEM;
    /* utf8_seq_len() reads at most up to the first byte that fails a test, and the NUL fails
     * every continuation test, so it never reads past the terminator. */
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq_len(p + i);
        if (k == 1 && (p[i] < 0x20 || p[i] == 0x7f))
            k = 0;
        if (o + (k ? k : 1) > max)
            break;
        if (k == 0) {
            out[o++] = '?';
            i++;
        } else {
            memcpy(out + o, p + i, k);
            o += k;
            i += k;
        }
    }
    out[o] = 0;
    *ret = out;
    return 0;
}

static bool hex64_is_valid(const char *h) {
    if (!h || strlen(h) != 64)
        return false;
    for (size_t i = 0; i < 64; i++)
        if (!((h[i] >= '0' && h[i] <= '9') || (h[i] >= 'a' && h[i] <= 'f')))
            return false;
    return true;
}

/* Sets key to the sanitised copy of s, or to null. */
static int set_text(json_t *row, const char *key, const char *s, size_t max) {
    _cleanup_free_ char *t = NULL;
    int r;
    if ((r = kms_audit_text_sanitize(s, max, &t)) < 0)
        return r;
    if (json_object_set_new(row, key, t ? json_string(t) : json_null()) < 0)
        return -ENOMEM;
    return 0;
}

int kms_audit_row_build(int64_t seq, int64_t time, const KmsAuditEvent *ev,
                        const char *prev_hash_hex, json_t **ret_row) {
    json_auto_t *row = NULL;
    int r;

    if (seq < 1 || seq >= JSON_SAFE_MAX || time < 0 || time >= JSON_SAFE_MAX || !ret_row ||
        !hex64_is_valid(prev_hash_hex) || kms_audit_event_check(ev) < 0)
        return -EINVAL;
    row = json_object();
    if (!row || json_object_set_new(row, "seq", json_integer(seq)) < 0 ||
        json_object_set_new(row, "time", json_integer(time)) < 0 ||
        json_object_set_new(row, "version", ev->version ? json_integer(ev->version) : json_null()) <
            0 ||
        json_object_set_new(row, "prev_hash", json_string(prev_hash_hex)) < 0)
        return -ENOMEM;
    if ((r = set_text(row, "action", ev->action, KMS_AUDIT_FIELD_MAX)) < 0 ||
        (r = set_text(row, "actor", ev->actor, KMS_AUDIT_FIELD_MAX)) < 0 ||
        (r = set_text(row, "secret_id", ev->secret_id, KMS_AUDIT_FIELD_MAX)) < 0 ||
        (r = set_text(row, "token_jti", ev->token_jti, KMS_AUDIT_FIELD_MAX)) < 0 ||
        (r = set_text(row, "measurement", ev->measurement, KMS_AUDIT_FIELD_MAX)) < 0 ||
        (r = set_text(row, "chip_id", ev->chip_id, KMS_AUDIT_FIELD_MAX)) < 0 ||
        (r = set_text(row, "result", ev->result, KMS_AUDIT_FIELD_MAX)) < 0 ||
        (r = set_text(row, "rule", ev->rule, KMS_AUDIT_FIELD_MAX)) < 0 ||
        (r = set_text(row, "detail", ev->detail, KMS_AUDIT_DETAIL_MAX)) < 0)
        return r;
    *ret_row = TAKE_PTR(row);
    return 0;
}

int kms_audit_row_hash(const json_t *row, char ret_hash_hex[static 65]) {
    _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *ctx = NULL;
    json_auto_t *body = NULL;
    _cleanup_free_ char *jcs = NULL;
    uint8_t prev[32], md[32];
    unsigned md_len = 0;
    size_t jcs_len = 0;
    const char *ph;
    int r;

    if (!json_is_object(row))
        return -EBADMSG;
    ph = json_string_value(json_object_get(row, "prev_hash"));
    if (!hex64_is_valid(ph))
        return -EBADMSG;
    if ((r = hex_decode_exact(ph, prev, sizeof prev)) < 0)
        return r == -ENOMEM ? r : -EBADMSG;
    body = json_copy((json_t *)row); /* shallow: members are shared, never modified */
    if (!body)
        return -ENOMEM;
    (void)json_object_del(body, "hash");
    r = nt_jcs_dump(body, &jcs, &jcs_len);
    if (r == -ENOMEM)
        return r;
    if (r < 0)
        return -EBADMSG;
    ctx = EVP_MD_CTX_new();
    if (!ctx)
        return -ENOMEM;
    if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(ctx, prev, sizeof prev) != 1 || EVP_DigestUpdate(ctx, jcs, jcs_len) != 1 ||
        EVP_DigestFinal_ex(ctx, md, &md_len) != 1 || md_len != sizeof md)
        return nt_openssl_error(-EIO, "audit row hash");
    hex_encode(md, sizeof md, ret_hash_hex);
    return 0;
}

/* The members of a row and their JSON types. */
enum { T_INT = 1, T_STR = 2, T_NULL = 4, T_HEX = 8 };
static const struct {
    const char *name;
    int types;
} row_members[] = {
    {"seq", T_INT},
    {"time", T_INT},
    {"action", T_STR},
    {"actor", T_STR},
    {"secret_id", T_STR | T_NULL},
    {"version", T_INT | T_NULL},
    {"token_jti", T_STR | T_NULL},
    {"measurement", T_STR | T_NULL},
    {"chip_id", T_STR | T_NULL},
    {"result", T_STR},
    {"rule", T_STR | T_NULL},
    {"detail", T_STR | T_NULL},
    {"prev_hash", T_HEX},
    {"hash", T_HEX},
};

static int row_check_shape(const json_t *row, size_t index, char err[static 256]) {
    const char *key;
    json_t *v;

    if (!json_is_object(row)) {
        snprintf(err, 256, "audit row #%zu is not a JSON object", index);
        return -EBADMSG;
    }
    json_object_foreach((json_t *)row, key, v) {
        bool known = false;
        for (size_t i = 0; i < ELEMENTSOF(row_members) && !known; i++)
            known = streq(key, row_members[i].name);
        if (!known) {
            snprintf(err, 256, "audit row #%zu: unknown member \"%.40s\"", index, key);
            return -EBADMSG;
        }
    }
    for (size_t i = 0; i < ELEMENTSOF(row_members); i++) {
        int t = row_members[i].types;
        bool ok;
        v = json_object_get(row, row_members[i].name);
        if (!v) {
            snprintf(err, 256, "audit row #%zu: member \"%s\" missing", index, row_members[i].name);
            return -EBADMSG;
        }
        ok = ((t & T_NULL) && json_is_null(v)) || ((t & T_STR) && json_is_string(v)) ||
             ((t & T_HEX) && hex64_is_valid(json_string_value(v)));
        if (!ok && (t & T_INT) && json_is_integer(v)) {
            json_int_t x = json_integer_value(v);
            if (streq(row_members[i].name, "version"))
                ok = x >= 1 && x <= (json_int_t)UINT32_MAX;
            else if (streq(row_members[i].name, "seq"))
                ok = x >= 1 && x < JSON_SAFE_MAX;
            else
                ok = x >= 0 && x < JSON_SAFE_MAX;
        }
        if (!ok) {
            snprintf(err, 256, "audit row #%zu: member \"%s\" has a wrong type or value", index,
                     row_members[i].name);
            return -EBADMSG;
        }
    }
    return 0;
}

int kms_audit_chain_verify(json_t *rows, const char *expected_head_hex, char err[static 256]) {
    char prev[65] = KMS_AUDIT_GENESIS_HEX, h[65];
    int64_t expected_seq = 1;
    size_t index;
    json_t *row;
    int r;

    err[0] = 0;
    if (expected_head_hex && !hex64_is_valid(expected_head_hex)) {
        snprintf(err, 256, "the expected audit head is not 64 lowercase hex characters");
        return -EINVAL;
    }
    if (!json_is_array(rows)) {
        snprintf(err, 256, "audit rows are not a JSON array");
        return -EBADMSG;
    }
    /* Shapes first: a malformed input is reported as such, not as a broken chain. */
    json_array_foreach(rows, index, row) {
        if ((r = row_check_shape(row, index, err)) < 0)
            return r;
    }
    json_array_foreach(rows, index, row) {
        int64_t seq = json_integer_value(json_object_get(row, "seq"));
        const char *ph = json_string_value(json_object_get(row, "prev_hash"));
        const char *hash = json_string_value(json_object_get(row, "hash"));

        if (seq > expected_seq) {
            snprintf(err, 256,
                     "audit chain broken: row seq %" PRId64 " follows seq %" PRId64
                     " (rows deleted or reordered)",
                     seq, expected_seq - 1);
            return -EKEYREJECTED;
        }
        if (seq < expected_seq) {
            snprintf(err, 256,
                     "audit chain broken: row seq %" PRId64 " where seq %" PRId64
                     " was expected (rows reordered or duplicated)",
                     seq, expected_seq);
            return -EKEYREJECTED;
        }
        if (!streq(ph, prev)) {
            snprintf(err, 256,
                     "audit chain broken at seq %" PRId64
                     ": prev_hash is not the hash of the row before (a row before it was "
                     "edited, deleted or replaced)",
                     seq);
            return -EKEYREJECTED;
        }
        r = kms_audit_row_hash(row, h);
        if (r == -EBADMSG) {
            snprintf(err, 256, "audit row seq %" PRId64 " cannot be canonicalised", seq);
            return r;
        }
        if (r < 0) {
            snprintf(err, 256, "audit row seq %" PRId64 ": hashing failed", seq);
            return r;
        }
        if (!streq(h, hash)) {
            snprintf(err, 256, "audit chain broken at seq %" PRId64 ": hash mismatch (row edited)",
                     seq);
            return -EKEYREJECTED;
        }
        memcpy(prev, hash, sizeof prev);
        expected_seq++;
    }
    if (expected_head_hex && !streq(prev, expected_head_hex)) {
        snprintf(err, 256,
                 "audit chain ends at seq %" PRId64
                 " but its hash is not the head: rows after it are missing (truncated) or the "
                 "head belongs to another log",
                 expected_seq - 1);
        return -EKEYREJECTED;
    }
    return 0;
}
