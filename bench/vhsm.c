/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench-vhsm: operations per second through vhsmd (a real daemon started on a temporary socket
 * with a simulated chip, clients over libvhsm, one connection per client thread) next to
 * in-process OpenSSL doing the same operation in the same run, with 1 and 2 threads:
 *   ECDSA P-256 / P-384 sign, Ed25519 sign, RSA-2048 sign (PSS, SHA-256),
 *   AES-256-GCM encrypt and decrypt of 4 KiB, HMAC-SHA-256 of 1 KiB.
 * The reference does per operation what a careful in-process user does: signatures with a fresh
 * EVP context over an already-loaded key; AES-GCM and HMAC with a per-thread context whose key is
 * set once (the key schedule is not recomputed: only the IV, a fresh random one from RAND_bytes
 * for each encryption, or the MAC state is reset), as vhsmd itself does.
 * Each vhsmd operation is measured twice: synchronously (one request per round trip) and
 * pipelined (VhsmBatch, PIPE_DEPTH requests per batch, PIPE_WINDOW batches in flight on the
 * thread's one connection: double buffering, every result checked), both printed
 * next to the reference.
 * Targets, judged on the pipelined rate (exit 1 if missed): asymmetric signing >= 85% of OpenSSL
 * with one thread, AES-GCM 4 KiB >= 40%, 2 client threads >= 1.7x one thread through vhsmd.
 * Every measurement is repeated in NT_BENCH_ROUNDS rounds (default 3; in each, the reference and
 * vhsmd are measured back to back); the ratios are computed within each round and the medians
 * printed and judged (a shared host's noise moves a whole round, not one side of a ratio).
 * NT_BENCH_SECONDS (default 2) sets the time per measurement. NT_BENCH_SPIN_US=N runs the daemon
 * with --spin-us N and the clients with VHSM_SPIN_US=N (busy-polling instead of sleeping between
 * a request and its reply); unset, both use their defaults (off). NT_BENCH_ONLY=TEXT measures only
 * the operations whose label contains TEXT, NT_BENCH_MODES=pipe (or openssl, sync; comma-separated)
 * only those modes (for profiling one of them; targets are then not judged).
 */
#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/openssl-util.h"
#include "snp/sim.h"
#include "vhsm/client/vhsm-client.h"

typedef enum Kind { K_SIGN, K_GCM, K_GCM_DEC, K_HMAC } Kind;

typedef struct Op {
    const char *label;
    const char *key_name, *key_type, *alg;
    Kind kind;
    size_t data_len;
    bool asymmetric;
    /* reference material */
    EVP_PKEY *pkey;   /* asymmetric keys: generated in-process */
    const EVP_MD *md; /* NULL for Ed25519 */
    int rsa_pss;
    uint8_t sym_key[32];
    /* K_GCM_DEC: a ciphertext made by vhsmd at set-up, and the reference's own (IV, tag, body) */
    uint8_t *ct;
    size_t ct_len;
    uint8_t ref_iv[12], ref_tag[16], ref_ct[4096];
} Op;

static Op ops[] = {
    {.label = "ECDSA P-256 sign",
     .key_name = "b-p256",
     .key_type = "p256",
     .alg = "ecdsa",
     .kind = K_SIGN,
     .data_len = 32,
     .asymmetric = true},
    {.label = "ECDSA P-384 sign",
     .key_name = "b-p384",
     .key_type = "p384",
     .alg = "ecdsa",
     .kind = K_SIGN,
     .data_len = 48,
     .asymmetric = true},
    {.label = "Ed25519 sign",
     .key_name = "b-ed",
     .key_type = "ed25519",
     .alg = "ed25519",
     .kind = K_SIGN,
     .data_len = 32,
     .asymmetric = true},
    {.label = "RSA-2048 sign (PSS)",
     .key_name = "b-rsa",
     .key_type = "rsa2048",
     .alg = "rsa-pss-sha256",
     .kind = K_SIGN,
     .data_len = 32,
     .asymmetric = true},
    {.label = "AES-256-GCM 4 KiB",
     .key_name = "b-aes",
     .key_type = "aes256",
     .alg = "aes256-gcm",
     .kind = K_GCM,
     .data_len = 4096,
     .asymmetric = false},
    {.label = "AES-256-GCM dec 4 KiB",
     .key_name = "b-aesd",
     .key_type = "aes256",
     .alg = "aes256-gcm",
     .kind = K_GCM_DEC,
     .data_len = 4096,
     .asymmetric = false},
    {.label = "HMAC-SHA-256 1 KiB",
     .key_name = "b-hmac",
     .key_type = "hmac-sha256",
     .alg = "hmac",
     .kind = K_HMAC,
     .data_len = 1024,
     .asymmetric = false},
};

static const char *sock_path;
static double seconds = 2.0;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- one measurement: nthreads threads run fn until the deadline ---- */

/* How an operation is run: in-process OpenSSL, through vhsmd one request at a time, or through
 * vhsmd pipelined (batches of PIPE_DEPTH requests, PIPE_WINDOW of them in flight). */
typedef enum Mode { M_OPENSSL, M_SYNC, M_PIPE, _M_MAX } Mode;
#define PIPE_DEPTH 16
#define PIPE_WINDOW 2 /* batches in flight per connection (double buffering) */

typedef struct Run {
    Op *op;
    Mode mode;
    double deadline;
    atomic_ulong count;
    atomic_int errors;
    pthread_barrier_t start;
} Run;

/* A reference thread's contexts with the key set once (created by its first operation). */
typedef struct RefState {
    EVP_CIPHER_CTX *gcm;
    EVP_MAC_CTX *hmac;
} RefState;

static void ref_state_done(RefState *st) {
    EVP_CIPHER_CTX_free(st->gcm);
    EVP_MAC_CTX_free(st->hmac);
    *st = (RefState){0};
}

static int ref_gcm_ctx(RefState *st, Op *op, int enc) {
    if (!st->gcm) {
        _cleanup_(EVP_CIPHER_freep) EVP_CIPHER *c = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
        st->gcm = EVP_CIPHER_CTX_new();
        if (!c || !st->gcm || EVP_CipherInit_ex(st->gcm, c, NULL, op->sym_key, NULL, enc) != 1)
            return -EIO;
    }
    return 0;
}

static int ref_once(RefState *st, Op *op, const uint8_t *data) {
    uint8_t out[1024];
    size_t out_len = sizeof out;

    switch (op->kind) {
    case K_SIGN: {
        _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        EVP_PKEY_CTX *pctx = NULL;
        if (!ctx || EVP_DigestSignInit(ctx, &pctx, op->md, NULL, op->pkey) != 1)
            return -EIO;
        if (op->rsa_pss && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
                            EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1))
            return -EIO;
        return EVP_DigestSign(ctx, out, &out_len, data, op->data_len) == 1 ? 0 : -EIO;
    }
    case K_GCM: {
        uint8_t iv[12], tag[16], ct[4096 + 16];
        int l = 0, fl = 0;
        if (ref_gcm_ctx(st, op, 1) < 0 || RAND_bytes(iv, sizeof iv) != 1 ||
            EVP_EncryptInit_ex(st->gcm, NULL, NULL, NULL, iv) != 1 ||
            EVP_EncryptUpdate(st->gcm, ct, &l, data, (int)op->data_len) != 1 ||
            EVP_EncryptFinal_ex(st->gcm, ct + l, &fl) != 1 ||
            EVP_CIPHER_CTX_ctrl(st->gcm, EVP_CTRL_GCM_GET_TAG, 16, tag) != 1)
            return -EIO;
        return 0;
    }
    case K_GCM_DEC: {
        uint8_t pt[sizeof op->ref_ct + 16];
        int l = 0, fl = 0, ok;
        ok = ref_gcm_ctx(st, op, 0) == 0 &&
             EVP_DecryptInit_ex(st->gcm, NULL, NULL, NULL, op->ref_iv) == 1 &&
             EVP_DecryptUpdate(st->gcm, pt, &l, op->ref_ct, (int)sizeof op->ref_ct) == 1 &&
             EVP_CIPHER_CTX_ctrl(st->gcm, EVP_CTRL_GCM_SET_TAG, 16, op->ref_tag) == 1 &&
             EVP_DecryptFinal_ex(st->gcm, pt + l, &fl) == 1;
        OPENSSL_cleanse(pt, sizeof pt);
        return ok ? 0 : -EIO;
    }
    case K_HMAC:
        if (!st->hmac) {
            _cleanup_(EVP_MAC_freep) EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
            OSSL_PARAM params[] = {
                OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
                OSSL_PARAM_construct_end(),
            };
            st->hmac = m ? EVP_MAC_CTX_new(m) : NULL;
            if (!st->hmac || EVP_MAC_init(st->hmac, op->sym_key, 32, params) != 1)
                return -EIO;
        } else if (EVP_MAC_init(st->hmac, NULL, 0, NULL) != 1) /* same key: reset the state */
            return -EIO;
        return EVP_MAC_update(st->hmac, data, op->data_len) == 1 &&
                       EVP_MAC_final(st->hmac, out, &out_len, sizeof out) == 1
                   ? 0
                   : -EIO;
    }
    return -EINVAL;
}

static int vhsm_once(VhsmClient *c, Op *op, const uint8_t *data) {
    uint8_t *out = NULL;
    size_t n = 0;
    int r;
    switch (op->kind) {
    case K_SIGN:
        r = vhsm_sign(c, op->key_name, op->alg, VHSM_OP_RAW, data, op->data_len, &out, &n);
        break;
    case K_GCM:
        r = vhsm_encrypt(c, op->key_name, op->alg, 0, data, op->data_len, NULL, 0, &out, &n);
        break;
    case K_GCM_DEC:
        r = vhsm_decrypt(c, op->key_name, op->alg, 0, 0, op->ct, op->ct_len, NULL, 0, &out, &n);
        if (r >= 0 && n != op->data_len)
            r = -EPROTO;
        break;
    default:
        r = vhsm_mac(c, op->key_name, data, op->data_len, &out, &n);
    }
    vhsm_free_secret(out, n);
    return r;
}

/* Queues PIPE_DEPTH requests into the (reset) batch b and sends it. */
static int vhsm_pipe_send(VhsmBatch *b, Op *op, const uint8_t *data) {
    int r = 0;
    for (int i = 0; i < PIPE_DEPTH && r >= 0; i++)
        switch (op->kind) {
        case K_SIGN:
            r = vhsm_batch_sign(b, op->key_name, op->alg, VHSM_OP_RAW, data, op->data_len);
            break;
        case K_GCM:
            r = vhsm_batch_encrypt(b, op->key_name, op->alg, 0, data, op->data_len, NULL, 0);
            break;
        case K_GCM_DEC:
            r = vhsm_batch_decrypt(b, op->key_name, op->alg, 0, 0, op->ct, op->ct_len, NULL, 0);
            break;
        default:
            r = vhsm_batch_mac(b, op->key_name, data, op->data_len);
        }
    return r < 0 ? r : vhsm_batch_send(b);
}

/* Receives a batch sent by vhsm_pipe_send() and checks every result (an operation that failed
 * inside the batch counts as an error), then resets it for the next round. */
static int vhsm_pipe_recv(VhsmBatch *b) {
    int r = vhsm_batch_recv(b);
    for (size_t i = 0; r >= 0 && i < PIPE_DEPTH; i++) {
        size_t n = 0;
        r = vhsm_batch_result(b, i, NULL, &n);
        if (r >= 0 && n == 0)
            r = -EPROTO;
    }
    vhsm_batch_reset(b);
    return r;
}

static void *run_thread(void *userdata) {
    Run *run = userdata;
    VhsmClient *c = NULL;
    VhsmBatch *b[PIPE_WINDOW] = {};
    RefState ref = {0};
    uint8_t data[4096];
    unsigned long n = 0;
    size_t k = 0;

    (void)RAND_bytes(data, sizeof data);
    if (run->mode != M_OPENSSL && vhsm_connect(sock_path, &c) < 0)
        goto fail;
    for (size_t i = 0; run->mode == M_PIPE && i < PIPE_WINDOW; i++)
        if (vhsm_batch_new(c, &b[i]) < 0)
            goto fail;
    (void)pthread_barrier_wait(&run->start);
    /* Pipelined: PIPE_WINDOW batches in flight; while the daemon computes one, the client
     * receives and checks the previous one and refills it. */
    for (size_t i = 0; run->mode == M_PIPE && i + 1 < PIPE_WINDOW; i++)
        if (vhsm_pipe_send(b[i], run->op, data) < 0)
            atomic_fetch_add(&run->errors, 1);
    while (now() < run->deadline) {
        for (int i = 0; i < 8; i++) {
            int r;
            if (run->mode == M_PIPE) {
                r = vhsm_pipe_send(b[(k + PIPE_WINDOW - 1) % PIPE_WINDOW], run->op, data);
                if (r >= 0)
                    r = vhsm_pipe_recv(b[k]);
                k = (k + 1) % PIPE_WINDOW;
                n += PIPE_DEPTH;
            } else {
                r = run->mode == M_SYNC ? vhsm_once(c, run->op, data)
                                        : ref_once(&ref, run->op, data);
                n++;
            }
            if (r < 0)
                atomic_fetch_add(&run->errors, 1);
        }
    }
    /* Drain the window: those operations completed too. */
    for (size_t i = 0; run->mode == M_PIPE && i + 1 < PIPE_WINDOW; i++) {
        if (vhsm_pipe_recv(b[k]) < 0)
            atomic_fetch_add(&run->errors, 1);
        k = (k + 1) % PIPE_WINDOW;
        n += PIPE_DEPTH;
    }
    atomic_fetch_add(&run->count, n);
    ref_state_done(&ref);
    for (size_t i = 0; i < PIPE_WINDOW; i++)
        (void)vhsm_batch_free(b[i]);
    (void)vhsm_disconnect(c);
    return NULL;
fail:
    atomic_fetch_add(&run->errors, 1);
    (void)pthread_barrier_wait(&run->start);
    for (size_t i = 0; i < PIPE_WINDOW; i++)
        (void)vhsm_batch_free(b[i]);
    (void)vhsm_disconnect(c);
    return NULL;
}

static const char *const mode_name[_M_MAX] = {"openssl", "vhsmd sync", "vhsmd pipelined"};
static const char *const mode_key[_M_MAX] = {"openssl", "sync", "pipe"};

static pid_t daemon_pid;

/* CPU time (user + system) used so far by this process and by vhsmd, in seconds. */
static double cpu_seconds(void) {
    struct rusage ru;
    double t = 0;
    char path[64];
    FILE *f;

    if (getrusage(RUSAGE_SELF, &ru) == 0)
        t += (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
             (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    (void)snprintf(path, sizeof path, "/proc/%d/stat", (int)daemon_pid);
    f = daemon_pid > 0 ? fopen(path, "re") : NULL;
    if (f) {
        unsigned long long ut = 0, st = 0;
        /* pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime
         * stime; comm is "vhsmd", without spaces. */
        if (fscanf(f, "%*d %*s %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) ==
            2)
            t += (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
        fclose(f);
    }
    return t;
}

/* Runs op with threads client threads; returns ops/s (-1 on errors) and, in *ret_cpus, the CPUs
 * the client threads and vhsmd kept busy meanwhile (CPU seconds per second). */
static double measure_cpu(Op *op, Mode mode, unsigned threads, double *ret_cpus) {
    pthread_t th[8];
    Run run = {.op = op, .mode = mode};
    double t0, t1, c0;

    atomic_init(&run.count, 0);
    atomic_init(&run.errors, 0);
    (void)pthread_barrier_init(&run.start, NULL, threads + 1);
    run.deadline = now() + 3600;
    for (unsigned i = 0; i < threads; i++)
        (void)pthread_create(&th[i], NULL, run_thread, &run);
    t0 = now();
    run.deadline = t0 + seconds;
    (void)pthread_barrier_wait(&run.start);
    t0 = now();
    c0 = cpu_seconds();
    run.deadline = t0 + seconds;
    for (unsigned i = 0; i < threads; i++)
        (void)pthread_join(th[i], NULL);
    t1 = now();
    if (ret_cpus)
        *ret_cpus = (cpu_seconds() - c0) / (t1 - t0);
    (void)pthread_barrier_destroy(&run.start);
    if (atomic_load(&run.errors) > 0) {
        fprintf(stderr, "bench-vhsm: %d errors in '%s' (%s)\n", atomic_load(&run.errors), op->label,
                mode_name[mode]);
        return -1;
    }
    return (double)atomic_load(&run.count) / (t1 - t0);
}

static double measure(Op *op, Mode mode, unsigned threads) {
    return measure_cpu(op, mode, threads, NULL);
}

/* ---- set-up: chip, daemon, keys ---- */

static char tmpdir[] = "/tmp/nt-bench-vhsm-XXXXXX";

static void cleanup(void) {
    char cmd[128];
    if (daemon_pid > 0) {
        (void)kill(daemon_pid, SIGTERM);
        (void)waitpid(daemon_pid, NULL, 0);
        daemon_pid = 0;
    }
    (void)snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    (void)!system(cmd);
}

static int start_daemon(void) {
    static char sock[128], sim[128], ks[128], anchor[160];
    SimInitOptions opts = {.product = SNP_PRODUCT_MILAN};
    VhsmClient *c = NULL;

    (void)snprintf(sock, sizeof sock, "%s/vhsm.sock", tmpdir);
    (void)snprintf(sim, sizeof sim, "%s/sim", tmpdir);
    (void)snprintf(ks, sizeof ks, "%s/keystore", tmpdir);
    (void)snprintf(anchor, sizeof anchor, "file:%s/keystore.anchor", tmpdir);
    if (sim_chip_init(sim, &opts) < 0)
        return -EIO;
    daemon_pid = fork();
    if (daemon_pid < 0)
        return -errno;
    if (daemon_pid == 0) {
        const char *spin = getenv("NT_BENCH_SPIN_US");
        if (spin)
            execl(VHSMD_PATH, "vhsmd", "--foreground", "--socket", sock, "--keystore", ks,
                  "--provider", "sim", "--sim-dir", sim, "--freshness-anchor", anchor, "--spin-us",
                  spin, (char *)NULL);
        else
            execl(VHSMD_PATH, "vhsmd", "--foreground", "--socket", sock, "--keystore", ks,
                  "--provider", "sim", "--sim-dir", sim, "--freshness-anchor", anchor,
                  (char *)NULL);
        _exit(127);
    }
    sock_path = sock;
    for (int i = 0; i < 400; i++) {
        if (vhsm_connect(sock_path, &c) == 0 && vhsm_ping(c) == 0) {
            (void)vhsm_disconnect(c);
            return 0;
        }
        c = vhsm_disconnect(c);
        usleep(25000);
    }
    return -ETIMEDOUT;
}

/* Ciphertexts for the decrypt measurement: one from vhsmd, one for the reference. */
static int setup_decrypt(VhsmClient *c, Op *op) {
    _cleanup_(EVP_CIPHER_CTX_freep) EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    uint8_t pt[sizeof op->ref_ct];
    int l = 0, fl = 0, r;
    if (!ctx || RAND_bytes(pt, sizeof pt) != 1 || RAND_bytes(op->ref_iv, sizeof op->ref_iv) != 1)
        return -EIO;
    r = vhsm_encrypt(c, op->key_name, op->alg, 0, pt, op->data_len, NULL, 0, &op->ct, &op->ct_len);
    if (r < 0)
        return r;
    if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, op->sym_key, op->ref_iv) != 1 ||
        EVP_EncryptUpdate(ctx, op->ref_ct, &l, pt, (int)sizeof pt) != 1 ||
        EVP_EncryptFinal_ex(ctx, op->ref_ct + l, &fl) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, op->ref_tag) != 1)
        return -EIO;
    return 0;
}

/* Keys are generated in vhsmd; the reference uses its own key of the same type and size (the
 * cost of these operations does not depend on the key's value). */
static int setup_keys(void) {
    VhsmClient *c = NULL;
    int r = vhsm_connect(sock_path, &c);
    if (r < 0)
        return r;
    for (size_t i = 0; i < ELEMENTSOF(ops); i++) {
        Op *op = &ops[i];
        VhsmKeySpec spec = {.type = op->key_type};
        r = vhsm_key_create(c, op->key_name, &spec);
        if (r < 0)
            break;
        if (streq(op->key_type, "p256")) {
            op->pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
            op->md = EVP_sha256();
        } else if (streq(op->key_type, "p384")) {
            op->pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
            op->md = EVP_sha384();
        } else if (streq(op->key_type, "ed25519"))
            op->pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
        else if (streq(op->key_type, "rsa2048")) {
            op->pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
            op->md = EVP_sha256();
            op->rsa_pss = 1;
        } else
            (void)RAND_bytes(op->sym_key, sizeof op->sym_key);
        if (op->asymmetric && !op->pkey) {
            r = -EIO;
            break;
        }
        if (op->kind == K_GCM_DEC && (r = setup_decrypt(c, op)) < 0)
            break;
    }
    (void)vhsm_disconnect(c);
    return r;
}

#define MAX_ROUNDS 9

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, size_t n) {
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* One operation's results: rates per round, mode and thread count (index 0: 1 thread, 1: 2),
 * and their medians. Ratios are taken within a round (reference and vhsmd measured back to
 * back), then the median over the rounds: drift and neighbours' noise on a shared host move
 * both sides of a round together. */
typedef struct Result {
    size_t rounds;
    double rate[MAX_ROUNDS][_M_MAX][2];
    double med_rate[_M_MAX][2];
    double ratio[_M_MAX][2]; /* vs OpenSSL with the same thread count */
    double scale[_M_MAX];    /* 2 threads / 1 thread */
    double cpus[MAX_ROUNDS]; /* CPUs busy during the 1-thread pipelined run (client + vhsmd) */
    double med_cpus;
} Result;

static void summarize(Result *res) {
    double v[MAX_ROUNDS];
    size_t n = res->rounds;
    for (Mode m = 0; m < _M_MAX; m++) {
        for (int t = 0; t < 2; t++) {
            for (size_t k = 0; k < n; k++)
                v[k] = res->rate[k][m][t];
            res->med_rate[m][t] = median(v, n);
            for (size_t k = 0; k < n; k++)
                v[k] = res->rate[k][m][t] / res->rate[k][M_OPENSSL][t];
            res->ratio[m][t] = median(v, n);
        }
        for (size_t k = 0; k < n; k++)
            v[k] = res->rate[k][m][1] / res->rate[k][m][0];
        res->scale[m] = median(v, n);
    }
    for (size_t k = 0; k < n; k++)
        v[k] = res->cpus[k];
    res->med_cpus = median(v, n);
}

/* What a second client thread can add on this machine at the 1-thread run's CPU cost per
 * operation: both together cannot use more than the machine's CPUs (nor more than twice one).
 * An estimate, not a hard bound: with two threads less CPU goes to waking up idle CPUs. */
static double scale_bound(const Result *res) {
    double ncpu = (double)sysconf(_SC_NPROCESSORS_ONLN);
    return res->med_cpus > 0 ? MIN(2.0, ncpu / res->med_cpus) : 2.0;
}

static void print_row(const char *label, int t, const Result *res) {
    printf("%-22s %3d %11.0f %11.0f %11.0f %6.0f%% %6.0f%%", label, t + 1,
           res->med_rate[M_OPENSSL][t], res->med_rate[M_SYNC][t], res->med_rate[M_PIPE][t],
           100 * res->ratio[M_SYNC][t], 100 * res->ratio[M_PIPE][t]);
}

int main(void) {
    const char *s = getenv("NT_BENCH_SECONDS");
    static Result res[ELEMENTSOF(ops)];
    size_t rounds = 3;
    const char *only, *modes;
    bool ok = true;
    int r;

    if (s && atof(s) > 0)
        seconds = atof(s);
    s = getenv("NT_BENCH_ROUNDS");
    if (s && atoi(s) > 0)
        rounds = MIN((size_t)atoi(s), (size_t)MAX_ROUNDS);
    if (getenv("NT_BENCH_SPIN_US"))
        (void)setenv("VHSM_SPIN_US", getenv("NT_BENCH_SPIN_US"), 1);
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 2;
    }
    (void)signal(SIGPIPE, SIG_IGN);
    r = start_daemon();
    if (r < 0) {
        fprintf(stderr, "bench-vhsm: cannot start vhsmd (%s)\n", strerror(-r));
        cleanup();
        return 2;
    }
    r = setup_keys();
    if (r < 0) {
        fprintf(stderr, "bench-vhsm: key set-up failed: %s (%s)\n", strerror(-r),
                vhsm_last_error());
        cleanup();
        return 2;
    }

    printf("busy-poll: %s; pipelined = batches of %d requests, %d batches in flight per "
           "connection; %zu rounds of %.1f s per measurement, medians shown\n",
           getenv("NT_BENCH_SPIN_US") ? getenv("NT_BENCH_SPIN_US") : "defaults", PIPE_DEPTH,
           PIPE_WINDOW, rounds, seconds);
    only = getenv("NT_BENCH_ONLY");
    modes = getenv("NT_BENCH_MODES");
    printf("%-22s %3s %11s %11s %11s %7s %7s\n", "operation", "thr", "openssl/s", "sync/s",
           "pipe/s", "sync", "pipe");
    for (size_t i = 0; i < ELEMENTSOF(ops); i++) {
        Op *op = &ops[i];
        bool valid = true;
        if (only && !strstr(op->label, only))
            continue; /* r1/r2 stay 0: not judged */
        if (modes) {
            for (Mode m = 0; m < _M_MAX; m++)
                if (strstr(modes, mode_key[m])) {
                    printf("%-22s %-16s 1 thread %11.0f/s", op->label, mode_name[m],
                           measure(op, m, 1));
                    printf("   2 threads %11.0f/s\n", measure(op, m, 2));
                }
            continue;
        }
        res[i].rounds = rounds;
        for (size_t k = 0; k < rounds && valid; k++)
            for (Mode m = 0; m < _M_MAX; m++)
                for (int t = 0; t < 2; t++) {
                    res[i].rate[k][m][t] = measure_cpu(
                        op, m, (unsigned)t + 1, m == M_PIPE && t == 0 ? &res[i].cpus[k] : NULL);
                    valid = valid && res[i].rate[k][m][t] > 0;
                }
        if (!valid) {
            ok = false;
            res[i].rounds = 0;
            continue;
        }
        summarize(&res[i]);
        print_row(op->label, 0, &res[i]);
        printf("\n");
        print_row("", 1, &res[i]);
        printf("   2 thr / 1: openssl %.2fx, sync %.2fx, pipe %.2fx (1-thread pipelined run kept "
               "%.2f CPUs busy: ~%.2fx at that CPU cost per op here)\n",
               res[i].scale[M_OPENSSL], res[i].scale[M_SYNC], res[i].scale[M_PIPE], res[i].med_cpus,
               scale_bound(&res[i]));
        fflush(stdout);
    }
    cleanup();

    printf("\nTargets (on the pipelined rate): asymmetric sign >= 85%% of OpenSSL (1 thread); "
           "AES-GCM 4 KiB >= 40%%; 2 threads >= 1.7x 1 thread\n");
    for (size_t i = 0; i < ELEMENTSOF(ops); i++) {
        double ratio = res[i].ratio[M_PIPE][0], scale = res[i].scale[M_PIPE];
        if (res[i].rounds == 0)
            continue; /* not measured, or already counted as a failure */
        if (ops[i].asymmetric && ratio < 0.85) {
            printf("MISSED: %s at %.0f%% of OpenSSL\n", ops[i].label, 100 * ratio);
            ok = false;
        }
        if (ops[i].kind == K_GCM && ratio < 0.40) {
            printf("MISSED: %s at %.0f%% of OpenSSL\n", ops[i].label, 100 * ratio);
            ok = false;
        }
        if (scale < 1.7) {
            printf("MISSED: %s scales %.2fx with 2 threads", ops[i].label, scale);
            if (scale_bound(&res[i]) < 1.7)
                printf(" (CPU-bound here: its 1-thread run already kept %.2f of %ld CPUs busy; "
                       "at that CPU cost per operation this machine allows ~%.2fx)",
                       res[i].med_cpus, sysconf(_SC_NPROCESSORS_ONLN), scale_bound(&res[i]));
            printf("\n");
            ok = false;
        }
    }
    for (size_t i = 0; i < ELEMENTSOF(ops); i++) {
        EVP_PKEY_free(ops[i].pkey);
        free(ops[i].ct);
    }
    if (modes) {
        printf("NT_BENCH_MODES set: targets not judged\n");
        return ok ? 0 : 1;
    }
    printf("%s\n", ok ? "all targets met" : "some targets missed");
    return ok ? 0 : 1;
}
