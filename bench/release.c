/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Benchmark: whole attested releases per second and their latency, on loopback with TLS:
 *   release  the flow of `nitride fetch` run in process (src/agent/attest-flow.c): challenge from
 *            a real nitride-attestd, a transfer key made by a real vhsmd, the report (simulated
 *            chip) binding it, the attestation, the token checked against attestd's JWKS, POST
 *            /v1/secrets/ID/release to a real nitride-kmsd (SQLite file, KEK, release key; it
 *            verifies the token, evaluates the policy, appends the audit row durably, seals and
 *            signs the release), and IMPORT_RELEASE with the token into vhsmd (release signature,
 *            token, unwrap with the one-shot transfer key, the sealed keystore saved).
 *            Every release is a different secret (b-N, pre-created in kmsd), so each one really
 *            stores; the imported key is deleted from vhsmd afterwards, outside the timing, so the
 *            keystore keeps its size. Reused across releases, as the `nitride agent` daemon does:
 *            the process, the evidence provider (the simulated chip loaded once), kept-alive
 *            HTTPS connections, attestd's JWKS (cached by the flow, refetched on an unknown key)
 *            and one vhsmd connection per release. Not reused: every release has its own
 *            challenge, transfer key, report, token and release. With NT_BENCH_STEPS=1 a cold p50
 *            (new connections, no cached JWKS, as one `nitride fetch`) is printed too.
 *   floor    in process, one at a time: the crypto every release needs, once each: transfer key
 *            generation, report signature and its verification (cached chain), token
 *            signature and verification, JWE wrap and release signature (nt_release_seal),
 *            release verification and JWE unwrap. What the release path cannot beat.
 *   storage  in process, one at a time: the durable writes of a release on the same file system
 *            (vhsmd's keystore slot, one fdatasync, and its anchor on a tmpfs; kmsd's audit
 *            commit, one fsync): what the release path cannot beat without weaker durability.
 *   clevis   Clevis with a Tang server on loopback (Debian's clevis and tang; tangd behind socat):
 *            `clevis encrypt tang` once, then `clevis decrypt` timed per unlock (no attestation at
 *            all). Skipped with a note when clevis, tangd or socat are missing (scripts/deps.sh
 *            installs them).
 * Rounds alternate floor, one-at-a-time releases (p50, p99) and releases from two client
 * threads (throughput); medians of rounds are reported. NT_BENCH_ROUNDS (default 3),
 * NT_BENCH_RELEASES per round (default 200), NT_BENCH_CLEVIS runs of clevis decrypt (default 20,
 * 0 skips it), NT_BENCH_ALG the token and release signature algorithm (unset: the services'
 * default, ES256; or ES384), NT_BENCH_TRANSFER_CURVE vhsmd's --transfer-curve (unset: vhsmd's
 * default, P-256; or P-384),
 * NT_BENCH_STEPS=1 prints the median time of the flow's steps.
 * Targets (issue 10): release p50 < 5 ms, p99 < 15 ms, and >= 10x faster than clevis decrypt
 * (when measured). Exits 1 when a target is missed.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <jose/jose.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "agent/agent.h"
#include "agent/attest-flow.h"
#include "core/encoding.h"
#include "core/fileio.h"
#include "core/jcs.h"
#include "core/jose-openssl.h"
#include "core/log.h"
#include "core/secret.h"
#include "snp/provider.h"
#include "snp/sim.h"
#include "token/ear.h"
#include "token/keys.h"
#include "token/release.h"
#include "verify/verify.h"
#include "vhsm/client/vhsm-client.h"
#include "web/client.h"

#include "common.h"

#define THREADS 2
#define ISSUER "https://attestd.bench"
#define AUDIENCE "nitride-kmsd"

static char tmpdir[] = "/tmp/nt-bench-release-XXXXXX";
/* vhsmd's freshness anchor lives in memory in production (/run/vhsm, a tmpfs: docs/vault.md);
 * here on a tmpfs too (/dev/shm; /run may be a disk in a container), else in tmpdir. */
static char rundir[] = "/dev/shm/nt-bench-release-XXXXXX";
static bool have_rundir;
static char chip_dir[256], ca_file[256], sock_path[512], attestd_url[128], kms_url[128];
static char admin_token[65];
/* The services' defaults unless NT_BENCH_ALG / NT_BENCH_TRANSFER_CURVE choose (then passed to
 * them; else nothing is passed and the floor uses the same values). */
static const char *alg = "ES256";
static const char *curve = "P-256"; /* vhsmd --transfer-curve */
static bool alg_set, curve_set;
static bool show_steps;

static void tmp_path(char *buf, size_t size, const char *name) {
    snprintf(buf, size, "%s/%s", tmpdir, name);
}

static void write_json(const char *name, json_t *j, mode_t mode) {
    char path[512];
    char *text = json_dumps(j, JSON_COMPACT);
    if (!text)
        bench_die("json");
    tmp_path(path, sizeof path, name);
    bench_write_text(path, text, mode);
    free(text);
    json_decref(j);
}

/* Without NT_BENCH_ALG, the service's own default: no "alg" in cfg's section. */
static json_t *default_alg(json_t *cfg, const char *section) {
    if (cfg && !alg_set)
        (void)json_object_del(json_object_get(cfg, section), "alg");
    return cfg;
}

