/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vhsm-token-test: tokens, PINs and logins through libvhsm against a real vhsmd (started by
 * vhsm-token.sh with --pin-max-tries 3). Each step checks its own expectations and exits 1 with
 * a message naming the failed check.
 *
 *   setup SOCK        as a fresh uid: init token, SO login, InitPIN, key "k" (P-256) shared with
 *                     uid 4343, logout; then the login rule, tickets, logout of all holders,
 *                     malformed and oversized fields, and two wrong user PINs (count low, final
 *                     try), all over the wire
 *   lock SOCK         the third wrong PIN locks; the right one is then refused (-ENOLCK)
 *   locked SOCK       after a restart: still locked (flags and -ENOLCK), the SO unlocks with
 *                     InitPIN, the new PIN logs in and signs
 *   other SOCK        as another uid: its own token is uninitialised; the shared key works by its
 *                     ACL alone (its token has no user PIN); no token operation reaches uid 4242's
 *   objects SOCK      as uid 4545 (no token PIN): objects with flags and attributes, usage flags
 *                     enforced, one-way rules, caps and reserved types on the wire
 *   objects2 SOCK     after a restart: the attributes and flags are still there
 *   revision SOCK     the daemon speaks revision 2
 *   kdf-time SOCK     as a fresh uid on a daemon with the default KDF: prints one login's ms
 *   mech, so-lock, so-reset: vhsm-token-par.c
 */
#include <endian.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#include "proto.h"
#include "vhsm-client.h"

