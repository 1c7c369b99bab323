/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libcryptsetup-token-nitride.so: the libcryptsetup (>= 2.4) external token plugin for LUKS2
 * tokens of type "nitride" (docs/luks.md "Plugin"). libcryptsetup dlopen()s it from its token
 * directory (crypt_token_external_path(), Debian: /lib/x86_64-linux-gnu/cryptsetup) when it meets
 * such a token, so that `cryptsetup open --token-only`, `cryptsetup luksDump` and
 * systemd-cryptsetup (crypttab) use Nitride's unlock.
 *
 * Exports (version script, CRYPTSETUP_TOKEN_1.0): open, buffer_free, validate, dump, version.
 * No open_pin: a nitride token takes no PIN; libcryptsetup then skips it when a PIN is given.
 * open = luks_unlock_options_load(NULL) + luks_unlock(): the keyslot passphrase goes into one
 * mlock'ed, MADV_DONTDUMP page that buffer_free wipes and unmaps. -EAGAIN when what the token
 * needs (evidence provider, vhsmd, services) is absent, so libcryptsetup falls back to other
 * tokens or the passphrase; a refusal is logged through crypt_log (which check, expected and
 * found) and returned as -EPERM, which also lets libcryptsetup try the next token.
 * Nothing here prints or logs key material; dump shows the token without its sealed blob.
 */
#include <errno.h>
#include <inttypes.h>
#include <libcryptsetup.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "core/log.h"
#include "core/secret.h"
#include "luks/luks.h"

#define _public_ __attribute__((visibility("default")))

int cryptsetup_token_open(struct crypt_device *cd, int token, char **buffer, size_t *buffer_len,
                          void *usrptr) _public_;
void cryptsetup_token_buffer_free(void *buffer, size_t buffer_len) _public_;
int cryptsetup_token_validate(struct crypt_device *cd, const char *json) _public_;
void cryptsetup_token_dump(struct crypt_device *cd, const char *json) _public_;
const char *cryptsetup_token_version(void) _public_;

/* Our library log lines go to libcryptsetup's log for the duration of an open (the host program,
 * cryptsetup or systemd-cryptsetup, decides where they end up). Debug only in --debug. */
static void log_to_crypt(int level, const char *msg, void *userdata) {
    struct crypt_device *cd = userdata;
    int cl = level <= LOG_WARNING ? CRYPT_LOG_ERROR
             : level <= LOG_INFO  ? CRYPT_LOG_VERBOSE
                                  : CRYPT_LOG_DEBUG;
    crypt_logf(cd, cl, "nitride: %s%s", msg, cl == CRYPT_LOG_DEBUG ? "" : "\n");
}