/* An HTTPS request to one of our services (admin bearer token for kmsd). */
static long https(const char *method, const char *url, const char *bearer, const json_t *body,
                  char **ret_body) {
    NtHttpOptions o = {.ca_file = ca_file, .bearer_token = bearer, .timeout_ms = 30000};
    NtHttpResponse resp = {};
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    long status = -1;
    if (nt_http_request(&o, method, url, text ? "application/json" : NULL, text,
                        text ? strlen(text) : 0, &resp) == 0) {
        status = resp.status;
        if (ret_body)
            *ret_body = resp.body ? strdup((const char *)resp.body) : strdup("");
    }
    nt_http_response_clear(&resp);
    free(text);
    return status;
}

static size_t discard(char *p, size_t size, size_t n, void *ud) {
    (void)p;
    (void)ud;
    return size * n;
}

/* ---- one release: the flow of `nitride fetch` ---- */

enum { STEP_TOKEN, STEP_RELEASE, STEP_IMPORT, N_STEPS };
static const char *const step_name[N_STEPS] = {"attest (challenge, transfer key, report, token, "
                                               "JWKS, check)",
                                               "kmsd release", "vhsmd import"};

typedef struct Client {
    pthread_t t;
    SnpProvider *provider;
    AttestArgs args;
    unsigned from, to; /* secrets b-from .. b-(to-1) */
    double *lat;       /* per release, seconds (index i - from) */
    double *steps[N_STEPS];
    int failed;
} Client;

static void client_init(Client *c) {
    *c = (Client){.args = {.attestd_url = attestd_url,
                           .provider = "sim",
                           .sim_dir = chip_dir,
                           .vhsm_socket = sock_path,
                           .ca_file = ca_file,
                           .quiet = true,
                           .timeout_s = 30}};
    if (snp_provider_open("sim", chip_dir, &c->provider) < 0 ||
        !(c->args.base = strdup(attestd_url)))
        bench_die("opening the evidence provider");
}

static void client_done(Client *c) {
    snp_provider_free(c->provider);
    free(c->args.base);
    for (int s = 0; s < N_STEPS; s++)
        free(c->steps[s]);
}

/* One whole release of secret b-<i> into vhsmd as kms/b-<i>. 0 or -1 (logged). */
static int release_once(Client *c, unsigned i, double t[N_STEPS + 1]) {
    AttestRun run = ATTEST_RUN_INIT(&c->args);
    char *token = NULL, *reply_text = NULL, path[64], name[64];
    json_t *claims = NULL, *reply = NULL;
    VhsmClient *v = NULL;
    long status = 0;
    int r, ret = -1;

    run.provider = c->provider;
    run.deadline_ms = attest_now_ms() + 30000;
    t[0] = bench_mono();
    r = attest_obtain_token(&run, &token, &claims);
    if (r != NT_EXIT_OK) {
        fprintf(stderr, "bench-release: attestation failed (%d): %s\n", r, run.last_error);
        goto out;
    }
    t[1] = bench_mono();
    snprintf(path, sizeof path, "/v1/secrets/b-%u/release", i);
    r = attest_exchange_at(&run, kms_url, token, "Release", "POST", path, NULL, &status, &reply);
    if (r != STEP_OK || status != 200 || !attest_jstr(reply, "release")) {
        fprintf(stderr, "bench-release: release answered %ld (%d): %s\n", status, r,
                attest_jstr(reply, "error") ?: run.last_error);
        goto out;
    }
    t[2] = bench_mono();
    r = attest_vhsm(&run, &v); /* the connection that made the transfer key */
    if (r >= 0)
        r = vhsm_import_release(v, attest_jstr(reply, "release"), token, &reply_text);
    snprintf(name, sizeof name, "\"kms/b-%u\"", i);
    if (r < 0 || !reply_text || !strstr(reply_text, name)) {
        fprintf(stderr, "bench-release: import failed: %s (%s)\n", strerror(-r), vhsm_last_error());
        goto out;
    }
    t[3] = bench_mono();
    ret = 0;
out:
    attest_vhsm_close(&run);
    json_decref(run.tee_pubkey);
    json_decref(claims);
    json_decref(reply);
    free(token);
    free(reply_text);
    return ret;
}

/* Deletes kms/b-<i> from vhsmd (outside the timing: the keystore keeps its size). */
static void forget(unsigned i) {
    VhsmClient *v = NULL;
    char name[64];
    snprintf(name, sizeof name, "kms/b-%u", i);
    if (vhsm_connect(sock_path, &v) < 0 || vhsm_key_delete(v, name) < 0)
        bench_die("deleting an imported key");
    vhsm_disconnect(v);
}

static void *client_run(void *arg) {
    Client *c = arg;
    for (unsigned i = c->from; i < c->to && !c->failed; i++) {
        double t[N_STEPS + 1];
        if (release_once(c, i, t) < 0) {
            c->failed++;
            break;
        }
        c->lat[i - c->from] = t[N_STEPS] - t[0];
        for (int s = 0; s < N_STEPS; s++)
            if (c->steps[s])
                c->steps[s][i - c->from] = t[s + 1] - t[s];
        forget(i);
    }
    return NULL;
}

/* ---- the in-process floor ---- */

typedef struct Floor {
    SimChip *chip;
    NtVerifier *verifier;
    NtCertBundle *bundle;
    NtPolicy *policy;
    NtSigningKeys *token_keys, *release_keys;
    json_t *token_jwks, *release_jwks;
} Floor;

