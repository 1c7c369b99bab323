/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The sealed-local flow (docs/luks.md): the volume key is sealed with AES-256-GCM under
 *   HKDF-SHA256(ikm = SNP derived key (MSG_KEY_REQ: root key, field selection, VMPL 0, guest SVN
 *               and TCB floors from the token), salt = "", info = "nitride-luks-seal-v1")
 * (the same derivation as vhsmd's keystore, src/vhsm/keystore.c, with its own HKDF info so the
 * two never share a key). The AAD binds the blob to the volume's LUKS UUID, the keyslot, the
 * derivation parameters and the local policy: a blob copied to another volume, or a token whose
 * policy or derivation was edited, does not open.
 * Before any key is derived, the VM's own report must pass the token's local policy.
 */
#include <errno.h>
#include <inttypes.h>
#include <openssl/core_names.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/bytes.h"
#include "core/log.h"
#include "core/openssl-util.h"
#include "luks/luks-private.h"
#include "luks/luks.h"
#include "snp/report.h"

#define SEAL_INFO "nitride-luks-seal-v1"
#define AAD_MAGIC "nitride-luks-seal-v1"
#define AAD_SIZE (sizeof(AAD_MAGIC) + 37 + 4 + 4 + 8 + 4 + 8 + 1 + 8 + 4)

void luks_refuse(LuksRefusal *r, const char *check, const char *fmt, ...) {
    va_list ap;
    if (!r)
        return;
    r->check = check;
    va_start(ap, fmt);
    vsnprintf(r->detail, sizeof r->detail, fmt, ap);
    va_end(ap);
}

static void build_aad(const LuksToken *t, const char *volume, uint8_t aad[AAD_SIZE]) {
    uint8_t *p = aad;
    memset(aad, 0, AAD_SIZE);
    memcpy(p, AAD_MAGIC, sizeof(AAD_MAGIC));
    p += sizeof(AAD_MAGIC);
    strncpy((char *)p, volume, 36);
    p += 37;
    bytes_put_be32(p, (uint32_t)t->keyslot), p += 4;
    bytes_put_be32(p, t->root_key_select), p += 4;
    bytes_put_be64(p, t->guest_field_select), p += 8;
    bytes_put_be32(p, t->guest_svn), p += 4;
    bytes_put_be64(p, t->tcb_version), p += 8;
    *p++ = t->policy.allow_debug ? 1 : 0;
    bytes_put_be64(p, t->policy.min_tcb), p += 8;
    bytes_put_be32(p, t->policy.min_guest_svn);
}

static int sealing_key(SnpProvider *p, const LuksToken *t, Secret **ret) {
    SnpDerivedKeyRequest req = {
        .root_key_select = t->root_key_select,
        .guest_field_select = t->guest_field_select,
        .vmpl = 0,
        .guest_svn = t->guest_svn,
        .tcb_version = t->tcb_version,
    };
    return snp_provider_sealing_key(p, &req, SEAL_INFO, ret);
}

/* enc: in = key (32 bytes) -> blob; dec: blob -> out key. */
static int gcm(bool enc, const Secret *key, const uint8_t *aad, const uint8_t *nonce,
               const uint8_t *in, uint8_t *out, uint8_t *tag) {
    return nt_aes256gcm(enc, key, nonce, LUKS_NONCE_SIZE, aad, AAD_SIZE, in, LUKS_KEY_SIZE, out,
                        tag, LUKS_TAG_SIZE, "LUKS seal");
}

/* Component-wise a >= b for the product, or byte-wise when the product is unknown. */
static bool tcb_ge(uint64_t a, uint64_t b, const SnpReport *rep) {
    SnpProduct prod = snp_product_from_cpuid(rep->cpuid_fam_id, rep->cpuid_mod_id);
    SnpTcb ta, tb;
    if (prod != _SNP_PRODUCT_INVALID && snp_tcb_decode(a, prod, &ta) == 0 &&
        snp_tcb_decode(b, prod, &tb) == 0)
        return snp_tcb_ge(&ta, &tb, prod);
    for (unsigned i = 0; i < 64; i += 8)
        if (((a >> i) & 0xff) < ((b >> i) & 0xff))
            return false;
    return true;
}

static int own_report(SnpProvider *p, SnpReport *ret) {
    uint8_t rd[64], *raw = NULL;
    size_t len = 0;
    int r;
    if (RAND_bytes(rd, sizeof rd) != 1)
        return nt_openssl_error(-EIO, "RAND_bytes");
    if ((r = snp_provider_get_report(p, rd, 0, &raw, &len)) < 0)
        return r;
    r = snp_report_parse(raw, len, ret, NULL);
    free(raw);
    if (r < 0)
        return r;
    if (memcmp(ret->report_data, rd, sizeof rd) != 0)
        return -EPROTO;
    return 0;
}