static int key_page(const Secret *key, char **ret, size_t *ret_len) {
    long pagesz = sysconf(_SC_PAGESIZE);
    size_t n = secret_size(key);
    void *p;

    if (pagesz <= 0 || n > (size_t)pagesz)
        return -EINVAL;
    p = mmap(NULL, (size_t)pagesz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -ENOMEM;
    (void)madvise(p, (size_t)pagesz, MADV_DONTDUMP);
    if (mlock(p, (size_t)pagesz) < 0) {
        (void)munmap(p, (size_t)pagesz);
        return -ENOMEM;
    }
    memcpy(p, secret_const_data(key), n);
    *ret = p;
    *ret_len = n;
    return 0;
}

_public_ void cryptsetup_token_buffer_free(void *buffer, size_t buffer_len) {
    long pagesz = sysconf(_SC_PAGESIZE);
    if (!buffer)
        return;
    explicit_bzero(buffer, buffer_len);
    (void)munlock(buffer, (size_t)pagesz);
    (void)munmap(buffer, (size_t)pagesz);
}

_public_ int cryptsetup_token_open(struct crypt_device *cd, int token, char **buffer,
                                   size_t *buffer_len, void *usrptr) {
    _cleanup_(secret_freep) Secret *key = NULL;
    LuksUnlockOptions o = {0};
    LuksRefusal refusal = {0};
    int r, keyslot = -1;

    log_set_sink(log_to_crypt, cd);
    r = luks_unlock_options_load(NULL, &o);
    if (r < 0) {
        crypt_logf(cd, CRYPT_LOG_ERROR,
                   "nitride: the LUKS unlock configuration ($NITRIDE_LUKS_CONF or "
                   "/etc/nitride/luks.conf) is unreadable or malformed (%s); token %d not used.\n",
                   strerror(-r), token);
        log_set_sink(NULL, NULL);
        return -EAGAIN;
    }
    r = luks_unlock(cd, token, &o, &key, &keyslot, &refusal);
    luks_unlock_options_done(&o);
    log_set_sink(NULL, NULL);

    switch (r) {
    case 0:
        r = key_page(key, buffer, buffer_len);
        if (r < 0)
            crypt_logf(cd, CRYPT_LOG_ERROR, "nitride: cannot lock memory for the key: %s.\n",
                       strerror(-r));
        else
            crypt_logf(cd, CRYPT_LOG_DEBUG, "nitride: token %d unlocked keyslot %d.", token,
                       keyslot);
        return r;
    case -EAGAIN:
        crypt_logf(cd, CRYPT_LOG_VERBOSE,
                   "nitride: token %d: what it needs (evidence provider, vhsmd or the services) is "
                   "not available here; trying other tokens or the passphrase.\n",
                   token);
        return -EAGAIN;
    case -ECONNREFUSED:
        crypt_logf(cd, CRYPT_LOG_ERROR,
                   "nitride: token %d: a service it needs is not available here (%s); trying "
                   "other tokens or the passphrase.\n",
                   token, refusal.detail);
        return -EAGAIN;
    case -ENOMEM:
        return -ENOMEM;
    case -EPERM:
        crypt_logf(cd, CRYPT_LOG_ERROR, "nitride: token %d refused: check '%s' failed: %s.\n",
                   token, refusal.check ? refusal.check : "?", refusal.detail);
        return -EPERM;
    case -EKEYREJECTED:
        crypt_logf(cd, CRYPT_LOG_ERROR, "nitride: token %d refused: %s; the key stays sealed.\n",
                   token,
                   refusal.check ? refusal.detail
                                 : "the sealed key does not open in this VM or for this volume");
        return -EPERM;
    case -EBADMSG:
        crypt_logf(cd, CRYPT_LOG_ERROR, "nitride: token %d is malformed; not used.\n", token);
        return -EPERM;
    default:
        crypt_logf(cd, CRYPT_LOG_ERROR, "nitride: token %d: unlock failed: %s.\n", token,
                   strerror(r < 0 ? -r : EIO));
        /* -EPERM keeps libcryptsetup trying the next token (other codes stop its loop). */
        return -EPERM;
    }
}

_public_ int cryptsetup_token_validate(struct crypt_device *cd, const char *json) {
    LuksToken t;
    const char *what = NULL;
    int r;

    if (!json)
        return -EINVAL;
    r = luks_token_parse(json, strlen(json), &t, &what);
    if (r < 0) {
        crypt_logf(cd, CRYPT_LOG_DEBUG, "nitride: token rejected by the parser: %s (%s).",
                   strerror(-r), what ? what : "-");
        return -EINVAL;
    }
    luks_token_done(&t);
    return 0;
}

static const struct {
    uint64_t bit;
    const char *name;
} bind_names[] = {
    {SNP_GFS_GUEST_POLICY, "policy"}, {SNP_GFS_IMAGE_ID, "image_id"},
    {SNP_GFS_FAMILY_ID, "family_id"}, {SNP_GFS_MEASUREMENT, "measurement"},
    {SNP_GFS_GUEST_SVN, "guest_svn"}, {SNP_GFS_TCB_VERSION, "tcb_version"},
};

_public_ void cryptsetup_token_dump(struct crypt_device *cd, const char *json) {
    char bind[128] = "";
    LuksToken t;
    const char *what = NULL;
    int r;

    if (!json)
        return;
    r = luks_token_parse(json, strlen(json), &t, &what);
    if (r < 0) {
        crypt_logf(cd, CRYPT_LOG_NORMAL, "\tnitride:    invalid token (%s)\n",
                   what ? what : strerror(-r));
        return;
    }
    crypt_logf(cd, CRYPT_LOG_NORMAL, "\tflow:       %s\n",
               t.flow == LUKS_FLOW_SEALED ? "sealed (SNP derived key, no network)"
               : t.flow == LUKS_FLOW_KMS  ? "kms (released after attestation)"
                                          : "sealed+kms (sealed first, then the KMS; re-seals)");
    crypt_logf(cd, CRYPT_LOG_NORMAL, "\tvolume:     %s\n", t.volume);
    if (luks_flow_has_sealed(t.flow)) {
        for (size_t i = 0; i < sizeof bind_names / sizeof bind_names[0]; i++)
            if (t.guest_field_select & bind_names[i].bit) {
                if (bind[0])
                    strcat(bind, ",");
                strcat(bind, bind_names[i].name);
            }
        crypt_logf(cd, CRYPT_LOG_NORMAL, "\troot key:   %s\n",
                   t.root_key_select == SNP_KEY_ROOT_VMRK ? "vmrk" : "vcek");
        crypt_logf(cd, CRYPT_LOG_NORMAL, "\tbound to:   %s\n", bind[0] ? bind : "(nothing)");
        crypt_logf(cd, CRYPT_LOG_NORMAL, "\tguest SVN:  %" PRIu32 "\n", t.guest_svn);
        crypt_logf(cd, CRYPT_LOG_NORMAL, "\tTCB:        %016" PRIx64 "\n", t.tcb_version);
        crypt_logf(cd, CRYPT_LOG_NORMAL,
                   "\tpolicy:     debug %s, min TCB %016" PRIx64 ", min guest SVN %" PRIu32 "\n",
                   t.policy.allow_debug ? "allowed" : "refused", t.policy.min_tcb,
                   t.policy.min_guest_svn);
        crypt_logf(cd, CRYPT_LOG_NORMAL, "\tsealed key: %u bytes (not shown)\n",
                   (unsigned)LUKS_BLOB_SIZE);
    }
    if (luks_flow_has_kms(t.flow)) {
        crypt_logf(cd, CRYPT_LOG_NORMAL, "\tkms:        %s\n", t.kms_url ? t.kms_url : "-");
        crypt_logf(cd, CRYPT_LOG_NORMAL, "\tattestd:    %s\n", t.attestd_url ? t.attestd_url : "-");
        crypt_logf(cd, CRYPT_LOG_NORMAL, "\tsecret:     %s\n", t.secret_id ? t.secret_id : "-");
    }
    luks_token_done(&t);
}

_public_ const char *cryptsetup_token_version(void) {
    return NT_VERSION;
}
