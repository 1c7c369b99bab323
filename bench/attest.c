/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Benchmark: attestations per second and latency through nitride-attestd over HTTP on loopback
 * (chain cached: the steady state), next to the in-process floor measured in the same run:
 *   floor  nt_verifier_verify() (cached chain, with the appraisal policy) + nt_ear_issue() (an
 *          ES384 token), on as many threads as the service has: what the service cannot beat;
 *   http   POST /v1/attest to a real nitride-attestd (plain HTTP on 127.0.0.1, keep-alive
 *          connections, one per client thread) with evidence prepared beforehand (each with its
 *          own challenge, so every request is a full attestation: nonce MAC and replay table,
 *          JSON, RFC 8785 binding, verification, policy, token, evidence log off), from two
 *          client threads for throughput, then from one client, one request at a time, for
 *          latency (p50, p99).
 * Rounds alternate floor and http (NT_BENCH_ROUNDS, default 3; NT_BENCH_REQUESTS per round,
 * default 1500) and the medians are reported. Targets (issue 9): http throughput >= 60% of the
 * floor on the same cores; http p50 < 2 ms. Exits 1 when a target is missed.
 * For A/B runs on a noisy machine: NT_BENCH_ATTESTD runs another nitride-attestd binary (e.g. an
 * older build); NT_BENCH_ATTESTD_B runs a second one next to it, measured in the same rounds
 * (alternating which goes first), so that both see the same load; NT_BENCH_SERVICE_THREADS sets
 * the services' "threads" (default 2, as many as the clients). Targets apply to the first.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "core/encoding.h"
#include "core/jose-openssl.h"
#include <jose/jwk.h>
#include "core/jcs.h"
#include "core/log.h"
#include "core/secret.h"
#include "snp/sim.h"
#include "token/ear.h"
#include "token/keys.h"
#include "verify/verify.h"

#include "common.h"

#define THREADS 2

static char tmpdir[] = "/tmp/nt-bench-attest-XXXXXX";

/* The service measured (A), and optionally a second one (B) measured in the same rounds. */
typedef struct Service {
    const char *path;
    pid_t pid;
    char url[128];
    double *rate, *p50, *p99; /* per round */
} Service;

static Service services[2] = {{.pid = -1}, {.pid = -1}};
static int n_services = 1;

/* ---- HTTP with libcurl, one keep-alive handle per thread ---- */

typedef struct Buf {
    char *data;
    size_t len;
} Buf;

static size_t on_data(char *p, size_t size, size_t n, void *ud) {
    Buf *b = ud;
    char *d = realloc(b->data, b->len + size * n + 1);
    if (!d)
        return 0;
    memcpy(d + b->len, p, size * n);
    b->data = d;
    b->len += size * n;
    b->data[b->len] = 0;
    return size * n;
}

static long post(CURL *c, const char *url, const char *body, Buf *out) {
    long code = 0;
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    out->len = 0;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    if (curl_easy_perform(c) != CURLE_OK)
        code = -1;
    else
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(h);
    return code;
}

/* ---- evidence ---- */

typedef struct Prepared {
    char **bodies; /* POST /v1/attest bodies */
    uint8_t (*reports)[SNP_REPORT_SIZE];
    json_t **runtime_data; /* for the in-process floor */
    size_t n;
} Prepared;

static json_t *tee_pubkey;
static char *cert_table_b64;
static NtCertBundle *bundle;

static void prepare(SimChip *chip, const char *url, size_t n, Prepared *p) {
    CURL *c = curl_easy_init();
    Buf out = {0};
    char u[256];

    p->n = n;
    p->bodies = calloc(n, sizeof(char *));
    p->reports = calloc(n, SNP_REPORT_SIZE);
    p->runtime_data = calloc(n, sizeof(json_t *));
    if (!c || !p->bodies || !p->reports || !p->runtime_data)
        bench_die("allocation");
    snprintf(u, sizeof u, "%s/v1/challenge", url);
    for (size_t i = 0; i < n; i++) {
        json_t *reply, *rd, *body;
        char *canon = NULL, *rep_b64 = NULL;
        size_t clen = 0;
        uint8_t report_data[64] = {0};
        unsigned int dl = 0;

        if (post(c, u, "{}", &out) != 200 || !(reply = json_loads(out.data, 0, NULL)))
            bench_die("challenge");
        rd = json_pack("{sO sO}", "nonce", json_object_get(reply, "nonce"), "tee-pubkey",
                       tee_pubkey);
        if (!rd || nt_jcs_dump(rd, &canon, &clen) < 0 ||
            EVP_Digest(canon, clen, report_data, &dl, EVP_sha384(), NULL) != 1)
            bench_die("binding");
        if (sim_chip_get_report(chip, report_data, 0, p->reports[i]) < 0 ||
            base64url_encode_alloc(p->reports[i], SNP_REPORT_SIZE, &rep_b64) < 0)
            bench_die("report");
        body = json_pack("{ss sO s{ss ss} sO}", "version", "1.0", "nonce",
                         json_object_get(reply, "nonce"), "evidence", "report", rep_b64,
                         "cert_table", cert_table_b64, "runtime_data", rd);
        p->bodies[i] = json_dumps(body, JSON_COMPACT);
        if (!p->bodies[i])
            bench_die("body");
        p->runtime_data[i] = rd;
        json_decref(body);
        json_decref(reply);
        free(canon);
        free(rep_b64);
    }
    free(out.data);
    curl_easy_cleanup(c);
}