static int check_policy(const SnpReport *rep, const LuksLocalPolicy *pol, LuksRefusal *refusal) {
    if (!pol->allow_debug && (rep->policy & SNP_POLICY_DEBUG)) {
        luks_refuse(refusal, "debug", "the guest policy allows debugging (policy 0x%" PRIx64 ")",
                    rep->policy);
        return -EPERM;
    }
    if (!tcb_ge(rep->reported_tcb, pol->min_tcb, rep)) {
        luks_refuse(refusal, "tcb",
                    "reported TCB 0x%016" PRIx64 " is below the minimum 0x%016" PRIx64,
                    rep->reported_tcb, pol->min_tcb);
        return -EPERM;
    }
    if (rep->guest_svn < pol->min_guest_svn) {
        luks_refuse(refusal, "guest_svn", "guest SVN %" PRIu32 " is below the minimum %" PRIu32,
                    rep->guest_svn, pol->min_guest_svn);
        return -EPERM;
    }
    return 0;
}

int luks_seal(SnpProvider *p, uint64_t gfs, bool allow_debug, const Secret *key, LuksToken *t,
              LuksRefusal *refusal) {
    _cleanup_(secret_freep) Secret *sk = NULL;
    uint8_t aad[AAD_SIZE];
    SnpReport rep;
    int r;

    if (!p || !key || !t || secret_size(key) != LUKS_KEY_SIZE || gfs == 0 ||
        (gfs & ~(uint64_t)0x3f))
        return -EINVAL;
    if ((r = own_report(p, &rep)) < 0)
        return r;
    /* A token with a remote slot keeps it: the sealed slot becomes its local cache. */
    t->flow = luks_flow_has_kms(t->flow) ? LUKS_FLOW_SEALED_KMS : LUKS_FLOW_SEALED;
    t->root_key_select = SNP_KEY_ROOT_VCEK;
    t->guest_field_select = gfs;
    t->guest_svn = rep.guest_svn;
    t->tcb_version = rep.reported_tcb;
    t->policy = (LuksLocalPolicy){
        .allow_debug = allow_debug,
        .min_tcb = rep.reported_tcb,
        .min_guest_svn = rep.guest_svn,
    };
    if ((r = check_policy(&rep, &t->policy, refusal)) < 0)
        return r;
    if ((r = sealing_key(p, t, &sk)) < 0)
        return r;
    if (RAND_bytes(t->blob, LUKS_NONCE_SIZE) != 1)
        return nt_openssl_error(-EIO, "RAND_bytes");
    build_aad(t, t->volume, aad);
    return gcm(true, sk, aad, t->blob, secret_const_data(key), t->blob + LUKS_NONCE_SIZE,
               t->blob + LUKS_NONCE_SIZE + LUKS_KEY_SIZE);
}

int luks_unseal(SnpProvider *p, const LuksToken *t, const char *volume, Secret **ret_key,
                LuksRefusal *refusal) {
    _cleanup_(secret_freep) Secret *sk = NULL, *key = NULL;
    uint8_t aad[AAD_SIZE], tag[LUKS_TAG_SIZE];
    SnpReport rep;
    int r;

    if (!p || !t || !volume || !ret_key || !luks_flow_has_sealed(t->flow))
        return -EINVAL;
    if ((r = own_report(p, &rep)) < 0)
        return r;
    if ((r = check_policy(&rep, &t->policy, refusal)) < 0)
        return r;
    r = sealing_key(p, t, &sk);
    if (r == -EINVAL || r == -EPERM || r == -ERANGE || r == -EOVERFLOW) {
        /* The firmware refused the token's request: a higher SVN or TCB than this VM has. */
        luks_refuse(refusal, "derivation", "the firmware refused the token's key request (%s)",
                    strerror(-r));
        return -EKEYREJECTED;
    }
    if (r < 0)
        return r;
    if ((r = secret_new(LUKS_KEY_SIZE, &key)) < 0)
        return r;
    build_aad(t, volume, aad);
    memcpy(tag, t->blob + LUKS_NONCE_SIZE + LUKS_KEY_SIZE, LUKS_TAG_SIZE);
    r = gcm(false, sk, aad, t->blob, t->blob + LUKS_NONCE_SIZE, secret_data(key), tag);
    if (r == -EKEYREJECTED)
        luks_refuse(refusal, "seal",
                    "the sealed key does not open in this VM state for this volume (another "
                    "measurement or bound field, another volume, or a modified token)");
    if (r < 0)
        return r;
    *ret_key = TAKE_PTR(key);
    return 0;
}
