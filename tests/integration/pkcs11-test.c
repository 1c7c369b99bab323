/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmocka tests of libvhsm-pkcs11.so, loaded with dlopen() and driven through its function
 * lists only, against a real vhsmd this test starts (and restarts). Signatures are checked
 * with plain OpenSSL against the public key the module exports.
 *
 * Environment (set by pkcs11.sh): P11T_MODULE (the .so), P11T_VHSMD (the daemon), P11T_DIR (a
 * temp dir holding sim/, a simulated SNP chip). The socket is P11T_DIR/vhsm.sock.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <p11-kit/pkcs11.h>

#include "p11.h"

static void *module;
#define P11H_VHSMD_ARGS "--pin-max-tries", "4",
#include "p11-harness.h"

/* ---- helpers -------------------------------------------------------------------------------- */

static CK_RV init_default(void) {
    CK_C_INITIALIZE_ARGS a = {.flags = CKF_OS_LOCKING_OK};
    return F->C_Initialize(&a);
}

#define SO_PIN "so-secret-1"
#define USER_PIN "user-pin-1"

/* A read-write session, logged in as the user when the token has a user PIN (the token was
 * provisioned by test_token_and_pins). */
static CK_SESSION_HANDLE open_rw(void) {
    CK_SESSION_HANDLE h = 0;
    assert_int_equal(F->C_OpenSession(0, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &h),
                     CKR_OK);
    CK_TOKEN_INFO ti;
    assert_int_equal(F->C_GetTokenInfo(0, &ti), CKR_OK);
    if (ti.flags & CKF_LOGIN_REQUIRED) {
        CK_RV rv = F->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)USER_PIN, strlen(USER_PIN));
        assert_true(rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN);
    }
    return h;
}

static CK_FLAGS token_flags(void) {
    CK_TOKEN_INFO ti;
    assert_int_equal(F->C_GetTokenInfo(0, &ti), CKR_OK);
    return ti.flags;
}

static const uint8_t oid_p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
static const uint8_t oid_ed25519[] = {0x06, 0x03, 0x2b, 0x65, 0x70};

static CK_BBOOL bool_attr(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type);

static void gen_pair(CK_SESSION_HANDLE s, CK_MECHANISM_TYPE mech, const char *label,
                     CK_OBJECT_HANDLE *pub, CK_OBJECT_HANDLE *priv) {
    CK_MECHANISM m = {mech, NULL, 0};
    CK_BBOOL yes = CK_TRUE;
    CK_ULONG bits = 2048;
    CK_ATTRIBUTE pt[3] = {{CKA_TOKEN, &yes, sizeof(yes)},
                          {CKA_LABEL, (void *)label, strlen(label)}};
    CK_ULONG npt = 2;
    if (mech == CKM_EC_KEY_PAIR_GEN)
        pt[npt++] = (CK_ATTRIBUTE){CKA_EC_PARAMS, (void *)oid_p256, sizeof(oid_p256)};
    else if (mech == CKM_EC_EDWARDS_KEY_PAIR_GEN)
        pt[npt++] = (CK_ATTRIBUTE){CKA_EC_PARAMS, (void *)oid_ed25519, sizeof(oid_ed25519)};
    else
        pt[npt++] = (CK_ATTRIBUTE){CKA_MODULUS_BITS, &bits, sizeof(bits)};
    CK_ATTRIBUTE vt[] = {{CKA_TOKEN, &yes, sizeof(yes)}, {CKA_SIGN, &yes, sizeof(yes)}};
    assert_int_equal(F->C_GenerateKeyPair(s, &m, pt, npt, vt, 2, pub, priv), CKR_OK);
}

static CK_OBJECT_HANDLE gen_secret(CK_SESSION_HANDLE s, CK_MECHANISM_TYPE mech, CK_ULONG len) {
    CK_MECHANISM m = {mech, NULL, 0};
    CK_OBJECT_HANDLE h = 0;
    CK_ATTRIBUTE t[] = {{CKA_VALUE_LEN, &len, sizeof(len)}};
    assert_int_equal(F->C_GenerateKey(s, &m, t, 1, &h), CKR_OK);
    return h;
}

static EVP_PKEY *pub_of(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h) {
    uint8_t buf[2048];
    CK_ATTRIBUTE a = {CKA_PUBLIC_KEY_INFO, buf, sizeof(buf)};
    assert_int_equal(F->C_GetAttributeValue(s, h, &a, 1), CKR_OK);
    const uint8_t *p = buf;
    EVP_PKEY *k = d2i_PUBKEY(NULL, &p, (long)a.ulValueLen);
    assert_non_null(k);
    return k;
}

/* ECDSA r||s checked by OpenSSL over SHA-256(data). */
static void check_ecdsa(EVP_PKEY *k, const uint8_t *data, size_t n, const uint8_t *sig,
                        size_t siglen) {
    assert_int_equal(siglen, 64);
    ECDSA_SIG *es = ECDSA_SIG_new();
    ECDSA_SIG_set0(es, BN_bin2bn(sig, 32, NULL), BN_bin2bn(sig + 32, 32, NULL));
    uint8_t *der = NULL;
    int dl = i2d_ECDSA_SIG(es, &der);
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestVerifyInit(c, NULL, EVP_sha256(), NULL, k), 1);
    assert_int_equal(EVP_DigestVerify(c, der, (size_t)dl, data, n), 1);
    EVP_MD_CTX_free(c);
    OPENSSL_free(der);
    ECDSA_SIG_free(es);
}

/* ---- tests: loading and initialisation ------------------------------------------------------ */

static void test_exports_and_interfaces(void **state) {
    assert_null(dlsym(module, "C_Initialize")); /* only the version script's three */
    assert_null(dlsym(module, "vhsm_connect"));
    CK_RV (*gil)(CK_INTERFACE_PTR, CK_ULONG_PTR) = (void *)dlsym(module, "C_GetInterfaceList");
    CK_RV(*gi)
    (CK_UTF8CHAR_PTR, CK_VERSION_PTR, CK_INTERFACE_PTR_PTR, CK_FLAGS) =
        (void *)dlsym(module, "C_GetInterface");
    assert_non_null(gil);
    assert_non_null(gi);
    CK_ULONG n = 0;
    assert_int_equal(gil(NULL, NULL), CKR_ARGUMENTS_BAD);
    assert_int_equal(gil(NULL, &n), CKR_OK);
    assert_int_equal(n, 2);
    CK_INTERFACE list[2];
    n = 1;
    assert_int_equal(gil(list, &n), CKR_BUFFER_TOO_SMALL);
    assert_int_equal(n, 2);
    assert_int_equal(gil(list, &n), CKR_OK);
    CK_VERSION *v0 = list[0].pFunctionList, *v1 = list[1].pFunctionList;
    assert_int_equal(v0->major, 3);
    assert_int_equal(v1->major, 2);
    assert_int_equal(v1->minor, 40);
    CK_INTERFACE *i = NULL;
    assert_int_equal(gi(NULL, NULL, &i, 0), CKR_OK);
    assert_int_equal(((CK_VERSION *)i->pFunctionList)->major, 3);
    CK_VERSION want = {2, 40};
    assert_int_equal(gi((CK_UTF8CHAR_PTR) "PKCS 11", &want, &i, 0), CKR_OK);
    assert_ptr_equal(i->pFunctionList, F);
    assert_int_equal(gi((CK_UTF8CHAR_PTR) "Vendor X", NULL, &i, 0), CKR_ARGUMENTS_BAD);
    assert_true(i->flags & CKF_INTERFACE_FORK_SAFE);
    /* the 3.0 list: its 2.40 part is the same functions, then C_GetInterfaceList... */
    void **fl = (void **)((char *)list[0].pFunctionList + offsetof(CK_FUNCTION_LIST, C_Initialize));
    assert_ptr_equal(fl[0], (void *)F->C_Initialize);
    void **after = (void **)((char *)list[0].pFunctionList + sizeof(CK_FUNCTION_LIST));
    assert_ptr_equal(after[0], (void *)gil);
}

static void test_initialize_rules(void **state) {
    CK_INFO info;
    CK_ULONG n = 0;
    assert_int_equal(F->C_GetInfo(&info), CKR_CRYPTOKI_NOT_INITIALIZED);
    assert_int_equal(F->C_GetSlotList(CK_FALSE, NULL, &n), CKR_CRYPTOKI_NOT_INITIALIZED);
    assert_int_equal(F->C_Finalize(NULL), CKR_CRYPTOKI_NOT_INITIALIZED);
    CK_C_INITIALIZE_ARGS bad = {.pReserved = &n};
    assert_int_equal(F->C_Initialize(&bad), CKR_ARGUMENTS_BAD);
    CK_C_INITIALIZE_ARGS partial = {.CreateMutex = (CK_CREATEMUTEX)1};
    assert_int_equal(F->C_Initialize(&partial), CKR_ARGUMENTS_BAD);
    assert_int_equal(F->C_Initialize(NULL), CKR_OK);
    assert_int_equal(F->C_Initialize(NULL), CKR_CRYPTOKI_ALREADY_INITIALIZED);
    assert_int_equal(F->C_GetInfo(NULL), CKR_ARGUMENTS_BAD);
    assert_int_equal(F->C_GetInfo(&info), CKR_OK);
    assert_int_equal(info.cryptokiVersion.major, 3);
    assert_memory_equal(info.manufacturerID, "Nitride ", 8);
    assert_int_equal(F->C_Finalize(&n), CKR_ARGUMENTS_BAD);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
}

static int app_creates, app_locks;
static CK_RV app_create(CK_VOID_PTR_PTR m) {
    pthread_mutex_t *x = malloc(sizeof(*x));
    pthread_mutex_init(x, NULL);
    *m = x;
    __atomic_add_fetch(&app_creates, 1, __ATOMIC_SEQ_CST);
    return CKR_OK;
}
static CK_RV app_destroy(CK_VOID_PTR m) {
    pthread_mutex_destroy(m);
    free(m);
    return CKR_OK;
}
static CK_RV app_lock(CK_VOID_PTR m) {
    __atomic_add_fetch(&app_locks, 1, __ATOMIC_SEQ_CST);
    return pthread_mutex_lock(m) == 0 ? CKR_OK : CKR_GENERAL_ERROR;
}
static CK_RV app_unlock(CK_VOID_PTR m) {
    return pthread_mutex_unlock(m) == 0 ? CKR_OK : CKR_GENERAL_ERROR;
}

/* Callbacks without CKF_OS_LOCKING_OK: the module must use the application's mutexes. */
static void test_app_mutex_callbacks(void **state) {
    CK_C_INITIALIZE_ARGS a = {app_create, app_destroy, app_lock, app_unlock, 0, NULL};
    app_creates = app_locks = 0;
    assert_int_equal(F->C_Initialize(&a), CKR_OK);
    CK_SESSION_HANDLE s = open_rw();
    uint8_t r[16];
    assert_int_equal(F->C_GenerateRandom(s, r, sizeof(r)), CKR_OK);
    assert_true(app_creates >= 3); /* module, slot, session */
    assert_true(app_locks >= 3);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
}

/* ---- tokens, PINs, logins, lockout ---------------------------------------------------------- */

static CK_UTF8CHAR label32[33] = "nitride test token              ";

static void test_token_and_pins(void **state) {
    assert_int_equal(init_default(), CKR_OK);
    CK_FLAGS f = token_flags();
    assert_false(f & CKF_TOKEN_INITIALIZED);
    assert_false(f & CKF_LOGIN_REQUIRED);
    CK_SESSION_HANDLE s = 0;
    assert_int_equal(F->C_OpenSession(0, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s),
                     CKR_OK);
    assert_int_equal(F->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR) "1234", 4),
                     CKR_USER_PIN_NOT_INITIALIZED);
    assert_int_equal(F->C_InitToken(0, (CK_UTF8CHAR_PTR)SO_PIN, strlen(SO_PIN), label32),
                     CKR_SESSION_EXISTS);
    assert_int_equal(F->C_CloseSession(s), CKR_OK);
    assert_int_equal(F->C_InitToken(0, (CK_UTF8CHAR_PTR) "12", 2, label32), CKR_PIN_LEN_RANGE);
    assert_int_equal(F->C_InitToken(0, NULL, 0, label32), CKR_ARGUMENTS_BAD);
    assert_int_equal(F->C_InitToken(0, (CK_UTF8CHAR_PTR)SO_PIN, strlen(SO_PIN), label32), CKR_OK);
    f = token_flags();
    assert_true(f & CKF_TOKEN_INITIALIZED);
    assert_false(f & CKF_USER_PIN_INITIALIZED);

    /* the SO sets the user PIN; an RO session forbids an SO login, an SO login an RO session */
    CK_SESSION_HANDLE ro = 0;
    assert_int_equal(F->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &ro), CKR_OK);
    s = 0;
    assert_int_equal(F->C_OpenSession(0, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s),
                     CKR_OK);
    assert_int_equal(F->C_Login(s, CKU_SO, (CK_UTF8CHAR_PTR)SO_PIN, strlen(SO_PIN)),
                     CKR_SESSION_READ_ONLY_EXISTS);
    assert_int_equal(F->C_CloseSession(ro), CKR_OK);
    assert_int_equal(F->C_InitPIN(s, (CK_UTF8CHAR_PTR)USER_PIN, strlen(USER_PIN)),
                     CKR_USER_NOT_LOGGED_IN);
    assert_int_equal(F->C_Login(s, CKU_SO, (CK_UTF8CHAR_PTR) "wrong-so", 8), CKR_PIN_INCORRECT);
    assert_true(token_flags() & CKF_SO_PIN_COUNT_LOW);
    assert_int_equal(F->C_Login(s, CKU_SO, (CK_UTF8CHAR_PTR)SO_PIN, strlen(SO_PIN)), CKR_OK);
    assert_false(token_flags() & CKF_SO_PIN_COUNT_LOW);
    assert_int_equal(F->C_Login(s, CKU_SO, (CK_UTF8CHAR_PTR)SO_PIN, strlen(SO_PIN)),
                     CKR_USER_ALREADY_LOGGED_IN);
    assert_int_equal(F->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &ro),
                     CKR_SESSION_READ_WRITE_SO_EXISTS);
    CK_SESSION_INFO si;
    assert_int_equal(F->C_GetSessionInfo(s, &si), CKR_OK);
    assert_int_equal(si.state, CKS_RW_SO_FUNCTIONS);
    assert_int_equal(F->C_InitPIN(s, (CK_UTF8CHAR_PTR)USER_PIN, strlen(USER_PIN)), CKR_OK);
    assert_int_equal(F->C_Logout(s), CKR_OK);
    assert_int_equal(F->C_Logout(s), CKR_USER_NOT_LOGGED_IN);
    f = token_flags();
    assert_true(f & CKF_USER_PIN_INITIALIZED);
    assert_true(f & CKF_LOGIN_REQUIRED);

    /* not logged in: a key cannot be generated or used; public objects stay visible */
    CK_MECHANISM m = {CKM_AES_KEY_GEN, NULL, 0};
    CK_ULONG len = 32;
    CK_ATTRIBUTE t[] = {{CKA_VALUE_LEN, &len, sizeof(len)}};
    CK_OBJECT_HANDLE k;
    assert_int_equal(F->C_GenerateKey(s, &m, t, 1, &k), CKR_USER_NOT_LOGGED_IN);

    /* user login, state, change of PIN */
    assert_int_equal(F->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)USER_PIN, strlen(USER_PIN)), CKR_OK);
    assert_int_equal(F->C_Login(s, CKU_SO, (CK_UTF8CHAR_PTR)SO_PIN, strlen(SO_PIN)),
                     CKR_USER_ANOTHER_ALREADY_LOGGED_IN);
    assert_int_equal(F->C_GetSessionInfo(s, &si), CKR_OK);
    assert_int_equal(si.state, CKS_RW_USER_FUNCTIONS);
    assert_int_equal(F->C_GenerateKey(s, &m, t, 1, &k), CKR_OK);
    /* a second session shares the login (other pooled connections attach with the ticket) */
    CK_SESSION_HANDLE s2 = 0;
    assert_int_equal(F->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &s2), CKR_OK);
    assert_int_equal(F->C_GetSessionInfo(s2, &si), CKR_OK);
    assert_int_equal(si.state, CKS_RO_USER_FUNCTIONS);
    assert_int_equal(F->C_SetPIN(s2, (CK_UTF8CHAR_PTR)USER_PIN, strlen(USER_PIN),
                                 (CK_UTF8CHAR_PTR) "tmp-pin-2", 9),
                     CKR_SESSION_READ_ONLY);
    assert_int_equal(
        F->C_SetPIN(s, (CK_UTF8CHAR_PTR) "not-it", 6, (CK_UTF8CHAR_PTR) "tmp-pin-2", 9),
        CKR_PIN_INCORRECT);
    assert_int_equal(F->C_SetPIN(s, (CK_UTF8CHAR_PTR)USER_PIN, strlen(USER_PIN),
                                 (CK_UTF8CHAR_PTR) "tmp-pin-2", 9),
                     CKR_OK);
    assert_int_equal(F->C_Logout(s), CKR_OK);
    assert_int_equal(F->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)USER_PIN, strlen(USER_PIN)),
                     CKR_PIN_INCORRECT);
    assert_int_equal(F->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR) "tmp-pin-2", 9), CKR_OK);
    assert_int_equal(F->C_SetPIN(s, (CK_UTF8CHAR_PTR) "tmp-pin-2", 9, (CK_UTF8CHAR_PTR)USER_PIN,
                                 strlen(USER_PIN)),
                     CKR_OK);
    /* closing the last session logs the application out */
    assert_int_equal(F->C_CloseAllSessions(0), CKR_OK);
    s = 0;
    assert_int_equal(F->C_OpenSession(0, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s),
                     CKR_OK);
    assert_int_equal(F->C_GetSessionInfo(s, &si), CKR_OK);
    assert_int_equal(si.state, CKS_RW_PUBLIC_SESSION);
    assert_int_equal(F->C_GenerateKey(s, &m, t, 1, &k), CKR_USER_NOT_LOGGED_IN);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
}

/* Lockout is counted by vhsmd, persistently: neither re-initialising the module nor restarting
 * vhsmd resets it; the SO unlocks with C_InitPIN. (vhsmd runs with --pin-max-tries 4.) */
static void test_pin_lockout(void **state) {
    assert_int_equal(init_default(), CKR_OK);
    CK_SESSION_HANDLE s = 0;
    assert_int_equal(F->C_OpenSession(0, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s),
                     CKR_OK);
    assert_int_equal(F->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR) "bad-pin-1", 9), CKR_PIN_INCORRECT);
    assert_int_equal(F->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR) "bad-pin-2", 9), CKR_PIN_INCORRECT);
    CK_FLAGS f = token_flags();
    assert_true(f & CKF_USER_PIN_COUNT_LOW);
    assert_false(f & CKF_USER_PIN_FINAL_TRY);
    /* module reload */
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
    assert_int_equal(init_default(), CKR_OK);
    assert_true(token_flags() & CKF_USER_PIN_COUNT_LOW);
    /* vhsmd restart */
    vhsmd_stop();
    vhsmd_start();
    assert_int_equal(F->C_OpenSession(0, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s),
                     CKR_OK);
    assert_int_equal(F->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR) "bad-pin-3", 9), CKR_PIN_INCORRECT);
    assert_true(token_flags() & CKF_USER_PIN_FINAL_TRY);
    /* the try that locks is still an incorrect PIN; the next ones find it locked */
    assert_int_equal(F->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR) "bad-pin-4", 9), CKR_PIN_INCORRECT);
    assert_true(token_flags() & CKF_USER_PIN_LOCKED);
    assert_int_equal(F->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)USER_PIN, strlen(USER_PIN)),
                     CKR_PIN_LOCKED);
    vhsmd_stop();
    vhsmd_start();
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
    assert_int_equal(init_default(), CKR_OK);
    assert_int_equal(F->C_OpenSession(0, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s),
                     CKR_OK);
    assert_true(token_flags() & CKF_USER_PIN_LOCKED);
    assert_int_equal(F->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)USER_PIN, strlen(USER_PIN)),
                     CKR_PIN_LOCKED);
    /* the SO unlocks by setting the PIN again */
    assert_int_equal(F->C_Login(s, CKU_SO, (CK_UTF8CHAR_PTR)SO_PIN, strlen(SO_PIN)), CKR_OK);
    assert_int_equal(F->C_InitPIN(s, (CK_UTF8CHAR_PTR)USER_PIN, strlen(USER_PIN)), CKR_OK);
    assert_int_equal(F->C_Logout(s), CKR_OK);
    f = token_flags();
    assert_false(f & (CKF_USER_PIN_LOCKED | CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY));
    assert_int_equal(F->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)USER_PIN, strlen(USER_PIN)), CKR_OK);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
}