static void prepared_free(Prepared *p) {
    for (size_t i = 0; i < p->n; i++) {
        free(p->bodies[i]);
        json_decref(p->runtime_data[i]);
    }
    free(p->bodies);
    free(p->reports);
    free(p->runtime_data);
}

/* ---- the two measurements ---- */

typedef struct Worker {
    pthread_t t;
    Prepared *p;
    size_t from, to;
    const char *url;
    double *lat; /* per request, seconds */
    NtVerifier *verifier;
    const NtPolicy *policy;
    NtSigningKeys *keys;
    int failed;
} Worker;

static void *http_worker(void *arg) {
    Worker *w = arg;
    CURL *c = curl_easy_init();
    Buf out = {0};
    char u[256];

    snprintf(u, sizeof u, "%s/v1/attest", w->url);
    for (size_t i = w->from; c && i < w->to; i++) {
        double t0 = bench_mono();
        long code = post(c, u, w->p->bodies[i], &out);
        w->lat[i] = bench_mono() - t0;
        if (code != 200) {
            if (!w->failed)
                fprintf(stderr, "bench-attest: attest answered %ld: %.300s\n", code,
                        out.data ? out.data : "");
            w->failed++;
        }
    }
    free(out.data);
    curl_easy_cleanup(c);
    return NULL;
}

static void *floor_worker(void *arg) {
    Worker *w = arg;
    for (size_t i = w->from; i < w->to; i++) {
        NtVerdict *v = NULL;
        NtVerifyOptions o = NT_VERIFY_OPTIONS_INIT;
        char *token = NULL;
        double t0 = bench_mono();
        o.policy = w->policy;
        if (nt_verifier_verify(w->verifier, w->p->reports[i], SNP_REPORT_SIZE, bundle, &o, &v) <
                0 ||
            nt_verdict_status(v) != NT_VERDICT_OK) {
            w->failed++;
        } else {
            NtEarInput in = {.verdict = v,
                             .runtime_data = w->p->runtime_data[i],
                             .policy_id = "bench",
                             .issuer = "bench",
                             .lifetime_s = 300};
            if (nt_ear_issue(w->keys, &in, &token, NULL) < 0)
                w->failed++;
        }
        w->lat[i] = bench_mono() - t0;
        free(token);
        nt_verdict_free(v);
    }
    return NULL;
}

static double run_workers(Worker *ws, void *(*fn)(void *), Prepared *p, double *lat,
                          const char *url, NtVerifier *ver, const NtPolicy *pol,
                          NtSigningKeys *keys) {
    double t0 = bench_mono();
    int failed = 0;
    for (int i = 0; i < THREADS; i++) {
        ws[i] = (Worker){.p = p,
                         .from = p->n * (size_t)i / THREADS,
                         .to = p->n * (size_t)(i + 1) / THREADS,
                         .url = url,
                         .lat = lat,
                         .verifier = ver,
                         .policy = pol,
                         .keys = keys};
        if (pthread_create(&ws[i].t, NULL, fn, &ws[i]) != 0)
            bench_die("pthread_create");
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(ws[i].t, NULL);
        failed += ws[i].failed;
    }
    if (failed)
        bench_die("attestations (see above)");
    return (double)p->n / (bench_mono() - t0);
}

