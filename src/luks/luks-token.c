/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The `nitride` LUKS2 token: strict JSON parsing and formatting (luks.h has the format).
 * The token is untrusted input (anyone who can write the disk can write the header).
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/encoding.h"
#include "luks/luks.h"

static const struct {
    const char *name;
    uint64_t bit;
} bind_names[] = {
    {"policy", SNP_GFS_GUEST_POLICY}, {"image_id", SNP_GFS_IMAGE_ID},
    {"family_id", SNP_GFS_FAMILY_ID}, {"measurement", SNP_GFS_MEASUREMENT},
    {"guest_svn", SNP_GFS_GUEST_SVN}, {"tcb_version", SNP_GFS_TCB_VERSION},
};

static int bind_one(const char *s, size_t n, uint64_t *acc) {
    for (size_t i = 0; i < ELEMENTSOF(bind_names); i++)
        if (strlen(bind_names[i].name) == n && memcmp(bind_names[i].name, s, n) == 0) {
            if (*acc & bind_names[i].bit)
                return -EINVAL;
            *acc |= bind_names[i].bit;
            return 0;
        }
    return -EINVAL;
}

int luks_bind_parse(const char *list, uint64_t *ret) {
    uint64_t acc = 0;
    const char *p = list;
    if (!list || !*list)
        return -EINVAL;
    for (;;) {
        const char *c = strchr(p, ',');
        size_t n = c ? (size_t)(c - p) : strlen(p);
        if (bind_one(p, n, &acc) < 0)
            return -EINVAL;
        if (!c)
            break;
        p = c + 1;
    }
    *ret = acc;
    return 0;
}

void luks_token_done(LuksToken *t) {
    if (!t)
        return;
    free(t->kms_url);
    free(t->attestd_url);
    free(t->secret_id);
    explicit_bzero(t, sizeof *t);
}

/* Checks that obj has only the allowed members. */
static bool only_members(json_t *obj, const char *const *allowed, size_t n) {
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        bool ok = false;
        for (size_t i = 0; i < n; i++)
            ok = ok || streq(k, allowed[i]);
        if (!ok)
            return false;
    }
    return true;
}

static int get_u32(json_t *o, const char *k, uint32_t *ret) {
    json_t *v = json_object_get(o, k);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > UINT32_MAX)
        return -EBADMSG;
    *ret = (uint32_t)json_integer_value(v);
    return 0;
}

static int get_hex64(json_t *o, const char *k, uint64_t *ret) {
    json_t *v = json_object_get(o, k);
    uint8_t b[8];
    uint64_t x = 0;
    if (!json_is_string(v) || json_string_length(v) != 16 ||
        hex_decode_exact(json_string_value(v), b, 8) < 0)
        return -EBADMSG;
    for (size_t i = 0; i < 8; i++)
        x = (x << 8) | b[i];
    *ret = x;
    return 0;
}

/* A printable string of 1..max bytes, no control characters. */
static int get_str(json_t *o, const char *k, size_t max, char **ret) {
    json_t *v = json_object_get(o, k);
    const char *s;
    size_t n;
    if (!json_is_string(v))
        return -EBADMSG;
    s = json_string_value(v);
    n = json_string_length(v);
    if (n == 0 || n > max || strlen(s) != n)
        return -EBADMSG;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return -EBADMSG;
    *ret = strdup(s);
    return *ret ? 0 : -ENOMEM;
}

static bool uuid_ok(const char *s, size_t n) {
    if (n != 36)
        return false;
    for (size_t i = 0; i < n; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !strchr("0123456789abcdefABCDEF", s[i]) || !s[i])
            return false;
    }
    return true;
}

#define FAIL(what)                                                                                 \
    do {                                                                                           \
        if (ret_error)                                                                             \
            *ret_error = (what);                                                                   \
        r = -EBADMSG;                                                                              \
        goto fail;                                                                                 \
    } while (0)