/* Every function: NULL where an output or input is required (CKR_ARGUMENTS_BAD), an unknown
 * session (CKR_SESSION_HANDLE_INVALID), and before C_Initialize (CKR_CRYPTOKI_NOT_INITIALIZED). */
#define ALL_SESSION_CALLS(h)                                                                       \
    X(F->C_GetSessionInfo(h, &si))                                                                 \
    X(F->C_Login(h, CKU_USER, pin, 4))                                                             \
    X(F->C_Logout(h))                                                                              \
    X(F->C_InitPIN(h, pin, 4))                                                                     \
    X(F->C_SetPIN(h, pin, 4, pin, 4))                                                              \
    X(F->C_FindObjectsInit(h, NULL, 0))                                                            \
    X(F->C_FindObjects(h, objs, 1, &n))                                                            \
    X(F->C_FindObjectsFinal(h))                                                                    \
    X(F->C_GetAttributeValue(h, 1, &attr, 1))                                                      \
    X(F->C_SetAttributeValue(h, 1, &attr, 1))                                                      \
    X(F->C_GetObjectSize(h, 1, &n))                                                                \
    X(F->C_CreateObject(h, &attr, 1, &obj))                                                        \
    X(F->C_CopyObject(h, 1, &attr, 1, &obj))                                                       \
    X(F->C_DestroyObject(h, 1))                                                                    \
    X(F->C_GenerateKey(h, &mech, &attr, 1, &obj))                                                  \
    X(F->C_GenerateKeyPair(h, &mech, &attr, 1, &attr, 1, &obj, &obj))                              \
    X(F->C_SignInit(h, &mech, 1))                                                                  \
    X(F->C_Sign(h, buf, 1, buf, &n))                                                               \
    X(F->C_SignUpdate(h, buf, 1))                                                                  \
    X(F->C_SignFinal(h, buf, &n))                                                                  \
    X(F->C_VerifyInit(h, &mech, 1))                                                                \
    X(F->C_Verify(h, buf, 1, buf, 1))                                                              \
    X(F->C_VerifyUpdate(h, buf, 1))                                                                \
    X(F->C_VerifyFinal(h, buf, 1))                                                                 \
    X(F->C_EncryptInit(h, &mech, 1))                                                               \
    X(F->C_Encrypt(h, buf, 1, buf, &n))                                                            \
    X(F->C_EncryptUpdate(h, buf, 1, buf, &n))                                                      \
    X(F->C_EncryptFinal(h, buf, &n))                                                               \
    X(F->C_DecryptInit(h, &mech, 1))                                                               \
    X(F->C_Decrypt(h, buf, 1, buf, &n))                                                            \
    X(F->C_DecryptUpdate(h, buf, 1, buf, &n))                                                      \
    X(F->C_DecryptFinal(h, buf, &n))                                                               \
    X(F->C_DigestInit(h, &mech))                                                                   \
    X(F->C_Digest(h, buf, 1, buf, &n))                                                             \
    X(F->C_DigestUpdate(h, buf, 1))                                                                \
    X(F->C_DigestKey(h, 1))                                                                        \
    X(F->C_DigestFinal(h, buf, &n))                                                                \
    X(F->C_SignRecoverInit(h, &mech, 1))                                                           \
    X(F->C_VerifyRecoverInit(h, &mech, 1))                                                         \
    X(F->C_WrapKey(h, &mech, 1, 1, buf, &n))                                                       \
    X(F->C_UnwrapKey(h, &mech, 1, buf, 1, &attr, 1, &obj))                                         \
    X(F->C_DeriveKey(h, &mech, 1, &attr, 1, &obj))                                                 \
    X(F->C_SeedRandom(h, buf, 1))                                                                  \
    X(F->C_GenerateRandom(h, buf, 1))                                                              \
    X(F->C_GetOperationState(h, buf, &n))                                                          \
    X(F->C_SetOperationState(h, buf, 1, 0, 0))                                                     \
    X(F->C_GetFunctionStatus(h))                                                                   \
    X(F->C_CancelFunction(h))                                                                      \
    X(F->C_CloseSession(h))

static void test_argument_errors(void **state) {
    CK_SESSION_INFO si;
    CK_UTF8CHAR pin[] = "1234";
    CK_OBJECT_HANDLE objs[1], obj = 0;
    CK_ULONG n = 1;
    CK_BYTE buf[8] = {0};
    CK_ATTRIBUTE attr = {CKA_CLASS, buf, sizeof(CK_ULONG)};
    CK_MECHANISM mech = {CKM_SHA256, NULL, 0};
    CK_SLOT_INFO slot_info;
    CK_TOKEN_INFO token_info;
    CK_MECHANISM_INFO mi;
    CK_SESSION_HANDLE h = 0;
    int count = 0;
    /* before C_Initialize */
#define X(call)                                                                                    \
    assert_int_equal((call), CKR_CRYPTOKI_NOT_INITIALIZED);                                        \
    count++;
    ALL_SESSION_CALLS(5)
    X(F->C_GetSlotList(CK_FALSE, NULL, &n))
    X(F->C_GetSlotInfo(0, &slot_info))
    X(F->C_GetTokenInfo(0, &token_info))
    X(F->C_GetMechanismList(0, NULL, &n))
    X(F->C_GetMechanismInfo(0, CKM_SHA256, &mi))
    X(F->C_InitToken(0, pin, 4, (CK_UTF8CHAR_PTR) "label                           "))
    X(F->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &h))
    X(F->C_CloseAllSessions(0))
    X(F->C_WaitForSlotEvent(0, NULL, NULL))
#undef X
    assert_int_equal(count, 58);
    /* an unknown session */
    assert_int_equal(init_default(), CKR_OK);
#define X(call) assert_int_equal((call), CKR_SESSION_HANDLE_INVALID);
    ALL_SESSION_CALLS(0x7fff01)
#undef X
    /* NULL arguments */
    h = open_rw();
    assert_int_equal(F->C_GetSlotList(CK_FALSE, NULL, NULL), CKR_ARGUMENTS_BAD);
    assert_int_equal(F->C_GetSlotInfo(0, NULL), CKR_ARGUMENTS_BAD);
    assert_int_equal(F->C_GetTokenInfo(0, NULL), CKR_ARGUMENTS_BAD);
    assert_int_equal(F->C_GetMechanismList(0, NULL, NULL), CKR_ARGUMENTS_BAD);
    assert_int_equal(F->C_GetMechanismInfo(0, CKM_SHA256, NULL), CKR_ARGUMENTS_BAD);
    assert_int_equal(F->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, NULL), CKR_ARGUMENTS_BAD);
    assert_int_equal(F->C_GetSessionInfo(h, NULL), CKR_ARGUMENTS_BAD);
    assert_int_equal(F->C_SetPIN(h, NULL, 4, pin, 4), CKR_ARGUMENTS_BAD);
    assert_int_equal(F->C_FindObjectsInit(h, NULL, 2), CKR_ARGUMENTS_BAD);
    CK_ATTRIBUTE nullval = {CKA_LABEL, NULL, 5};
    assert_int_equal(F->C_FindObjectsInit(h, &nullval, 1), CKR_ATTRIBUTE_VALUE_INVALID);
    assert_int_equal(F->C_FindObjectsInit(h, NULL, 0), CKR_OK);
    assert_int_equal(F->C_FindObjects(h, NULL, 1, &n), CKR_ARGUMENTS_BAD);
    assert_int_equal(F->C_FindObjects(h, objs, 1, NULL), CKR_ARGUMENTS_BAD);
    assert_int_equal(F->C_FindObjectsFinal(h), CKR_OK);
    assert_int_equal(F->C_GenerateKey(h, NULL, &attr, 1, &obj), CKR_ARGUMENTS_BAD);
    assert_int_equal(F->C_GenerateKeyPair(h, &mech, NULL, 0, NULL, 0, NULL, &obj),
                     CKR_ARGUMENTS_BAD);
    assert_int_equal(F->C_SignInit(h, NULL, 1), CKR_ARGUMENTS_BAD);
    assert_int_equal(F->C_VerifyInit(h, NULL, 1), CKR_ARGUMENTS_BAD);
    assert_int_equal(F->C_EncryptInit(h, NULL, 1), CKR_ARGUMENTS_BAD);
    assert_int_equal(F->C_DecryptInit(h, NULL, 1), CKR_ARGUMENTS_BAD);
    assert_int_equal(F->C_DigestInit(h, NULL), CKR_ARGUMENTS_BAD);
    assert_int_equal(F->C_DigestInit(h, &mech), CKR_OK);
    assert_int_equal(F->C_Digest(h, buf, 1, buf, NULL), CKR_ARGUMENTS_BAD);
    assert_int_equal(F->C_DigestFinal(h, buf, &n), CKR_OPERATION_NOT_INITIALIZED); /* ended */
    assert_int_equal(F->C_GenerateRandom(h, NULL, 5), CKR_ARGUMENTS_BAD);
    assert_int_equal(F->C_SeedRandom(h, NULL, 5), CKR_ARGUMENTS_BAD);
    assert_int_equal(F->C_CreateObject(h, NULL, 1, &obj), CKR_ARGUMENTS_BAD);
    assert_int_equal(F->C_WrapKey(h, NULL, 1, 1, buf, &n), CKR_ARGUMENTS_BAD);
    assert_int_equal(F->C_UnwrapKey(h, NULL, 1, buf, 1, &attr, 1, &obj), CKR_ARGUMENTS_BAD);
    assert_int_equal(F->C_DeriveKey(h, NULL, 1, &attr, 1, &obj), CKR_ARGUMENTS_BAD);
    assert_int_equal(F->C_GetFunctionStatus(h), CKR_FUNCTION_NOT_PARALLEL);
    assert_int_equal(F->C_CancelFunction(h), CKR_FUNCTION_NOT_PARALLEL);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
}

/* ---- slots, tokens, mechanisms -------------------------------------------------------------- */

static void test_slots_and_mechanisms(void **state) {
    assert_int_equal(init_default(), CKR_OK);
    CK_ULONG n = 0;
    assert_int_equal(F->C_GetSlotList(CK_TRUE, NULL, NULL), CKR_ARGUMENTS_BAD);
    assert_int_equal(F->C_GetSlotList(CK_TRUE, NULL, &n), CKR_OK);
    assert_int_equal(n, 1);
    CK_SLOT_ID ids[2];
    n = 0;
    assert_int_equal(F->C_GetSlotList(CK_TRUE, ids, &n), CKR_BUFFER_TOO_SMALL);
    assert_int_equal(n, 1);
    assert_int_equal(F->C_GetSlotList(CK_TRUE, ids, &n), CKR_OK);
    assert_int_equal(ids[0], 0);
    CK_SLOT_INFO si;
    assert_int_equal(F->C_GetSlotInfo(7, &si), CKR_SLOT_ID_INVALID);
    assert_int_equal(F->C_GetSlotInfo(0, &si), CKR_OK);
    assert_true(si.flags & CKF_TOKEN_PRESENT);
    CK_TOKEN_INFO ti;
    assert_int_equal(F->C_GetTokenInfo(0, &ti), CKR_OK);
    assert_true(ti.flags & CKF_RNG);
    assert_true(ti.flags & CKF_TOKEN_INITIALIZED);
    assert_true(ti.flags & CKF_LOGIN_REQUIRED);
    assert_memory_equal(ti.label, "nitride test token              ", 32);

    CK_MECHANISM_TYPE mt[64];
    n = 0;
    assert_int_equal(F->C_GetMechanismList(0, NULL, &n), CKR_OK);
    CK_ULONG total = n;
    n = 1;
    assert_int_equal(F->C_GetMechanismList(0, mt, &n), CKR_BUFFER_TOO_SMALL);
    assert_int_equal(n, total);
    assert_int_equal(F->C_GetMechanismList(0, mt, &n), CKR_OK);
    CK_MECHANISM_INFO mi;
    for (CK_ULONG i = 0; i < n; i++)
        assert_int_equal(F->C_GetMechanismInfo(0, mt[i], &mi), CKR_OK);
    assert_int_equal(F->C_GetMechanismInfo(0, CKM_ECDSA_SHA256, &mi), CKR_OK);
    assert_int_equal(mi.ulMinKeySize, 256);
    assert_int_equal(mi.ulMaxKeySize, 256);
    assert_true(mi.flags & CKF_SIGN);
    assert_false(mi.flags & CKF_ENCRYPT);
    assert_int_equal(F->C_GetMechanismInfo(0, CKM_RSA_PKCS_OAEP, &mi), CKR_OK);
    assert_false(mi.flags & CKF_SIGN);
    assert_int_equal(F->C_GetMechanismInfo(0, CKM_DES3_CBC, &mi), CKR_MECHANISM_INVALID);
    assert_int_equal(F->C_GetMechanismInfo(3, CKM_SHA256, &mi), CKR_SLOT_ID_INVALID);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
}

static void test_sessions(void **state) {
    assert_int_equal(init_default(), CKR_OK);
    CK_SESSION_HANDLE s = 0, ro = 0;
    assert_int_equal(F->C_OpenSession(0, 0, NULL, NULL, &s), CKR_SESSION_PARALLEL_NOT_SUPPORTED);
    assert_int_equal(F->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, NULL), CKR_ARGUMENTS_BAD);
    assert_int_equal(F->C_OpenSession(9, CKF_SERIAL_SESSION, NULL, NULL, &s), CKR_SLOT_ID_INVALID);
    assert_int_equal(F->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &ro), CKR_OK);
    s = open_rw();
    CK_SESSION_INFO si;
    assert_int_equal(F->C_GetSessionInfo(ro, &si), CKR_OK);
    assert_int_equal(si.state, CKS_RO_USER_FUNCTIONS); /* open_rw logged the application in */
    assert_int_equal(F->C_GetSessionInfo(s, &si), CKR_OK);
    assert_int_equal(si.state, CKS_RW_USER_FUNCTIONS);
    CK_TOKEN_INFO ti;
    assert_int_equal(F->C_GetTokenInfo(0, &ti), CKR_OK);
    assert_int_equal(ti.ulSessionCount, 2);
    assert_int_equal(ti.ulRwSessionCount, 1);
    /* a read-only session cannot create token objects */
    CK_MECHANISM m = {CKM_AES_KEY_GEN, NULL, 0};
    CK_ULONG len = 32;
    CK_ATTRIBUTE t[] = {{CKA_VALUE_LEN, &len, sizeof(len)}};
    CK_OBJECT_HANDLE k;
    assert_int_equal(F->C_GenerateKey(ro, &m, t, 1, &k), CKR_SESSION_READ_ONLY);
    assert_int_equal(F->C_CloseSession(ro), CKR_OK);
    assert_int_equal(F->C_CloseSession(ro), CKR_SESSION_HANDLE_INVALID);
    assert_int_equal(F->C_GetSessionInfo(ro, &si), CKR_SESSION_HANDLE_INVALID);
    /* a new session reusing the table entry gets another handle */
    CK_SESSION_HANDLE again = 0;
    assert_int_equal(F->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &again), CKR_OK);
    assert_int_not_equal(again, ro);
    assert_int_equal(F->C_GetSessionInfo(ro, &si), CKR_SESSION_HANDLE_INVALID);
    assert_int_equal(F->C_CloseAllSessions(0), CKR_OK);
    assert_int_equal(F->C_GetSessionInfo(s, &si), CKR_SESSION_HANDLE_INVALID);
    assert_int_equal(F->C_GetSessionInfo(again, &si), CKR_SESSION_HANDLE_INVALID);
    uint8_t seed[4] = {0};
    s = open_rw();
    assert_int_equal(F->C_SeedRandom(s, seed, sizeof(seed)), CKR_RANDOM_SEED_NOT_SUPPORTED);
    uint8_t r1[100000], r2[100000];
    assert_int_equal(F->C_GenerateRandom(s, r1, sizeof(r1)), CKR_OK);
    assert_int_equal(F->C_GenerateRandom(s, r2, sizeof(r2)), CKR_OK);
    assert_memory_not_equal(r1, r2, sizeof(r1));
    assert_int_equal(F->C_GenerateRandom(s, NULL, 5), CKR_ARGUMENTS_BAD);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
}

/* ---- objects and attributes ----------------------------------------------------------------- */