int main(void) {
    char path[512], url[128], cfg[2048];
    size_t n = 1500;
    int rounds = 3;
    const char *e;
    SimChip *chip = NULL;
    NtVerifier *ver = NULL;
    NtPolicy *pol = NULL;
    NtSigningKeys *keys = NULL;
    uint8_t *table = NULL;
    size_t table_len = 0;
    char *perr = NULL;

    if ((e = getenv("NT_BENCH_REQUESTS")) && atoi(e) >= 100)
        n = (size_t)atoi(e);
    if ((e = getenv("NT_BENCH_ROUNDS")) && atoi(e) >= 1)
        rounds = atoi(e);
    const char *attestd_path =
        getenv("NT_BENCH_ATTESTD") ? getenv("NT_BENCH_ATTESTD") : ATTESTD_PATH;
    int service_threads = THREADS;
    if ((e = getenv("NT_BENCH_SERVICE_THREADS")) && atoi(e) >= 1 && atoi(e) <= 256)
        service_threads = atoi(e);
    bench_name = "bench-attest";
    log_set_max_level(LOG_WARNING);
    secret_set_allow_unlocked(true);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (!mkdtemp(tmpdir))
        bench_die("mkdtemp");

    /* A simulated Milan chip, its evidence, and a P-384 tee-pubkey. */
    snprintf(path, sizeof path, "%s/chip", tmpdir);
    SimInitOptions so = {.product = SNP_PRODUCT_MILAN};
    if (sim_chip_init(path, &so) < 0 || sim_chip_load(path, &chip) < 0)
        bench_die("sim chip");
    if (sim_chip_get_cert_table(chip, &table, &table_len) < 0 ||
        base64url_encode_alloc(table, table_len, &cert_table_b64) < 0)
        bench_die("cert table");
    bundle = nt_cert_bundle_new();
    if (!bundle || nt_cert_bundle_add_table(bundle, table, table_len) < 0)
        bench_die("bundle");
    {
        EVP_PKEY *pk = EVP_EC_gen("P-384");
        json_t *jwk = pk ? jose_openssl_jwk_from_EVP_PKEY(NULL, pk) : NULL;
        if (!jwk || !jose_jwk_pub(NULL, jwk))
            bench_die("tee-pubkey");
        tee_pubkey = jwk;
        EVP_PKEY_free(pk);
    }

    /* The in-process floor's parts, with the same policy and anchor as the service. */
    snprintf(path, sizeof path, "%s/chip/ark.pem", tmpdir);
    if (nt_verifier_new(&ver) < 0 || nt_verifier_add_trust_anchor_file(ver, path) < 0)
        bench_die("verifier");
    if (nt_policy_parse("{}", 2, &pol, &perr) < 0)
        bench_die("policy");
    snprintf(path, sizeof path, "%s/floor-keys", tmpdir);
    if (nt_signing_keys_open_dir(path, NT_JWS_ES384, &keys, &perr) < 0)
        bench_die("signing keys");

    /* The service(s): plain HTTP on an ephemeral loopback port, as many threads as cores here. */
    snprintf(path, sizeof path, "%s/challenge.key", tmpdir);
    {
        uint8_t s[32];
        char hex[65];
        RAND_bytes(s, sizeof s);
        hex_encode(s, sizeof s, hex);
        bench_write_text(path, hex, 0600);
    }
    snprintf(path, sizeof path, "%s/policy.json", tmpdir);
    bench_write_text(path, "{}", 0644);
    services[0].path = attestd_path;
    if (getenv("NT_BENCH_ATTESTD_B")) {
        services[1].path = getenv("NT_BENCH_ATTESTD_B");
        n_services = 2;
    }
    for (int k = 0; k < n_services; k++) {
        Service *sv = &services[k];
        char port_file[512];
        snprintf(cfg, sizeof cfg,
                 "{\"listen\": \"127.0.0.1:0\", \"plain_http\": true, \"threads\": %d,"
                 " \"challenge\": {\"secret\": \"%s/challenge.key\", \"lifetime\": 3600,"
                 " \"replay_capacity\": 1000000},"
                 " \"rate_limit\": {\"per_second\": 0},"
                 " \"token\": {\"keys_dir\": \"%s/keys-%d\"},"
                 " \"trust_anchors\": [\"%s/chip/ark.pem\"],"
                 " \"policies\": {\"bench\": {\"file\": \"%s/policy.json\"}}}",
                 service_threads, tmpdir, tmpdir, k, tmpdir, tmpdir);
        snprintf(path, sizeof path, "%s/attestd-%d.json", tmpdir, k);
        bench_write_text(path, cfg, 0644);
        snprintf(port_file, sizeof port_file, "%s/port-%d", tmpdir, k);
        char *argv[] = {(char *)sv->path, "--config", path, "--port-file", port_file, NULL};
        unsigned port = bench_start_daemon(argv, port_file, NULL, &sv->pid);
        snprintf(sv->url, sizeof sv->url, "http://127.0.0.1:%u", port);
        sv->rate = calloc((size_t)rounds, sizeof(double));
        sv->p50 = calloc((size_t)rounds, sizeof(double));
        sv->p99 = calloc((size_t)rounds, sizeof(double));
        if (!sv->rate || !sv->p50 || !sv->p99)
            bench_die("allocation");
    }
    snprintf(url, sizeof url, "%s", services[0].url);

    double *floor_rate = calloc((size_t)rounds, sizeof(double));
    double *sp50 = calloc((size_t)rounds, sizeof(double));
    double *lat = calloc(n, sizeof(double));
    Worker ws[THREADS];
    if (!floor_rate || !sp50 || !lat)
        bench_die("allocation");

    /* Warm-up: one attestation fills each service's chain cache and the floor's. */
    for (int k = 0; k < n_services; k++) {
        Prepared w;
        prepare(chip, services[k].url, 4, &w);
        run_workers(ws, http_worker, &w, lat, services[k].url, ver, pol, keys);
        run_workers(ws, floor_worker, &w, lat, url, ver, pol, keys);
        prepared_free(&w);
    }
    printf("bench-attest: %zu attestations per round, %d rounds, %d client threads, %d service "
           "threads, Milan, cached chain%s%s%s%s\n",
           n, rounds, THREADS, service_threads, getenv("NT_BENCH_ATTESTD") ? ", attestd " : "",
           getenv("NT_BENCH_ATTESTD") ? attestd_path : "", n_services > 1 ? ", B: " : "",
           n_services > 1 ? services[1].path : "");
    for (int r = 0; r < rounds; r++) {
        Prepared p;
        size_t nl = n / 4;
        /* With two services, which goes first alternates. */
        int order[2] = {r % n_services, (r + 1) % n_services};

        prepare(chip, url, n, &p);
        floor_rate[r] = run_workers(ws, floor_worker, &p, lat, url, ver, pol, keys);
        prepared_free(&p);
        for (int i = 0; i < n_services; i++) {
            Service *sv = &services[order[i]];
            prepare(chip, sv->url, n, &p);
            sv->rate[r] = run_workers(ws, http_worker, &p, lat, sv->url, ver, pol, keys);
            prepared_free(&p);
        }
        /* Latency: one client, one request at a time (an agent attesting at boot). */
        for (int i = 0; i < n_services; i++) {
            Service *sv = &services[order[i]];
            prepare(chip, sv->url, nl, &p);
            Worker one = {.p = &p, .from = 0, .to = nl, .url = sv->url, .lat = lat};
            http_worker(&one);
            if (one.failed)
                bench_die("attestations (see above)");
            qsort(lat, nl, sizeof(double), bench_cmp_double);
            sv->p50[r] = lat[nl / 2];
            sv->p99[r] = lat[nl * 99 / 100];
            if (i + 1 < n_services)
                prepared_free(&p);
        }
        /* The same, in process, one at a time: the latency floor (one verify + one token). */
        Worker one_floor = {
            .p = &p, .from = 0, .to = nl, .lat = lat, .verifier = ver, .policy = pol, .keys = keys};
        floor_worker(&one_floor);
        if (one_floor.failed)
            bench_die("in-process attestations");
        sp50[r] = bench_median(lat, nl);
        prepared_free(&p);
        const Service *a = &services[0], *b = &services[1];
        printf("  round %d: floor %.0f/s   http %.0f/s   ratio %.2f   one at a time: floor p50 "
               "%.3f ms, http p50 %.3f ms (+%.3f), p99 %.3f ms",
               r + 1, floor_rate[r], a->rate[r], a->rate[r] / floor_rate[r], sp50[r] * 1e3,
               a->p50[r] * 1e3, (a->p50[r] - sp50[r]) * 1e3, a->p99[r] * 1e3);
        if (n_services > 1)
            printf("   | B: http %.0f/s ratio %.2f, p50 %.3f ms (+%.3f), p99 %.3f ms", b->rate[r],
                   b->rate[r] / floor_rate[r], b->p50[r] * 1e3, (b->p50[r] - sp50[r]) * 1e3,
                   b->p99[r] * 1e3);
        printf("\n");
    }
    double mf = bench_median(floor_rate, (size_t)rounds), ms50 = bench_median(sp50, (size_t)rounds);
    double ratio = 0, m50 = 0;
    for (int k = 0; k < n_services; k++) {
        Service *sv = &services[k];
        double mh = bench_median(sv->rate, (size_t)rounds),
               p50 = bench_median(sv->p50, (size_t)rounds);
        double m99 = bench_median(sv->p99, (size_t)rounds);
        printf("median%s: in-process floor %.0f attestations/s, over HTTP %.0f/s = %.0f%% of the "
               "floor (target >= 60%%); one at a time: p50 %.3f ms over HTTP (target < 2 ms) = "
               "%.2fx the in-process p50 of %.3f ms, p99 %.3f ms\n",
               k ? " B" : "", mf, mh, mh / mf * 100, p50 * 1e3, p50 / ms50, ms50 * 1e3, m99 * 1e3);
        if (k == 0) {
            ratio = mh / mf;
            m50 = p50;
        }
    }
    bench_stop_all();
    bench_remove_tree(tmpdir);
    return ratio >= 0.60 && m50 < 0.002 ? 0 : 1;
}
