/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Benchmark: SEV-SNP reports verified per second on one core, with AMD's real Genoa vector
 * (tests/vectors/snp/genoa-v3-msft-vcek), next to the raw OpenSSL rate measured in the same run:
 *   raw     EVP_DigestVerify (ECDSA P-384, SHA-384) over the 672 signed bytes with a preloaded
 *           key and a pre-encoded signature: the floor nothing can beat;
 *   cached  nt_verifier_verify() with the chain already verified and cached (the steady state of
 *           the attestation service): parse, cache lookup, signature, product/TCB/hwID checks,
 *           verdict; target >= 90% of raw;
 *   cold    a fresh verifier each time (the built-in anchors, checked once per process, are
 *           referenced; the supplied VCEK and ASK parsed, profile-checked and verified);
 *   floor   the cold chain's crypto floor: the P-384 report verify plus the three RSA-4096
 *           PSS verifies of the chain (ARK self-signature, ASK by ARK, VCEK by ASK) on
 *           preloaded certificates and keys; target: cold >= 50% of floor.
 * Rates are operations per second of this thread's CPU time (CLOCK_THREAD_CPUTIME_ID), so that
 * other load on the machine does not distort them, accumulated over interleaved 50 ms slices
 * (raw, cached, floor, cold, raw, ...) in NT_BENCH_ROUNDS rounds (default 5) of
 * NT_BENCH_SECONDS / rounds each (default 3 s in total), so that frequency changes affect all
 * kinds alike; each ratio printed is the median of the rounds' ratios.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "core/fileio.h"
#include "core/openssl-util.h"
#include "verify/verify.h"

#define VEC NT_SOURCE_ROOT "/tests/vectors/snp/genoa-v3-msft-vcek/"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint8_t *slurp(const char *path, size_t *len) {
    uint8_t *d = NULL;
    if (read_full_file(path, 1 << 20, &d, len) < 0) {
        fprintf(stderr, "bench-verify: cannot read %s\n", path);
        exit(1);
    }
    return d;
}

typedef struct Ctx {
    const uint8_t *report;
    size_t report_len;
    EVP_PKEY *key;
    const EVP_MD *md;
    uint8_t sig[128];
    size_t sig_len;
    NtVerifier *verifier;
    const NtCertBundle *bundle;
    X509 *ark, *ask, *vcek; /* for the floor */
} Ctx;

static void die(const char *what) {
    fprintf(stderr, "bench-verify: %s failed\n", what);
    exit(1);
}

static void run_raw(Ctx *c) {
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    if (!m || EVP_DigestVerifyInit(m, NULL, c->md, NULL, c->key) != 1 ||
        EVP_DigestVerify(m, c->sig, c->sig_len, c->report, SNP_REPORT_SIGNED_SIZE) != 1)
        die("raw EVP_DigestVerify");
    EVP_MD_CTX_free(m);
}

static void run_floor(Ctx *c) {
    run_raw(c);
    if (X509_verify(c->ark, X509_get0_pubkey(c->ark)) != 1 ||
        X509_verify(c->ask, X509_get0_pubkey(c->ark)) != 1 ||
        X509_verify(c->vcek, X509_get0_pubkey(c->ask)) != 1)
        die("floor X509_verify");
}

static void run_cached(Ctx *c) {
    NtVerdict *v = NULL;
    if (nt_verifier_verify(c->verifier, c->report, c->report_len, c->bundle, NULL, &v) < 0 ||
        nt_verdict_status(v) != NT_VERDICT_OK || !v->chain_cached)
        die("cached verification");
    nt_verdict_free(v);
}

static void run_cold(Ctx *c) {
    NtVerifier *fresh = NULL;
    NtVerdict *v = NULL;
    if (nt_verifier_new(&fresh) < 0 ||
        nt_verifier_verify(fresh, c->report, c->report_len, c->bundle, NULL, &v) < 0 ||
        nt_verdict_status(v) != NT_VERDICT_OK || v->chain_cached)
        die("cold verification");
    nt_verdict_free(v);
    nt_verifier_free(fresh);
}

typedef struct Meter {
    unsigned long n;
    double cpu;
} Meter;

/* Runs fn for about `slice` seconds of CPU time, adding to m. */
static void slice(void (*fn)(Ctx *), Ctx *c, double seconds, Meter *m) {
    double t0 = now(), t;
    do {
        fn(c);
        m->n++;
        t = now();
    } while (t - t0 < seconds);
    m->cpu += t - t0;
}

/* DER-encodes the report's little-endian r and s once, outside the measured loop. */
static size_t encode_sig(const uint8_t *report, uint8_t *out) {
    _cleanup_(ECDSA_SIG_freep) ECDSA_SIG *s = ECDSA_SIG_new();
    BIGNUM *r = BN_lebin2bn(report + SNP_REPORT_SIGNED_SIZE, 72, NULL);
    BIGNUM *ss = BN_lebin2bn(report + SNP_REPORT_SIGNED_SIZE + 72, 72, NULL);
    if (!s || !r || !ss || ECDSA_SIG_set0(s, r, ss) != 1)
        die("ECDSA_SIG");
    unsigned char *p = out;
    int n = i2d_ECDSA_SIG(s, &p);
    if (n <= 0)
        die("i2d_ECDSA_SIG");
    return (size_t)n;
}