enum {
    F_KEYGEN,
    F_REPORT_SIGN,
    F_REPORT_VERIFY,
    F_TOKEN_SIGN,
    F_TOKEN_VERIFY,
    F_SEAL,
    F_OPEN,
    N_F
};
static const char *const floor_name[N_F] = {"transfer key",
                                            "report sign",
                                            "report verify",
                                            "token sign",
                                            "token verify",
                                            "JWE wrap + release sign",
                                            "release verify + JWE unwrap"};

static json_t *jwe_from_compact(const char *compact) {
    static const char *const member[5] = {"protected", "encrypted_key", "iv", "ciphertext", "tag"};
    json_t *jwe = json_object();
    const char *p = compact;
    for (int i = 0; jwe && i < 5; i++) {
        size_t n = i < 4 ? strcspn(p, ".") : strlen(p);
        if (i < 4 && p[n] != '.')
            bench_die("splitting the JWE");
        json_object_set_new(jwe, member[i], json_stringn(p, n));
        p += n + 1;
    }
    return jwe;
}

/* One of each cryptographic operation of a release; adds each one's time to t. */
static int floor_once(Floor *f, double t[N_F]) {
    EVP_PKEY *tk = NULL;
    json_t *jwk = NULL, *pub = NULL, *rd = NULL, *thp = NULL, *claims = NULL, *jwe = NULL,
           *cek = NULL;
    char *canon = NULL, *token = NULL, *release = NULL, *inner = NULL, err[256] = "";
    size_t clen = 0, ptlen = 0;
    uint8_t report[SNP_REPORT_SIZE], rdata[64] = {0}, value[32];
    NtVerdict *verdict = NULL;
    NtReleaseInfo h = {0}, got = {0};
    void *pt = NULL;
    int ret = -1;
    double t0 = bench_mono(), t1;

#define LAP(i)                                                                                     \
    do {                                                                                           \
        t1 = bench_mono();                                                                         \
        t[i] += t1 - t0;                                                                           \
        t0 = t1;                                                                                   \
    } while (0)

    tk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve);
    jwk = tk ? jose_openssl_jwk_from_EVP_PKEY(NULL, tk) : NULL;
    if (!jwk || !(pub = json_deep_copy(jwk)) || !jose_jwk_pub(NULL, pub) ||
        !(thp = jose_jwk_thp(NULL, pub, "S256")) || json_object_set(pub, "kid", thp) < 0)
        goto out;
    LAP(F_KEYGEN);
    rd = json_pack("{ss sO}", "nonce", "bench-nonce", "tee-pubkey", pub);
    if (!rd || nt_jcs_dump(rd, &canon, &clen) < 0)
        goto out;
    SHA384((const unsigned char *)canon, clen, rdata);
    if (sim_chip_get_report(f->chip, rdata, 0, report) < 0)
        goto out;
    LAP(F_REPORT_SIGN);
    NtVerifyOptions o = NT_VERIFY_OPTIONS_INIT;
    o.policy = f->policy;
    if (nt_verifier_verify(f->verifier, report, SNP_REPORT_SIZE, f->bundle, &o, &verdict) < 0 ||
        nt_verdict_status(verdict) != NT_VERDICT_OK)
        goto out;
    LAP(F_REPORT_VERIFY);
    NtEarInput in = {.verdict = verdict,
                     .runtime_data = rd,
                     .policy_id = "bench",
                     .issuer = ISSUER,
                     .lifetime_s = 300};
    if (nt_ear_issue(f->token_keys, &in, &token, NULL) < 0)
        goto out;
    LAP(F_TOKEN_SIGN);
    NtEarVerifyOptions vo = NT_EAR_VERIFY_OPTIONS_INIT;
    if (nt_ear_verify(token, f->token_jwks, &vo, &claims, err) < 0)
        goto out;
    LAP(F_TOKEN_VERIFY);
    RAND_bytes(value, sizeof value);
    h = (NtReleaseInfo){.name = "kms/floor",
                        .type = "aes256",
                        .version = 1,
                        .policy = "local",
                        .secret_id = "floor",
                        .token_jti = "bench"};
    if (nt_release_seal(f->release_keys, pub, &h, value, sizeof value, time(NULL), &release) < 0)
        goto out;
    LAP(F_SEAL);
    if (nt_release_verify(release, f->release_jwks, time(NULL), 60, &got, &inner, err) < 0 ||
        !(jwe = jwe_from_compact(inner)) || !(cek = jose_jwe_dec_jwk(NULL, jwe, NULL, jwk)) ||
        !(pt = jose_jwe_dec_cek(NULL, jwe, cek, &ptlen)) || ptlen != sizeof value ||
        memcmp(pt, value, sizeof value) != 0)
        goto out;
    LAP(F_OPEN);
    ret = 0;
out:
    if (ret < 0)
        fprintf(stderr, "bench-release: floor: %s\n", err[0] ? err : "failed");
    if (pt)
        OPENSSL_cleanse(pt, ptlen);
    free(pt);
    nt_release_info_clear(&got);
    nt_verdict_free(verdict);
    EVP_PKEY_free(tk);
    json_decref(jwk);
    json_decref(pub);
    json_decref(rd);
    json_decref(thp);
    json_decref(claims);
    json_decref(jwe);
    json_decref(cek);
    free(canon);
    free(token);
    free(release);
    free(inner);
    return ret;
}