static void test_generate_find_attributes(void **state) {
    assert_int_equal(init_default(), CKR_OK);
    CK_SESSION_HANDLE s = open_rw();
    CK_OBJECT_HANDLE pub, priv;
    gen_pair(s, CKM_EC_KEY_PAIR_GEN, "attr-ec", &pub, &priv);
    assert_int_not_equal(pub, priv);

    /* template errors */
    CK_MECHANISM m = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
    CK_BBOOL no = CK_FALSE, yes = CK_TRUE;
    CK_ATTRIBUTE bad_curve[] = {{CKA_EC_PARAMS, (void *)"\x06\x03\x2b\x65\x71", 5}};
    CK_OBJECT_HANDLE a, b;
    assert_int_equal(F->C_GenerateKeyPair(s, &m, bad_curve, 1, NULL, 0, &a, &b),
                     CKR_CURVE_NOT_SUPPORTED);
    CK_ATTRIBUTE no_curve[] = {{CKA_TOKEN, &yes, sizeof(yes)}};
    assert_int_equal(F->C_GenerateKeyPair(s, &m, no_curve, 1, NULL, 0, &a, &b),
                     CKR_TEMPLATE_INCOMPLETE);
    CK_ATTRIBUTE curve[] = {{CKA_EC_PARAMS, (void *)oid_p256, sizeof(oid_p256)}};
    CK_ATTRIBUTE session_obj[] = {{CKA_TOKEN, &no, sizeof(no)}};
    /* CKA_TOKEN false on the private half: a session pair (branch obj) */
    assert_int_equal(F->C_GenerateKeyPair(s, &m, curve, 1, session_obj, 1, &a, &b), CKR_OK);
    assert_int_equal(bool_attr(s, b, CKA_TOKEN), CK_FALSE);
    assert_int_equal(F->C_DestroyObject(s, b), CKR_OK);
    /* ... not on the public half alone (one vhsmd object per pair) */
    CK_ATTRIBUTE pub_session[] = {curve[0], session_obj[0]};
    assert_int_equal(F->C_GenerateKeyPair(s, &m, pub_session, 2, NULL, 0, &a, &b),
                     CKR_TEMPLATE_INCONSISTENT);
    CK_ATTRIBUTE decrypt_ec[] = {{CKA_DECRYPT, &yes, sizeof(yes)}};
    assert_int_equal(F->C_GenerateKeyPair(s, &m, curve, 1, decrypt_ec, 1, &a, &b),
                     CKR_ATTRIBUTE_VALUE_INVALID);
    CK_ATTRIBUTE short_bool[] = {{CKA_SIGN, &yes, 4}};
    assert_int_equal(F->C_GenerateKeyPair(s, &m, curve, 1, short_bool, 1, &a, &b),
                     CKR_ATTRIBUTE_VALUE_INVALID);
    CK_ATTRIBUTE rot[] = {{CKA_LOCAL, &no, sizeof(no)}};
    assert_int_equal(F->C_GenerateKeyPair(s, &m, curve, 1, rot, 1, &a, &b),
                     CKR_ATTRIBUTE_READ_ONLY);
    CK_ATTRIBUTE unknown[] = {{CKA_VENDOR_DEFINED + 5, &no, sizeof(no)}};
    assert_int_equal(F->C_GenerateKeyPair(s, &m, curve, 1, unknown, 1, &a, &b),
                     CKR_ATTRIBUTE_TYPE_INVALID);
    CK_MECHANISM des = {CKM_DES3_KEY_GEN, NULL, 0};
    assert_int_equal(F->C_GenerateKey(s, &des, NULL, 0, &a), CKR_MECHANISM_INVALID);
    CK_MECHANISM aes = {CKM_AES_KEY_GEN, NULL, 0};
    CK_ULONG l20 = 20; /* AES-128/192/256 only (16/24: hard-wrap) */
    CK_ATTRIBUTE t20[] = {{CKA_VALUE_LEN, &l20, sizeof(l20)}};
    assert_int_equal(F->C_GenerateKey(s, &aes, t20, 1, &a), CKR_KEY_SIZE_RANGE);
    assert_int_equal(F->C_GenerateKey(s, &aes, NULL, 0, &a), CKR_TEMPLATE_INCOMPLETE);

    /* GetAttributeValue: length query, values, sensitive, invalid, too small, all processed */
    CK_OBJECT_CLASS cls = 0;
    CK_KEY_TYPE kt = 0;
    uint8_t label[64], value[64], point[128];
    CK_ATTRIBUTE q[] = {
        {CKA_CLASS, &cls, sizeof(cls)},
        {CKA_LABEL, NULL, 0},
        {CKA_VALUE, value, sizeof(value)},
        {CKA_KEY_TYPE, &kt, sizeof(kt)},
        {CKA_VENDOR_DEFINED + 1, value, sizeof(value)},
    };
    assert_int_equal(F->C_GetAttributeValue(s, priv, q, 5), CKR_ATTRIBUTE_TYPE_INVALID);
    assert_int_equal(cls, CKO_PRIVATE_KEY);
    assert_int_equal(q[1].ulValueLen, 7);
    assert_int_equal(q[2].ulValueLen, CK_UNAVAILABLE_INFORMATION);
    assert_int_equal(kt, CKK_EC);
    assert_int_equal(q[4].ulValueLen, CK_UNAVAILABLE_INFORMATION);
    CK_ATTRIBUTE sens[] = {{CKA_VALUE, value, sizeof(value)}};
    assert_int_equal(F->C_GetAttributeValue(s, priv, sens, 1), CKR_ATTRIBUTE_SENSITIVE);
    assert_int_equal(sens[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
    CK_ATTRIBUTE small[] = {{CKA_LABEL, label, 3}, {CKA_CLASS, &cls, sizeof(cls)}};
    cls = 0;
    assert_int_equal(F->C_GetAttributeValue(s, priv, small, 2), CKR_BUFFER_TOO_SMALL);
    assert_int_equal(small[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
    assert_int_equal(cls, CKO_PRIVATE_KEY);
    CK_BBOOL sensitive = 0, extract = 1, local = 0;
    CK_ATTRIBUTE flags[] = {{CKA_SENSITIVE, &sensitive, 1},
                            {CKA_EXTRACTABLE, &extract, 1},
                            {CKA_LOCAL, &local, 1},
                            {CKA_LABEL, label, sizeof(label)}};
    assert_int_equal(F->C_GetAttributeValue(s, priv, flags, 4), CKR_OK);
    assert_true(sensitive && !extract && local);
    assert_int_equal(flags[3].ulValueLen, 7);
    assert_memory_equal(label, "attr-ec", 7);
    /* the public key object: EC_POINT is the SPKI's point in a DER OCTET STRING */
    CK_ATTRIBUTE pq[] = {{CKA_EC_POINT, point, sizeof(point)}, {CKA_CLASS, &cls, sizeof(cls)}};
    assert_int_equal(F->C_GetAttributeValue(s, pub, pq, 2), CKR_OK);
    assert_int_equal(cls, CKO_PUBLIC_KEY);
    assert_int_equal(pq[0].ulValueLen, 67);
    assert_int_equal(point[0], 0x04);
    assert_int_equal(point[1], 65);
    EVP_PKEY *k = pub_of(s, pub);
    uint8_t enc[80];
    size_t el = 0;
    assert_int_equal(EVP_PKEY_get_octet_string_param(k, "encoded-pub-key", enc, sizeof(enc), &el),
                     1);
    assert_int_equal(el, 65);
    assert_memory_equal(enc, point + 2, 65);
    EVP_PKEY_free(k);
    assert_int_equal(F->C_GetAttributeValue(s, 0x12345600, pq, 2), CKR_OBJECT_HANDLE_INVALID);
    assert_int_equal(F->C_GetAttributeValue(s, pub, NULL, 2), CKR_ARGUMENTS_BAD);

    /* find: by class + label, the pair; by label and a wrong value, nothing */
    CK_OBJECT_CLASS want = CKO_PUBLIC_KEY;
    CK_ATTRIBUTE ft[] = {{CKA_LABEL, "attr-ec", 7}, {CKA_CLASS, &want, sizeof(want)}};
    CK_OBJECT_HANDLE found[8];
    CK_ULONG nf = 0;
    assert_int_equal(F->C_FindObjects(s, found, 8, &nf), CKR_OPERATION_NOT_INITIALIZED);
    assert_int_equal(F->C_FindObjectsInit(s, ft, 2), CKR_OK);
    assert_int_equal(F->C_FindObjectsInit(s, ft, 2), CKR_OPERATION_ACTIVE);
    assert_int_equal(F->C_FindObjects(s, found, 8, &nf), CKR_OK);
    assert_int_equal(nf, 1);
    assert_int_equal(found[0], pub);
    assert_int_equal(F->C_FindObjects(s, found, 8, &nf), CKR_OK);
    assert_int_equal(nf, 0);
    assert_int_equal(F->C_FindObjectsFinal(s), CKR_OK);
    assert_int_equal(F->C_FindObjectsFinal(s), CKR_OPERATION_NOT_INITIALIZED);
    assert_int_equal(F->C_FindObjectsInit(s, ft, 1), CKR_OK);
    assert_int_equal(F->C_FindObjects(s, found, 8, &nf), CKR_OK);
    assert_int_equal(nf, 2);
    assert_int_equal(F->C_FindObjectsFinal(s), CKR_OK);

    /* destroy: read-only session refused; public half refused; then gone */
    CK_SESSION_HANDLE ro = 0;
    assert_int_equal(F->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &ro), CKR_OK);
    assert_int_equal(F->C_DestroyObject(ro, priv), CKR_SESSION_READ_ONLY);
    assert_int_equal(F->C_DestroyObject(s, pub), CKR_ACTION_PROHIBITED);
    assert_int_equal(F->C_DestroyObject(s, priv), CKR_OK);
    assert_int_equal(F->C_DestroyObject(s, priv), CKR_OBJECT_HANDLE_INVALID);
    assert_int_equal(F->C_GetAttributeValue(s, pub, pq, 2), CKR_OBJECT_HANDLE_INVALID);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
}

/* Policy and attributes stored in vhsmd (revision 2): CKA_ID and CKA_LABEL from the template,
 * C_SetAttributeValue for application attributes and usage flags, which vhsmd enforces. */
static void test_attributes_stored(void **state) {
    assert_int_equal(init_default(), CKR_OK);
    CK_SESSION_HANDLE s = open_rw();
    CK_MECHANISM m = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_BYTE id[] = {0xa1, 0xb2, 0xc3};
    CK_ATTRIBUTE pt[] = {{CKA_EC_PARAMS, (void *)oid_p256, sizeof(oid_p256)},
                         {CKA_ID, id, sizeof(id)}};
    CK_ATTRIBUTE vt[] = {
        {CKA_LABEL, "stored attrs", 12}, {CKA_EXTRACTABLE, &yes, 1}, {CKA_DERIVE, &no, 1}};
    CK_OBJECT_HANDLE pub, priv;
    assert_int_equal(F->C_GenerateKeyPair(s, &m, pt, 2, vt, 3, &pub, &priv), CKR_OK);
    CK_BYTE got_id[16], label[32];
    CK_BBOOL extract = 0, never = 1, derive = 1, modifiable = 0;
    CK_ATTRIBUTE q[] = {{CKA_ID, got_id, sizeof(got_id)}, {CKA_LABEL, label, sizeof(label)},
                        {CKA_EXTRACTABLE, &extract, 1},   {CKA_NEVER_EXTRACTABLE, &never, 1},
                        {CKA_DERIVE, &derive, 1},         {CKA_MODIFIABLE, &modifiable, 1}};
    assert_int_equal(F->C_GetAttributeValue(s, priv, q, 6), CKR_OK);
    assert_int_equal(q[0].ulValueLen, 3);
    assert_memory_equal(got_id, id, 3);
    assert_int_equal(q[1].ulValueLen, 12);
    assert_memory_equal(label, "stored attrs", 12);
    assert_true(extract && !never && !derive && modifiable);
    /* the public key object shares them */
    assert_int_equal(F->C_GetAttributeValue(s, pub, q, 2), CKR_OK);
    assert_memory_equal(got_id, id, 3);
    /* found by its ID */
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE ft[] = {{CKA_ID, id, sizeof(id)}, {CKA_CLASS, &cls, sizeof(cls)}};
    CK_OBJECT_HANDLE found[4];
    CK_ULONG n = 0;
    assert_int_equal(F->C_FindObjectsInit(s, ft, 2), CKR_OK);
    assert_int_equal(F->C_FindObjects(s, found, 4, &n), CKR_OK);
    assert_int_equal(n, 1);
    assert_int_equal(found[0], priv);
    assert_int_equal(F->C_FindObjectsFinal(s), CKR_OK);

    /* C_SetAttributeValue: a new label and ID, then reading them back */
    CK_BYTE id2[] = {0x42};
    CK_ATTRIBUTE set[] = {{CKA_LABEL, "renamed", 7}, {CKA_ID, id2, 1}};
    CK_SESSION_HANDLE ro = 0;
    assert_int_equal(F->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &ro), CKR_OK);
    assert_int_equal(F->C_SetAttributeValue(ro, priv, set, 2), CKR_SESSION_READ_ONLY);
    assert_int_equal(F->C_SetAttributeValue(s, priv, set, 2), CKR_OK);
    assert_int_equal(F->C_GetAttributeValue(s, priv, q, 2), CKR_OK);
    assert_int_equal(q[0].ulValueLen, 1);
    assert_int_equal(got_id[0], 0x42);
    assert_int_equal(q[1].ulValueLen, 7);
    assert_memory_equal(label, "renamed", 7);
    /* fixed attributes, one-way flags */
    CK_KEY_TYPE kt = CKK_RSA;
    CK_ATTRIBUTE bad1[] = {{CKA_KEY_TYPE, &kt, sizeof(kt)}};
    assert_int_equal(F->C_SetAttributeValue(s, priv, bad1, 1), CKR_ATTRIBUTE_READ_ONLY);
    CK_ATTRIBUTE bad2[] = {{CKA_SENSITIVE, &no, 1}};
    assert_int_equal(F->C_SetAttributeValue(s, priv, bad2, 1), CKR_ATTRIBUTE_READ_ONLY);
    CK_ATTRIBUTE bad3[] = {{CKA_SIGN, &yes, 4}};
    assert_int_equal(F->C_SetAttributeValue(s, priv, bad3, 1), CKR_ATTRIBUTE_VALUE_INVALID);
    CK_ATTRIBUTE unextract[] = {{CKA_EXTRACTABLE, &no, 1}};
    assert_int_equal(F->C_SetAttributeValue(s, priv, unextract, 1), CKR_OK);
    CK_ATTRIBUTE reextract[] = {{CKA_EXTRACTABLE, &yes, 1}};
    assert_int_equal(F->C_SetAttributeValue(s, priv, reextract, 1), CKR_ATTRIBUTE_READ_ONLY);
    /* a usage turned off is enforced by vhsmd */
    CK_MECHANISM sm = {CKM_ECDSA_SHA256, NULL, 0};
    uint8_t sig[64];
    CK_ULONG sl = sizeof(sig);
    CK_ATTRIBUTE nosign[] = {{CKA_SIGN, &no, 1}};
    assert_int_equal(F->C_SetAttributeValue(s, priv, nosign, 1), CKR_OK);
    CK_BBOOL sign = 1;
    CK_ATTRIBUTE qs = {CKA_SIGN, &sign, 1};
    assert_int_equal(F->C_GetAttributeValue(s, priv, &qs, 1), CKR_OK);
    assert_false(sign);
    assert_int_equal(F->C_SignInit(s, &sm, priv), CKR_KEY_FUNCTION_NOT_PERMITTED);
    CK_ATTRIBUTE resign[] = {{CKA_SIGN, &yes, 1}};
    assert_int_equal(F->C_SetAttributeValue(s, priv, resign, 1), CKR_OK);
    assert_int_equal(F->C_SignInit(s, &sm, priv), CKR_OK);
    assert_int_equal(F->C_Sign(s, (CK_BYTE_PTR) "x", 1, sig, &sl), CKR_OK);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
}

/* ---- signatures ----------------------------------------------------------------------------- */

static void test_sign_rules(void **state) {
    assert_int_equal(init_default(), CKR_OK);
    CK_SESSION_HANDLE s = open_rw();
    CK_OBJECT_HANDLE pub, priv, aes = gen_secret(s, CKM_AES_KEY_GEN, 32);
    gen_pair(s, CKM_EC_KEY_PAIR_GEN, "rules-ec", &pub, &priv);
    CK_MECHANISM m = {CKM_ECDSA_SHA256, NULL, 0};
    uint8_t sig[128];
    CK_ULONG sl = sizeof(sig);
    const uint8_t msg[] = "the message";

    assert_int_equal(F->C_Sign(s, (CK_BYTE_PTR)msg, 11, sig, &sl), CKR_OPERATION_NOT_INITIALIZED);
    assert_int_equal(F->C_SignUpdate(s, (CK_BYTE_PTR)msg, 11), CKR_OPERATION_NOT_INITIALIZED);
    assert_int_equal(F->C_SignFinal(s, sig, &sl), CKR_OPERATION_NOT_INITIALIZED);
    assert_int_equal(F->C_SignInit(s, NULL, priv), CKR_ARGUMENTS_BAD);
    assert_int_equal(F->C_SignInit(s, &m, 0x7777700), CKR_KEY_HANDLE_INVALID);
    assert_int_equal(F->C_SignInit(s, &m, pub), CKR_KEY_FUNCTION_NOT_PERMITTED);
    assert_int_equal(F->C_SignInit(s, &m, aes), CKR_KEY_TYPE_INCONSISTENT);
    CK_MECHANISM p384 = {CKM_ECDSA_SHA384, NULL, 0};
    assert_int_equal(F->C_SignInit(s, &p384, priv), CKR_KEY_SIZE_RANGE);
    CK_MECHANISM unknown = {CKM_DSA, NULL, 0};
    assert_int_equal(F->C_SignInit(s, &unknown, priv), CKR_MECHANISM_INVALID);
    CK_MECHANISM oaep = {CKM_RSA_PKCS_OAEP, NULL, 0};
    assert_int_equal(F->C_SignInit(s, &oaep, priv), CKR_MECHANISM_INVALID);
    CK_MECHANISM with_param = {CKM_ECDSA_SHA256, sig, 4};
    assert_int_equal(F->C_SignInit(s, &with_param, priv), CKR_MECHANISM_PARAM_INVALID);

    /* length query and a short buffer keep the operation; the real call ends it */
    assert_int_equal(F->C_SignInit(s, &m, priv), CKR_OK);
    assert_int_equal(F->C_SignInit(s, &m, priv), CKR_OPERATION_ACTIVE);
    sl = 0;
    assert_int_equal(F->C_Sign(s, (CK_BYTE_PTR)msg, 11, NULL, &sl), CKR_OK);
    assert_int_equal(sl, 64);
    sl = 10;
    assert_int_equal(F->C_Sign(s, (CK_BYTE_PTR)msg, 11, sig, &sl), CKR_BUFFER_TOO_SMALL);
    assert_int_equal(sl, 64);
    sl = sizeof(sig);
    assert_int_equal(F->C_Sign(s, (CK_BYTE_PTR)msg, 11, sig, &sl), CKR_OK);
    assert_int_equal(sl, 64);
    EVP_PKEY *k = pub_of(s, pub);
    check_ecdsa(k, msg, 11, sig, sl);
    assert_int_equal(F->C_Sign(s, (CK_BYTE_PTR)msg, 11, sig, &sl), CKR_OPERATION_NOT_INITIALIZED);

    /* multi-part, checked by OpenSSL */
    assert_int_equal(F->C_SignInit(s, &m, priv), CKR_OK);
    assert_int_equal(F->C_SignUpdate(s, (CK_BYTE_PTR)msg, 4), CKR_OK);
    assert_int_equal(F->C_SignUpdate(s, (CK_BYTE_PTR)msg + 4, 7), CKR_OK);
    sl = sizeof(sig);
    assert_int_equal(F->C_SignFinal(s, sig, &sl), CKR_OK);
    check_ecdsa(k, msg, 11, sig, sl);
    /* mixing: C_Sign after an update is refused and ends the operation */
    assert_int_equal(F->C_SignInit(s, &m, priv), CKR_OK);
    assert_int_equal(F->C_SignUpdate(s, (CK_BYTE_PTR)msg, 4), CKR_OK);
    sl = sizeof(sig);
    assert_int_equal(F->C_Sign(s, (CK_BYTE_PTR)msg, 11, sig, &sl), CKR_OPERATION_ACTIVE);
    assert_int_equal(F->C_SignFinal(s, sig, &sl), CKR_OPERATION_NOT_INITIALIZED);
    /* single-part-only mechanism: no update */
    CK_MECHANISM raw = {CKM_ECDSA, NULL, 0};
    assert_int_equal(F->C_SignInit(s, &raw, priv), CKR_OK);
    assert_int_equal(F->C_SignUpdate(s, (CK_BYTE_PTR)msg, 4), CKR_FUNCTION_NOT_SUPPORTED);
    assert_int_equal(F->C_SignInit(s, &raw, priv), CKR_OK);
    uint8_t digest[32];
    SHA256(msg, 11, digest);
    sl = sizeof(sig);
    uint8_t big[65] = {0};
    assert_int_equal(F->C_Sign(s, big, 65, sig, &sl), CKR_DATA_LEN_RANGE);
    /* revision 2: CKM_ECDSA over a hash of any length (here 20 bytes), checked by OpenSSL */
    assert_int_equal(F->C_SignInit(s, &raw, priv), CKR_OK);
    sl = sizeof(sig);
    assert_int_equal(F->C_Sign(s, digest, 20, sig, &sl), CKR_OK);
    {
        ECDSA_SIG *es = ECDSA_SIG_new();
        ECDSA_SIG_set0(es, BN_bin2bn(sig, 32, NULL), BN_bin2bn(sig + 32, 32, NULL));
        uint8_t *der = NULL;
        int dl = i2d_ECDSA_SIG(es, &der);
        EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new(k, NULL);
        assert_int_equal(EVP_PKEY_verify_init(pc), 1);
        assert_int_equal(EVP_PKEY_verify(pc, der, (size_t)dl, digest, 20), 1);
        EVP_PKEY_CTX_free(pc);
        OPENSSL_free(der);
        ECDSA_SIG_free(es);
    }
    assert_int_equal(F->C_VerifyInit(s, &raw, pub), CKR_OK);
    assert_int_equal(F->C_Verify(s, digest, 20, sig, 64), CKR_OK);
    assert_int_equal(F->C_SignInit(s, &raw, priv), CKR_OK);
    sl = sizeof(sig);
    assert_int_equal(F->C_Sign(s, digest, 32, sig, &sl), CKR_OK);
    check_ecdsa(k, msg, 11, sig, sl);

    /* verify, in both forms, and the failures */
    assert_int_equal(F->C_VerifyInit(s, &m, priv), CKR_KEY_FUNCTION_NOT_PERMITTED);
    assert_int_equal(F->C_VerifyInit(s, &m, pub), CKR_OK);
    assert_int_equal(F->C_Verify(s, (CK_BYTE_PTR)msg, 11, sig, 64), CKR_OK);
    assert_int_equal(F->C_VerifyInit(s, &m, pub), CKR_OK);
    assert_int_equal(F->C_VerifyUpdate(s, (CK_BYTE_PTR)msg, 11), CKR_OK);
    assert_int_equal(F->C_VerifyFinal(s, sig, 64), CKR_OK);
    sig[5] ^= 1;
    assert_int_equal(F->C_VerifyInit(s, &m, pub), CKR_OK);
    assert_int_equal(F->C_Verify(s, (CK_BYTE_PTR)msg, 11, sig, 64), CKR_SIGNATURE_INVALID);
    assert_int_equal(F->C_VerifyInit(s, &m, pub), CKR_OK);
    assert_int_equal(F->C_Verify(s, (CK_BYTE_PTR)msg, 11, sig, 63), CKR_SIGNATURE_LEN_RANGE);
    assert_int_equal(F->C_Verify(s, (CK_BYTE_PTR)msg, 11, sig, 64), CKR_OPERATION_NOT_INITIALIZED);
    EVP_PKEY_free(k);

    /* 3.0: C_SessionCancel ends an operation */
    CK_FUNCTION_LIST *f3 = NULL;
    CK_INTERFACE *itf = NULL;
    CK_RV(*gi)
    (CK_UTF8CHAR_PTR, CK_VERSION_PTR, CK_INTERFACE_PTR_PTR, CK_FLAGS) =
        (void *)dlsym(module, "C_GetInterface");
    assert_int_equal(gi(NULL, NULL, &itf, 0), CKR_OK);
    f3 = itf->pFunctionList;
    CK_RV(*cancel)
    (CK_SESSION_HANDLE, CK_FLAGS) =
        *(void **)((char *)f3 + sizeof(CK_FUNCTION_LIST) + 3 * sizeof(void *));
    assert_int_equal(F->C_SignInit(s, &m, priv), CKR_OK);
    assert_int_equal(cancel(s, CKF_SIGN), CKR_OK);
    assert_int_equal(F->C_SignInit(s, &m, priv), CKR_OK);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
}

static void test_sign_mechanisms(void **state) {
    assert_int_equal(init_default(), CKR_OK);
    CK_SESSION_HANDLE s = open_rw();
    const uint8_t msg[] = "sign me with every mechanism";
    size_t ml = sizeof(msg) - 1;
    uint8_t sig[512];
    CK_ULONG sl;

    /* Ed25519, single and multi-part (buffered), checked by OpenSSL */
    CK_OBJECT_HANDLE epub, epriv;
    gen_pair(s, CKM_EC_EDWARDS_KEY_PAIR_GEN, "mech-ed", &epub, &epriv);
    CK_MECHANISM ed = {CKM_EDDSA, NULL, 0};
    EVP_PKEY *k = pub_of(s, epub);
    for (int multi = 0; multi < 2; multi++) {
        assert_int_equal(F->C_SignInit(s, &ed, epriv), CKR_OK);
        sl = sizeof(sig);
        if (multi) {
            assert_int_equal(F->C_SignUpdate(s, (CK_BYTE_PTR)msg, 5), CKR_OK);
            assert_int_equal(F->C_SignUpdate(s, (CK_BYTE_PTR)msg + 5, ml - 5), CKR_OK);
            assert_int_equal(F->C_SignFinal(s, sig, &sl), CKR_OK);
        } else
            assert_int_equal(F->C_Sign(s, (CK_BYTE_PTR)msg, ml, sig, &sl), CKR_OK);
        assert_int_equal(sl, 64);
        EVP_MD_CTX *c = EVP_MD_CTX_new();
        assert_int_equal(EVP_DigestVerifyInit(c, NULL, NULL, NULL, k), 1);
        assert_int_equal(EVP_DigestVerify(c, sig, sl, msg, ml), 1);
        EVP_MD_CTX_free(c);
    }
    EVP_PKEY_free(k);

    /* RSA: PKCS#1 v1.5 and PSS with SHA-256, multi-part, and CKM_RSA_PKCS over a DigestInfo */
    CK_OBJECT_HANDLE rpub, rpriv;
    gen_pair(s, CKM_RSA_PKCS_KEY_PAIR_GEN, "mech-rsa", &rpub, &rpriv);
    k = pub_of(s, rpub);
    CK_RSA_PKCS_PSS_PARAMS pss = {CKM_SHA256, CKG_MGF1_SHA256, 32};
    CK_MECHANISM mechs[] = {{CKM_SHA256_RSA_PKCS, NULL, 0},
                            {CKM_SHA256_RSA_PKCS_PSS, &pss, sizeof(pss)}};
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(F->C_SignInit(s, &mechs[i], rpriv), CKR_OK);
        assert_int_equal(F->C_SignUpdate(s, (CK_BYTE_PTR)msg, 3), CKR_OK);
        assert_int_equal(F->C_SignUpdate(s, (CK_BYTE_PTR)msg + 3, ml - 3), CKR_OK);
        sl = sizeof(sig);
        assert_int_equal(F->C_SignFinal(s, sig, &sl), CKR_OK);
        assert_int_equal(sl, 256);
        EVP_MD_CTX *c = EVP_MD_CTX_new();
        EVP_PKEY_CTX *pc = NULL;
        assert_int_equal(EVP_DigestVerifyInit(c, &pc, EVP_sha256(), NULL, k), 1);
        if (i == 1) {
            EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PSS_PADDING);
            EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, 32);
        }
        assert_int_equal(EVP_DigestVerify(c, sig, sl, msg, ml), 1);
        EVP_MD_CTX_free(c);
        assert_int_equal(F->C_VerifyInit(s, &mechs[i], rpub), CKR_OK);
        assert_int_equal(F->C_Verify(s, (CK_BYTE_PTR)msg, ml, sig, sl), CKR_OK);
    }
    CK_RSA_PKCS_PSS_PARAMS bad = {CKM_SHA256, CKG_MGF1_SHA256, 256 - 32 - 1}; /* salt > max */
    CK_MECHANISM badm = {CKM_SHA256_RSA_PKCS_PSS, &bad, sizeof(bad)};
    assert_int_equal(F->C_SignInit(s, &badm, rpriv), CKR_MECHANISM_PARAM_INVALID);
    CK_MECHANISM nopar = {CKM_RSA_PKCS_PSS, NULL, 0};
    assert_int_equal(F->C_SignInit(s, &nopar, rpriv), CKR_MECHANISM_PARAM_INVALID);
    static const uint8_t di[] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20};
    uint8_t info[sizeof(di) + 32];
    memcpy(info, di, sizeof(di));
    SHA256(msg, ml, info + sizeof(di));
    CK_MECHANISM pk1 = {CKM_RSA_PKCS, NULL, 0};
    assert_int_equal(F->C_SignInit(s, &pk1, rpriv), CKR_OK);
    sl = sizeof(sig);
    assert_int_equal(F->C_Sign(s, info, sizeof(info), sig, &sl), CKR_OK);
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestVerifyInit(c, NULL, EVP_sha256(), NULL, k), 1);
    assert_int_equal(EVP_DigestVerify(c, sig, sl, msg, ml), 1);
    EVP_MD_CTX_free(c);
    /* revision 2: CKM_RSA_PKCS over any data up to k - 11 bytes (TLS 1.1's MD5 || SHA-1) */
    uint8_t md5sha1[36];
    memset(md5sha1, 0x5a, sizeof(md5sha1));
    assert_int_equal(F->C_SignInit(s, &pk1, rpriv), CKR_OK);
    sl = sizeof(sig);
    assert_int_equal(F->C_Sign(s, md5sha1, 36, sig, &sl), CKR_OK);
    EVP_PKEY_CTX *rc = EVP_PKEY_CTX_new(k, NULL);
    assert_int_equal(EVP_PKEY_verify_init(rc), 1);
    EVP_PKEY_CTX_set_rsa_padding(rc, RSA_PKCS1_PADDING);
    assert_int_equal(EVP_PKEY_verify(rc, sig, sl, md5sha1, 36), 1);
    EVP_PKEY_CTX_free(rc);
    uint8_t too_long[246] = {0};
    assert_int_equal(F->C_SignInit(s, &pk1, rpriv), CKR_OK);
    sl = sizeof(sig);
    assert_int_equal(F->C_Sign(s, too_long, sizeof(too_long), sig, &sl), CKR_DATA_LEN_RANGE);
    EVP_PKEY_free(k);

    /* HMAC: the module cannot see the key, so the tag is checked by the token itself */
    CK_OBJECT_HANDLE h = gen_secret(s, CKM_GENERIC_SECRET_KEY_GEN, 32);
    CK_MECHANISM hm = {CKM_SHA256_HMAC, NULL, 0}, hm384 = {CKM_SHA384_HMAC, NULL, 0};
    /* HMAC-SHA384 with a 32-byte key: any hash with any HMAC key (vhsmd with parameters) */
    uint8_t tag384[48];
    CK_ULONG t384 = sizeof(tag384);
    assert_int_equal(F->C_SignInit(s, &hm384, h), CKR_OK);
    assert_int_equal(F->C_Sign(s, (CK_BYTE_PTR)msg, ml, tag384, &t384), CKR_OK);
    assert_int_equal(t384, 48);
    uint8_t tag1[64], tag2[64];
    CK_ULONG t1 = sizeof(tag1), t2 = sizeof(tag2);
    assert_int_equal(F->C_SignInit(s, &hm, h), CKR_OK);
    assert_int_equal(F->C_Sign(s, (CK_BYTE_PTR)msg, ml, tag1, &t1), CKR_OK);
    assert_int_equal(t1, 32);
    assert_int_equal(F->C_SignInit(s, &hm, h), CKR_OK);
    assert_int_equal(F->C_SignUpdate(s, (CK_BYTE_PTR)msg, 7), CKR_OK);
    assert_int_equal(F->C_SignUpdate(s, (CK_BYTE_PTR)msg + 7, ml - 7), CKR_OK);
    assert_int_equal(F->C_SignFinal(s, tag2, &t2), CKR_OK);
    assert_memory_equal(tag1, tag2, 32);
    assert_int_equal(F->C_VerifyInit(s, &hm, h), CKR_OK);
    assert_int_equal(F->C_Verify(s, (CK_BYTE_PTR)msg, ml, tag1, 32), CKR_OK);
    tag1[0] ^= 1;
    assert_int_equal(F->C_VerifyInit(s, &hm, h), CKR_OK);
    assert_int_equal(F->C_Verify(s, (CK_BYTE_PTR)msg, ml, tag1, 32), CKR_SIGNATURE_INVALID);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
}