static int parse_sealed(json_t *s, LuksToken *t, const char **ret_error) {
    static const char *const members[] = {"root_key", "bind", "guest_svn", "tcb", "policy", "blob"};
    static const char *const pmembers[] = {"allow_debug", "min_tcb", "min_guest_svn"};
    json_t *v, *pol;
    size_t i;
    _cleanup_free_ uint8_t *blob = NULL;
    size_t blob_len = 0;
    int r;

    if (!json_is_object(s) || !only_members(s, members, ELEMENTSOF(members)))
        FAIL("sealed");
    v = json_object_get(s, "root_key");
    if (json_is_string(v) && streq(json_string_value(v), "vcek"))
        t->root_key_select = SNP_KEY_ROOT_VCEK;
    else if (json_is_string(v) && streq(json_string_value(v), "vmrk"))
        t->root_key_select = SNP_KEY_ROOT_VMRK;
    else
        FAIL("sealed.root_key");
    v = json_object_get(s, "bind");
    if (!json_is_array(v) || json_array_size(v) == 0)
        FAIL("sealed.bind");
    json_array_foreach(v, i, pol) {
        if (!json_is_string(pol) ||
            bind_one(json_string_value(pol), json_string_length(pol), &t->guest_field_select) < 0)
            FAIL("sealed.bind");
    }
    if (get_u32(s, "guest_svn", &t->guest_svn) < 0)
        FAIL("sealed.guest_svn");
    if (get_hex64(s, "tcb", &t->tcb_version) < 0)
        FAIL("sealed.tcb");
    pol = json_object_get(s, "policy");
    if (!json_is_object(pol) || !only_members(pol, pmembers, ELEMENTSOF(pmembers)))
        FAIL("sealed.policy");
    v = json_object_get(pol, "allow_debug");
    if (!json_is_boolean(v))
        FAIL("sealed.policy.allow_debug");
    t->policy.allow_debug = json_is_true(v);
    if (get_hex64(pol, "min_tcb", &t->policy.min_tcb) < 0)
        FAIL("sealed.policy.min_tcb");
    if (get_u32(pol, "min_guest_svn", &t->policy.min_guest_svn) < 0)
        FAIL("sealed.policy.min_guest_svn");
    v = json_object_get(s, "blob");
    if (!json_is_string(v) ||
        base64_decode_alloc(json_string_value(v), json_string_length(v), &blob, &blob_len) < 0 ||
        blob_len != LUKS_BLOB_SIZE)
        FAIL("sealed.blob");
    memcpy(t->blob, blob, LUKS_BLOB_SIZE);
    return 0;
fail:
    return r;
}

static int parse_kms(json_t *k, LuksToken *t, const char **ret_error) {
    static const char *const members[] = {"url", "attestd", "secret"};
    int r;
    if (!json_is_object(k) || !only_members(k, members, ELEMENTSOF(members)))
        FAIL("kms");
    if ((r = get_str(k, "url", 2048, &t->kms_url)) < 0) {
        if (r == -ENOMEM)
            return r;
        FAIL("kms.url");
    }
    if (json_object_get(k, "attestd") && (r = get_str(k, "attestd", 2048, &t->attestd_url)) < 0) {
        if (r == -ENOMEM)
            return r;
        FAIL("kms.attestd");
    }
    if ((r = get_str(k, "secret", 256, &t->secret_id)) < 0) {
        if (r == -ENOMEM)
            return r;
        FAIL("kms.secret");
    }
    return 0;
fail:
    return r;
}

int luks_token_parse(const char *json, size_t len, LuksToken *ret, const char **ret_error) {
    static const char *const members[] = {"type",   "keyslots", "nitride_version", "flow", "volume",
                                          "sealed", "kms"};
    _cleanup_(json_decrefp) json_t *root = NULL;
    LuksToken t = {.keyslot = -1};
    json_t *v, *ks;
    const char *s;
    char *end = NULL;
    long slot;
    int r;

    if (ret_error)
        *ret_error = NULL;
    if (!json || !ret)
        return -EINVAL;
    if (len > LUKS_TOKEN_MAX_JSON) {
        if (ret_error)
            *ret_error = "size";
        return -EBADMSG;
    }
    root = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(root))
        FAIL("json");
    v = json_object_get(root, "type");
    if (!json_is_string(v))
        FAIL("type");
    if (!streq(json_string_value(v), LUKS_TOKEN_TYPE)) {
        luks_token_done(&t);
        return -EMEDIUMTYPE;
    }
    if (!only_members(root, members, ELEMENTSOF(members)))
        FAIL("unknown member");
    v = json_object_get(root, "nitride_version");
    if (!json_is_integer(v))
        FAIL("nitride_version");
    if (json_integer_value(v) != LUKS_TOKEN_VERSION) {
        luks_token_done(&t);
        return -EOPNOTSUPP;
    }
    ks = json_object_get(root, "keyslots");
    if (!json_is_array(ks) || json_array_size(ks) != 1 || !json_is_string(json_array_get(ks, 0)))
        FAIL("keyslots");
    s = json_string_value(json_array_get(ks, 0));
    errno = 0;
    slot = strtol(s, &end, 10);
    if (errno || !*s || *end || slot < 0 || slot > 31 || (s[0] == '0' && s[1]) || s[0] == '+' ||
        s[0] == '-' || s[0] == ' ')
        FAIL("keyslots");
    t.keyslot = (int)slot;
    v = json_object_get(root, "volume");
    if (!json_is_string(v) || !uuid_ok(json_string_value(v), json_string_length(v)))
        FAIL("volume");
    memcpy(t.volume, json_string_value(v), 37);
    v = json_object_get(root, "flow");
    if (json_is_string(v) && streq(json_string_value(v), "sealed"))
        t.flow = LUKS_FLOW_SEALED;
    else if (json_is_string(v) && streq(json_string_value(v), "kms"))
        t.flow = LUKS_FLOW_KMS;
    else if (json_is_string(v) && streq(json_string_value(v), "sealed+kms"))
        t.flow = LUKS_FLOW_SEALED_KMS;
    else
        FAIL("flow");
    /* The slots present must be exactly those "flow" names. */
    if (!luks_flow_has_kms(t.flow) && json_object_get(root, "kms"))
        FAIL("kms");
    if (!luks_flow_has_sealed(t.flow) && json_object_get(root, "sealed"))
        FAIL("sealed");
    if (luks_flow_has_sealed(t.flow) &&
        (r = parse_sealed(json_object_get(root, "sealed"), &t, ret_error)) < 0)
        goto fail;
    if (luks_flow_has_kms(t.flow) &&
        (r = parse_kms(json_object_get(root, "kms"), &t, ret_error)) < 0)
        goto fail;
    *ret = t;
    return 0;