static int fails;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "FAIL line %d: ", __LINE__);                                           \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, " (last error: %s)\n", vhsm_last_error());                             \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)
#define EXPECT(call, want)                                                                         \
    do {                                                                                           \
        int r_ = (call);                                                                           \
        CHECK(r_ == (want), "%s = %d (%s), expected %d", #call, r_, strerror(-r_), (want));        \
    } while (0)

#define SO "so-pin-0001"
#define UPIN "user-pin-1"

static VhsmClient *conn(const char *sock) {
    VhsmClient *c = NULL;
    EXPECT(vhsm_connect(sock, &c), 0);
    return c;
}

static uint32_t flags(VhsmClient *c) {
    VhsmTokenInfo ti;
    EXPECT(vhsm_token_info(c, &ti), 0);
    return ti.flags;
}

static int sign(VhsmClient *c, const char *name) {
    uint8_t *sig = NULL;
    size_t n;
    int r = vhsm_sign(c, name, "ecdsa", 0, "msg", 3, &sig, &n);
    free(sig);
    return r;
}

/* A raw request with the given TLVs: returns the mapped errno. */
static int raw(VhsmClient *c, uint16_t op, const uint8_t *body, size_t len) {
    uint8_t *out = NULL;
    size_t out_len = 0;
    int r = vhsm_call_raw(c, op, body, len, &out, &out_len);
    vhsm_free_secret(out, out_len);
    return r;
}

static size_t tlv(uint8_t *p, uint16_t tag, const void *v, uint32_t len) {
    p[0] = (uint8_t)(tag >> 8);
    p[1] = (uint8_t)tag;
    p[2] = (uint8_t)(len >> 24);
    p[3] = (uint8_t)(len >> 16);
    p[4] = (uint8_t)(len >> 8);
    p[5] = (uint8_t)len;
    memcpy(p + 6, v, len);
    return 6 + len;
}

static void step_setup(const char *sock) {
    VhsmClient *a = conn(sock), *b = conn(sock);
    VhsmTokenInfo ti;
    uint8_t ticket[VHSM_TICKET_SIZE];
    uint32_t use[] = {4242, 4343}, adm[] = {4242};
    VhsmAcl acl = {.use_uids = use, .n_use_uids = 2, .admin_uids = adm, .n_admin_uids = 1};
    VhsmKeySpec spec = {.type = "p256", .acl = &acl};
    uint8_t body[512];
    size_t n;

    EXPECT(vhsm_token_info(a, &ti), 0);
    CHECK(ti.flags == 0 && ti.uid == 4242 && ti.max_tries == 3 && ti.login == VHSM_USER_NONE,
          "fresh token info: flags %u uid %u max %u", ti.flags, ti.uid, ti.max_tries);
    EXPECT(vhsm_login(a, VHSM_USER_USER, UPIN, strlen(UPIN), NULL), -ENOMEDIUM);
    EXPECT(vhsm_token_init(a, SO, strlen(SO), "tok", 3), 0);
    EXPECT(vhsm_login(a, VHSM_USER_USER, UPIN, strlen(UPIN), NULL), -ENODATA);
    EXPECT(vhsm_init_pin(a, UPIN, strlen(UPIN)), -EBADR);
    EXPECT(vhsm_login(a, VHSM_USER_SO, "bad-so", 6, NULL), -EBADE);
    EXPECT(vhsm_login(a, VHSM_USER_SO, SO, strlen(SO), NULL), 0);
    EXPECT(vhsm_login(a, VHSM_USER_USER, UPIN, strlen(UPIN), NULL), -EISCONN);
    EXPECT(vhsm_init_pin(a, UPIN, strlen(UPIN)), 0);
    EXPECT(vhsm_token_info(a, &ti), 0);
    CHECK(ti.so_failures == 0 && ti.login == VHSM_USER_SO, "SO login resets its count");
    EXPECT(vhsm_key_create(a, "k", &spec), -EBADR); /* a token with a user PIN: log in first */
    EXPECT(vhsm_logout(a), 0);
    EXPECT(vhsm_logout(a), -EBADR);
    CHECK(flags(a) == (VHSM_TOKEN_INITIALIZED | VHSM_TOKEN_USER_PIN_INITIALIZED |
                       VHSM_TOKEN_LOGIN_REQUIRED),
          "flags after InitPIN: %u", flags(a));

    /* Login, a second connection attached by ticket, logout of both. */
    EXPECT(vhsm_login(a, VHSM_USER_USER, UPIN, strlen(UPIN), ticket), 0);
    EXPECT(vhsm_key_create(a, "k", &spec), 0);
    EXPECT(sign(a, "k"), 0);
    EXPECT(sign(b, "k"), -EBADR);
    CHECK(strstr(vhsm_last_error(), "not logged in"), "message: %s", vhsm_last_error());
    EXPECT(vhsm_login_ticket(b, ticket), 0);
    EXPECT(sign(b, "k"), 0);
    EXPECT(vhsm_logout(b), 0);
    EXPECT(sign(a, "k"), -EBADR);
    EXPECT(vhsm_login_ticket(b, ticket), -EBADE);
    /* Public things need no login. */
    {
        char *pem = NULL;
        EXPECT(vhsm_pubkey(a, "k", "pem", 0, &pem), 0);
        free(pem);
    }

    /* Malformed and oversized fields: refused, nothing counted. */
    {
        uint32_t user_be = htobe32(1);
        char big[65];
        memset(big, 'x', sizeof big);
        n = tlv(body, VHSM_TAG_USER_TYPE, &user_be, 4);
        EXPECT(raw(a, VHSM_OP_LOGIN, body, n), -EBADMSG); /* no PIN */
        n += tlv(body + n, VHSM_TAG_PIN, big, 65);
        EXPECT(raw(a, VHSM_OP_LOGIN, body, n), -ERANGE);
        n = tlv(body, VHSM_TAG_USER_TYPE, &user_be, 2);
        n += tlv(body + n, VHSM_TAG_PIN, "1234", 4);
        EXPECT(raw(a, VHSM_OP_LOGIN, body, n), -EBADMSG); /* a u32 of 2 bytes */
        user_be = htobe32(7);
        n = tlv(body, VHSM_TAG_USER_TYPE, &user_be, 4);
        n += tlv(body + n, VHSM_TAG_PIN, "1234", 4);
        EXPECT(raw(a, VHSM_OP_LOGIN, body, n), -EINVAL); /* no such user type */
        n = tlv(body, VHSM_TAG_TICKET, ticket, 31);
        EXPECT(raw(a, VHSM_OP_LOGIN_TICKET, body, n), -EBADMSG);
        n = tlv(body, VHSM_TAG_PIN, SO, strlen(SO));
        n += tlv(body + n, VHSM_TAG_TOKEN_LABEL, big, 33);
        EXPECT(raw(a, VHSM_OP_TOKEN_INIT, body, n), -EINVAL);
        n = tlv(body, VHSM_TAG_PIN, UPIN, strlen(UPIN));
        EXPECT(raw(a, VHSM_OP_SET_PIN, body, n), -EBADMSG); /* no new PIN */
        /* A TLV whose length runs past the body: bad request, connection kept. */
        n = tlv(body, VHSM_TAG_PIN, "12345", 5);
        body[5] = 50;
        EXPECT(raw(a, VHSM_OP_LOGIN, body, n), -EBADMSG);
        EXPECT(vhsm_ping(a), 0);
        EXPECT(vhsm_token_info(a, &ti), 0);
        CHECK(ti.user_failures == 0 && ti.so_failures == 0, "malformed requests were counted");
    }

    /* Two wrong user PINs: count low, then final try. */
    EXPECT(vhsm_login(a, VHSM_USER_USER, "wrong-1", 7, NULL), -EBADE);
    CHECK((flags(a) & (VHSM_TOKEN_USER_PIN_COUNT_LOW | VHSM_TOKEN_USER_PIN_FINAL_TRY)) ==
              VHSM_TOKEN_USER_PIN_COUNT_LOW,
          "count low");
    EXPECT(vhsm_login(a, VHSM_USER_USER, "wrong-2", 7, NULL), -EBADE);
    CHECK((flags(a) & (VHSM_TOKEN_USER_PIN_COUNT_LOW | VHSM_TOKEN_USER_PIN_FINAL_TRY)) ==
              (VHSM_TOKEN_USER_PIN_COUNT_LOW | VHSM_TOKEN_USER_PIN_FINAL_TRY),
          "final try");
    vhsm_disconnect(a);
    vhsm_disconnect(b);
}

static void step_lock(const char *sock) {
    VhsmClient *a = conn(sock);
    VhsmTokenInfo ti;
    /* A new connection does not reset the count. */
    EXPECT(vhsm_token_info(a, &ti), 0);
    CHECK(ti.user_failures == 2, "failures across connections: %u", ti.user_failures);
    EXPECT(vhsm_login(a, VHSM_USER_USER, "wrong-3", 7, NULL), -EBADE);
    CHECK(flags(a) & VHSM_TOKEN_USER_PIN_LOCKED, "locked");
    EXPECT(vhsm_login(a, VHSM_USER_USER, UPIN, strlen(UPIN), NULL), -ENOLCK);
    vhsm_disconnect(a);
}

static void step_locked(const char *sock) {
    VhsmClient *a = conn(sock);
    EXPECT(vhsm_login(a, VHSM_USER_USER, UPIN, strlen(UPIN), NULL), -ENOLCK);
    CHECK(flags(a) & VHSM_TOKEN_USER_PIN_LOCKED, "still locked after a restart");
    EXPECT(vhsm_login(a, VHSM_USER_SO, SO, strlen(SO), NULL), 0);
    EXPECT(vhsm_init_pin(a, "new-pin", 7), 0);
    EXPECT(vhsm_logout(a), 0);
    CHECK(!(flags(a) & VHSM_TOKEN_USER_PIN_LOCKED), "InitPIN unlocks");
    EXPECT(vhsm_login(a, VHSM_USER_USER, "new-pin", 7, NULL), 0);
    EXPECT(sign(a, "k"), 0);
    EXPECT(vhsm_logout(a), 0);
    vhsm_disconnect(a);
}

static void step_other(const char *sock) {
    VhsmClient *c = conn(sock);
    VhsmTokenInfo ti;
    EXPECT(vhsm_token_info(c, &ti), 0);
    CHECK(ti.uid == 4343 && ti.flags == 0, "another uid's own token: uid %u flags %u", ti.uid,
          ti.flags);
    EXPECT(vhsm_login(c, VHSM_USER_SO, SO, strlen(SO), NULL), -ENOMEDIUM);
    EXPECT(vhsm_init_pin(c, "1234", 4), -EBADR);
    /* uid 4242's key is shared with 4343 by its ACL: usable without a login here. */
    EXPECT(sign(c, "4242/k"), 0);
    vhsm_disconnect(c);
}

static const VhsmObject *find(const VhsmObject *o, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(o[i].name, name))
            return &o[i];
    return NULL;
}