static void test_oaep_and_digest(void **state) {
    assert_int_equal(init_default(), CKR_OK);
    CK_SESSION_HANDLE s = open_rw();
    CK_OBJECT_HANDLE pub, priv;
    gen_pair(s, CKM_RSA_PKCS_KEY_PAIR_GEN, "oaep-rsa", &pub, &priv);
    CK_RSA_PKCS_OAEP_PARAMS p = {CKM_SHA256, CKG_MGF1_SHA256, CKZ_DATA_SPECIFIED, NULL, 0};
    CK_MECHANISM m = {CKM_RSA_PKCS_OAEP, &p, sizeof(p)};
    const uint8_t pt[] = "a data key";
    uint8_t ct[512], out[512];
    CK_ULONG cl = 0, ol = 0;
    assert_int_equal(F->C_EncryptInit(s, &m, priv), CKR_KEY_FUNCTION_NOT_PERMITTED);
    assert_int_equal(F->C_EncryptInit(s, &m, pub), CKR_OK);
    assert_int_equal(F->C_Encrypt(s, (CK_BYTE_PTR)pt, 10, NULL, &cl), CKR_OK);
    assert_int_equal(cl, 256);
    assert_int_equal(F->C_Encrypt(s, (CK_BYTE_PTR)pt, 10, ct, &cl), CKR_OK);
    assert_int_equal(F->C_DecryptInit(s, &m, priv), CKR_OK);
    assert_int_equal(F->C_Decrypt(s, ct, cl, NULL, &ol), CKR_OK);
    assert_int_equal(ol, 256 - 2 * 32 - 2);
    ol = 5;
    assert_int_equal(F->C_Decrypt(s, ct, cl, out, &ol), CKR_BUFFER_TOO_SMALL);
    ol = sizeof(out);
    assert_int_equal(F->C_Decrypt(s, ct, cl, out, &ol), CKR_OK);
    assert_int_equal(ol, 10);
    assert_memory_equal(out, pt, 10);
    /* ciphertext made by OpenSSL from the exported public key */
    EVP_PKEY *k = pub_of(s, pub);
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(k, NULL);
    size_t cl2 = sizeof(ct);
    assert_int_equal(EVP_PKEY_encrypt_init(c), 1);
    EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_OAEP_PADDING);
    EVP_PKEY_CTX_set_rsa_oaep_md(c, EVP_sha256());
    assert_int_equal(EVP_PKEY_encrypt(c, ct, &cl2, pt, 10), 1);
    EVP_PKEY_CTX_free(c);
    EVP_PKEY_free(k);
    assert_int_equal(F->C_DecryptInit(s, &m, priv), CKR_OK);
    ol = sizeof(out);
    assert_int_equal(F->C_Decrypt(s, ct, cl2, out, &ol), CKR_OK);
    assert_memory_equal(out, pt, 10);
    ct[10] ^= 1;
    assert_int_equal(F->C_DecryptInit(s, &m, priv), CKR_OK);
    ol = sizeof(out);
    assert_int_equal(F->C_Decrypt(s, ct, cl2, out, &ol), CKR_ENCRYPTED_DATA_INVALID);
    assert_int_equal(F->C_DecryptInit(s, &m, priv), CKR_OK);
    assert_int_equal(F->C_Decrypt(s, ct, 100, out, &ol), CKR_ENCRYPTED_DATA_LEN_RANGE);
    CK_RSA_PKCS_OAEP_PARAMS lab = {CKM_SHA256, CKG_MGF1_SHA256, CKZ_DATA_SPECIFIED, (void *)"x", 1};
    CK_MECHANISM ml = {CKM_RSA_PKCS_OAEP, &lab, sizeof(lab)};
    /* a label (vhsmd with parameters): a ciphertext made without it does not decrypt */
    ct[10] ^= 1; /* intact again: it decrypts without a label, not with one */
    ol = sizeof(out);
    assert_int_equal(F->C_DecryptInit(s, &ml, priv), CKR_OK);
    assert_int_equal(F->C_Decrypt(s, ct, cl2, out, &ol), CKR_ENCRYPTED_DATA_INVALID);
    assert_int_equal(F->C_DecryptInit(s, &m, priv), CKR_OK);
    ol = sizeof(out);
    assert_int_equal(F->C_Decrypt(s, ct, cl2, out, &ol), CKR_OK);

    /* digests against OpenSSL, single and multi-part */
    CK_MECHANISM d = {CKM_SHA384, NULL, 0};
    uint8_t md[64], ref[64];
    CK_ULONG dl = sizeof(md);
    SHA384(pt, 10, ref);
    assert_int_equal(F->C_DigestInit(s, &d), CKR_OK);
    assert_int_equal(F->C_Digest(s, (CK_BYTE_PTR)pt, 10, md, &dl), CKR_OK);
    assert_int_equal(dl, 48);
    assert_memory_equal(md, ref, 48);
    assert_int_equal(F->C_DigestInit(s, &d), CKR_OK);
    assert_int_equal(F->C_DigestUpdate(s, (CK_BYTE_PTR)pt, 3), CKR_OK);
    assert_int_equal(F->C_DigestUpdate(s, (CK_BYTE_PTR)pt + 3, 7), CKR_OK);
    dl = 4;
    assert_int_equal(F->C_DigestFinal(s, md, &dl), CKR_BUFFER_TOO_SMALL);
    dl = sizeof(md);
    assert_int_equal(F->C_DigestFinal(s, md, &dl), CKR_OK);
    assert_memory_equal(md, ref, 48);
    assert_int_equal(F->C_DigestInit(s, &d), CKR_OK);
    assert_int_equal(F->C_DigestKey(s, priv), CKR_KEY_INDIGESTIBLE);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
}

/* AES (revision 2): GCM, CBC, CBC-PAD and CTR, single and multi-part, length rules, parameters,
 * a forged tag. The key never leaves vhsmd, so the mechanisms are checked against each other:
 * GCM with a 96-bit IV is CTR from the counter block IV || 2 (NIST SP 800-38D), CBC-PAD is CBC
 * over the PKCS#7-padded data. */
static CK_RV crypt_all(CK_SESSION_HANDLE s, bool enc, CK_MECHANISM *m, CK_OBJECT_HANDLE k,
                       const uint8_t *in, CK_ULONG n, uint8_t *out, CK_ULONG *ol) {
    CK_RV rv = enc ? F->C_EncryptInit(s, m, k) : F->C_DecryptInit(s, m, k);
    if (rv != CKR_OK)
        return rv;
    return enc ? F->C_Encrypt(s, (CK_BYTE_PTR)in, n, out, ol)
               : F->C_Decrypt(s, (CK_BYTE_PTR)in, n, out, ol);
}