/* The durable writes of one release, on the same file system as the services' files: vhsmd's
 * keystore save (the sealed image into one of the file's two slots, in place, one fdatasync;
 * then the freshness anchor, written atomically on its tmpfs) and kmsd's audit commit (one
 * append and fsync, as a SQLite WAL commit). */
static int storage_once(int ks_fd, int wal_fd) {
    static const uint8_t ks[4096] = {1}, anchor[48] = {2};
    static unsigned slot;
    char p2[512];
    if (have_rundir)
        snprintf(p2, sizeof p2, "%s/floor-anchor", rundir);
    else
        tmp_path(p2, sizeof p2, "floor-anchor");
    slot ^= 1;
    if (pwrite(ks_fd, ks, sizeof ks, (off_t)(slot * sizeof ks)) != (ssize_t)sizeof ks ||
        fdatasync(ks_fd) < 0 || write_file_atomic(p2, anchor, sizeof anchor, 0600) < 0 ||
        write(wal_fd, ks, 92) != 92 || fsync(wal_fd) < 0)
        return -1;
    return 0;
}

/* ---- Clevis + Tang ---- */

/* p50 of `clevis decrypt` against tangd on loopback, seconds; 0 when not measured. */
static double clevis_p50(int runs, double *ret_p99) {
    char cmd[2048], db[512], jwe[512], port_file[512];
    double *lat;
    unsigned port;
    pid_t pid;

    if (runs <= 0)
        return 0;
    if (!bench_have("clevis") || !bench_have("socat") || access(BENCH_TANGD, X_OK) != 0 ||
        access(BENCH_TANGD_KEYGEN, X_OK) != 0) {
        printf("clevis: not measured (clevis, tang or socat missing: run scripts/deps.sh)\n");
        return 0;
    }
    tmp_path(db, sizeof db, "tang-db");
    tmp_path(jwe, sizeof jwe, "clevis.jwe");
    tmp_path(port_file, sizeof port_file, "tang.port");
    port = bench_start_tang(db, port_file, &pid);
    /* Encrypt once (retried while socat starts). */
    snprintf(cmd, sizeof cmd,
             "head -c 32 /dev/urandom | clevis encrypt tang '{\"url\":\"http://127.0.0.1:%u\"}' "
             "-y > '%s' 2>/dev/null",
             port, jwe);
    for (int i = 0; system(cmd) != 0; i++) {
        if (i > 50)
            bench_die("clevis encrypt tang");
        usleep(100000);
    }
    lat = calloc((size_t)runs, sizeof *lat);
    if (!lat)
        bench_die("allocation");
    snprintf(cmd, sizeof cmd, "clevis decrypt < '%s' > /dev/null", jwe);
    for (int i = 0; i < runs; i++) {
        double t0 = bench_mono();
        if (system(cmd) != 0)
            bench_die("clevis decrypt");
        lat[i] = bench_mono() - t0;
    }
    *ret_p99 = bench_percentile(lat, (size_t)runs, 99);
    double p50 = bench_median(lat, (size_t)runs);
    free(lat);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    return p50;
}

/* ---- setup ---- */

static void make_tls(void) {
    bench_make_tls(tmpdir);
    tmp_path(ca_file, sizeof ca_file, "ca.pem");
}

static void write_secret_file(const char *name, char *path, size_t size) {
    uint8_t s[32];
    char hex[65];
    RAND_bytes(s, sizeof s);
    hex_encode(s, sizeof s, hex);
    tmp_path(path, size, name);
    bench_write_text(path, hex, 0600);
}

/* The services' processes, for their CPU time. */
static pid_t attestd_pid, kmsd_pid, vhsmd_pid;

/* CPU seconds used so far by this process (the agent's flow) and each service. */
enum { CPU_AGENT, CPU_ATTESTD, CPU_KMSD, CPU_VHSMD, N_CPU };
static const char *const cpu_name[N_CPU] = {"agent flow", "attestd", "kmsd", "vhsmd"};
static void cpu_now(double c[N_CPU]) {
    c[CPU_AGENT] = bench_cpu_seconds(0);
    c[CPU_ATTESTD] = bench_cpu_seconds(attestd_pid);
    c[CPU_KMSD] = bench_cpu_seconds(kmsd_pid);
    c[CPU_VHSMD] = bench_cpu_seconds(vhsmd_pid);
}

static unsigned start_service(const char *exe, const char *name, pid_t *ret_pid) {
    return bench_start_service(tmpdir, exe, name, ret_pid);
}