static const VhsmAttr *attr(const VhsmObject *o, uint32_t type) {
    for (size_t i = 0; i < o->n_attrs; i++)
        if (o->attrs[i].type == type)
            return &o->attrs[i];
    return NULL;
}

static void step_objects(const char *sock) {
    VhsmClient *c = conn(sock);
    const VhsmAttr attrs[] = {{3 /* CKA_LABEL */, "web key", 7},
                              {0x102 /* CKA_ID */, "\x01\x02", 2}};
    VhsmObjectSpec spec = {.type = "p256",
                           .flags = VHSM_OBJ_SIGN | VHSM_OBJ_SENSITIVE | VHSM_OBJ_PRIVATE |
                                    VHSM_OBJ_MODIFIABLE | VHSM_OBJ_DESTROYABLE,
                           .attrs = attrs,
                           .n_attrs = 2};
    VhsmObject o, *all = NULL;
    size_t n;
    uint8_t body[2048];
    size_t bl;

    EXPECT(vhsm_object_create(c, "web", &spec, NULL, 0), 0);
    EXPECT(vhsm_object_get(c, "web", &o), 0);
    CHECK(!strcmp(o.name, "4545/web") && !strcmp(o.type, "ec-p256") && o.bits == 256,
          "object: %s %s %u", o.name, o.type, o.bits);
    CHECK(o.flags == (spec.flags | VHSM_OBJ_LOCAL | VHSM_OBJ_ALWAYS_SENSITIVE |
                      VHSM_OBJ_NEVER_EXTRACTABLE),
          "flags 0x%x", o.flags);
    CHECK(o.value_len == 91 && o.value[0] == 0x30, "SPKI DER (%zu bytes)", o.value_len);
    CHECK(o.n_attrs == 2 && attr(&o, 3) && attr(&o, 3)->len == 7 &&
              !memcmp(attr(&o, 3)->value, "web key", 7),
          "label attribute");
    vhsm_object_free(&o);
    {
        /* VERIFY is off: vhsmd refuses to verify even its own signature */
        uint8_t *sig = NULL;
        size_t sl;
        EXPECT(vhsm_sign(c, "web", "ecdsa", 0, "msg", 3, &sig, &sl), 0);
        EXPECT(vhsm_verify(c, "web", "ecdsa", 0, 0, "msg", 3, sig, sl), -EPERM);
        free(sig);
    }
    /* one-way rules */
    EXPECT(vhsm_object_set(c, "web", 0, VHSM_OBJ_SENSITIVE, NULL, 0), -EPERM);
    EXPECT(vhsm_object_set(c, "web", VHSM_OBJ_EXTRACTABLE, 0, NULL, 0), -EPERM);
    EXPECT(vhsm_object_set(c, "web", 0, VHSM_OBJ_SIGN, NULL, 0), 0);
    EXPECT(sign(c, "web"), -EPERM);
    EXPECT(vhsm_object_set(c, "web", VHSM_OBJ_SIGN, 0, &(VhsmAttr){3, "renamed", 7}, 1), 0);
    EXPECT(sign(c, "web"), 0);
    /* refusals on the wire: a reserved type (CKA_VALUE), a short ATTR, too many, oversize */
    EXPECT(vhsm_object_set(c, "web", 0, 0, &(VhsmAttr){0x11, "v", 1}, 1), -EINVAL);
    bl = tlv(body, VHSM_TAG_KEY_NAME, "web", 3);
    bl += tlv(body + bl, VHSM_TAG_ATTR, "\0\0", 2);
    EXPECT(raw(c, VHSM_OP_OBJECT_SET, body, bl), -EBADMSG);
    bl = tlv(body, VHSM_TAG_KEY_NAME, "web", 3);
    for (uint32_t i = 0; i < 33; i++) {
        uint8_t a[5] = {0x80, 0, 0, (uint8_t)i, 'x'};
        bl += tlv(body + bl, VHSM_TAG_ATTR, a, 5);
    }
    EXPECT(raw(c, VHSM_OP_OBJECT_SET, body, bl), -E2BIG);
    {
        /* one ATTR value of 1025 bytes: over the per-value cap */
        uint8_t *frame = calloc(1, 64 + 4 + 1025);
        size_t fl = tlv(frame, VHSM_TAG_KEY_NAME, "web", 3);
        uint8_t *v = calloc(1, 4 + 1025);
        v[0] = 0x80;
        fl += tlv(frame + fl, VHSM_TAG_ATTR, v, 4 + 1025);
        EXPECT(raw(c, VHSM_OP_OBJECT_SET, frame, fl), -E2BIG);
        free(v);
        free(frame);
    }
    EXPECT(vhsm_object_create(
               c, "bad", &(VhsmObjectSpec){.type = "aes256", .flags = VHSM_OBJ_LOCAL}, NULL, 0),
           -EINVAL);
    /* mechanisms with caller parameters over the wire */
    {
        VhsmObjectSpec aes = {.type = "aes256"};
        uint8_t iv[12] = {1, 2, 3}, *ct = NULL, *pt = NULL, *sig = NULL, h[32] = {9};
        size_t ctl, ptl, sl;
        VhsmParams gp = {
            .iv = iv, .iv_len = 12, .aad = (const uint8_t *)"hdr", .aad_len = 3, .tag_bits = 128};
        EXPECT(vhsm_object_create(c, "aes", &aes, NULL, 0), 0);
        EXPECT(vhsm_encrypt_ex(c, "aes", "aes-gcm", &gp, "secret data", 11, &ct, &ctl), 0);
        CHECK(ctl == 11 + 16, "GCM output ct || tag: %zu", ctl);
        EXPECT(vhsm_decrypt_ex(c, "aes", "aes-gcm", &gp, ct, ctl, &pt, &ptl), 0);
        CHECK(ptl == 11 && !memcmp(pt, "secret data", 11), "GCM round trip");
        vhsm_free_secret(pt, ptl);
        ct[0] ^= 1;
        EXPECT(vhsm_decrypt_ex(c, "aes", "aes-gcm", &gp, ct, ctl, &pt, &ptl), -EKEYREJECTED);
        free(ct);
        gp.tag_bits = 64;
        EXPECT(vhsm_encrypt_ex(c, "aes", "aes-gcm", &gp, "x", 1, &ct, &ctl), -EINVAL);
        EXPECT(vhsm_encrypt_ex(c, "aes", "aes-xts", &gp, "x", 1, &ct, &ctl), -EOPNOTSUPP);
        EXPECT(vhsm_sign_ex(c, "web", "ecdsa-raw", 0, NULL, h, 32, &sig, &sl), 0);
        CHECK(sl == 64, "r || s");
        EXPECT(vhsm_verify_ex(c, "web", "ecdsa-raw", 0, NULL, h, 32, sig, sl),
               -EPERM); /* no VERIFY */
        free(sig);
        EXPECT(vhsm_sign_ex(c, "aes", "ecdsa-raw", 0, NULL, h, 32, &sig, &sl), -EOPNOTSUPP);
    }
    /* the list shows the object with its attributes */
    EXPECT(vhsm_object_list(c, &all, &n), 0);
    {
        const VhsmObject *w = find(all, n, "4545/web");
        CHECK(w && attr(w, 3) && !memcmp(attr(w, 3)->value, "renamed", 7), "listed object");
    }
    vhsm_objects_free(all, n);
    vhsm_disconnect(c);
}