static void test_aes(void **state) {
    assert_int_equal(init_default(), CKR_OK);
    CK_SESSION_HANDLE s = open_rw();
    CK_MECHANISM_INFO mi;
    assert_int_equal(F->C_GetMechanismInfo(0, CKM_AES_GCM, &mi), CKR_OK);
    assert_true(mi.flags & CKF_ENCRYPT);
    CK_OBJECT_HANDLE k = gen_secret(s, CKM_AES_KEY_GEN, 32);
    uint8_t pt[100], ct[200], ct2[200], back[200];
    for (size_t i = 0; i < sizeof(pt); i++)
        pt[i] = (uint8_t)(i * 7 + 1);
    uint8_t iv[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, aad[5] = "head";
    CK_GCM_PARAMS gp = {iv, 12, 96, aad, 5, 128};
    CK_MECHANISM gcm = {CKM_AES_GCM, &gp, sizeof(gp)};

    /* GCM single-part, length query, short buffer */
    CK_ULONG cl = 0;
    assert_int_equal(F->C_EncryptInit(s, &gcm, k), CKR_OK);
    assert_int_equal(F->C_Encrypt(s, pt, sizeof(pt), NULL, &cl), CKR_OK);
    assert_int_equal(cl, 116);
    cl = 10;
    assert_int_equal(F->C_Encrypt(s, pt, sizeof(pt), ct, &cl), CKR_BUFFER_TOO_SMALL);
    cl = sizeof(ct);
    assert_int_equal(F->C_Encrypt(s, pt, sizeof(pt), ct, &cl), CKR_OK);
    assert_int_equal(cl, 116);
    /* multi-part gives the same ciphertext */
    CK_ULONG part = sizeof(ct2), total = 0;
    assert_int_equal(F->C_EncryptInit(s, &gcm, k), CKR_OK);
    assert_int_equal(F->C_EncryptUpdate(s, pt, 33, ct2, &part), CKR_OK);
    total += part;
    part = sizeof(ct2) - total;
    assert_int_equal(F->C_EncryptUpdate(s, pt + 33, sizeof(pt) - 33, ct2 + total, &part), CKR_OK);
    total += part;
    part = sizeof(ct2) - total;
    assert_int_equal(F->C_EncryptFinal(s, ct2 + total, &part), CKR_OK);
    total += part;
    assert_int_equal(total, 116);
    assert_memory_equal(ct, ct2, 116);
    /* decrypt, single and multi-part; a forged tag, other AAD */
    CK_ULONG bl = sizeof(back);
    assert_int_equal(crypt_all(s, false, &gcm, k, ct, 116, back, &bl), CKR_OK);
    assert_int_equal(bl, 100);
    assert_memory_equal(back, pt, 100);
    ct[115] ^= 1;
    bl = sizeof(back);
    assert_int_equal(crypt_all(s, false, &gcm, k, ct, 116, back, &bl), CKR_ENCRYPTED_DATA_INVALID);
    ct[115] ^= 1;
    CK_GCM_PARAMS gp2 = {iv, 12, 96, (uint8_t *)"hexd", 5, 128};
    CK_MECHANISM gcm2 = {CKM_AES_GCM, &gp2, sizeof(gp2)};
    bl = sizeof(back);
    assert_int_equal(crypt_all(s, false, &gcm2, k, ct, 116, back, &bl), CKR_ENCRYPTED_DATA_INVALID);
    bl = sizeof(back);
    assert_int_equal(crypt_all(s, false, &gcm, k, ct, 10, back, &bl), CKR_ENCRYPTED_DATA_LEN_RANGE);
    /* parameters */
    CK_GCM_PARAMS bad = {iv, 12, 96, NULL, 0, 64};
    CK_MECHANISM badm = {CKM_AES_GCM, &bad, sizeof(bad)};
    assert_int_equal(F->C_EncryptInit(s, &badm, k), CKR_MECHANISM_PARAM_INVALID);
    CK_MECHANISM nop = {CKM_AES_GCM, NULL, 0};
    assert_int_equal(F->C_EncryptInit(s, &nop, k), CKR_MECHANISM_PARAM_INVALID);
    CK_OBJECT_HANDLE hk = gen_secret(s, CKM_GENERIC_SECRET_KEY_GEN, 32);
    assert_int_equal(F->C_EncryptInit(s, &gcm, hk), CKR_KEY_TYPE_INCONSISTENT);
    /* a 96-bit tag */
    CK_GCM_PARAMS g96 = {iv, 12, 96, aad, 5, 96};
    CK_MECHANISM m96 = {CKM_AES_GCM, &g96, sizeof(g96)};
    cl = sizeof(ct2);
    assert_int_equal(crypt_all(s, true, &m96, k, pt, sizeof(pt), ct2, &cl), CKR_OK);
    assert_int_equal(cl, 112);
    assert_memory_equal(ct2, ct, 112); /* same keystream and tag prefix */

    /* CTR from IV || 2 gives GCM's ciphertext */
    CK_AES_CTR_PARAMS cp = {32, {0}};
    memcpy(cp.cb, iv, 12);
    cp.cb[15] = 2;
    CK_MECHANISM ctr = {CKM_AES_CTR, &cp, sizeof(cp)};
    cl = sizeof(ct2);
    assert_int_equal(crypt_all(s, true, &ctr, k, pt, sizeof(pt), ct2, &cl), CKR_OK);
    assert_int_equal(cl, 100);
    assert_memory_equal(ct2, ct, 100);
    bl = sizeof(back);
    assert_int_equal(crypt_all(s, false, &ctr, k, ct2, 100, back, &bl), CKR_OK);
    assert_memory_equal(back, pt, 100);

    /* CBC and CBC-PAD */
    uint8_t civ[16] = {9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5, 6};
    CK_MECHANISM cbc = {CKM_AES_CBC, civ, 16}, pad = {CKM_AES_CBC_PAD, civ, 16};
    cl = sizeof(ct);
    assert_int_equal(crypt_all(s, true, &cbc, k, pt, 100, ct, &cl), CKR_DATA_LEN_RANGE);
    CK_MECHANISM cbc_short = {CKM_AES_CBC, civ, 8};
    assert_int_equal(F->C_EncryptInit(s, &cbc_short, k), CKR_MECHANISM_PARAM_INVALID);
    cl = sizeof(ct);
    assert_int_equal(crypt_all(s, true, &pad, k, pt, 100, ct, &cl), CKR_OK);
    assert_int_equal(cl, 112);
    uint8_t padded[112];
    memcpy(padded, pt, 100);
    memset(padded + 100, 12, 12);
    cl = sizeof(ct2);
    assert_int_equal(crypt_all(s, true, &cbc, k, padded, 112, ct2, &cl), CKR_OK);
    assert_memory_equal(ct, ct2, 112);
    bl = sizeof(back);
    assert_int_equal(crypt_all(s, false, &pad, k, ct, 112, back, &bl), CKR_OK);
    assert_int_equal(bl, 100);
    assert_memory_equal(back, pt, 100);
    bl = sizeof(back);
    assert_int_equal(crypt_all(s, false, &pad, k, ct, 100, back, &bl),
                     CKR_ENCRYPTED_DATA_LEN_RANGE);
    /* empty plaintext with padding: one block */
    cl = sizeof(ct);
    assert_int_equal(crypt_all(s, true, &pad, k, pt, 0, ct, &cl), CKR_OK);
    assert_int_equal(cl, 16);
    /* mixing rules hold for encryption too */
    assert_int_equal(F->C_EncryptInit(s, &gcm, k), CKR_OK);
    part = sizeof(ct);
    assert_int_equal(F->C_EncryptUpdate(s, pt, 10, ct, &part), CKR_OK);
    cl = sizeof(ct);
    assert_int_equal(F->C_Encrypt(s, pt, 10, ct, &cl), CKR_OPERATION_ACTIVE);
    assert_int_equal(F->C_EncryptFinal(s, ct, &cl), CKR_OPERATION_NOT_INITIALIZED);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
}

/* ---- threads -------------------------------------------------------------------------------- */

typedef struct ThreadArg {
    CK_SESSION_HANDLE shared;
    CK_OBJECT_HANDLE pub, priv;
    int failures;
} ThreadArg;

static void *worker(void *p) {
    ThreadArg *a = p;
    CK_SESSION_HANDLE own = 0;
    if (F->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &own) != CKR_OK) {
        a->failures++;
        return NULL;
    }
    CK_MECHANISM m = {CKM_ECDSA_SHA256, NULL, 0};
    for (int i = 0; i < 50; i++) {
        uint8_t msg[32], sig[64];
        CK_ULONG sl = sizeof(sig);
        /* the shared session: calls that are complete in themselves */
        if (F->C_GenerateRandom(a->shared, msg, sizeof(msg)) != CKR_OK)
            a->failures++;
        CK_OBJECT_CLASS cls = 0;
        CK_ATTRIBUTE t = {CKA_CLASS, &cls, sizeof(cls)};
        if (F->C_GetAttributeValue(a->shared, a->priv, &t, 1) != CKR_OK || cls != CKO_PRIVATE_KEY)
            a->failures++;
        /* its own session: sign and verify */
        if (F->C_SignInit(own, &m, a->priv) != CKR_OK ||
            F->C_Sign(own, msg, sizeof(msg), sig, &sl) != CKR_OK ||
            F->C_VerifyInit(own, &m, a->pub) != CKR_OK ||
            F->C_Verify(own, msg, sizeof(msg), sig, sl) != CKR_OK)
            a->failures++;
    }
    F->C_CloseSession(own);
    return NULL;
}

/* ---- C_CreateObject: plaintext secret key import -------------------------------------------- */

static size_t unhex(const char *h, uint8_t *out, size_t cap) {
    size_t n = strlen(h) / 2;
    assert_true(n <= cap);
    for (size_t i = 0; i < n; i++) {
        unsigned v = 0;
        assert_int_equal(sscanf(h + 2 * i, "%2x", &v), 1);
        out[i] = (uint8_t)v;
    }
    return n;
}

static CK_BBOOL bool_attr(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type) {
    CK_BBOOL b = 2;
    CK_ATTRIBUTE a = {type, &b, sizeof(b)};
    assert_int_equal(F->C_GetAttributeValue(s, h, &a, 1), CKR_OK);
    return b;
}

/* An AES-256 key imported from CKA_VALUE encrypts the GCM spec's test case 16 (McGrew and Viega,
 * "The Galois/Counter Mode of Operation", AES-256, 96-bit IV) to the published ciphertext and
 * tag; it is marked imported (not local, never "always sensitive"); its value stays unreadable. */
static void test_import_aes_gcm_kat(void **state) {
    assert_int_equal(init_default(), CKR_OK);
    CK_SESSION_HANDLE s = open_rw();
    uint8_t key[32], pt[64], aad[20], iv[12], want[80], ct[96], back[96];
    unhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308", key, sizeof(key));
    size_t pn = unhex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
                      "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
                      pt, sizeof(pt));
    unhex("feedfacedeadbeeffeedfacedeadbeefabaddad2", aad, sizeof(aad));
    unhex("cafebabefacedbaddecaf888", iv, sizeof(iv));
    size_t wn = unhex("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
                      "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
                      "76fc6ece0f4e1768cddf8853bb2d551b",
                      want, sizeof(want));
    assert_int_equal(pn, 60);
    assert_int_equal(wn, 76);

    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE kt = CKK_AES;
    CK_BBOOL yes = CK_TRUE;
    CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)},   {CKA_KEY_TYPE, &kt, sizeof(kt)},
                        {CKA_TOKEN, &yes, sizeof(yes)},   {CKA_ENCRYPT, &yes, sizeof(yes)},
                        {CKA_DECRYPT, &yes, sizeof(yes)}, {CKA_LABEL, "imported-gcm", 12},
                        {CKA_VALUE, key, sizeof(key)}};
    CK_OBJECT_HANDLE k = 0;
    assert_int_equal(F->C_CreateObject(s, t, 7, &k), CKR_OK);

    CK_GCM_PARAMS gp = {iv, 12, 96, aad, sizeof(aad), 128};
    CK_MECHANISM gcm = {CKM_AES_GCM, &gp, sizeof(gp)};
    CK_ULONG cl = sizeof(ct);
    assert_int_equal(crypt_all(s, true, &gcm, k, pt, pn, ct, &cl), CKR_OK);
    assert_int_equal(cl, wn);
    assert_memory_equal(ct, want, wn);
    CK_ULONG bl = sizeof(back);
    assert_int_equal(crypt_all(s, false, &gcm, k, want, wn, back, &bl), CKR_OK);
    assert_int_equal(bl, pn);
    assert_memory_equal(back, pt, pn);

    /* imported: CKA_LOCAL, ALWAYS_SENSITIVE, NEVER_EXTRACTABLE false; the value is sensitive */
    assert_int_equal(bool_attr(s, k, CKA_LOCAL), CK_FALSE);
    assert_int_equal(bool_attr(s, k, CKA_ALWAYS_SENSITIVE), CK_FALSE);
    assert_int_equal(bool_attr(s, k, CKA_NEVER_EXTRACTABLE), CK_FALSE);
    assert_int_equal(bool_attr(s, k, CKA_SENSITIVE), CK_TRUE);
    uint8_t v[64];
    CK_ATTRIBUTE va = {CKA_VALUE, v, sizeof(v)};
    assert_int_equal(F->C_GetAttributeValue(s, k, &va, 1), CKR_ATTRIBUTE_SENSITIVE);
    /* a generated key, for contrast, is local */
    CK_OBJECT_HANDLE g = gen_secret(s, CKM_AES_KEY_GEN, 32);
    assert_int_equal(bool_attr(s, g, CKA_LOCAL), CK_TRUE);
    assert_int_equal(F->C_DestroyObject(s, g), CKR_OK);
    assert_int_equal(F->C_DestroyObject(s, k), CKR_OK);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
}

/* An HMAC key imported as CKK_GENERIC_SECRET gives OpenSSL's HMAC-SHA256 of the same key. */
static void test_import_hmac(void **state) {
    assert_int_equal(init_default(), CKR_OK);
    CK_SESSION_HANDLE s = open_rw();
    uint8_t key[32], want[32], mac[32];
    for (size_t i = 0; i < sizeof(key); i++)
        key[i] = (uint8_t)(0xa0 + i);
    static const char msg[] = "what do ya want for nothing?";
    unsigned wl = 0;
    assert_non_null(
        HMAC(EVP_sha256(), key, sizeof(key), (const uint8_t *)msg, strlen(msg), want, &wl));
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE kt = CKK_GENERIC_SECRET;
    CK_BBOOL yes = CK_TRUE;
    CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)},
                        {CKA_KEY_TYPE, &kt, sizeof(kt)},
                        {CKA_SIGN, &yes, sizeof(yes)},
                        {CKA_VALUE, key, sizeof(key)}};
    CK_OBJECT_HANDLE k = 0;
    assert_int_equal(F->C_CreateObject(s, t, 4, &k), CKR_OK);
    CK_MECHANISM m = {CKM_SHA256_HMAC, NULL, 0};
    CK_ULONG ml = sizeof(mac);
    assert_int_equal(F->C_SignInit(s, &m, k), CKR_OK);
    assert_int_equal(F->C_Sign(s, (CK_BYTE_PTR)msg, strlen(msg), mac, &ml), CKR_OK);
    assert_int_equal(ml, 32);
    assert_memory_equal(mac, want, 32);
    assert_int_equal(F->C_DestroyObject(s, k), CKR_OK);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
}

/* Bad templates: each refused with the spec's code, and nothing created. */
static void test_import_bad_templates(void **state) {
    assert_int_equal(init_default(), CKR_OK);
    CK_SESSION_HANDLE s = open_rw();
    uint8_t key[33] = {0}, other[32] = {1};
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY, data = CKO_DATA;
    CK_KEY_TYPE aes = CKK_AES, des = CKK_DES3;
    CK_ULONG len16 = 16;
    CK_BBOOL yes = CK_TRUE;
    CK_OBJECT_HANDLE k = 0;
#define T(...) ((CK_ATTRIBUTE[]){__VA_ARGS__})
#define N(...) (sizeof((CK_ATTRIBUTE[]){__VA_ARGS__}) / sizeof(CK_ATTRIBUTE))
#define CREATE(...) F->C_CreateObject(s, T(__VA_ARGS__), N(__VA_ARGS__), &k)
    CK_ATTRIBUTE c = {CKA_CLASS, &cls, sizeof(cls)}, ty = {CKA_KEY_TYPE, &aes, sizeof(aes)},
                 v32 = {CKA_VALUE, key, 32};
    /* no class; no key type; no value */
    assert_int_equal(CREATE(ty, v32), CKR_TEMPLATE_INCOMPLETE);
    assert_int_equal(CREATE(c, v32), CKR_TEMPLATE_INCOMPLETE);
    assert_int_equal(CREATE(c, ty), CKR_TEMPLATE_INCOMPLETE);
    /* a value of the wrong size; a key type vhsmd does not hold; a NULL value */
    assert_int_equal(CREATE(c, ty, {CKA_VALUE, key, 33}), CKR_ATTRIBUTE_VALUE_INVALID);
    assert_int_equal(CREATE(c, ty, {CKA_VALUE, key, 20}), CKR_ATTRIBUTE_VALUE_INVALID);
    assert_int_equal(CREATE(c, {CKA_KEY_TYPE, &des, sizeof(des)}, {CKA_VALUE, key, 24}),
                     CKR_ATTRIBUTE_VALUE_INVALID);
    assert_int_equal(CREATE(c, ty, {CKA_VALUE, NULL, 32}), CKR_ATTRIBUTE_VALUE_INVALID);
    /* a class vhsmd does not hold; an attribute a data object does not have */
    CK_OBJECT_CLASS hw = CKO_HW_FEATURE;
    assert_int_equal(CREATE({CKA_CLASS, &hw, sizeof(hw)}, v32), CKR_ATTRIBUTE_VALUE_INVALID);
    assert_int_equal(CREATE({CKA_CLASS, &data, sizeof(data)}, ty, v32), CKR_ATTRIBUTE_TYPE_INVALID);
    /* CKA_VALUE_LEN against the value; CKA_VALUE twice, different; usage AES cannot have */
    assert_int_equal(CREATE(c, ty, v32, {CKA_VALUE_LEN, &len16, sizeof(len16)}),
                     CKR_TEMPLATE_INCONSISTENT);
    assert_int_equal(CREATE(c, ty, v32, {CKA_VALUE, other, 32}), CKR_TEMPLATE_INCONSISTENT);
    assert_int_equal(CREATE(c, ty, v32, {CKA_SIGN, &yes, sizeof(yes)}),
                     CKR_ATTRIBUTE_VALUE_INVALID);
    /* attributes only the token sets */
    assert_int_equal(CREATE(c, ty, v32, {CKA_LOCAL, &yes, sizeof(yes)}), CKR_ATTRIBUTE_READ_ONLY);
    /* a generation template with a value */
    CK_MECHANISM gm = {CKM_AES_KEY_GEN, NULL, 0};
    CK_ULONG len32 = 32;
    CK_ATTRIBUTE gt[] = {{CKA_VALUE_LEN, &len32, sizeof(len32)}, v32};
    assert_int_equal(F->C_GenerateKey(s, &gm, gt, 2, &k), CKR_TEMPLATE_INCONSISTENT);
    /* a read-only session */
    CK_SESSION_HANDLE ro = 0;
    assert_int_equal(F->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &ro), CKR_OK);
    assert_int_equal(F->C_CreateObject(ro, T(c, ty, v32), 3, &k), CKR_SESSION_READ_ONLY);
#undef CREATE
#undef N
#undef T
    /* nothing was created */
    CK_ATTRIBUTE ft[] = {c};
    CK_OBJECT_HANDLE found[64];
    CK_ULONG n = 0;
    assert_int_equal(F->C_FindObjectsInit(s, ft, 1), CKR_OK);
    assert_int_equal(F->C_FindObjects(s, found, 64, &n), CKR_OK);
    assert_int_equal(F->C_FindObjectsFinal(s), CKR_OK);
    for (CK_ULONG i = 0; i < n; i++)
        assert_int_not_equal(bool_attr(s, found[i], CKA_LOCAL), CK_FALSE);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
}

/* Private keys imported from their components: a P-256 key made by OpenSSL (its d as CKA_VALUE)
 * signs with CKM_ECDSA_SHA256 and OpenSSL verifies with its own copy; an Ed25519 key from RFC
 * 8032 section 7.1 TEST 1 gives the published signature of the empty message. */
