/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Device operations through libcryptsetup: keyslots for high-entropy keys (PBKDF2, 1000
 * iterations, no benchmark, as systemd-cryptenroll and Clevis do), the token, atomic enrolment
 * and removal, test-mode activation (name NULL: the key is checked, nothing is activated).
 */
#include <errno.h>
#include <libcryptsetup.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "luks/luks-private.h"
#include "luks/luks.h"

static LuksFaultHook fault_hook;

void luks_set_fault_hook(LuksFaultHook hook) {
    fault_hook = hook;
}

int luks_fault(const char *step) {
    return fault_hook ? fault_hook(step) : 0;
}

int luks_device_open(const char *path, struct crypt_device **ret) {
    struct crypt_device *cd = NULL;
    int r;
    if (!path || !ret)
        return -EINVAL;
    if ((r = crypt_init(&cd, path)) < 0)
        return r;
    if ((r = crypt_load(cd, CRYPT_LUKS2, NULL)) < 0) {
        crypt_free(cd);
        return r == -EINVAL ? -EMEDIUMTYPE : r;
    }
    *ret = cd;
    return 0;
}

void luks_device_closep(struct crypt_device **cd) {
    if (*cd)
        crypt_free(*cd);
    *cd = NULL;
}

int luks_active_keyslots(struct crypt_device *cd) {
    int n = 0, max = crypt_keyslot_max(CRYPT_LUKS2);
    for (int i = 0; i < max; i++) {
        crypt_keyslot_info s = crypt_keyslot_status(cd, i);
        if (s == CRYPT_SLOT_ACTIVE || s == CRYPT_SLOT_ACTIVE_LAST)
            n++;
    }
    return n;
}

int luks_token_read(struct crypt_device *cd, int id, LuksToken *ret) {
    const char *json = NULL, *type = NULL;
    crypt_token_info ti = crypt_token_status(cd, id, &type);
    if (ti == CRYPT_TOKEN_INVALID || ti == CRYPT_TOKEN_INACTIVE)
        return -ENOENT;
    if (!type || strcmp(type, LUKS_TOKEN_TYPE) != 0)
        return -EMEDIUMTYPE;
    if (crypt_token_json_get(cd, id, &json) < 0 || !json)
        return -EBADMSG;
    return luks_token_parse(json, strlen(json), ret, NULL) < 0 ? -EBADMSG : 0;
}

static int add_keyslot(struct crypt_device *cd, const Secret *auth, const Secret *key) {
    struct crypt_pbkdf_type pbkdf = {
        .type = CRYPT_KDF_PBKDF2,
        .hash = "sha256",
        .iterations = LUKS_PBKDF2_ITERATIONS,
        .time_ms = 0,
        .flags = CRYPT_PBKDF_NO_BENCHMARK,
    };
    int r;
    if ((r = crypt_set_pbkdf_type(cd, &pbkdf)) < 0)
        return r;
    r = crypt_keyslot_add_by_passphrase(cd, CRYPT_ANY_SLOT, (const char *)secret_const_data(auth),
                                        secret_size(auth), (const char *)secret_const_data(key),
                                        secret_size(key));
    return r;
}

/* The enrolment both flows share: keyslot for key, optional sealed slot, token. Atomic. */
static int enroll(struct crypt_device *cd, const Secret *auth, const Secret *key, LuksToken *t,
                  SnpProvider *p, uint64_t gfs, bool allow_debug, int *ret_token, int *ret_keyslot,
                  LuksRefusal *refusal) {
    _cleanup_free_ char *json = NULL;
    const char *uuid;
    int slot = -1, tok = -1, r;

    uuid = crypt_get_uuid(cd);
    if (!uuid || strlen(uuid) != 36)
        return -EMEDIUMTYPE;
    r = add_keyslot(cd, auth, key);
    if (r < 0)
        return r == -ENOENT || r == -EPERM ? -EPERM : r;
    slot = r;
    if ((r = luks_fault("keyslot")) < 0)
        goto fail;
    t->keyslot = slot;
    memcpy(t->volume, uuid, 37);
    if (p && gfs) {
        if ((r = luks_seal(p, gfs, allow_debug, key, t, refusal)) < 0)
            goto fail;
        if ((r = luks_fault("sealed")) < 0)
            goto fail;
    }
    if ((r = luks_token_format(t, &json)) < 0)
        goto fail;
    if ((r = crypt_token_json_set(cd, CRYPT_ANY_TOKEN, json)) < 0)
        goto fail;
    tok = r;
    if ((r = luks_fault("token")) < 0)
        goto fail;
    *ret_token = tok;
    *ret_keyslot = slot;
    return 0;
fail:
    if (tok >= 0 && crypt_token_json_set(cd, tok, NULL) < 0)
        log_error("luks: could not remove token %d after a failed enrolment", tok);
    if (slot >= 0 && crypt_keyslot_destroy(cd, slot) < 0)
        log_error("luks: could not remove keyslot %d after a failed enrolment", slot);
    return r;
}