static X509 *read_cert(const char *path) {
    size_t n;
    _cleanup_free_ uint8_t *d = slurp(path, &n);
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *b = nt_cert_bundle_new();
    X509 *x = NULL;
    if (!b || nt_cert_bundle_add(b, d, n, _NT_CERT_ROLE_INVALID, path) < 0 ||
        nt_cert_from_der(b->entries[0].der, b->entries[0].der_len, &x) < 0)
        die("certificate");
    return x;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

#define ROUNDS_MAX 64

int main(void) {
    size_t rl, vl, al;
    _cleanup_free_ uint8_t *report = slurp(VEC "report.bin", &rl);
    _cleanup_free_ uint8_t *vcek = slurp(VEC "vcek.pem", &vl);
    _cleanup_free_ uint8_t *ask = slurp(VEC "ask.pem", &al);
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *b = nt_cert_bundle_new();
    _cleanup_(nt_verifier_freep) NtVerifier *v = NULL;
    _cleanup_(EVP_MD_freep) EVP_MD *md = EVP_MD_fetch(NULL, "SHA384", NULL);
    _cleanup_(X509_freep) X509 *x = NULL, *fark = read_cert(VEC "ark.pem"),
                               *fask = read_cert(VEC "ask.pem"), *fvcek = read_cert(VEC "vcek.pem");
    const char *e = getenv("NT_BENCH_SECONDS"), *er = getenv("NT_BENCH_ROUNDS");
    double secs = e ? atof(e) : 3.0;
    int rounds = er ? atoi(er) : 5;
    double r_raw[ROUNDS_MAX], r_cached[ROUNDS_MAX], r_cold[ROUNDS_MAX], r_floor[ROUNDS_MAX];
    double q_cached[ROUNDS_MAX], q_cold[ROUNDS_MAX], q_cold_raw[ROUNDS_MAX];
    Ctx c = {.report = report, .report_len = rl, .ark = fark, .ask = fask, .vcek = fvcek};

    if (!b || !md || nt_cert_bundle_add(b, vcek, vl, NT_CERT_ROLE_VCEK, "vcek.pem") < 0 ||
        nt_cert_bundle_add(b, ask, al, _NT_CERT_ROLE_INVALID, "ask.pem") < 0 ||
        nt_verifier_new(&v) < 0)
        die("setup");
    if (nt_cert_from_der(b->entries[0].der, b->entries[0].der_len, &x) < 0)
        die("VCEK parse");
    c.key = X509_get0_pubkey(x);
    c.md = md;
    c.sig_len = encode_sig(report, c.sig);
    c.verifier = v;
    c.bundle = b;
    run_raw(&c);
    run_floor(&c);
    run_cold(&c);
    {
        NtVerdict *w = NULL; /* warm the cache */
        if (nt_verifier_verify(v, report, rl, b, NULL, &w) < 0 ||
            nt_verdict_status(w) != NT_VERDICT_OK)
            die("warm-up");
        nt_verdict_free(w);
    }
    if (!(secs > 0))
        secs = 3.0;
    if (rounds < 1 || rounds > ROUNDS_MAX)
        rounds = 5;
    double total_cpu = 0;
    for (int k = 0; k < rounds; k++) {
        Meter mraw = {0}, mcached = {0}, mcold = {0}, mfloor = {0};
        int slices = (int)(secs / rounds / 0.05 / 2);
        for (int i = 0; i < slices || i == 0; i++) {
            slice(run_raw, &c, 0.05, &mraw);
            slice(run_cached, &c, 0.05, &mcached);
            slice(run_floor, &c, 0.05, &mfloor);
            slice(run_cold, &c, 0.05, &mcold);
        }
        total_cpu += mraw.cpu;
        r_raw[k] = (double)mraw.n / mraw.cpu;
        r_cached[k] = (double)mcached.n / mcached.cpu;
        r_cold[k] = (double)mcold.n / mcold.cpu;
        r_floor[k] = (double)mfloor.n / mfloor.cpu;
        q_cached[k] = r_cached[k] / r_raw[k];
        q_cold[k] = r_cold[k] / r_floor[k];
        q_cold_raw[k] = r_cold[k] / r_raw[k];
    }
    double qc = median(q_cached, rounds), qf = median(q_cold, rounds),
           qr = median(q_cold_raw, rounds);
    printf("verify: one core (per CPU second), Genoa vector, %d rounds, %.1fs per kind; medians "
           "of the rounds\n",
           rounds, total_cpu);
    printf("  raw OpenSSL ECDSA P-384 verify (672 B, preloaded key) %10.0f /s\n",
           median(r_raw, rounds));
    printf("  nitride verify, chain cached                          %10.0f /s  %5.1f%% of raw "
           "(target >= 90%%) %s\n",
           median(r_cached, rounds), 100.0 * qc, qc >= 0.9 ? "OK" : "BELOW TARGET");
    printf("  crypto floor of a cold chain (P-384 + 3 RSA-4096 PSS) %10.0f /s\n",
           median(r_floor, rounds));
    printf("  nitride verify, cold chain (fresh verifier)           %10.0f /s  %5.1f%% of floor "
           "(target >= 50%%) %s, %.1f%% of raw\n",
           median(r_cold, rounds), 100.0 * qf, qf >= 0.5 ? "OK" : "BELOW TARGET", 100.0 * qr);
    return qc >= 0.9 && qf >= 0.5 ? 0 : 2;
}