static void start_vhsmd(void) {
    char vdir[256], vchip[256], ks[512], anchor[512], kms_keys[512], jwks[512], log[512];
    tmp_path(vdir, sizeof vdir, "vhsm");
    tmp_path(vchip, sizeof vchip, "vchip");
    tmp_path(kms_keys, sizeof kms_keys, "kms-keys.json");
    tmp_path(jwks, sizeof jwks, "attestd-jwks.json");
    tmp_path(log, sizeof log, "vhsmd.log");
    snprintf(sock_path, sizeof sock_path, "%s/vhsm.sock", vdir);
    snprintf(ks, sizeof ks, "%s/keystore", vdir);
    snprintf(anchor, sizeof anchor, "file:%s/anchor", have_rundir ? rundir : vdir);
    SimInitOptions so = {.product = SNP_PRODUCT_MILAN};
    if (mkdir(vdir, 0755) < 0 || sim_chip_init(vchip, &so) < 0)
        bench_die("vhsmd's directory");
    pid_t pid = fork();
    if (pid < 0)
        bench_die("fork");
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        dup2(fd, 1);
        dup2(fd, 2);
        execl(VHSMD_PATH, "vhsmd", "--foreground", "--socket", sock_path, "--keystore", ks,
              "--provider", "sim", "--sim-dir", vchip, "--freshness-anchor", anchor, "--kms-keys",
              kms_keys, "--attestd-jwks", jwks, "--attestd-issuer", ISSUER,
              curve_set ? "--transfer-curve" : (char *)NULL, curve, (char *)NULL);
        _exit(127);
    }
    bench_register_pid(pid);
    vhsmd_pid = pid;
    for (int i = 0; i < 200 && access(sock_path, F_OK) != 0; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            break;
        usleep(50000);
    }
    if (access(sock_path, F_OK) != 0) {
        fprintf(stderr, "bench-release: vhsmd did not start; see %s\n", log);
        bench_die("starting vhsmd");
    }
}

static void create_secrets(unsigned n, const char *measurement_hex) {
    char url[256];
    snprintf(url, sizeof url, "%s/v1/secrets", kms_url);
    for (unsigned i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "b-%u", i);
        json_t *body =
            json_pack("{ss ss ss sb s{si s{s[s]}} s{ss}}", "id", id, "name", id, "type", "aes256",
                      "generate", 1, "policy", "version", 1, "rules", "measurement_in",
                      measurement_hex, "attributes", "policy", "local");
        char *reply = NULL;
        long st = https("POST", url, admin_token, body, &reply);
        if (st != 201) {
            fprintf(stderr, "bench-release: creating %s: HTTP %ld %s\n", id, st,
                    reply ? reply : "");
            bench_die("creating the secrets");
        }
        free(reply);
        json_decref(body);
    }
}

static void setup_floor(Floor *f) {
    char path[512];
    char *perr = NULL;
    uint8_t *table = NULL;
    size_t table_len = 0;
    NtJwsAlg a = streq(alg, "ES256") ? NT_JWS_ES256 : NT_JWS_ES384;
    time_t now = time(NULL);

    if (sim_chip_load(chip_dir, &f->chip) < 0 ||
        sim_chip_get_cert_table(f->chip, &table, &table_len) < 0 ||
        !(f->bundle = nt_cert_bundle_new()) ||
        nt_cert_bundle_add_table(f->bundle, table, table_len) < 0)
        bench_die("the floor's chip");
    free(table);
    snprintf(path, sizeof path, "%s/ark.pem", chip_dir);
    if (nt_verifier_new(&f->verifier) < 0 ||
        nt_verifier_add_trust_anchor_file(f->verifier, path) < 0)
        bench_die("the floor's verifier");
    if (nt_policy_parse("{}", 2, &f->policy, &perr) < 0)
        bench_die("the floor's policy");
    tmp_path(path, sizeof path, "floor-token-keys");
    if (nt_signing_keys_open_dir(path, a, &f->token_keys, &perr) < 0)
        bench_die("the floor's token keys");
    tmp_path(path, sizeof path, "floor-release-keys");
    if (nt_signing_keys_open_dir(path, a, &f->release_keys, &perr) < 0)
        bench_die("the floor's release keys");
    if (!(f->token_jwks = nt_signing_keys_jwks(f->token_keys, now)) ||
        !(f->release_jwks = nt_signing_keys_jwks(f->release_keys, now)))
        bench_die("the floor's JWKS");
}

