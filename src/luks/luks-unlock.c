/* SPDX-License-Identifier: Apache-2.0 */
/*
 * luks_unlock(): the one unlock path shared by `nitride luks unlock` and the libcryptsetup token
 * plugin (docs/luks.md "Unlock"). For a token: the sealed slot first (no network), then the
 * remote slot (attested release from kmsd, sealed to this process's own transfer key), then,
 * after a remote unlock of a token that should be sealed, a re-seal to the current VM state.
 * Every key is checked against the token's keyslot (test-mode activation) before it is
 * returned, so a wrong key never reaches the caller.
 */
#include <errno.h>
#include <jansson.h>
#include <libcryptsetup.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/fileio.h"
#include "core/log.h"
#include "luks/luks-private.h"
#include "luks/luks.h"

void luks_unlock_options_done(LuksUnlockOptions *o) {
    if (!o)
        return;
    free(o->provider);
    free(o->vhsm_socket);
    free(o->ca_file);
    *o = (LuksUnlockOptions){0};
}

static void options_default(LuksUnlockOptions *o) {
    *o = (LuksUnlockOptions){
        .timeout_ms = LUKS_UNLOCK_DEFAULT_TIMEOUT_MS,
        .allow_remote = true,
        .reseal = true,
    };
}

static int conf_str(json_t *root, const char *k, char **ret) {
    json_t *v = json_object_get(root, k);
    if (!v)
        return 0;
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 4096 ||
        strlen(json_string_value(v)) != json_string_length(v))
        return -EBADMSG;
    *ret = strdup(json_string_value(v));
    return *ret ? 0 : -ENOMEM;
}

static int conf_bool(json_t *root, const char *k, bool *ret) {
    json_t *v = json_object_get(root, k);
    if (!v)
        return 0;
    if (!json_is_boolean(v))
        return -EBADMSG;
    *ret = json_is_true(v);
    return 0;
}

int luks_unlock_options_load(const char *path, LuksUnlockOptions *ret) {
    static const char *const members[] = {"provider",   "vhsm_socket",  "ca_file",
                                          "timeout_ms", "allow_remote", "reseal"};
    _cleanup_(json_decrefp) json_t *root = NULL;
    _cleanup_free_ uint8_t *buf = NULL;
    LuksUnlockOptions o;
    bool explicit_path = true;
    const char *k;
    json_t *v;
    size_t len = 0;
    int r;

    if (!ret)
        return -EINVAL;
    if (!path) {
        path = getenv("NITRIDE_LUKS_CONF");
        if (!path || !*path) {
            path = LUKS_CONF_DEFAULT;
            explicit_path = false;
        }
    }
    options_default(&o);
    r = read_full_file(path, LUKS_CONF_MAX, &buf, &len);
    if (r == -ENOENT && !explicit_path) {
        *ret = o;
        return 0;
    }
    if (r == -EFBIG || r == -E2BIG)
        return -EBADMSG;
    if (r < 0)
        return r;
    root = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(root)) {
        log_error("%s: not a JSON object.", path);
        return -EBADMSG;
    }
    json_object_foreach(root, k, v) {
        bool ok = false;
        for (size_t i = 0; i < ELEMENTSOF(members); i++)
            ok = ok || streq(k, members[i]);
        if (!ok) {
            log_error("%s: unknown member \"%.64s\".", path, k);
            return -EBADMSG;
        }
    }
    v = json_object_get(root, "timeout_ms");
    if (v) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 3600000) {
            log_error("%s: \"timeout_ms\" must be an integer in 1..3600000.", path);
            return -EBADMSG;
        }
        o.timeout_ms = (unsigned)json_integer_value(v);
    }
    if ((r = conf_bool(root, "allow_remote", &o.allow_remote)) < 0 ||
        (r = conf_bool(root, "reseal", &o.reseal)) < 0) {
        log_error("%s: \"allow_remote\" and \"reseal\" must be booleans.", path);
        return r;
    }
    if ((r = conf_str(root, "provider", &o.provider)) < 0 ||
        (r = conf_str(root, "vhsm_socket", &o.vhsm_socket)) < 0 ||
        (r = conf_str(root, "ca_file", &o.ca_file)) < 0) {
        if (r != -ENOMEM)
            log_error("%s: \"provider\", \"vhsm_socket\" and \"ca_file\" must be non-empty "
                      "strings.",
                      path);
        luks_unlock_options_done(&o);
        return r;
    }
    if (o.provider && !luks_provider_spec_ok(o.provider)) {
        log_error("%s: unknown \"provider\" '%.64s' (auto, sev-guest, tsm, sim or sim:DIR).", path,
                  o.provider);
        luks_unlock_options_done(&o);
        return -EBADMSG;
    }
    *ret = o;
    return 0;
}