static void step_objects2(const char *sock) {
    VhsmClient *c = conn(sock);
    VhsmObject o;
    EXPECT(vhsm_object_get(c, "web", &o), 0);
    CHECK(attr(&o, 3) && attr(&o, 3)->len == 7 && !memcmp(attr(&o, 3)->value, "renamed", 7) &&
              attr(&o, 0x102) && (o.flags & VHSM_OBJ_SIGN) && !(o.flags & VHSM_OBJ_VERIFY),
          "object after restart: flags 0x%x", o.flags);
    vhsm_object_free(&o);
    vhsm_disconnect(c);
}

static void step_revision(const char *sock) {
    VhsmClient *c = conn(sock);
    uint32_t rev = 0;
    EXPECT(vhsm_revision(c, &rev), 0);
    CHECK(rev == 2, "revision %u", rev);
    vhsm_disconnect(c);
}

static void step_kdf_time(const char *sock) {
    VhsmClient *c = conn(sock);
    struct timespec t0, t1;
    EXPECT(vhsm_token_init(c, SO, strlen(SO), NULL, 0), 0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    EXPECT(vhsm_login(c, VHSM_USER_SO, SO, strlen(SO), NULL), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("%.1f\n",
           (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
    vhsm_disconnect(c);
}

/* Branch obj: data objects, certificates, lone public keys, session objects and copies over
 * the wire (uid 4646). CERT_DER: a fixed self-signed certificate made by the test script. */
static uint8_t *read_file(const char *path, size_t *ret_len) {
    FILE *f = fopen(path, "rb");
    CHECK(f, "open %s", path);
    uint8_t *b = malloc(65536);
    *ret_len = fread(b, 1, 65536, f);
    fclose(f);
    return b;
}

static void step_nonkey(const char *sock) {
    VhsmClient *c = conn(sock), *c2 = conn(sock);
    size_t cl, sl;
    uint8_t *cert = read_file(getenv("CERT_DER"), &cl), *spki = read_file(getenv("SPKI_DER"), &sl);
    VhsmObject o, *all = NULL;
    size_t n;
    const VhsmAttr lab = {3, "my cert", 7};
    VhsmObjectSpec cs = {.type = "cert", .attrs = &lab, .n_attrs = 1};
    uint32_t pubf = VHSM_OBJ_MODIFIABLE | VHSM_OBJ_DESTROYABLE | VHSM_OBJ_COPYABLE;

    /* a certificate: garbage and a truncated one refused (nothing stored), then the real one */
    EXPECT(vhsm_object_create(c, "cert", &cs, "not a certificate", 17), -EBADMSG);
    CHECK(strstr(vhsm_last_error(), "X.509"), "message names the rule: %s", vhsm_last_error());
    EXPECT(vhsm_object_create(c, "cert", &cs, cert, cl - 1), -EBADMSG);
    EXPECT(vhsm_object_get(c, "cert", &o), -ENOKEY);
    EXPECT(vhsm_object_create(c, "cert", &cs, NULL, 0), -EBADMSG);
    EXPECT(vhsm_object_create(
               c, "cert", &(VhsmObjectSpec){.type = "cert", .flags = VHSM_OBJ_TRUSTED}, cert, cl),
           -EPERM); /* trusted: the SO only */
    EXPECT(vhsm_object_create(c, "cert", &cs, cert, cl), 0);
    EXPECT(vhsm_object_get(c, "cert", &o), 0);
    CHECK(!strcmp(o.type, "cert") && o.value_len == cl && !memcmp(o.value, cert, cl) &&
              attr(&o, 3) && o.flags == pubf,
          "cert object: %s %zu flags 0x%x", o.type, o.value_len, o.flags);
    vhsm_object_free(&o);
    /* no operation with it */
    EXPECT(sign(c, "cert"), -EOPNOTSUPP);
    /* data: public and private; over the cap */
    EXPECT(vhsm_object_create(c, "pub-data", &(VhsmObjectSpec){.type = "data"}, "public", 6), 0);
    EXPECT(vhsm_object_create(c, "priv-data",
                              &(VhsmObjectSpec){.type = "data", .flags = pubf | VHSM_OBJ_PRIVATE},
                              "private", 7),
           0);
    {
        uint8_t *big = calloc(1, 4097);
        EXPECT(vhsm_object_create(c, "big", &(VhsmObjectSpec){.type = "data"}, big, 4097), -E2BIG);
        free(big);
    }
    /* a lone public key */
    EXPECT(vhsm_object_create(c, "pub", &(VhsmObjectSpec){.type = "public"}, spki, sl), 0);
    EXPECT(vhsm_object_create(c, "pub2", &(VhsmObjectSpec){.type = "public"}, cert, cl), -EBADMSG);
    EXPECT(vhsm_object_get(c, "pub", &o), 0);
    CHECK(o.value_len == sl && !memcmp(o.value, spki, sl) && o.bits == 256, "public key object");
    vhsm_object_free(&o);
    /* a session object: this connection's alone */
    EXPECT(vhsm_object_create(c, "sess",
                              &(VhsmObjectSpec){.type = "data", .flags = pubf | VHSM_OBJ_SESSION},
                              "temp", 4),
           0);
    EXPECT(vhsm_object_get(c, "sess", &o), 0);
    CHECK(o.flags & VHSM_OBJ_SESSION, "session flag");
    vhsm_object_free(&o);
    EXPECT(vhsm_object_get(c2, "sess", &o), -ENOKEY);
    EXPECT(vhsm_key_delete(c2, "sess"), -ENOKEY);
    EXPECT(vhsm_object_list(c2, &all, &n), 0);
    CHECK(!find(all, n, "4646/sess") && find(all, n, "4646/cert"), "other connection's list");
    vhsm_objects_free(all, n);
    /* a session copy of the certificate; a token copy of the session object */
    EXPECT(vhsm_object_copy(c, "cert", "cert-copy", VHSM_OBJ_SESSION, 0, NULL, 0), 0);
    EXPECT(vhsm_object_copy(c, "sess", "sess-kept", 0, VHSM_OBJ_SESSION, NULL, 0), 0);
    EXPECT(vhsm_object_copy(c, "cert", "x", VHSM_OBJ_TRUSTED, 0, NULL, 0), -EPERM);
    EXPECT(vhsm_object_get(c2, "sess-kept", &o), 0);
    CHECK(o.value_len == 4 && !memcmp(o.value, "temp", 4), "token copy");
    vhsm_object_free(&o);
    /* the connection closes: its session objects are gone (their names free again) */
    vhsm_disconnect(c);
    {
        /* vhsmd notices the hang-up asynchronously: wait (bounded) until the name is free */
        int r = -EEXIST;
        for (int i = 0; i < 300 && r == -EEXIST; i++) {
            r = vhsm_object_create(c2, "sess", &(VhsmObjectSpec){.type = "data"}, "token now", 9);
            if (r == -EEXIST)
                usleep(10000);
        }
        EXPECT(r, 0);
    }
    EXPECT(vhsm_object_create(c2, "cert-copy", &(VhsmObjectSpec){.type = "data"}, "x", 1), 0);
    free(cert);
    free(spki);
    vhsm_disconnect(c2);
}

/* After a restart: the token objects kept their values and attributes. */
static void step_nonkey2(const char *sock) {
    VhsmClient *c = conn(sock);
    size_t cl;
    uint8_t *cert = read_file(getenv("CERT_DER"), &cl);
    VhsmObject o;
    EXPECT(vhsm_object_get(c, "cert", &o), 0);
    CHECK(o.value_len == cl && !memcmp(o.value, cert, cl) && attr(&o, 3), "cert after restart");
    vhsm_object_free(&o);
    EXPECT(vhsm_object_get(c, "priv-data", &o), 0);
    CHECK(o.value_len == 7 && (o.flags & VHSM_OBJ_PRIVATE), "private data after restart");
    vhsm_object_free(&o);
    EXPECT(vhsm_object_get(c, "sess-kept", &o), 0);
    CHECK(!(o.flags & VHSM_OBJ_SESSION), "token copy after restart");
    vhsm_object_free(&o);
    EXPECT(vhsm_key_delete(c, "cert"), 0);
    EXPECT(vhsm_object_get(c, "cert", &o), -ENOKEY);
    free(cert);
    vhsm_disconnect(c);
}

/* Another uid sees none of uid 4646's objects. */
static void step_nonkey_other(const char *sock) {
    VhsmClient *c = conn(sock);
    VhsmObject o, *all = NULL;
    size_t n;
    EXPECT(vhsm_object_get(c, "4646/pub-data", &o), -EPERM);
    EXPECT(vhsm_object_list(c, &all, &n), 0);
    for (size_t i = 0; i < n; i++)
        CHECK(strncmp(all[i].name, "4646/", 5) != 0, "uid 4646's object listed: %s", all[i].name);
    vhsm_objects_free(all, n);
    vhsm_disconnect(c);
}

/* With vhsmd --quota-bytes 96K: data objects are charged to their owner's quota (4096-byte
 * values: 16 KiB each plus their name), the next one over it is refused, a delete frees room. */
static void step_nonkey_quota(const char *sock) {
    VhsmClient *c = conn(sock);
    uint8_t *v = calloc(1, 4096);
    char name[16];
    int r = 0, made = 0;
    for (int i = 0; i < 32 && r == 0; i++) {
        snprintf(name, sizeof name, "q%d", i);
        r = vhsm_object_create(c, name, &(VhsmObjectSpec){.type = "data"}, v, 4096);
        made += r == 0;
    }
    CHECK(r == -EDQUOT && made >= 3 && made <= 5, "quota: %d objects, then %d", made, r);
    EXPECT(vhsm_object_create(c, "small", &(VhsmObjectSpec){.type = "data"}, "x", 1), -EDQUOT);
    EXPECT(vhsm_key_delete(c, "q0"), 0);
    EXPECT(vhsm_object_create(c, "small", &(VhsmObjectSpec){.type = "data"}, "x", 1), 0);
    /* a session object is charged too */
    EXPECT(vhsm_object_create(c, "s", &(VhsmObjectSpec){.type = "data", .flags = VHSM_OBJ_SESSION},
                              v, 4096),
           -EDQUOT);
    free(v);
    vhsm_disconnect(c);
}

#include "vhsm-token-par.c"

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: vhsm-token-test setup|lock|locked|other|revision|kdf-time SOCK\n");
        return 2;
    }
    if (!strcmp(argv[1], "setup"))
        step_setup(argv[2]);
    else if (!strcmp(argv[1], "lock"))
        step_lock(argv[2]);
    else if (!strcmp(argv[1], "locked"))
        step_locked(argv[2]);
    else if (!strcmp(argv[1], "other"))
        step_other(argv[2]);
    else if (!strcmp(argv[1], "objects"))
        step_objects(argv[2]);
    else if (!strcmp(argv[1], "objects2"))
        step_objects2(argv[2]);
    else if (!strcmp(argv[1], "nonkey"))
        step_nonkey(argv[2]);
    else if (!strcmp(argv[1], "nonkey2"))
        step_nonkey2(argv[2]);
    else if (!strcmp(argv[1], "nonkey-quota"))
        step_nonkey_quota(argv[2]);
    else if (!strcmp(argv[1], "nonkey-other"))
        step_nonkey_other(argv[2]);
    else if (!strcmp(argv[1], "revision"))
        step_revision(argv[2]);
    else if (!strcmp(argv[1], "kdf-time"))
        step_kdf_time(argv[2]);
    else if (!strcmp(argv[1], "mech"))
        step_mech(argv[2]);
    else if (!strcmp(argv[1], "so-lock"))
        step_so_lock(argv[2]);
    else if (!strcmp(argv[1], "so-reset"))
        step_so_reset(argv[2]);
    else
        return 2;
    return fails ? 1 : 0;
}
