/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TEMPORARY sealed-only luks_unlock (see unlock-compat.h), removed when L1's lands.
 * Configuration: JSON object {"provider":"sev-guest"|"tsm"|"sim"|"auto"} (other members of the
 * contract accepted and ignored here); sim takes its chip from $NITRIDE_SIM_DIR.
 */
#include <errno.h>
#include <jansson.h>
#include <libcryptsetup.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

#include "core/log.h"
#include "luks/plugin/unlock-compat.h"
#include "snp/provider.h"

int luks_unlock_options_load(const char *path, LuksUnlockOptions *ret) {
    LuksUnlockOptions o = {.timeout_ms = 30000, .allow_remote = true, .reseal = true};
    json_auto_t *j = NULL;
    json_error_t e;
    const char *p = path;
    bool dflt = false;

    if (!p)
        p = getenv("NITRIDE_LUKS_CONF");
    if (!p || !*p) {
        p = "/etc/nitride/luks.conf";
        dflt = true;
    }
    j = json_load_file(p, JSON_REJECT_DUPLICATES, &e);
    if (!j) {
        if (dflt && access(p, F_OK) < 0 && errno == ENOENT) {
            *ret = o;
            return 0;
        }
        log_debug("luks.conf '%s': %s", p, e.text);
        return -EBADMSG;
    }
    if (!json_is_object(j))
        return -EBADMSG;
    json_t *prov = json_object_get(j, "provider");
    if (prov) {
        if (!json_is_string(prov))
            return -EBADMSG;
        if (strcmp(json_string_value(prov), "auto") != 0 &&
            !(o.provider = strdup(json_string_value(prov))))
            return -ENOMEM;
    }
    *ret = o;
    return 0;
}

void luks_unlock_options_done(LuksUnlockOptions *o) {
    free(o->provider);
    free(o->vhsm_socket);
    free(o->ca_file);
    *o = (LuksUnlockOptions){0};
}

int luks_unlock(struct crypt_device *cd, int token, const LuksUnlockOptions *o, Secret **ret_key,
                int *ret_keyslot, LuksRefusal *refusal) {
    _cleanup_(snp_provider_freep) SnpProvider *prov = NULL;
    const char *uuid = crypt_get_uuid(cd);
    int r, last = -ENOENT;

    if (!uuid)
        return -EBADMSG;
    for (int id = token < 0 ? 0 : token; id < (token < 0 ? LUKS_MAX_TOKENS : token + 1); id++) {
        _cleanup_(secret_freep) Secret *key = NULL;
        LuksToken t;
        r = luks_token_read(cd, id, &t);
        if (r == -ENOENT || r == -EMEDIUMTYPE)
            continue;
        if (r < 0) {
            last = r;
            continue;
        }
        if (t.flow != LUKS_FLOW_SEALED) {
            last = -EAGAIN; /* remote flow not in this build yet */
            luks_token_done(&t);
            continue;
        }
        if (!prov) {
            r = snp_provider_open(o->provider, NULL, &prov);
            if (r < 0) {
                luks_token_done(&t);
                return -EAGAIN; /* no evidence provider here: callers fall back */
            }
        }
        r = luks_unseal(prov, &t, uuid, &key, refusal);
        if (r < 0) {
            last = r;
            luks_token_done(&t);
            continue;
        }
        *ret_keyslot = t.keyslot;
        *ret_key = TAKE_PTR(key);
        luks_token_done(&t);
        return 0;
    }
    return last;
}