bool luks_provider_spec_ok(const char *spec) {
    return !spec || streq(spec, "auto") || streq(spec, "sev-guest") || streq(spec, "tsm") ||
           streq(spec, "sim") || (strncmp(spec, "sim:", 4) == 0 && spec[4]);
}

int luks_provider_open(const char *spec, SnpProvider **ret) {
    const char *name = spec, *dir = NULL;
    char buf[16];
    int r;
    if (!luks_provider_spec_ok(spec))
        return -EINVAL;
    if (spec && streq(spec, "auto"))
        name = NULL;
    else if (spec && strncmp(spec, "sim:", 4) == 0) {
        snprintf(buf, sizeof buf, "sim");
        name = buf;
        dir = spec + 4;
    }
    r = snp_provider_open(name, dir, ret);
    if (r == -ENODEV || r == -ENOENT)
        return -EAGAIN;
    return r;
}

int64_t luks_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The token's key must open the token's keyslot: -EPERM otherwise. */
static int check_key(struct crypt_device *cd, int keyslot, const Secret *key) {
    return luks_activate(cd, NULL, keyslot, key);
}

/* Priority of a failure when several tokens or paths fail: the most telling wins. */
static int rank(int r) {
    switch (r) {
    case -EPERM:
        return 6;
    case -EKEYREJECTED:
        return 5;
    case -EAGAIN:
    case -ECONNREFUSED:
        return 4;
    case -EBADMSG:
        return 3;
    case -ENOENT:
        return 0;
    default:
        return 2;
    }
}

static void keep_worst(int *acc, LuksRefusal *acc_ref, int r, const LuksRefusal *ref) {
    if (rank(r) > rank(*acc) || *acc == 0) {
        *acc = r;
        if (acc_ref)
            *acc_ref = *ref;
    }
}

int luks_provider_ensure(const LuksUnlockOptions *o, SnpProvider **prov, LuksRefusal *refusal) {
    int r;
    if (*prov)
        return 0;
    r = luks_provider_open(o->provider, prov);
    if (r == -EAGAIN)
        luks_refuse(refusal, "provider", "no evidence provider usable (%s)",
                    o->provider ? o->provider : "auto");
    return r < 0 ? r : 0;
}

static int unlock_sealed(struct crypt_device *cd, const char *uuid, const LuksToken *t,
                         SnpProvider **prov, const LuksUnlockOptions *o, Secret **ret_key,
                         LuksRefusal *refusal) {
    _cleanup_(secret_freep) Secret *key = NULL;
    int r;

    if ((r = luks_provider_ensure(o, prov, refusal)) < 0)
        return r;
    r = luks_unseal(*prov, t, uuid, &key, refusal);
    if (r < 0)
        return r;
    r = check_key(cd, t->keyslot, key);
    if (r == -EPERM) {
        luks_refuse(refusal, "keyslot", "the unsealed key does not open keyslot %d", t->keyslot);
        return -EKEYREJECTED;
    }
    if (r < 0)
        return r;
    *ret_key = TAKE_PTR(key);
    return 0;
}

