/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Benchmark: SEV-SNP reports verified per second on one core, with AMD's real Genoa vector
 * (tests/vectors/snp/genoa-v3-msft-vcek), next to the raw OpenSSL rate measured in the same run:
 *   raw     EVP_DigestVerify (ECDSA P-384, SHA-384) over the 672 signed bytes with a preloaded
 *           key and a pre-encoded signature: the floor nothing can beat;
 *   cached  nt_verifier_verify() with the chain already verified and cached (the steady state of
 *           the attestation service): parse, cache lookup, signature, product/TCB/hwID checks,
 *           verdict; target >= 90% of raw;
 *   cold    a fresh verifier each time (built-in anchors loaded and self-checked, chain parsed
 *           and verified).
 * Rates are operations per second of this thread's CPU time (CLOCK_THREAD_CPUTIME_ID), so that
 * other load on the machine does not distort them, accumulated over many interleaved 50 ms
 * slices (raw, cached, cold, raw, ...) for NT_BENCH_SECONDS (default 3) in total, so that
 * frequency changes affect all three alike.
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

int main(void) {
    size_t rl, vl, al;
    _cleanup_free_ uint8_t *report = slurp(VEC "report.bin", &rl);
    _cleanup_free_ uint8_t *vcek = slurp(VEC "vcek.pem", &vl);
    _cleanup_free_ uint8_t *ask = slurp(VEC "ask.pem", &al);
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *b = nt_cert_bundle_new();
    _cleanup_(nt_verifier_freep) NtVerifier *v = NULL;
    _cleanup_(EVP_MD_freep) EVP_MD *md = EVP_MD_fetch(NULL, "SHA384", NULL);
    _cleanup_(X509_freep) X509 *x = NULL;
    const char *e = getenv("NT_BENCH_SECONDS");
    double secs = e ? atof(e) : 3.0;
    Meter mraw = {0}, mcached = {0}, mcold = {0};
    Ctx c = {.report = report, .report_len = rl};

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
    for (int i = 0; i < (int)(secs / 0.05) || i == 0; i++) {
        slice(run_raw, &c, 0.05, &mraw);
        slice(run_cached, &c, 0.05, &mcached);
        if (i % 4 == 0)
            slice(run_cold, &c, 0.05, &mcold);
    }
    double raw = (double)mraw.n / mraw.cpu, cached = (double)mcached.n / mcached.cpu,
           cold = (double)mcold.n / mcold.cpu;
    printf("verify: one core (per CPU second), Genoa vector, %.1fs interleaved per kind\n",
           mraw.cpu);
    printf("  raw OpenSSL ECDSA P-384 verify (672 B, preloaded key) %10.0f /s\n", raw);
    printf("  nitride verify, chain cached                          %10.0f /s  %5.1f%% of raw "
           "(target >= 90%%) %s\n",
           cached, 100.0 * cached / raw, cached >= 0.9 * raw ? "OK" : "BELOW TARGET");
    printf("  nitride verify, cold chain (fresh verifier)           %10.0f /s  %5.1f%% of raw\n",
           cold, 100.0 * cold / raw);
    return cached >= 0.9 * raw ? 0 : 2;
}