static void test_import_private_keys(void **state) {
    assert_int_equal(init_default(), CKR_OK);
    CK_SESSION_HANDLE s = open_rw();
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_KEY_TYPE ec = CKK_EC, ed = CKK_EC_EDWARDS;
    CK_BBOOL yes = CK_TRUE;
    EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    assert_non_null(pk);
    BIGNUM *d = NULL;
    assert_int_equal(EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_PRIV_KEY, &d), 1);
    uint8_t dv[32];
    assert_int_equal(BN_bn2binpad(d, dv, 32), 32);
    BN_clear_free(d);
    CK_ATTRIBUTE t[] = {
        {CKA_CLASS, &cls, sizeof(cls)}, {CKA_KEY_TYPE, &ec, sizeof(ec)},
        {CKA_TOKEN, &yes, sizeof(yes)}, {CKA_SIGN, &yes, sizeof(yes)},
        {CKA_LABEL, "imported-ec", 11}, {CKA_EC_PARAMS, (void *)oid_p256, sizeof(oid_p256)},
        {CKA_VALUE, dv, sizeof(dv)}};
    CK_OBJECT_HANDLE k = 0;
    /* no curve: incomplete; a zero scalar: invalid */
    assert_int_equal(F->C_CreateObject(s, (CK_ATTRIBUTE[]){t[0], t[1], t[6]}, 3, &k),
                     CKR_TEMPLATE_INCOMPLETE);
    uint8_t zero[32] = {0};
    assert_int_equal(
        F->C_CreateObject(s, (CK_ATTRIBUTE[]){t[0], t[1], t[5], {CKA_VALUE, zero, sizeof(zero)}}, 4,
                          &k),
        CKR_ATTRIBUTE_VALUE_INVALID);
    assert_int_equal(F->C_CreateObject(s, t, 7, &k), CKR_OK);
    assert_int_equal(bool_attr(s, k, CKA_LOCAL), CK_FALSE);
    CK_MECHANISM m = {CKM_ECDSA_SHA256, NULL, 0};
    static const uint8_t msg[] = "signed by an imported key";
    uint8_t sig[64];
    CK_ULONG sl = sizeof(sig);
    assert_int_equal(F->C_SignInit(s, &m, k), CKR_OK);
    assert_int_equal(F->C_Sign(s, (CK_BYTE_PTR)msg, sizeof(msg) - 1, sig, &sl), CKR_OK);
    check_ecdsa(pk, msg, sizeof(msg) - 1, sig, sl);
    EVP_PKEY_free(pk);
    assert_int_equal(F->C_DestroyObject(s, k), CKR_OK);

    uint8_t seed[32], want[64], esig[64];
    unhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60", seed, sizeof(seed));
    unhex("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc6"
          "1e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
          want, sizeof(want));
    CK_ATTRIBUTE et[] = {{CKA_CLASS, &cls, sizeof(cls)},
                         {CKA_KEY_TYPE, &ed, sizeof(ed)},
                         {CKA_SIGN, &yes, sizeof(yes)},
                         {CKA_EC_PARAMS, (void *)oid_ed25519, sizeof(oid_ed25519)},
                         {CKA_VALUE, seed, sizeof(seed)}};
    assert_int_equal(F->C_CreateObject(s, et, 4, &k), CKR_TEMPLATE_INCOMPLETE);
    assert_int_equal(F->C_CreateObject(s, et, 5, &k), CKR_OK);
    CK_MECHANISM em = {CKM_EDDSA, NULL, 0};
    sl = sizeof(esig);
    assert_int_equal(F->C_SignInit(s, &em, k), CKR_OK);
    assert_int_equal(F->C_Sign(s, (CK_BYTE_PTR) "", 0, esig, &sl), CKR_OK);
    assert_int_equal(sl, 64);
    assert_memory_equal(esig, want, 64);
    assert_int_equal(F->C_DestroyObject(s, k), CKR_OK);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
}

/* An RSA-2048 key made by OpenSSL, imported from its eight components, signs with
 * CKM_SHA256_RSA_PKCS exactly as OpenSSL does with the same key (PKCS#1 v1.5 is deterministic);
 * a missing component is CKR_TEMPLATE_INCOMPLETE, CKA_MODULUS in a generation template
 * CKR_ATTRIBUTE_READ_ONLY. */
static void test_import_rsa(void **state) {
    assert_int_equal(init_default(), CKR_OK);
    CK_SESSION_HANDLE s = open_rw();
    EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    assert_non_null(pk);
    static const char *const names[8] = {
        OSSL_PKEY_PARAM_RSA_N,         OSSL_PKEY_PARAM_RSA_E,
        OSSL_PKEY_PARAM_RSA_D,         OSSL_PKEY_PARAM_RSA_FACTOR1,
        OSSL_PKEY_PARAM_RSA_FACTOR2,   OSSL_PKEY_PARAM_RSA_EXPONENT1,
        OSSL_PKEY_PARAM_RSA_EXPONENT2, OSSL_PKEY_PARAM_RSA_COEFFICIENT1};
    static const CK_ATTRIBUTE_TYPE types[8] = {
        CKA_MODULUS, CKA_PUBLIC_EXPONENT, CKA_PRIVATE_EXPONENT, CKA_PRIME_1,
        CKA_PRIME_2, CKA_EXPONENT_1,      CKA_EXPONENT_2,       CKA_COEFFICIENT};
    uint8_t comp[8][256];
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_KEY_TYPE kt = CKK_RSA;
    CK_BBOOL yes = CK_TRUE;
    CK_ATTRIBUTE t[12] = {{CKA_CLASS, &cls, sizeof(cls)},
                          {CKA_KEY_TYPE, &kt, sizeof(kt)},
                          {CKA_SIGN, &yes, sizeof(yes)},
                          {CKA_LABEL, "imported-rsa", 12}};
    for (int i = 0; i < 8; i++) {
        BIGNUM *bn = NULL;
        assert_int_equal(EVP_PKEY_get_bn_param(pk, names[i], &bn), 1);
        int n = BN_bn2bin(bn, comp[i]);
        assert_true(n > 0 && n <= 256);
        BN_clear_free(bn);
        t[4 + i] = (CK_ATTRIBUTE){types[i], comp[i], (CK_ULONG)n};
    }
    CK_OBJECT_HANDLE k = 0;
    assert_int_equal(F->C_CreateObject(s, t, 11, &k), CKR_TEMPLATE_INCOMPLETE);
    assert_int_equal(F->C_CreateObject(s, t, 12, &k), CKR_OK);
    assert_int_equal(bool_attr(s, k, CKA_LOCAL), CK_FALSE);
    static const uint8_t msg[] = "signed by an imported RSA key";
    uint8_t sig[256], want[256];
    CK_ULONG sl = sizeof(sig);
    CK_MECHANISM m = {CKM_SHA256_RSA_PKCS, NULL, 0};
    assert_int_equal(F->C_SignInit(s, &m, k), CKR_OK);
    assert_int_equal(F->C_Sign(s, (CK_BYTE_PTR)msg, sizeof(msg) - 1, sig, &sl), CKR_OK);
    assert_int_equal(sl, 256);
    size_t wl = sizeof(want);
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestSignInit(c, NULL, EVP_sha256(), NULL, pk), 1);
    assert_int_equal(EVP_DigestSign(c, want, &wl, msg, sizeof(msg) - 1), 1);
    EVP_MD_CTX_free(c);
    assert_int_equal(wl, 256);
    assert_memory_equal(sig, want, 256);
    EVP_PKEY_free(pk);
    assert_int_equal(F->C_DestroyObject(s, k), CKR_OK);
    /* the modulus is the token's to set in a generation template */
    CK_MECHANISM gm = {CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0};
    CK_ULONG bits = 2048;
    CK_ATTRIBUTE pt[] = {{CKA_MODULUS_BITS, &bits, sizeof(bits)}, t[4]};
    CK_OBJECT_HANDLE a, b;
    assert_int_equal(F->C_GenerateKeyPair(s, &gm, pt, 2, NULL, 0, &a, &b), CKR_ATTRIBUTE_READ_ONLY);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
}

/* vhsmd --no-plaintext-import: C_CreateObject of a key is CKR_ACTION_PROHIBITED, with vhsmd's
 * reason in its reply; generation still works. */
static void test_import_refused(void **state) {
    vhsmd_stop();
    vhsmd_extra_arg = "--no-plaintext-import";
    vhsmd_start();
    vhsmd_extra_arg = NULL;
    assert_int_equal(init_default(), CKR_OK);
    CK_SESSION_HANDLE s = open_rw();
    uint8_t key[32] = {7};
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE kt = CKK_AES;
    CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)},
                        {CKA_KEY_TYPE, &kt, sizeof(kt)},
                        {CKA_VALUE, key, sizeof(key)}};
    CK_OBJECT_HANDLE k = 0;
    assert_int_equal(F->C_CreateObject(s, t, 3, &k), CKR_ACTION_PROHIBITED);
    CK_OBJECT_HANDLE g = gen_secret(s, CKM_AES_KEY_GEN, 32);
    assert_int_equal(F->C_DestroyObject(s, g), CKR_OK);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
    vhsmd_stop();
    vhsmd_start();
}

static void test_16_threads(void **state) {
    assert_int_equal(init_default(), CKR_OK);
    CK_SESSION_HANDLE s = open_rw();
    ThreadArg args[16];
    CK_OBJECT_HANDLE pub, priv;
    gen_pair(s, CKM_EC_KEY_PAIR_GEN, "threads-ec", &pub, &priv);
    pthread_t th[16];
    for (int i = 0; i < 16; i++) {
        args[i] = (ThreadArg){.shared = s, .pub = pub, .priv = priv};
        assert_int_equal(pthread_create(&th[i], NULL, worker, &args[i]), 0);
    }
    for (int i = 0; i < 16; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].failures, 0);
    }
    CK_TOKEN_INFO ti;
    assert_int_equal(F->C_GetTokenInfo(0, &ti), CKR_OK);
    assert_int_equal(ti.ulSessionCount, 1);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
}

/* ---- fork ----------------------------------------------------------------------------------- */

static void test_fork(void **state) {
    assert_int_equal(init_default(), CKR_OK);
    CK_SESSION_HANDLE s = open_rw();
    CK_OBJECT_HANDLE pub, priv;
    gen_pair(s, CKM_EC_KEY_PAIR_GEN, "fork-ec", &pub, &priv);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* the parent's state is not ours: not initialised until we say so */
        CK_SESSION_INFO si;
        int bad = 0;
        if (F->C_GetSessionInfo(s, &si) != CKR_CRYPTOKI_NOT_INITIALIZED)
            bad |= 1;
        if (init_default() != CKR_OK)
            bad |= 2;
        CK_SESSION_HANDLE cs = 0;
        if (F->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &cs) != CKR_OK)
            bad |= 4;
        /* the parent's login (its ticket is bound to its pid) does not carry over */
        CK_OBJECT_HANDLE found[4];
        CK_ULONG n = 0;
        CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
        CK_ATTRIBUTE t2[] = {{CKA_LABEL, "fork-ec", 7}, {CKA_CLASS, &cls, sizeof(cls)}};
        if (F->C_FindObjectsInit(cs, t2, 2) != CKR_OK ||
            F->C_FindObjects(cs, found, 4, &n) != CKR_OK || n != 0 ||
            F->C_FindObjectsFinal(cs) != CKR_OK)
            bad |= 64;
        if (F->C_Login(cs, CKU_USER, (CK_UTF8CHAR_PTR)USER_PIN, strlen(USER_PIN)) != CKR_OK)
            bad |= 128;
        /* the key is found again by label, and used on the child's own connections */
        if (F->C_FindObjectsInit(cs, t2, 2) != CKR_OK ||
            F->C_FindObjects(cs, found, 4, &n) != CKR_OK || n != 1 ||
            F->C_FindObjectsFinal(cs) != CKR_OK)
            bad |= 8;
        CK_MECHANISM m = {CKM_ECDSA_SHA256, NULL, 0};
        uint8_t sig[64];
        CK_ULONG sl = sizeof(sig);
        if (n == 1 && (F->C_SignInit(cs, &m, found[0]) != CKR_OK ||
                       F->C_Sign(cs, (CK_BYTE_PTR) "x", 1, sig, &sl) != CKR_OK))
            bad |= 16;
        if (F->C_Finalize(NULL) != CKR_OK)
            bad |= 32;
        _exit(bad);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    /* the parent goes on with its own session and connections */
    CK_MECHANISM m = {CKM_ECDSA_SHA256, NULL, 0};
    uint8_t sig[64];
    CK_ULONG sl = sizeof(sig);
    assert_int_equal(F->C_SignInit(s, &m, priv), CKR_OK);
    assert_int_equal(F->C_Sign(s, (CK_BYTE_PTR) "x", 1, sig, &sl), CKR_OK);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
}

/* Slots from a configuration file: one per "socket =" line, present while its vhsmd answers. */
static void test_config_file(void **state) {
    char conf[600], text[1300];
    snprintf(conf, sizeof(conf), "%s/pkcs11.conf", getenv("P11T_DIR"));
    snprintf(text, sizeof(text),
             "# vHSM PKCS#11 slots\nsocket = %s\n  socket=%s/absent.sock\nother = x\n", sock_path,
             getenv("P11T_DIR"));
    FILE *f = fopen(conf, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    char *saved = strdup(getenv("VHSM_PKCS11_SOCKETS"));
    unsetenv("VHSM_PKCS11_SOCKETS");
    setenv("VHSM_PKCS11_CONF", conf, 1);
    CK_RV rv = init_default();
    setenv("VHSM_PKCS11_SOCKETS", saved, 1);
    unsetenv("VHSM_PKCS11_CONF");
    free(saved);
    assert_int_equal(rv, CKR_OK);
    CK_ULONG n = 0;
    assert_int_equal(F->C_GetSlotList(CK_FALSE, NULL, &n), CKR_OK);
    assert_int_equal(n, 2);
    assert_int_equal(F->C_GetSlotList(CK_TRUE, NULL, &n), CKR_OK);
    assert_int_equal(n, 1);
    CK_SLOT_INFO si;
    assert_int_equal(F->C_GetSlotInfo(1, &si), CKR_OK);
    assert_false(si.flags & CKF_TOKEN_PRESENT);
    assert_true(si.flags & CKF_REMOVABLE_DEVICE);
    CK_TOKEN_INFO ti;
    assert_int_equal(F->C_GetTokenInfo(1, &ti), CKR_TOKEN_NOT_PRESENT);
    CK_SESSION_HANDLE s = 0;
    assert_int_equal(F->C_OpenSession(1, CKF_SERIAL_SESSION, NULL, NULL, &s),
                     CKR_TOKEN_NOT_PRESENT);
    assert_int_equal(F->C_GetTokenInfo(0, &ti), CKR_OK);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
}

/* A key deleted by another process (here a child with its own module state): the handle the
 * parent holds answers CKR_KEY_HANDLE_INVALID when used as a key, CKR_OBJECT_HANDLE_INVALID as
 * an object once the module has seen the listing. */
static void test_key_deleted_elsewhere(void **state) {
    assert_int_equal(init_default(), CKR_OK);
    CK_SESSION_HANDLE s = open_rw();
    CK_OBJECT_HANDLE pub, priv;
    gen_pair(s, CKM_EC_KEY_PAIR_GEN, "deleted-ec", &pub, &priv);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int bad = 0;
        CK_SESSION_HANDLE cs = 0;
        CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
        CK_ATTRIBUTE t[] = {{CKA_LABEL, "deleted-ec", 10}, {CKA_CLASS, &cls, sizeof(cls)}};
        CK_OBJECT_HANDLE found[2];
        CK_ULONG n = 0;
        if (init_default() != CKR_OK ||
            F->C_OpenSession(0, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &cs) != CKR_OK ||
            F->C_Login(cs, CKU_USER, (CK_UTF8CHAR_PTR)USER_PIN, strlen(USER_PIN)) != CKR_OK ||
            F->C_FindObjectsInit(cs, t, 2) != CKR_OK ||
            F->C_FindObjects(cs, found, 2, &n) != CKR_OK || n != 1 ||
            F->C_DestroyObject(cs, found[0]) != CKR_OK)
            bad = 1;
        (void)F->C_Finalize(NULL);
        _exit(bad);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CK_MECHANISM m = {CKM_ECDSA_SHA256, NULL, 0};
    uint8_t sig[64];
    CK_ULONG sl = sizeof(sig);
    assert_int_equal(F->C_SignInit(s, &m, priv), CKR_OK);
    assert_int_equal(F->C_Sign(s, (CK_BYTE_PTR) "x", 1, sig, &sl), CKR_KEY_HANDLE_INVALID);
    CK_ATTRIBUTE t[] = {{CKA_LABEL, "deleted-ec", 10}};
    CK_OBJECT_HANDLE found[2];
    CK_ULONG n = 9;
    assert_int_equal(F->C_FindObjectsInit(s, t, 1), CKR_OK);
    assert_int_equal(F->C_FindObjects(s, found, 2, &n), CKR_OK);
    assert_int_equal(n, 0);
    assert_int_equal(F->C_FindObjectsFinal(s), CKR_OK);
    CK_OBJECT_CLASS cls;
    CK_ATTRIBUTE a = {CKA_CLASS, &cls, sizeof(cls)};
    assert_int_equal(F->C_GetAttributeValue(s, pub, &a, 1), CKR_OBJECT_HANDLE_INVALID);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
}

/* ---- vhsmd restarted under an open session --------------------------------------------------- */

static void test_vhsmd_restart(void **state) {
    assert_int_equal(init_default(), CKR_OK);
    CK_SESSION_HANDLE s = open_rw();
    CK_OBJECT_HANDLE pub, priv;
    gen_pair(s, CKM_EC_KEY_PAIR_GEN, "restart-ec", &pub, &priv);
    CK_MECHANISM m = {CKM_ECDSA_SHA256, NULL, 0};
    uint8_t sig[64];
    CK_ULONG sl = sizeof(sig);
    assert_int_equal(F->C_SignInit(s, &m, priv), CKR_OK);
    assert_int_equal(F->C_Sign(s, (CK_BYTE_PTR) "x", 1, sig, &sl), CKR_OK);

    vhsmd_stop();
    vhsmd_start();
    /* the first use finds the connection gone: the token was removed under the session */
    sl = sizeof(sig);
    assert_int_equal(F->C_SignInit(s, &m, priv), CKR_OK); /* no I/O yet */
    assert_int_equal(F->C_Sign(s, (CK_BYTE_PTR) "x", 1, sig, &sl), CKR_DEVICE_REMOVED);
    CK_SESSION_INFO si;
    assert_int_equal(F->C_GetSessionInfo(s, &si), CKR_DEVICE_REMOVED);
    uint8_t r[8];
    assert_int_equal(F->C_GenerateRandom(s, r, sizeof(r)), CKR_DEVICE_REMOVED);
    assert_int_equal(F->C_CloseSession(s), CKR_OK);
    /* a new session works at once; the key (persistent in vhsmd) keeps its handle */
    s = open_rw();
    sl = sizeof(sig);
    assert_int_equal(F->C_SignInit(s, &m, priv), CKR_OK);
    assert_int_equal(F->C_Sign(s, (CK_BYTE_PTR) "x", 1, sig, &sl), CKR_OK);

    /* daemon down: token not present, calls on open sessions fail with DEVICE_REMOVED */
    vhsmd_stop();
    assert_int_equal(F->C_GenerateRandom(s, r, sizeof(r)), CKR_DEVICE_REMOVED);
    CK_ULONG n = 5;
    assert_int_equal(F->C_GetSlotList(CK_TRUE, NULL, &n), CKR_OK);
    assert_int_equal(n, 0);
    assert_int_equal(F->C_GetSlotList(CK_FALSE, NULL, &n), CKR_OK);
    assert_int_equal(n, 1);
    CK_SESSION_HANDLE s2 = 0;
    assert_int_equal(F->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &s2),
                     CKR_TOKEN_NOT_PRESENT);
    CK_TOKEN_INFO ti;
    assert_int_equal(F->C_GetTokenInfo(0, &ti), CKR_TOKEN_NOT_PRESENT);
    /* back again; after re-initialising, everything works */
    vhsmd_start();
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
    assert_int_equal(init_default(), CKR_OK);
    s = open_rw();
    CK_ATTRIBUTE t[] = {{CKA_LABEL, "restart-ec", 10}};
    CK_OBJECT_HANDLE found[4];
    assert_int_equal(F->C_FindObjectsInit(s, t, 1), CKR_OK);
    assert_int_equal(F->C_FindObjects(s, found, 4, &n), CKR_OK);
    assert_int_equal(n, 2);
    assert_int_equal(F->C_FindObjectsFinal(s), CKR_OK);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
}

/* ---- data objects, certificates, public keys, session objects, copies (branch obj) ----------- */