int main(void) {
    unsigned n = 200;
    int rounds = 3, clevis_runs = 20;
    const char *e;
    char path[512], s1[512], s2[512];

    bench_name = "bench-release";
    if (geteuid() != 0) {
        printf("bench-release: skipped: vhsmd imports releases for root only (run as root)\n");
        return 0;
    }
    if ((e = getenv("NT_BENCH_RELEASES")) && atoi(e) >= 10)
        n = (unsigned)atoi(e);
    if ((e = getenv("NT_BENCH_ROUNDS")) && atoi(e) >= 1)
        rounds = atoi(e);
    if ((e = getenv("NT_BENCH_CLEVIS")) && atoi(e) >= 0)
        clevis_runs = atoi(e);
    if ((e = getenv("NT_BENCH_ALG")) && (streq(e, "ES256") || streq(e, "ES384"))) {
        alg = e;
        alg_set = true;
    }
    if ((e = getenv("NT_BENCH_TRANSFER_CURVE")) && (streq(e, "P-256") || streq(e, "P-384"))) {
        curve = e;
        curve_set = true;
    }
    show_steps = (e = getenv("NT_BENCH_STEPS")) && streq(e, "1");
    log_set_max_level(LOG_ERR);
    secret_set_allow_unlocked(true);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (!mkdtemp(tmpdir))
        bench_die("mkdtemp");
    have_rundir = mkdtemp(rundir) != NULL;

    /* The guest's simulated chip and its measurement, which the secrets' policy names. */
    tmp_path(chip_dir, sizeof chip_dir, "chip");
    SimInitOptions so = {.product = SNP_PRODUCT_MILAN};
    SimChip *chip = NULL;
    char meas[97];
    if (sim_chip_init(chip_dir, &so) < 0 || sim_chip_load(chip_dir, &chip) < 0)
        bench_die("sim chip");
    hex_encode(sim_chip_launch(chip)->measurement, 48, meas);
    sim_chip_free(chip);
    make_tls();

    /* nitride-attestd and nitride-kmsd over TLS on ephemeral loopback ports. */
    char tls_cert[512], tls_key[512];
    tmp_path(tls_cert, sizeof tls_cert, "tls.pem");
    tmp_path(tls_key, sizeof tls_key, "tls.key");
    write_secret_file("challenge.key", s1, sizeof s1);
    tmp_path(path, sizeof path, "att-policy.json");
    {
        json_t *p = json_pack("{s[s]}", "measurements", meas);
        write_json("att-policy.json", p, 0644);
    }
    char keys_dir[512], anchor[512];
    tmp_path(keys_dir, sizeof keys_dir, "att-keys");
    snprintf(anchor, sizeof anchor, "%s/ark.pem", chip_dir);
    write_json(
        "attestd.json",
        default_alg(json_pack("{ss s{ss ss} s{ss si} s{ss ss ss si ss} s[s] s{s{ss}} ss s{si si}}",
                              "listen", "127.0.0.1:0", "tls", "cert", tls_cert, "key", tls_key,
                              "challenge", "secret", s1, "lifetime", 60, "token", "keys_dir",
                              keys_dir, "issuer", ISSUER, "audience", AUDIENCE, "lifetime", 300,
                              "alg", alg, "trust_anchors", anchor, "policies", "default", "file",
                              path, "default_policy", "default", "rate_limit", "per_second", 0,
                              "burst", 1),
                    "token"),
        0644);
    snprintf(attestd_url, sizeof attestd_url, "https://127.0.0.1:%u",
             start_service(ATTESTD_PATH, "attestd", &attestd_pid));

    char db[512], rkeys[512], jwks_url[256], tokf[512];
    uint8_t tokb[32];
    RAND_bytes(tokb, sizeof tokb);
    hex_encode(tokb, sizeof tokb, admin_token);
    tmp_path(tokf, sizeof tokf, "admin.token");
    bench_write_text(tokf, admin_token, 0600);
    {
        uint8_t k[32];
        int fd;
        RAND_bytes(k, sizeof k);
        tmp_path(s2, sizeof s2, "kek");
        fd = open(s2, O_CREAT | O_WRONLY | O_TRUNC, 0600);
        if (fd < 0 || write(fd, k, sizeof k) != (ssize_t)sizeof k)
            bench_die("kek");
        close(fd);
    }
    tmp_path(db, sizeof db, "kmsd.db");
    tmp_path(rkeys, sizeof rkeys, "release-keys");
    snprintf(jwks_url, sizeof jwks_url, "%s/.well-known/jwks.json", attestd_url);
    write_json(
        "kmsd.json",
        default_alg(json_pack("{ss s{ss ss} ss ss s{ss ss} s{ss ss ss ss si} s{ss} s{si si}}",
                              "listen", "127.0.0.1:0", "tls", "cert", tls_cert, "key", tls_key,
                              "database", db, "kek_file", s2, "release", "keys_dir", rkeys, "alg",
                              alg, "attestd", "jwks_url", jwks_url, "ca_file", ca_file, "issuer",
                              ISSUER, "audience", AUDIENCE, "skew", 1, "admin", "bearer_token_file",
                              tokf, "rate_limit", "per_second", 0, "burst", 1),
                    "release"),
        0644);
    snprintf(kms_url, sizeof kms_url, "https://127.0.0.1:%u",
             start_service(KMSD_PATH, "kmsd", &kmsd_pid));

    /* vhsmd pins kmsd's release keys and attestd's token keys. */
    {
        char *text = NULL, url[256];
        snprintf(url, sizeof url, "%s/v1/release-keys", kms_url);
        if (https("GET", url, NULL, NULL, &text) != 200)
            bench_die("GET /v1/release-keys");
        tmp_path(path, sizeof path, "kms-keys.json");
        bench_write_text(path, text, 0644);
        free(text);
        if (https("GET", jwks_url, NULL, NULL, &text) != 200)
            bench_die("GET attestd's JWKS");
        tmp_path(path, sizeof path, "attestd-jwks.json");
        bench_write_text(path, text, 0644);
        free(text);
    }
    start_vhsmd();

    /* Secrets: the warm-up, two sets per round, and the cold releases of NT_BENCH_STEPS. */
    enum { COLD = 20 };
    unsigned warm = 4, total = warm + (unsigned)rounds * (n + n) + COLD;
    create_secrets(total, meas);

    Floor fl = {0};
    setup_floor(&fl);
    Client cl[THREADS];
    for (int k = 0; k < THREADS; k++)
        client_init(&cl[k]);

    char wal[512];
    tmp_path(wal, sizeof wal, "floor-wal");
    int wal_fd = open(wal, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    char ksf[512];
    tmp_path(ksf, sizeof ksf, "floor-keystore");
    int ks_fd = open(ksf, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    {
        static const uint8_t zero[8192];
        if (ks_fd < 0 || write(ks_fd, zero, sizeof zero) != (ssize_t)sizeof zero ||
            fsync(ks_fd) < 0)
            bench_die("the storage floor's keystore");
    }
    double *sp50 = calloc((size_t)rounds, 8), *cpu = calloc((size_t)rounds, 8), *cpu_proc[N_CPU];
    for (int k = 0; k < N_CPU; k++)
        if (!(cpu_proc[k] = calloc((size_t)rounds, 8)))
            bench_die("allocation");
    if (wal_fd < 0 || !sp50 || !cpu)
        bench_die("the storage floor's file");
    double *p50 = calloc((size_t)rounds, sizeof(double)), *p99 = calloc((size_t)rounds, 8),
           *rate = calloc((size_t)rounds, 8), *fp50 = calloc((size_t)rounds, 8),
           *lat = calloc(n, sizeof(double)), *flat = calloc(n, sizeof(double)), *fstep[N_F],
           *step_med[N_STEPS], *fstep_med[N_F];
    if (!p50 || !p99 || !rate || !fp50 || !lat || !flat)
        bench_die("allocation");
    for (int s = 0; s < N_F; s++)
        if (!(fstep[s] = calloc(n, 8)) || !(fstep_med[s] = calloc((size_t)rounds, 8)))
            bench_die("allocation");
    for (int s = 0; s < N_STEPS; s++)
        if (!(cl[0].steps[s] = calloc(n, 8)) || !(step_med[s] = calloc((size_t)rounds, 8)))
            bench_die("allocation");

    /* Warm-up: the chain caches, kmsd's JWKS cache, the first connections. */
    cl[0].from = 0;
    cl[0].to = warm;
    cl[0].lat = lat;
    client_run(&cl[0]);
    for (unsigned i = 0; i < warm; i++) {
        double ft[N_F] = {0};
        if (floor_once(&fl, ft) < 0)
            bench_die("the floor");
    }
    if (cl[0].failed)
        bench_die("the warm-up releases (see above)");

    printf("bench-release: %u releases per round, %d rounds, %s tokens and releases%s, %s transfer "
           "keys%s, P-384 reports (Milan), TLS 1.3 on loopback, %d client threads for throughput\n",
           n, rounds, alg, alg_set ? "" : " (default)", curve, curve_set ? "" : " (default)",
           THREADS);
    unsigned next = warm;
    for (int r = 0; r < rounds; r++) {
        /* The floor, one at a time. */
        for (unsigned i = 0; i < n; i++) {
            double ft[N_F] = {0};
            double t0 = bench_mono();
            if (floor_once(&fl, ft) < 0)
                bench_die("the floor");
            flat[i] = bench_mono() - t0;
            for (int s = 0; s < N_F; s++)
                fstep[s][i] = ft[s];
        }
        fp50[r] = bench_median(flat, n);
        /* The durable writes, one release's worth at a time. */
        for (unsigned i = 0; i < n; i++) {
            double t0 = bench_mono();
            if (storage_once(ks_fd, wal_fd) < 0)
                bench_die("the storage floor");
            flat[i] = bench_mono() - t0;
        }
        sp50[r] = bench_median(flat, n);
        for (int s = 0; s < N_F; s++)
            fstep_med[s][r] = bench_median(fstep[s], n);

        /* Releases one at a time: latency. */
        cl[0].from = next;
        cl[0].to = next + n;
        cl[0].lat = lat;
        next += n;
        double c0[N_CPU], c1[N_CPU];
        cpu_now(c0);
        client_run(&cl[0]);
        if (cl[0].failed)
            bench_die("releases (see above)");
        cpu_now(c1);
        cpu[r] = 0;
        for (int k = 0; k < N_CPU; k++) {
            cpu_proc[k][r] = (c1[k] - c0[k]) / n;
            cpu[r] += cpu_proc[k][r];
        }
        for (int s = 0; s < N_STEPS; s++)
            step_med[s][r] = bench_median(cl[0].steps[s], n);
        p99[r] = bench_percentile(lat, n, 99);
        p50[r] = bench_median(lat, n);

        /* Releases from two clients at once: throughput. */
        double *tl = calloc(n, sizeof(double));
        double *saved[THREADS][N_STEPS];
        if (!tl)
            bench_die("allocation");
        double t0 = bench_mono();
        for (int k = 0; k < THREADS; k++) {
            for (int s = 0; s < N_STEPS; s++) {
                saved[k][s] = cl[k].steps[s];
                cl[k].steps[s] = NULL;
            }
            cl[k].from = next + n * (unsigned)k / THREADS;
            cl[k].to = next + n * (unsigned)(k + 1) / THREADS;
            cl[k].lat = tl + n * (unsigned)k / THREADS;
            if (pthread_create(&cl[k].t, NULL, client_run, &cl[k]) != 0)
                bench_die("pthread_create");
        }
        int failed = 0;
        for (int k = 0; k < THREADS; k++) {
            pthread_join(cl[k].t, NULL);
            failed += cl[k].failed;
            for (int s = 0; s < N_STEPS; s++)
                cl[k].steps[s] = saved[k][s];
        }
        if (failed)
            bench_die("releases (see above)");
        rate[r] = (double)n / (bench_mono() - t0);
        next += n;
        free(tl);
        printf("  round %d: crypto floor p50 %.3f ms, storage floor p50 %.3f ms   release p50 "
               "%.3f ms (%.1fx both floors), p99 %.3f ms   %d clients: %.0f releases/s\n",
               r + 1, fp50[r] * 1e3, sp50[r] * 1e3, p50[r] * 1e3, p50[r] / (fp50[r] + sp50[r]),
               p99[r] * 1e3, THREADS, rate[r]);
    }
    double m50 = bench_median(p50, (size_t)rounds), m99 = bench_median(p99, (size_t)rounds),
           mrate = bench_median(rate, (size_t)rounds), mf = bench_median(fp50, (size_t)rounds),
           ms = bench_median(sp50, (size_t)rounds);
    printf("CPU time per release, all four processes (the agent's flow, attestd, kmsd, vhsmd; "
           "the delete after each included), median of rounds: %.3f ms (",
           bench_median(cpu, (size_t)rounds) * 1e3);
    for (int k = 0; k < N_CPU; k++)
        printf("%s%s %.3f", k ? ", " : "", cpu_name[k],
               bench_median(cpu_proc[k], (size_t)rounds) * 1e3);
    printf(")\n");
    if (show_steps) {
        printf("attestd JWKS downloads by the flows: %" PRIu64 " (the flow keeps the set)\n",
               attest_jwks_fetches());
        printf("steps (median of rounds of the per-release medians):\n");
        for (int s = 0; s < N_STEPS; s++)
            printf("  release  %-60s %.3f ms\n", step_name[s],
                   bench_median(step_med[s], (size_t)rounds) * 1e3);
        for (int s = 0; s < N_F; s++)
            printf("  floor    %-60s %.3f ms\n", floor_name[s],
                   bench_median(fstep_med[s], (size_t)rounds) * 1e3);
    }

    if (show_steps) {
        /* Releases each on a new thread: no kept connection (as one `nitride fetch` process,
         * less its start), against the kept ones of the rounds. */
        double cl50[COLD], *saved[N_STEPS];
        for (int s = 0; s < N_STEPS; s++) {
            saved[s] = cl[0].steps[s];
            cl[0].steps[s] = NULL;
        }
        for (unsigned i = 0; i < COLD; i++) {
            cl[0].from = next + i;
            cl[0].to = next + i + 1;
            cl[0].lat = &cl50[i];
            attest_jwks_cache_clear(); /* a new process keeps nothing */
            if (pthread_create(&cl[0].t, NULL, client_run, &cl[0]) != 0 ||
                pthread_join(cl[0].t, NULL) != 0 || cl[0].failed)
                bench_die("cold releases");
        }
        for (int s = 0; s < N_STEPS; s++)
            cl[0].steps[s] = saved[s];
        printf("  a release on new connections (no keep-alive: `nitride fetch`)      p50 %.3f ms\n",
               bench_median(cl50, COLD) * 1e3);

        /* What one HTTPS exchange costs (a new TCP and TLS connection each, as the agent). */
        char url[256];
        double hl[50];
        snprintf(url, sizeof url, "%s/healthz", kms_url);
        for (int i = 0; i < 50; i++) {
            double t0 = bench_mono();
            if (https("GET", url, NULL, NULL, NULL) != 200)
                bench_die("GET /healthz");
            hl[i] = bench_mono() - t0;
        }
        printf("  one HTTPS GET /healthz to kmsd (new connection)                       %.3f ms\n",
               bench_median(hl, 50) * 1e3);
        CURL *h = curl_easy_init();
        for (int i = 0; h && i < 50; i++) {
            long code = 0;
            double t0 = bench_mono();
            curl_easy_setopt(h, CURLOPT_URL, url);
            curl_easy_setopt(h, CURLOPT_CAINFO, ca_file);
            curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
            if (curl_easy_perform(h) != CURLE_OK ||
                curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code) != CURLE_OK || code != 200)
                bench_die("GET /healthz (keep-alive)");
            hl[i] = bench_mono() - t0;
        }
        curl_easy_cleanup(h);
        printf("  the same on one kept-alive connection                                 %.3f ms\n",
               bench_median(hl, 50) * 1e3);
    }

    double c99 = 0, c50 = clevis_p50(clevis_runs, &c99);
    printf("median: release p50 %.3f ms (target < 5 ms), p99 %.3f ms (target < 15 ms), %.0f "
           "releases/s from %d clients, %.0f/s one at a time; in-process crypto floor p50 %.3f ms "
           "(release = %.1fx the floor), storage floor (1 release's fsyncs) p50 %.3f ms (release = "
           "%.1fx both floors)",
           m50 * 1e3, m99 * 1e3, mrate, THREADS, 1 / m50, mf * 1e3, m50 / mf, ms * 1e3,
           m50 / (mf + ms));
    if (c50 > 0)
        printf("; clevis decrypt (tang, loopback) p50 %.1f ms, p99 %.1f ms over %d runs: a "
               "release is %.1fx faster (target >= 10x)",
               c50 * 1e3, c99 * 1e3, clevis_runs, c50 / m50);
    printf("\n");

    for (int k = 0; k < THREADS; k++)
        client_done(&cl[k]);
    bench_stop_all();
    bench_remove_tree(tmpdir);
    if (have_rundir)
        bench_remove_tree(rundir);
    bool ok = m50 < 0.005 && m99 < 0.015 && (c50 == 0 || c50 / m50 >= 10);
    return ok ? 0 : 1;
}