/* Writes t (re-sealed) over token id. The old token is kept on any failure. */
static int reseal(struct crypt_device *cd, int id, const LuksToken *old, SnpProvider *prov,
                  const Secret *key, bool consume_expect, LuksRefusal *refusal) {
    _cleanup_free_ char *json = NULL;
    LuksToken t = *old;
    int r;

    if (consume_expect)
        t.has_expect = false; /* the pre-authorised image is this one now */
    /* The copy shares old's strings; only the sealed members change. */
    t.policy.allow_debug = luks_flow_has_sealed(old->flow) ? old->policy.allow_debug : false;
    if (t.guest_field_select == 0)
        t.guest_field_select = LUKS_DEFAULT_BIND;
    r = luks_seal(prov, t.guest_field_select, t.policy.allow_debug, key, &t, refusal);
    if (r >= 0)
        r = luks_fault("reseal");
    if (r >= 0)
        r = luks_token_format(&t, &json);
    if (r >= 0)
        r = crypt_token_json_set(cd, id, json);
    explicit_bzero(t.blob, sizeof t.blob);
    return r < 0 ? r : 0;
}

static int unlock_token(struct crypt_device *cd, int id, const char *uuid,
                        const LuksUnlockOptions *o, int64_t deadline_ms, SnpProvider **prov,
                        Secret **ret_key, int *ret_keyslot, LuksRefusal *refusal) {
    _cleanup_(secret_freep) Secret *key = NULL;
    LuksRefusal sref = {0};
    LuksToken t;
    int r, rs = -ENOENT;

    r = luks_token_read(cd, id, &t);
    if (r == -EMEDIUMTYPE)
        return -ENOENT;
    if (r == -EBADMSG)
        luks_refuse(refusal, "token", "token %d is malformed", id);
    if (r < 0)
        return r;
    if (!streq(t.volume, uuid)) {
        luks_refuse(refusal, "volume", "token %d was written for volume %s, this is %s", id,
                    t.volume, uuid);
        luks_token_done(&t);
        return -EPERM;
    }
    if (luks_flow_has_sealed(t.flow)) {
        rs = unlock_sealed(cd, uuid, &t, prov, o, &key, &sref);
        if (rs == 0) {
            *ret_keyslot = t.keyslot;
            *ret_key = TAKE_PTR(key);
            luks_token_done(&t);
            return 0;
        }
        if (t.has_expect && *prov) {
            LuksRefusal eref = {0}, rref = {0};
            int re = luks_unseal_expect(*prov, &t, uuid, &key, &eref);
            if (re == 0 && check_key(cd, t.keyslot, key) == 0) {
                /* The pre-authorised image: re-seal to it (the expect slot is used up). */
                re = o->reseal ? reseal(cd, id, &t, *prov, key, true, &rref) : 0;
                if (re < 0)
                    log_warning(
                        "Token %d: re-sealing to this pre-authorised image failed (%s%s%s); "
                        "the token is unchanged.",
                        id, rref.check ? rref.check : strerror(-re), rref.check ? ": " : "",
                        rref.check ? rref.detail : "");
                else
                    log_info("Token %d: this image's measurement was pre-authorised%s.", id,
                             o->reseal ? "; re-sealed to it" : "");
                *ret_keyslot = t.keyslot;
                *ret_key = TAKE_PTR(key);
                luks_token_done(&t);
                return 0;
            }
            key = secret_free(key);
            log_debug("Token %d: the pre-authorised slot does not open here (%s).", id,
                      eref.check ? eref.detail : strerror(-re));
        }
        if (!luks_flow_has_kms(t.flow) || !o->allow_remote) {
            if (refusal)
                *refusal = sref;
            luks_token_done(&t);
            return rs;
        }
        log_info("Token %d: the sealed key does not open here (%s: %s); trying the KMS.", id,
                 sref.check ? sref.check : "error", sref.check ? sref.detail : strerror(-rs));
    }
    if (!o->allow_remote) {
        luks_refuse(refusal, "remote", "token %d needs the KMS and remote unlock is disabled", id);
        luks_token_done(&t);
        return -EAGAIN;
    }
    r = luks_unlock_remote(
        cd, &t, o, deadline_ms, prov,
        o->reseal && luks_flow_has_sealed(t.flow) ? "luks-reseal" : "luks-unlock", &key, refusal);
    if (r < 0) {
        luks_token_done(&t);
        return r;
    }
    r = check_key(cd, t.keyslot, key);
    if (r < 0) {
        luks_refuse(refusal, "keyslot", "the key released by the KMS does not open keyslot %d",
                    t.keyslot);
        luks_token_done(&t);
        return r == -EPERM ? -EPERM : r;
    }
    /* Self-healing: a token with a sealed slot that did not open gets a new one for this VM. */
    if (o->reseal && luks_flow_has_sealed(t.flow) && *prov) {
        LuksRefusal rref = {0};
        r = reseal(cd, id, &t, *prov, key, false, &rref);
        if (r < 0)
            log_warning("Token %d: re-sealing to this VM's state failed (%s%s%s); the token is "
                        "unchanged and the next unlock uses the KMS again.",
                        id, rref.check ? rref.check : strerror(-r), rref.check ? ": " : "",
                        rref.check ? rref.detail : "");
        else
            log_info("Token %d: re-sealed to this VM's state; the next unlock is local.", id);
    }
    *ret_keyslot = t.keyslot;
    *ret_key = TAKE_PTR(key);
    luks_token_done(&t);
    return 0;
}