/* A self-signed certificate of key k (DER, malloc'd). */
static uint8_t *make_cert(EVP_PKEY *k, const char *cn, int *ret_len) {
    X509 *x = X509_new();
    X509_NAME *nm = X509_NAME_new();
    unsigned char *der = NULL;
    assert_non_null(x);
    assert_int_equal(X509_set_version(x, 2), 1);
    assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), 4242), 1);
    assert_int_equal(
        X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0),
        1);
    assert_int_equal(X509_set_subject_name(x, nm), 1);
    assert_int_equal(X509_set_issuer_name(x, nm), 1);
    assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), 0));
    assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 86400));
    assert_int_equal(X509_set_pubkey(x, k), 1);
    assert_true(X509_sign(x, k, EVP_sha256()) > 0);
    int n = i2d_X509(x, &der);
    assert_true(n > 0);
    uint8_t *out = malloc((size_t)n);
    memcpy(out, der, (size_t)n);
    OPENSSL_free(der);
    X509_NAME_free(nm);
    X509_free(x);
    *ret_len = n;
    return out;
}

/* Handles of objects matching a template (at most cap). */
static CK_ULONG find_all(CK_SESSION_HANDLE s, CK_ATTRIBUTE *t, CK_ULONG n, CK_OBJECT_HANDLE *out,
                         CK_ULONG cap) {
    CK_ULONG got = 0;
    CK_RV rv = F->C_FindObjectsInit(s, t, n);
    if (rv != CKR_OK)
        fail_msg("C_FindObjectsInit(%.*s) = 0x%lx",
                 n > 0 && t[0].type == CKA_LABEL ? (int)t[0].ulValueLen : 0,
                 n > 0 && t[0].type == CKA_LABEL ? (const char *)t[0].pValue : "",
                 (unsigned long)rv);
    assert_int_equal(F->C_FindObjects(s, out, cap, &got), CKR_OK);
    assert_int_equal(F->C_FindObjectsFinal(s), CKR_OK);
    return got;
}

static CK_ULONG find_label(CK_SESSION_HANDLE s, const char *label, CK_OBJECT_HANDLE *out) {
    CK_ATTRIBUTE t[] = {{CKA_LABEL, (void *)label, strlen(label)}};
    return find_all(s, t, 1, out, 8);
}

/* Length and bytes of one attribute (malloc'd, or NULL when the call fails with *rv). */
static uint8_t *get_bytes(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type,
                          CK_ULONG *len, CK_RV *rv) {
    CK_ATTRIBUTE a = {type, NULL, 0};
    *rv = F->C_GetAttributeValue(s, h, &a, 1);
    if (*rv != CKR_OK)
        return NULL;
    uint8_t *p = malloc(a.ulValueLen + 1);
    a.pValue = p;
    *rv = F->C_GetAttributeValue(s, h, &a, 1);
    *len = a.ulValueLen;
    return p;
}

static CK_SESSION_HANDLE open_ro(void) {
    CK_SESSION_HANDLE h = 0;
    assert_int_equal(F->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &h), CKR_OK);
    return h;
}

/* Certificates and data objects: created, checked (bad DER refused and nothing stored),
 * attributes (derived subject/issuer/serial), R/O sessions, CKA_TRUSTED for the SO only, the
 * size cap; without a login the public ones are listed and readable, the private data object is
 * not; all of it persists across a vhsmd restart; destroy. */
static void test_certs_and_data(void **state) {
    assert_int_equal(init_default(), CKR_OK);
    CK_SESSION_HANDLE s = open_rw();
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    int cl = 0;
    uint8_t *cert = make_cert(k, "obj-test", &cl);
    CK_OBJECT_CLASS cc = CKO_CERTIFICATE, dc = CKO_DATA;
    CK_CERTIFICATE_TYPE x509 = CKC_X_509, other = CKC_X_509_ATTR_CERT;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_OBJECT_HANDLE h = 0, h2 = 0, found[8];
    CK_RV rv;
#define T(...) ((CK_ATTRIBUTE[]){__VA_ARGS__})
#define N(...) (sizeof((CK_ATTRIBUTE[]){__VA_ARGS__}) / sizeof(CK_ATTRIBUTE))
#define CREATE_IN(sess, ...) F->C_CreateObject(sess, T(__VA_ARGS__), N(__VA_ARGS__), &h)
    CK_ATTRIBUTE c = {CKA_CLASS, &cc, sizeof(cc)}, ct = {CKA_CERTIFICATE_TYPE, &x509, sizeof(x509)},
                 tok = {CKA_TOKEN, &yes, sizeof(yes)}, val = {CKA_VALUE, cert, (CK_ULONG)cl},
                 lab = {CKA_LABEL, "obj-cert", 8}, id = {CKA_ID, "\x01\x02", 2};
    CK_ATTRIBUTE cls_cert[] = {c};
    CK_ULONG before = find_all(s, cls_cert, 1, found, 8);

    /* refused templates: no value; garbage; a truncated certificate; another type; trusted by
     * the user; a value over the cap; a data object's attribute on a certificate */
    assert_int_equal(CREATE_IN(s, c, ct, tok, lab), CKR_TEMPLATE_INCOMPLETE);
    assert_int_equal(CREATE_IN(s, c, ct, tok, lab, {CKA_VALUE, "garbage", 7}),
                     CKR_ATTRIBUTE_VALUE_INVALID);
    assert_int_equal(CREATE_IN(s, c, ct, tok, lab, {CKA_VALUE, cert, (CK_ULONG)cl - 1}),
                     CKR_ATTRIBUTE_VALUE_INVALID);
    assert_int_equal(CREATE_IN(s, c, tok, lab, val, {CKA_CERTIFICATE_TYPE, &other, sizeof(other)}),
                     CKR_ATTRIBUTE_VALUE_INVALID);
    assert_int_equal(CREATE_IN(s, c, ct, tok, lab, val, {CKA_TRUSTED, &yes, sizeof(yes)}),
                     CKR_ATTRIBUTE_READ_ONLY);
    uint8_t *big = calloc(1, 9000);
    assert_int_equal(CREATE_IN(s, c, ct, tok, lab, {CKA_VALUE, big, 9000}),
                     CKR_ATTRIBUTE_VALUE_INVALID);
    assert_int_equal(CREATE_IN(s, c, ct, tok, val, {CKA_APPLICATION, "x", 1}),
                     CKR_ATTRIBUTE_TYPE_INVALID);
    assert_int_equal(CREATE_IN(s, c, ct, tok, val, {CKA_LOCAL, &no, sizeof(no)}),
                     CKR_ATTRIBUTE_READ_ONLY);
    assert_int_equal(F->C_CreateObject(s, T(c, ct, tok, val), 4, NULL), CKR_ARGUMENTS_BAD);
    assert_int_equal(F->C_CreateObject(s, NULL, 2, &h), CKR_ARGUMENTS_BAD);
    /* a token object in a read-only session */
    CK_SESSION_HANDLE ro = open_ro();
    assert_int_equal(CREATE_IN(ro, c, ct, tok, val, lab), CKR_SESSION_READ_ONLY);
    /* nothing was created */
    assert_int_equal(find_all(s, cls_cert, 1, found, 8), before);

    /* a good one */
    assert_int_equal(CREATE_IN(s, c, ct, tok, val, lab, id), CKR_OK);
    CK_OBJECT_HANDLE cert_h = h;
    CK_ULONG len = 0;
    uint8_t *v = get_bytes(s, cert_h, CKA_VALUE, &len, &rv);
    assert_int_equal(rv, CKR_OK);
    assert_int_equal(len, (CK_ULONG)cl);
    assert_memory_equal(v, cert, (size_t)cl);
    free(v);
    {
        /* subject, issuer and serial taken from the DER */
        const unsigned char *p = cert;
        X509 *x = d2i_X509(NULL, &p, cl);
        unsigned char *subj = NULL;
        int sl = i2d_X509_NAME(X509_get_subject_name(x), &subj);
        v = get_bytes(s, cert_h, CKA_SUBJECT, &len, &rv);
        assert_int_equal(rv, CKR_OK);
        assert_int_equal(len, (CK_ULONG)sl);
        assert_memory_equal(v, subj, (size_t)sl);
        free(v);
        v = get_bytes(s, cert_h, CKA_ISSUER, &len, &rv);
        assert_int_equal(len, (CK_ULONG)sl);
        free(v);
        v = get_bytes(s, cert_h, CKA_SERIAL_NUMBER, &len, &rv);
        assert_int_equal(rv, CKR_OK);
        assert_memory_equal(v, "\x02\x02\x10\x92", 4); /* INTEGER 4242 */
        free(v);
        OPENSSL_free(subj);
        X509_free(x);
    }
    CK_CERTIFICATE_TYPE got_ct = 99;
    CK_ATTRIBUTE q[] = {{CKA_CERTIFICATE_TYPE, &got_ct, sizeof(got_ct)}};
    assert_int_equal(F->C_GetAttributeValue(s, cert_h, q, 1), CKR_OK);
    assert_int_equal(got_ct, CKC_X_509);
    assert_int_equal(bool_attr(s, cert_h, CKA_TOKEN), CK_TRUE);
    assert_int_equal(bool_attr(s, cert_h, CKA_TRUSTED), CK_FALSE);
    assert_int_equal(bool_attr(s, cert_h, CKA_PRIVATE), CK_FALSE);
    CK_ATTRIBUTE bad_q[] = {{CKA_MODULUS, NULL, 0}};
    assert_int_equal(F->C_GetAttributeValue(s, cert_h, bad_q, 1), CKR_ATTRIBUTE_TYPE_INVALID);
    /* CKA_VALUE fixed, CKA_TRUSTED the SO's, the label changes */
    assert_int_equal(F->C_SetAttributeValue(s, cert_h, &val, 1), CKR_ATTRIBUTE_READ_ONLY);
    CK_ATTRIBUTE tr = {CKA_TRUSTED, &yes, sizeof(yes)};
    assert_int_not_equal(F->C_SetAttributeValue(s, cert_h, &tr, 1), CKR_OK);
    assert_int_equal(bool_attr(s, cert_h, CKA_TRUSTED), CK_FALSE);
    CK_ATTRIBUTE relab = {CKA_LABEL, "obj-cert2", 9};
    assert_int_equal(F->C_SetAttributeValue(ro, cert_h, &relab, 1), CKR_SESSION_READ_ONLY);
    assert_int_equal(F->C_SetAttributeValue(s, cert_h, &relab, 1), CKR_OK);

    /* data objects: public, private, size cap, a session one in the R/O session */
    CK_ATTRIBUTE d = {CKA_CLASS, &dc, sizeof(dc)};
    assert_int_equal(CREATE_IN(s, d, tok, {CKA_LABEL, "obj-pub-data", 12},
                               {CKA_APPLICATION, "app", 3}, {CKA_OBJECT_ID, "\x06\x01\x01", 3},
                               {CKA_PRIVATE, &no, sizeof(no)}, {CKA_VALUE, "public bytes", 12}),
                     CKR_OK);
    assert_int_equal(CREATE_IN(s, d, tok, {CKA_LABEL, "obj-priv-data", 13},
                               {CKA_PRIVATE, &yes, sizeof(yes)}, {CKA_VALUE, "secret bytes", 12}),
                     CKR_OK);
    assert_int_equal(CREATE_IN(s, d, tok, {CKA_VALUE, big, 4097}), CKR_ATTRIBUTE_VALUE_INVALID);
    assert_int_equal(CREATE_IN(s, d, tok, {CKA_ID, "x", 1}, {CKA_VALUE, "v", 1}),
                     CKR_ATTRIBUTE_TYPE_INVALID);
    assert_int_equal(CREATE_IN(ro, d, {CKA_TOKEN, &no, sizeof(no)}, {CKA_LABEL, "obj-ro-sess", 11},
                               {CKA_VALUE, "v", 1}),
                     CKR_OK);
    assert_int_equal(bool_attr(ro, h, CKA_TOKEN), CK_FALSE);
    free(big);

    /* without a login (a new initialisation of the module, no C_Login): the certificate and
     * the public data object are found and readable, the private data object is not found */
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
    assert_int_equal(init_default(), CKR_OK);
    CK_SESSION_HANDLE pub = open_ro();
    assert_true(token_flags() & CKF_LOGIN_REQUIRED);
    assert_int_equal(find_label(pub, "obj-cert2", found), 1);
    v = get_bytes(pub, found[0], CKA_VALUE, &len, &rv);
    assert_int_equal(rv, CKR_OK);
    assert_int_equal(len, (CK_ULONG)cl);
    free(v);
    assert_int_equal(find_label(pub, "obj-pub-data", found), 1);
    v = get_bytes(pub, found[0], CKA_VALUE, &len, &rv);
    assert_int_equal(rv, CKR_OK);
    assert_memory_equal(v, "public bytes", 12);
    free(v);
    v = get_bytes(pub, found[0], CKA_APPLICATION, &len, &rv);
    assert_memory_equal(v, "app", 3);
    free(v);
    assert_int_equal(find_label(pub, "obj-priv-data", found), 0);
    /* the session object died with the module's connection */
    assert_int_equal(find_label(pub, "obj-ro-sess", found), 0);
    /* changes need the login */
    assert_int_equal(CREATE_IN(pub, d, {CKA_TOKEN, &no, sizeof(no)}, {CKA_VALUE, "v", 1}),
                     CKR_USER_NOT_LOGGED_IN);
    /* logged in: the private one too */
    assert_int_equal(F->C_Login(pub, CKU_USER, (CK_UTF8CHAR_PTR)USER_PIN, strlen(USER_PIN)),
                     CKR_OK);
    assert_int_equal(find_label(pub, "obj-priv-data", found), 1);
    v = get_bytes(pub, found[0], CKA_VALUE, &len, &rv);
    assert_int_equal(rv, CKR_OK);
    assert_memory_equal(v, "secret bytes", 12);
    free(v);

    /* persistence across a vhsmd restart */
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
    vhsmd_stop();
    vhsmd_start();
    assert_int_equal(init_default(), CKR_OK);
    s = open_rw();
    assert_int_equal(find_label(s, "obj-cert2", found), 1);
    v = get_bytes(s, found[0], CKA_VALUE, &len, &rv);
    assert_int_equal(len, (CK_ULONG)cl);
    assert_memory_equal(v, cert, (size_t)cl);
    free(v);
    v = get_bytes(s, found[0], CKA_ID, &len, &rv);
    assert_int_equal(len, 2);
    free(v);
    assert_int_equal(find_label(s, "obj-priv-data", found), 1);
    /* destroy */
    assert_int_equal(find_label(s, "obj-cert2", found), 1);
    assert_int_equal(F->C_DestroyObject(s, found[0]), CKR_OK);
    assert_int_equal(find_label(s, "obj-cert2", found), 0);
    assert_int_equal(F->C_DestroyObject(s, found[0]), CKR_OBJECT_HANDLE_INVALID);
    /* not destroyable */
    assert_int_equal(CREATE_IN(s, d, tok, {CKA_DESTROYABLE, &no, sizeof(no)}, {CKA_VALUE, "v", 1}),
                     CKR_OK);
    assert_int_equal(F->C_DestroyObject(s, h), CKR_ACTION_PROHIBITED);
    assert_int_equal(bool_attr(s, h, CKA_DESTROYABLE), CK_FALSE);
    (void)h2;
    EVP_PKEY_free(k);
    free(cert);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
#undef CREATE_IN
#undef N
#undef T
}

/* Public key objects from templates: EC P-256 (CKA_EC_PARAMS + CKA_EC_POINT), Ed25519, RSA
 * (modulus + exponent); they verify signatures OpenSSL made with the private halves; bad points,
 * curves and sizes are refused; listed without a login; a lone public key can be destroyed. */