fail:
    luks_token_done(&t);
    return r;
}

static void hex64(uint64_t x, char out[17]) {
    uint8_t b[8];
    for (size_t i = 0; i < 8; i++)
        b[i] = (uint8_t)(x >> (56 - 8 * i));
    hex_encode(b, 8, out);
    out[16] = 0;
}

int luks_token_format(const LuksToken *t, char **ret) {
    _cleanup_(json_decrefp) json_t *root = NULL;
    char slot[16];
    int r;

    if (!t || !ret || t->keyslot < 0 || t->keyslot > 31 || !uuid_ok(t->volume, strlen(t->volume)))
        return -EINVAL;
    snprintf(slot, sizeof slot, "%d", t->keyslot);
    root = json_pack("{s:s, s:[s], s:i, s:s, s:s}", "type", LUKS_TOKEN_TYPE, "keyslots", slot,
                     "nitride_version", LUKS_TOKEN_VERSION, "flow",
                     t->flow == LUKS_FLOW_SEALED ? "sealed"
                     : t->flow == LUKS_FLOW_KMS  ? "kms"
                                                 : "sealed+kms",
                     "volume", t->volume);
    if (!root)
        return -ENOMEM;
    if (t->flow != LUKS_FLOW_SEALED && t->flow != LUKS_FLOW_KMS && t->flow != LUKS_FLOW_SEALED_KMS)
        return -EINVAL;
    if (luks_flow_has_sealed(t->flow)) {
        _cleanup_free_ char *b64 = NULL;
        char tcb[17], min_tcb[17];
        json_t *bind = json_array(), *s;
        if (!bind)
            return -ENOMEM;
        for (size_t i = 0; i < ELEMENTSOF(bind_names); i++)
            if (t->guest_field_select & bind_names[i].bit)
                json_array_append_new(bind, json_string(bind_names[i].name));
        if (json_array_size(bind) == 0) {
            json_decref(bind);
            return -EINVAL;
        }
        if ((r = base64_encode_alloc(t->blob, LUKS_BLOB_SIZE, &b64)) < 0) {
            json_decref(bind);
            return r;
        }
        hex64(t->tcb_version, tcb);
        hex64(t->policy.min_tcb, min_tcb);
        s = json_pack("{s:s, s:o, s:I, s:s, s:{s:b, s:s, s:I}, s:s}", "root_key",
                      t->root_key_select == SNP_KEY_ROOT_VMRK ? "vmrk" : "vcek", "bind", bind,
                      "guest_svn", (json_int_t)t->guest_svn, "tcb", tcb, "policy", "allow_debug",
                      t->policy.allow_debug, "min_tcb", min_tcb, "min_guest_svn",
                      (json_int_t)t->policy.min_guest_svn, "blob", b64);
        if (!s || json_object_set_new(root, "sealed", s) < 0)
            return -ENOMEM;
    }
    if (luks_flow_has_kms(t->flow)) {
        json_t *k;
        if (!t->kms_url || !t->secret_id)
            return -EINVAL;
        k = json_pack("{s:s, s:s}", "url", t->kms_url, "secret", t->secret_id);
        if (!k ||
            (t->attestd_url &&
             json_object_set_new(k, "attestd", json_string(t->attestd_url)) < 0) ||
            json_object_set_new(root, "kms", k) < 0)
            return -ENOMEM;
    }
    *ret = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    return *ret ? 0 : -ENOMEM;
}