int luks_unlock(struct crypt_device *cd, int token, const LuksUnlockOptions *o, Secret **ret_key,
                int *ret_keyslot, LuksRefusal *refusal) {
    _cleanup_(snp_provider_freep) SnpProvider *prov = NULL;
    LuksUnlockOptions defaults;
    LuksRefusal worst_ref = {0};
    const char *uuid;
    int64_t deadline;
    int worst = -ENOENT, r;

    if (!cd || !ret_key || !ret_keyslot || token >= LUKS_MAX_TOKENS)
        return -EINVAL;
    if (refusal)
        *refusal = (LuksRefusal){0};
    if (!o) {
        options_default(&defaults);
        o = &defaults;
    }
    uuid = crypt_get_uuid(cd);
    if (!uuid || strlen(uuid) != 36)
        return -EBADMSG;
    deadline = luks_now_ms() + (o->timeout_ms ? o->timeout_ms : LUKS_UNLOCK_DEFAULT_TIMEOUT_MS);
    for (int id = token < 0 ? 0 : token; id < (token < 0 ? LUKS_MAX_TOKENS : token + 1); id++) {
        LuksRefusal ref = {0};
        r = unlock_token(cd, id, uuid, o, deadline, &prov, ret_key, ret_keyslot, &ref);
        if (r == 0)
            return 0;
        keep_worst(&worst, &worst_ref, r, &ref);
    }
    if (refusal)
        *refusal = worst_ref;
    return worst;
}

int luks_preauthorise(struct crypt_device *cd, int token, const LuksUnlockOptions *o,
                      const uint8_t measurement[48], int *ret_token, LuksRefusal *refusal) {
    _cleanup_(snp_provider_freep) SnpProvider *prov = NULL;
    _cleanup_(secret_freep) Secret *key = NULL;
    _cleanup_free_ char *json = NULL;
    LuksUnlockOptions uo;
    LuksToken t;
    int r, ks = -1, id = -1;

    if (!cd || !o || !measurement || !ret_token)
        return -EINVAL;
    for (int i = token < 0 ? 0 : token; i < (token < 0 ? LUKS_MAX_TOKENS : token + 1); i++) {
        if (luks_token_read(cd, i, &t) < 0)
            continue;
        if (luks_flow_has_sealed(t.flow)) {
            id = i;
            break;
        }
        luks_token_done(&t);
    }
    if (id < 0)
        return -ENOENT;
    /* The key of the token, as unlock gets it here (no re-seal: only the expect slot changes). */
    uo = *o;
    uo.reseal = false;
    r = luks_unlock(cd, id, &uo, &key, &ks, refusal);
    if (r < 0)
        goto out;
    if ((r = luks_provider_open(o->provider, &prov)) < 0)
        goto out;
    if ((r = luks_seal_expect(prov, measurement, key, &t, refusal)) < 0)
        goto out;
    if ((r = luks_fault("expect")) < 0)
        goto out;
    if ((r = luks_token_format(&t, &json)) < 0)
        goto out;
    r = crypt_token_json_set(cd, id, json);
    if (r >= 0) {
        *ret_token = id;
        r = 0;
    }
out:
    luks_token_done(&t);
    return r;
}