static void test_public_key_objects(void **state) {
    assert_int_equal(init_default(), CKR_OK);
    CK_SESSION_HANDLE s = open_rw();
    CK_OBJECT_CLASS pc = CKO_PUBLIC_KEY;
    CK_KEY_TYPE ec = CKK_EC, ed = CKK_EC_EDWARDS, rsa = CKK_RSA;
    CK_BBOOL yes = CK_TRUE;
    CK_OBJECT_HANDLE h = 0, found[8];
    CK_RV rv;
    CK_ULONG len;
#define T(...) ((CK_ATTRIBUTE[]){__VA_ARGS__})
#define N(...) (sizeof((CK_ATTRIBUTE[]){__VA_ARGS__}) / sizeof(CK_ATTRIBUTE))
#define CREATE(...) F->C_CreateObject(s, T(__VA_ARGS__), N(__VA_ARGS__), &h)
    CK_ATTRIBUTE c = {CKA_CLASS, &pc, sizeof(pc)}, tok = {CKA_TOKEN, &yes, sizeof(yes)};

    /* EC P-256 */
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    uint8_t pt[70];
    size_t ptl = 0;
    assert_int_equal(EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, pt + 2,
                                                     sizeof(pt) - 2, &ptl),
                     1);
    pt[0] = 0x04;
    pt[1] = (uint8_t)ptl;
    CK_ATTRIBUTE par = {CKA_EC_PARAMS, (void *)oid_p256, sizeof(oid_p256)},
                 point = {CKA_EC_POINT, pt, ptl + 2}, kt = {CKA_KEY_TYPE, &ec, sizeof(ec)};
    assert_int_equal(CREATE(c, tok, kt, par), CKR_TEMPLATE_INCOMPLETE);
    assert_int_equal(CREATE(c, tok, par, point), CKR_TEMPLATE_INCOMPLETE);
    assert_int_equal(CREATE(c, tok, kt, par, point, {CKA_SIGN, &yes, sizeof(yes)}),
                     CKR_TEMPLATE_INCONSISTENT);
    uint8_t off[70];
    memcpy(off, pt, ptl + 2);
    off[ptl + 1] ^= 1; /* no longer on the curve */
    assert_int_equal(CREATE(c, tok, kt, par, {CKA_EC_POINT, off, ptl + 2}),
                     CKR_ATTRIBUTE_VALUE_INVALID);
    static const uint8_t oid_p521[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23};
    assert_int_equal(CREATE(c, tok, kt, {CKA_EC_PARAMS, (void *)oid_p521, sizeof(oid_p521)}, point),
                     CKR_CURVE_NOT_SUPPORTED);
    assert_int_equal(CREATE(c, tok, kt, par, point, {CKA_LABEL, "obj-ec-pub", 10}), CKR_OK);
    CK_OBJECT_HANDLE ec_h = h;
    uint8_t *v = get_bytes(s, ec_h, CKA_EC_POINT, &len, &rv);
    assert_int_equal(rv, CKR_OK);
    assert_int_equal(len, ptl + 2);
    assert_memory_equal(v, pt, ptl + 2);
    free(v);
    CK_OBJECT_CLASS got = 0;
    CK_ATTRIBUTE q = {CKA_CLASS, &got, sizeof(got)};
    assert_int_equal(F->C_GetAttributeValue(s, ec_h, &q, 1), CKR_OK);
    assert_int_equal(got, CKO_PUBLIC_KEY);
    assert_int_equal(bool_attr(s, ec_h, CKA_LOCAL), CK_FALSE);
    assert_int_equal(bool_attr(s, ec_h, CKA_VERIFY), CK_TRUE);
    /* it verifies OpenSSL's signature, and refuses a wrong one */
    {
        uint8_t sig[72], rs[64];
        size_t sl = sizeof(sig);
        EVP_MD_CTX *mc = EVP_MD_CTX_new();
        assert_int_equal(EVP_DigestSignInit(mc, NULL, EVP_sha256(), NULL, k), 1);
        assert_int_equal(EVP_DigestSign(mc, sig, &sl, (const uint8_t *)"msg", 3), 1);
        EVP_MD_CTX_free(mc);
        const uint8_t *p = sig;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)sl);
        assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_r(es), rs, 32), 32);
        assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_s(es), rs + 32, 32), 32);
        ECDSA_SIG_free(es);
        CK_MECHANISM m = {CKM_ECDSA_SHA256, NULL, 0};
        assert_int_equal(F->C_VerifyInit(s, &m, ec_h), CKR_OK);
        assert_int_equal(F->C_Verify(s, (CK_BYTE_PTR) "msg", 3, rs, 64), CKR_OK);
        rs[5] ^= 1;
        assert_int_equal(F->C_VerifyInit(s, &m, ec_h), CKR_OK);
        assert_int_equal(F->C_Verify(s, (CK_BYTE_PTR) "msg", 3, rs, 64), CKR_SIGNATURE_INVALID);
        /* a lone public key cannot sign */
        assert_int_equal(F->C_SignInit(s, &m, ec_h), CKR_KEY_FUNCTION_NOT_PERMITTED);
    }
    EVP_PKEY_free(k);

    /* Ed25519 */
    k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    uint8_t edp[34];
    size_t edl = 32;
    assert_int_equal(EVP_PKEY_get_raw_public_key(k, edp + 2, &edl), 1);
    edp[0] = 0x04;
    edp[1] = 32;
    assert_int_equal(CREATE(c, tok, {CKA_KEY_TYPE, &ed, sizeof(ed)},
                            {CKA_EC_PARAMS, (void *)oid_ed25519, sizeof(oid_ed25519)},
                            {CKA_EC_POINT, edp, 34}, {CKA_LABEL, "obj-ed-pub", 10}),
                     CKR_OK);
    assert_int_equal(CREATE(c, tok, {CKA_KEY_TYPE, &ec, sizeof(ec)},
                            {CKA_EC_PARAMS, (void *)oid_ed25519, sizeof(oid_ed25519)},
                            {CKA_EC_POINT, edp, 34}),
                     CKR_TEMPLATE_INCONSISTENT);
    EVP_PKEY_free(k);

    /* RSA 2048; 1024 bits refused */
    k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    BIGNUM *bn = NULL, *be = NULL;
    assert_int_equal(EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_N, &bn), 1);
    assert_int_equal(EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_E, &be), 1);
    uint8_t nb[256], eb[3];
    assert_int_equal(BN_bn2bin(bn, nb), 256);
    assert_int_equal(BN_bn2bin(be, eb), 3);
    CK_ATTRIBUTE rkt = {CKA_KEY_TYPE, &rsa, sizeof(rsa)};
    assert_int_equal(CREATE(c, tok, rkt, {CKA_MODULUS, nb, 256}), CKR_TEMPLATE_INCOMPLETE);
    assert_int_equal(CREATE(c, tok, rkt, {CKA_MODULUS, nb, 128}, {CKA_PUBLIC_EXPONENT, eb, 3}),
                     CKR_ATTRIBUTE_VALUE_INVALID);
    assert_int_equal(CREATE(c, tok, rkt, {CKA_MODULUS, nb, 256}, {CKA_PUBLIC_EXPONENT, eb, 3},
                            {CKA_LABEL, "obj-rsa-pub", 11}),
                     CKR_OK);
    CK_OBJECT_HANDLE rsa_h = h;
    CK_ULONG bits = 0;
    CK_ATTRIBUTE mb = {CKA_MODULUS_BITS, &bits, sizeof(bits)};
    assert_int_equal(F->C_GetAttributeValue(s, rsa_h, &mb, 1), CKR_OK);
    assert_int_equal(bits, 2048);
    v = get_bytes(s, rsa_h, CKA_MODULUS, &len, &rv);
    assert_int_equal(len, 256);
    assert_memory_equal(v, nb, 256);
    free(v);
    BN_free(bn);
    BN_free(be);
    EVP_PKEY_free(k);

    /* found without a login */
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
    assert_int_equal(init_default(), CKR_OK);
    CK_SESSION_HANDLE pub = open_ro();
    assert_int_equal(find_label(pub, "obj-ec-pub", found), 1);
    assert_int_equal(find_label(pub, "obj-ed-pub", found), 1);
    assert_int_equal(find_label(pub, "obj-rsa-pub", found), 1);
    /* destroyed (lone public keys can be) */
    s = open_rw();
    assert_int_equal(find_label(s, "obj-rsa-pub", found), 1);
    assert_int_equal(F->C_DestroyObject(s, found[0]), CKR_OK);
    assert_int_equal(find_label(s, "obj-rsa-pub", found), 0);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
#undef CREATE
#undef N
#undef T
}

/* Session objects (CKA_TOKEN false): data objects and keys live in vhsmd with the module's
 * connection; visible to every session of the application, not to another process; destroyed
 * with the session that made them, and by C_Finalize; allowed in R/O sessions, where token
 * objects are not. */
static void test_session_objects(void **state) {
    assert_int_equal(init_default(), CKR_OK);
    CK_SESSION_HANDLE rw = open_rw(), a = open_ro(), b = open_ro();
    CK_OBJECT_CLASS dc = CKO_DATA, sk = CKO_SECRET_KEY;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ULONG len32 = 32;
    CK_OBJECT_HANDLE h = 0, key = 0, found[8];
    CK_ATTRIBUTE dt[] = {{CKA_CLASS, &dc, sizeof(dc)},
                         {CKA_TOKEN, &no, sizeof(no)},
                         {CKA_LABEL, "obj-sess-data", 13},
                         {CKA_VALUE, "temp", 4}};
    assert_int_equal(F->C_CreateObject(a, dt, 4, &h), CKR_OK);
    /* another session of the application sees it */
    assert_int_equal(find_label(b, "obj-sess-data", found), 1);
    assert_int_equal(found[0], h);
    /* a session key in a R/O session; a token key there is refused */
    CK_MECHANISM gm = {CKM_AES_KEY_GEN, NULL, 0};
    CK_ATTRIBUTE kt[] = {{CKA_CLASS, &sk, sizeof(sk)},           {CKA_TOKEN, &no, sizeof(no)},
                         {CKA_VALUE_LEN, &len32, sizeof(len32)}, {CKA_LABEL, "obj-sess-key", 12},
                         {CKA_ENCRYPT, &yes, sizeof(yes)},       {CKA_DECRYPT, &yes, sizeof(yes)}};
    CK_ATTRIBUTE tt[] = {{CKA_TOKEN, &yes, sizeof(yes)}, {CKA_VALUE_LEN, &len32, sizeof(len32)}};
    assert_int_equal(F->C_GenerateKey(a, &gm, tt, 2, &key), CKR_SESSION_READ_ONLY);
    assert_int_equal(F->C_GenerateKey(a, &gm, kt, 6, &key), CKR_OK);
    assert_int_equal(bool_attr(b, key, CKA_TOKEN), CK_FALSE);
    /* it works (on the session-object connection) */
    uint8_t iv[16] = {0}, pt[32] = {1}, ctx[64];
    CK_ULONG cl = sizeof(ctx);
    CK_MECHANISM cbc = {CKM_AES_CBC, iv, sizeof(iv)};
    assert_int_equal(F->C_EncryptInit(b, &cbc, key), CKR_OK);
    assert_int_equal(F->C_Encrypt(b, pt, sizeof(pt), ctx, &cl), CKR_OK);
    assert_int_equal(cl, 32);
    /* copy of a session key into another session object */
    CK_OBJECT_HANDLE kc = 0;
    CK_ATTRIBUTE cpt[] = {{CKA_LABEL, "obj-sess-key2", 13}};
    assert_int_equal(F->C_CopyObject(b, key, cpt, 1, &kc), CKR_OK);
    assert_int_equal(bool_attr(b, kc, CKA_TOKEN), CK_FALSE);
    /* another process (its own connections) does not see them */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int bad = 0;
        CK_SESSION_HANDLE cs = 0;
        CK_ATTRIBUTE t[] = {{CKA_LABEL, "obj-sess-data", 13}};
        CK_ATTRIBUTE t2[] = {{CKA_LABEL, "obj-sess-key", 12}};
        CK_OBJECT_HANDLE f2[2];
        CK_ULONG n = 9, n2 = 9;
        if (init_default() != CKR_OK ||
            F->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &cs) != CKR_OK ||
            F->C_Login(cs, CKU_USER, (CK_UTF8CHAR_PTR)USER_PIN, strlen(USER_PIN)) != CKR_OK ||
            F->C_FindObjectsInit(cs, t, 1) != CKR_OK || F->C_FindObjects(cs, f2, 2, &n) != CKR_OK ||
            F->C_FindObjectsFinal(cs) != CKR_OK || F->C_FindObjectsInit(cs, t2, 1) != CKR_OK ||
            F->C_FindObjects(cs, f2, 2, &n2) != CKR_OK || F->C_FindObjectsFinal(cs) != CKR_OK ||
            n != 0 || n2 != 0)
            bad = 1;
        (void)F->C_Finalize(NULL);
        _exit(bad);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* destroyed in a R/O session: allowed for session objects */
    assert_int_equal(F->C_DestroyObject(b, kc), CKR_OK);
    /* the creating session closes: its objects are gone for the others */
    assert_int_equal(F->C_CloseSession(a), CKR_OK);
    assert_int_equal(find_label(b, "obj-sess-data", found), 0);
    assert_int_equal(find_label(b, "obj-sess-key", found), 0);
    CK_ATTRIBUTE q = {CKA_LABEL, NULL, 0};
    assert_int_equal(F->C_GetAttributeValue(b, h, &q, 1), CKR_OBJECT_HANDLE_INVALID);
    assert_int_equal(F->C_EncryptInit(b, &cbc, key), CKR_KEY_HANDLE_INVALID);
    /* C_Finalize ends the rest */
    dt[2] = (CK_ATTRIBUTE){CKA_LABEL, "obj-sess-data2", 14};
    assert_int_equal(F->C_CreateObject(rw, dt, 4, &h), CKR_OK);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
    assert_int_equal(init_default(), CKR_OK);
    rw = open_rw();
    assert_int_equal(find_label(rw, "obj-sess-data2", found), 0);
    /* vhsmd restarts: the session objects are gone with it, and a new session works at once
     * (the dead session-object connection is dropped with the pool) */
    dt[2] = (CK_ATTRIBUTE){CKA_LABEL, "obj-sess-data3", 14};
    assert_int_equal(F->C_CreateObject(rw, dt, 4, &h), CKR_OK);
    assert_int_equal(find_label(rw, "obj-sess-data3", found), 1);
    vhsmd_stop();
    vhsmd_start();
    uint8_t rnd[4];
    assert_int_equal(F->C_GenerateRandom(rw, rnd, sizeof(rnd)), CKR_DEVICE_REMOVED);
    CK_SESSION_HANDLE rw2 = open_rw();
    assert_int_equal(find_label(rw2, "obj-sess-data3", found), 0);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
}

/* C_CopyObject: data objects and keys (the copy is the same key inside vhsmd), with the spec's
 * rules: argument errors, pair halves, CKA_COPYABLE false, sensitive only on, extractable only
 * off, read-only attributes, token copies in R/O sessions. */
static void test_copy_object(void **state) {
    assert_int_equal(init_default(), CKR_OK);
    CK_SESSION_HANDLE s = open_rw(), ro = open_ro();
    CK_OBJECT_CLASS dc = CKO_DATA;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_OBJECT_HANDLE d = 0, nc = 0, cp = 0, pub, priv, found[8];
    CK_ATTRIBUTE dt[] = {{CKA_CLASS, &dc, sizeof(dc)},
                         {CKA_TOKEN, &yes, sizeof(yes)},
                         {CKA_LABEL, "obj-copy-src", 12},
                         {CKA_VALUE, "copy me", 7}};
    assert_int_equal(F->C_CreateObject(s, dt, 4, &d), CKR_OK);
    CK_ATTRIBUTE ct[] = {{CKA_LABEL, "obj-copy-dst", 12}, {CKA_PRIVATE, &yes, sizeof(yes)}};
    /* argument errors */
    assert_int_equal(F->C_CopyObject(s, d, ct, 2, NULL), CKR_ARGUMENTS_BAD);
    assert_int_equal(F->C_CopyObject(s, d, NULL, 2, &cp), CKR_ARGUMENTS_BAD);
    assert_int_equal(F->C_CopyObject(s, 0x7fff01, ct, 2, &cp), CKR_OBJECT_HANDLE_INVALID);
    assert_int_equal(F->C_CopyObject(0x7fff01, d, ct, 2, &cp), CKR_SESSION_HANDLE_INVALID);
    CK_ATTRIBUTE cv[] = {{CKA_VALUE, "x", 1}};
    assert_int_equal(F->C_CopyObject(s, d, cv, 1, &cp), CKR_ATTRIBUTE_READ_ONLY);
    assert_int_equal(F->C_CopyObject(ro, d, ct, 2, &cp), CKR_SESSION_READ_ONLY);
    assert_int_equal(F->C_CopyObject(s, d, ct, 2, &cp), CKR_OK);
    assert_int_equal(bool_attr(s, cp, CKA_PRIVATE), CK_TRUE);
    CK_ULONG len = 0;
    CK_RV rv;
    uint8_t *v = get_bytes(s, cp, CKA_VALUE, &len, &rv);
    assert_int_equal(len, 7);
    assert_memory_equal(v, "copy me", 7);
    free(v);
    assert_int_equal(find_label(s, "obj-copy-dst", found), 1);
    /* not copyable */
    CK_ATTRIBUTE nct[] = {{CKA_CLASS, &dc, sizeof(dc)},
                          {CKA_TOKEN, &yes, sizeof(yes)},
                          {CKA_COPYABLE, &no, sizeof(no)},
                          {CKA_VALUE, "no", 2}};
    assert_int_equal(F->C_CreateObject(s, nct, 4, &nc), CKR_OK);
    assert_int_equal(F->C_CopyObject(s, nc, NULL, 0, &cp), CKR_ACTION_PROHIBITED);
    /* keys: the copy signs, OpenSSL verifies with the original's public key */
    gen_pair(s, CKM_EC_KEY_PAIR_GEN, "obj-copy-ec", &pub, &priv);
    assert_int_equal(F->C_CopyObject(s, pub, NULL, 0, &cp), CKR_ACTION_PROHIBITED);
    CK_ATTRIBUTE ns[] = {{CKA_SENSITIVE, &no, sizeof(no)}};
    assert_int_equal(F->C_CopyObject(s, priv, ns, 1, &cp), CKR_ATTRIBUTE_READ_ONLY);
    CK_ATTRIBUTE ex[] = {{CKA_EXTRACTABLE, &yes, sizeof(yes)}};
    assert_int_equal(F->C_CopyObject(s, priv, ex, 1, &cp), CKR_ATTRIBUTE_READ_ONLY);
    CK_ATTRIBUTE kl[] = {{CKA_LABEL, "obj-copy-ec2", 12}, {CKA_SIGN, &yes, sizeof(yes)}};
    CK_OBJECT_HANDLE kc = 0;
    assert_int_equal(F->C_CopyObject(s, priv, kl, 2, &kc), CKR_OK);
    assert_int_equal(bool_attr(s, kc, CKA_LOCAL), CK_TRUE); /* origin kept */
    assert_int_equal(bool_attr(s, kc, CKA_SENSITIVE), CK_TRUE);
    CK_MECHANISM m = {CKM_ECDSA_SHA256, NULL, 0};
    uint8_t sig[64];
    CK_ULONG sl = sizeof(sig);
    assert_int_equal(F->C_SignInit(s, &m, kc), CKR_OK);
    assert_int_equal(F->C_Sign(s, (CK_BYTE_PTR) "copied", 6, sig, &sl), CKR_OK);
    CK_ATTRIBUTE pki = {CKA_PUBLIC_KEY_INFO, NULL, 0};
    assert_int_equal(F->C_GetAttributeValue(s, pub, &pki, 1), CKR_OK);
    uint8_t *spki = malloc(pki.ulValueLen);
    pki.pValue = spki;
    assert_int_equal(F->C_GetAttributeValue(s, pub, &pki, 1), CKR_OK);
    const uint8_t *p = spki;
    EVP_PKEY *ek = d2i_PUBKEY(NULL, &p, (long)pki.ulValueLen);
    assert_non_null(ek);
    check_ecdsa(ek, (const uint8_t *)"copied", 6, sig, sl);
    EVP_PKEY_free(ek);
    free(spki);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
}

/* After each test: whatever failed, the next one starts from an uninitialised module. */
static int finalize(void **state) {
    (void)F->C_Finalize(NULL);
    return 0;
}

static int setup(void **state) {
    vhsmd_start();
    return 0;
}

static int teardown(void **state) {
    vhsmd_stop();
    return 0;
}

#include "pkcs11-par-tests.c"

int main(void) {
    const char *path = getenv("P11T_MODULE");
    if (!path || !getenv("P11T_VHSMD") || !getenv("P11T_DIR")) {
        fprintf(stderr, "P11T_MODULE, P11T_VHSMD and P11T_DIR must be set\n");
        return 2;
    }
    char env[600];
    snprintf(env, sizeof(env), "%s/vhsm.sock", getenv("P11T_DIR"));
    setenv("VHSM_PKCS11_SOCKETS", env, 1);
    module = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!module) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    CK_RV (*gfl)(CK_FUNCTION_LIST_PTR_PTR) = (void *)dlsym(module, "C_GetFunctionList");
    if (!gfl || gfl(&F) != CKR_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_exports_and_interfaces, finalize),
        cmocka_unit_test_teardown(test_initialize_rules, finalize),
        cmocka_unit_test_teardown(test_app_mutex_callbacks, finalize),
        cmocka_unit_test_teardown(test_token_and_pins, finalize),
        cmocka_unit_test_teardown(test_pin_lockout, finalize),
        cmocka_unit_test_teardown(test_slots_and_mechanisms, finalize),
        cmocka_unit_test_teardown(test_argument_errors, finalize),
        cmocka_unit_test_teardown(test_sessions, finalize),
        cmocka_unit_test_teardown(test_generate_find_attributes, finalize),
        cmocka_unit_test_teardown(test_attributes_stored, finalize),
        cmocka_unit_test_teardown(test_sign_rules, finalize),
        cmocka_unit_test_teardown(test_sign_mechanisms, finalize),
        cmocka_unit_test_teardown(test_oaep_and_digest, finalize),
        /* branch par */
        cmocka_unit_test_teardown(test_par_sha512_variants, finalize),
        cmocka_unit_test_teardown(test_par_pss, finalize),
        cmocka_unit_test_teardown(test_par_oaep, finalize),
        cmocka_unit_test_teardown(test_par_hmac, finalize),
        cmocka_unit_test_teardown(test_par_setpin_keeps_login, finalize),
        cmocka_unit_test_teardown(test_aes, finalize),
        cmocka_unit_test_teardown(test_import_aes_gcm_kat, finalize),
        cmocka_unit_test_teardown(test_import_hmac, finalize),
        cmocka_unit_test_teardown(test_import_bad_templates, finalize),
        cmocka_unit_test_teardown(test_import_private_keys, finalize),
        cmocka_unit_test_teardown(test_import_rsa, finalize),
        cmocka_unit_test_teardown(test_import_refused, finalize),
        cmocka_unit_test_teardown(test_16_threads, finalize),
        cmocka_unit_test_teardown(test_fork, finalize),
        cmocka_unit_test_teardown(test_config_file, finalize),
        cmocka_unit_test_teardown(test_key_deleted_elsewhere, finalize),
        cmocka_unit_test_teardown(test_vhsmd_restart, finalize),
        cmocka_unit_test_teardown(test_certs_and_data, finalize),
        cmocka_unit_test_teardown(test_public_key_objects, finalize),
        cmocka_unit_test_teardown(test_session_objects, finalize),
        cmocka_unit_test_teardown(test_copy_object, finalize),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