int luks_enroll_sealed(struct crypt_device *cd, SnpProvider *p, const Secret *auth, uint64_t gfs,
                       bool allow_debug, int *ret_token, int *ret_keyslot, LuksRefusal *refusal) {
    _cleanup_(secret_freep) Secret *key = NULL;
    LuksToken t = {.flow = LUKS_FLOW_SEALED};
    int r;

    if (!cd || !p || !auth || !ret_token || !ret_keyslot || !gfs)
        return -EINVAL;
    /* The key is generated here, in the process that calls libcryptsetup (docs/luks.md). */
    if ((r = secret_new(LUKS_KEY_SIZE, &key)) < 0)
        return r;
    if (RAND_priv_bytes(secret_data(key), LUKS_KEY_SIZE) != 1)
        return -EIO;
    r = enroll(cd, auth, key, &t, p, gfs, allow_debug, ret_token, ret_keyslot, refusal);
    luks_token_done(&t);
    return r;
}

int luks_enroll_kms(struct crypt_device *cd, const Secret *auth, const Secret *key, LuksToken *t,
                    SnpProvider *prov, uint64_t gfs, bool allow_debug, int *ret_token,
                    int *ret_keyslot, LuksRefusal *refusal) {
    if (!cd || !auth || !key || !t || !t->kms_url || !t->secret_id || !ret_token || !ret_keyslot ||
        secret_size(key) != LUKS_KEY_SIZE)
        return -EINVAL;
    t->flow = LUKS_FLOW_KMS;
    return enroll(cd, auth, key, t, gfs ? prov : NULL, gfs, allow_debug, ret_token, ret_keyslot,
                  refusal);
}

int luks_activate(struct crypt_device *cd, const char *name, int keyslot, const Secret *key) {
    int r = crypt_activate_by_passphrase(cd, name, keyslot, (const char *)secret_const_data(key),
                                         secret_size(key), 0);
    if (r == -ENOENT || r == -EPERM)
        return -EPERM;
    return r < 0 ? r : 0;
}

int luks_remove(struct crypt_device *cd, int id, bool force) {
    _cleanup_free_ char *saved = NULL;
    const char *json = NULL;
    LuksToken t;
    crypt_keyslot_info ks;
    int r;

    if ((r = luks_token_read(cd, id, &t)) < 0)
        return r;
    ks = crypt_keyslot_status(cd, t.keyslot);
    if (ks == CRYPT_SLOT_ACTIVE_LAST ||
        (ks == CRYPT_SLOT_ACTIVE && luks_active_keyslots(cd) <= 1)) {
        if (!force) {
            luks_token_done(&t);
            return -EBUSY;
        }
    }
    if (crypt_token_json_get(cd, id, &json) < 0 || !(saved = strdup(json))) {
        luks_token_done(&t);
        return -ENOMEM;
    }
    if ((r = crypt_token_json_set(cd, id, NULL)) < 0) {
        luks_token_done(&t);
        return r;
    }
    if (ks == CRYPT_SLOT_ACTIVE || ks == CRYPT_SLOT_ACTIVE_LAST) {
        r = luks_fault("remove-keyslot");
        if (r >= 0)
            r = crypt_keyslot_destroy(cd, t.keyslot);
        if (r < 0) {
            if (crypt_token_json_set(cd, id, saved) < 0)
                log_error("luks: could not restore token %d", id);
            luks_token_done(&t);
            return r;
        }
    }
    luks_token_done(&t);
    return 0;
}
