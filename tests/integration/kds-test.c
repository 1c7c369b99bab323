/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kds-test: drives nt_kds (verify/kds.h) for tests/integration/kds.sh.
 *
 *   kds-test [--url U] [--cache D] [--offline D] [--timeout-ms N] [--backoff-base MS]
 *            [--backoff-max MS] [--threads N] [--max-age S] [--negative-ttl S]
 *            [--max-fetching N] [--max-waiters N] [--rate R] [--burst N] [--repeat N] [--pause-ms
 * MS[,MS...]]
 *            [--random-hwid] [--with-vcek] [--probe-delay-ms MS] [--probe-crl] OP CHIPDIR
 *     OP: vcek | chain | vlek-chain | crl | prefetch | source | verify
 *       vcek/prefetch: for the chip's hwID and current reported TCB; source: the VcekSource on a
 *       fresh report of the chip (role by its signing key); verify: nt_verifier_verify of a
 *       report WITHOUT certificates (--with-vcek: with the chip's VCEK but no ASK/ARK), the
 *       chip's ARK trusted, the KDS source installed.
 *     --threads N runs OP in N threads at once (one NtKds); --repeat N runs it N times in each
 *     thread, sleeping the i-th --pause-ms value (the last one repeats) between runs;
 *     --random-hwid gives every run a random CHIP_ID (a chip KDS does not know).
 *     --negative-ttl, --max-fetching, --max-waiters, --rate, --burst: NtKdsConfig's
 *     negative_ttl_s, max_concurrent_fetches, max_flight_waiters, max_fetches_per_s, fetch_burst.
 *     --probe-delay-ms M: M ms after the threads started, the main thread asks for the VCEK of a
 *     random CHIP_ID, then for the chip's own VCEK, and prints "probe_miss: RESULT MS" and
 *     "probe_hit: RESULT MS" (MS: how long each took). With --probe-crl it asks for the CRL
 *     instead (with --max-age) and prints "probe_crl: RESULT MS FETCHED_AT".
 *     Prints "fetched_at: T" (crl: thread 0's last run), "thread I: RESULT MS" (last run, the
 * thread's total time), "results: R..." (every run of thread 0), "elapsed_ms: N" (all threads),
 * "result: OK" or "result: <ERRNO NAME>" (all threads agree) or "result: MIXED ..." and "counts:
 * fetch=N cache_hit=N http_429=N http_error=N backoff=N negative_hit=N fetch_refused=N". Exit 0
 * only for OK. kds-test make-crl CHIPDIR OUT   writes a DER CRL issued under the chip's ARK name.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "core/fileio.h"
#include "core/macro.h"
#include "core/openssl-util.h"
#include "snp/sim.h"
#include "verify/kds.h"
#include "verify/verify.h"

static const char *errname(int r) {
    static const struct {
        int e;
        const char *n;
    } t[] = {
        {0, "OK"},
        {ENOENT, "ENOENT"},
        {EAGAIN, "EAGAIN"},
        {EHOSTUNREACH, "EHOSTUNREACH"},
        {ETIMEDOUT, "ETIMEDOUT"},
        {EBADMSG, "EBADMSG"},
        {EINVAL, "EINVAL"},
        {ENOMEM, "ENOMEM"},
        {EKEYREJECTED, "EKEYREJECTED"},
    };
    for (size_t i = 0; i < ELEMENTSOF(t); i++)
        if (t[i].e == -r)
            return t[i].n;
    return strerror(-r);
}

static unsigned long n_fetch, n_hit, n_429, n_err, n_backoff, n_neg, n_refused;

static void count(void *ud, const char *ev) {
    unsigned long *c = streq(ev, "fetch")           ? &n_fetch
                       : streq(ev, "cache_hit")     ? &n_hit
                       : streq(ev, "http_429")      ? &n_429
                       : streq(ev, "backoff")       ? &n_backoff
                       : streq(ev, "negative_hit")  ? &n_neg
                       : streq(ev, "fetch_refused") ? &n_refused
                                                    : &n_err;
    __atomic_fetch_add(c, 1, __ATOMIC_RELAXED);
}

static uint64_t mono_ms(void) {
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

#define MAX_REPEAT 64

typedef struct Job {
    NtKds *k;
    const char *op;
    const char *chipdir;
    SimChip *chip;
    SnpProduct p;
    SnpReport rep;
    int64_t max_age;
    bool with_vcek;
    bool random_hwid;
    int repeat;
    const long *pauses;
    int n_pauses;
    int rs[MAX_REPEAT];
    uint64_t ms;
    time_t fetched_at; /* crl */
    int r;
} Job;

static int do_verify(Job *j) {
    _cleanup_(nt_verifier_freep) NtVerifier *v = NULL;
    _cleanup_(nt_verdict_freep) NtVerdict *vd = NULL;
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *ev = NULL;
    _cleanup_free_ char *ark = NULL;
    uint8_t raw[SNP_REPORT_SIZE];
    NtVcekSource src;
    const NtCheck *f;
    int r;

    snp_report_serialize(&j->rep, raw);
    r = nt_verifier_new(&v);
    if (r < 0)
        return r;
    if (asprintf(&ark, "%s/ark.pem", j->chipdir) < 0)
        return -ENOMEM;
    r = nt_verifier_add_trust_anchor_file(v, ark);
    if (r < 0)
        return r;
    if (j->with_vcek) { /* the VCEK alone: the chain must come from the source */
        _cleanup_free_ char *vcek = NULL;
        if (asprintf(&vcek, "%s/vcek.pem", j->chipdir) < 0)
            return -ENOMEM;
        ev = nt_cert_bundle_new();
        if (!ev)
            return -ENOMEM;
        r = nt_cert_bundle_add_file(ev, vcek);
        if (r < 0)
            return r;
    }
    nt_kds_vcek_source(j->k, &src);
    nt_verifier_set_vcek_source(v, &src);
    r = nt_verifier_verify(v, raw, sizeof(raw), ev, NULL, &vd);
    if (r < 0)
        return r;
    if (nt_verdict_status(vd) == NT_VERDICT_OK)
        return 0;
    f = nt_verdict_first_failure(vd);
    fprintf(stderr, "verdict: %s, first failed check: %s\n",
            nt_verdict_status_to_string(nt_verdict_status(vd)), f ? f->name : "?");
    return -EKEYREJECTED;
}

static void run_once(Job *j) {
    _cleanup_free_ uint8_t *d = NULL;
    _cleanup_free_ char *pem = NULL;
    size_t n;
    time_t at;
    SnpTcb tcb;

    if (snp_tcb_decode(j->rep.reported_tcb, j->p, &tcb) < 0) {
        j->r = -EINVAL;
        return;
    }
    if (streq(j->op, "vcek"))
        j->r = nt_kds_get_vcek(j->k, j->p, j->rep.chip_id, 64, &tcb, &d, &n);
    else if (streq(j->op, "chain"))
        j->r = nt_kds_get_chain(j->k, j->p, false, &pem, &n);
    else if (streq(j->op, "vlek-chain"))
        j->r = nt_kds_get_chain(j->k, j->p, true, &pem, &n);
    else if (streq(j->op, "crl")) {
        at = 0;
        j->r = nt_kds_get_crl(j->k, j->p, j->max_age, &d, &n, &at);
        j->fetched_at = at;
    } else if (streq(j->op, "prefetch"))
        j->r = nt_kds_prefetch(j->k, j->p, j->rep.chip_id, 64, &tcb);
    else if (streq(j->op, "source")) {
        _cleanup_(nt_cert_bundle_freep) NtCertBundle *b = nt_cert_bundle_new();
        NtVcekSource src;
        NtCertRole role = snp_report_signing_key(&j->rep) == SNP_SIGNING_KEY_VLEK
                              ? NT_CERT_ROLE_VLEK
                              : NT_CERT_ROLE_VCEK;
        nt_kds_vcek_source(j->k, &src);
        j->r = b ? src.fetch(src.userdata, &j->rep, j->p, role, b) : -ENOMEM;
        if (j->r == 0)
            for (size_t i = 0; i < b->n_entries; i++)
                printf("cert: %s\n", nt_cert_role_to_string(b->entries[i].role));
    } else if (streq(j->op, "verify"))
        j->r = do_verify(j);
    else
        j->r = -EINVAL;
}

static void *run(void *arg) {
    Job *j = arg;
    uint64_t t0 = mono_ms();

    for (int i = 0; i < j->repeat; i++) {
        if (i > 0 && j->n_pauses > 0)
            (void)usleep((useconds_t)j->pauses[MIN(i - 1, j->n_pauses - 1)] * 1000u);
        if (j->random_hwid && RAND_bytes(j->rep.chip_id, sizeof(j->rep.chip_id)) != 1) {
            j->r = -EIO;
            break;
        }
        run_once(j);
        j->rs[i] = j->r;
    }
    j->ms = mono_ms() - t0;
    return NULL;
}

/* The probe (--probe-delay-ms): a miss for a random chip, then the chip's own VCEK; or the CRL. */
static void probe(NtKds *k, SnpProduct p, const SnpReport *rep, bool crl, int64_t max_age) {
    _cleanup_free_ uint8_t *d1 = NULL, *d2 = NULL;
    uint8_t hw[64];
    size_t n;
    SnpTcb tcb;
    uint64_t t0;
    int r;

    if (crl) {
        time_t at = 0;
        t0 = mono_ms();
        r = nt_kds_get_crl(k, p, max_age, &d1, &n, &at);
        printf("probe_crl: %s %" PRIu64 " %lld\n", errname(r), mono_ms() - t0, (long long)at);
        fflush(stdout);
        return;
    }
    if (snp_tcb_decode(rep->reported_tcb, p, &tcb) < 0 || RAND_bytes(hw, sizeof(hw)) != 1) {
        printf("probe_miss: EINVAL 0\nprobe_hit: EINVAL 0\n");
        return;
    }
    t0 = mono_ms();
    r = nt_kds_get_vcek(k, p, hw, sizeof(hw), &tcb, &d1, &n);
    printf("probe_miss: %s %" PRIu64 "\n", errname(r), mono_ms() - t0);
    t0 = mono_ms();
    r = nt_kds_get_vcek(k, p, rep->chip_id, sizeof(rep->chip_id), &tcb, &d2, &n);
    printf("probe_hit: %s %" PRIu64 "\n", errname(r), mono_ms() - t0);
    fflush(stdout);
}

static int make_crl(const char *chipdir, const char *out) {
    _cleanup_free_ char *arkp = NULL, *keyp = NULL;
    _cleanup_(X509_freep) X509 *ark = NULL;
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
    X509_CRL *crl = NULL;
    ASN1_TIME *t1 = NULL, *t2 = NULL;
    unsigned char *der = NULL;
    FILE *f;
    int len, r = -EIO;

    if (asprintf(&arkp, "%s/ark.pem", chipdir) < 0 ||
        asprintf(&keyp, "%s/secrets/ark.key", chipdir) < 0)
        return -ENOMEM;
    f = fopen(arkp, "re");
    if (!f)
        return -errno;
    ark = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    f = fopen(keyp, "re");
    if (!f)
        return -errno;
    key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (!ark || !key)
        return -EBADMSG;
    crl = X509_CRL_new();
    t1 = ASN1_TIME_set(NULL, time(NULL) - 60);
    t2 = ASN1_TIME_set(NULL, time(NULL) + 7 * 86400);
    if (crl && t1 && t2 && X509_CRL_set_version(crl, 1) == 1 &&
        X509_CRL_set_issuer_name(crl, X509_get_subject_name(ark)) == 1 &&
        X509_CRL_set1_lastUpdate(crl, t1) == 1 && X509_CRL_set1_nextUpdate(crl, t2) == 1 &&
        X509_CRL_sign(crl, key, EVP_sha384()) > 0 && (len = i2d_X509_CRL(crl, &der)) > 0)
        r = write_file_atomic(out, der, (size_t)len, 0644);
    OPENSSL_free(der);
    ASN1_TIME_free(t1);
    ASN1_TIME_free(t2);
    X509_CRL_free(crl);
    return r;
}

int main(int argc, char **argv) {
    enum {
        O_URL = 256,
        O_CACHE,
        O_OFFLINE,
        O_TIMEOUT,
        O_BBASE,
        O_BMAX,
        O_THREADS,
        O_MAXAGE,
        O_NEGTTL,
        O_MAXFETCH,
        O_MAXWAIT,
        O_RATE,
        O_BURST,
        O_REPEAT,
        O_PAUSE,
        O_RANDOM,
        O_WITHVCEK,
        O_PROBE,
        O_PROBECRL,
    };
    static const struct option opts[] = {
        {"url", required_argument, NULL, O_URL},
        {"cache", required_argument, NULL, O_CACHE},
        {"offline", required_argument, NULL, O_OFFLINE},
        {"timeout-ms", required_argument, NULL, O_TIMEOUT},
        {"backoff-base", required_argument, NULL, O_BBASE},
        {"backoff-max", required_argument, NULL, O_BMAX},
        {"threads", required_argument, NULL, O_THREADS},
        {"max-age", required_argument, NULL, O_MAXAGE},
        {"negative-ttl", required_argument, NULL, O_NEGTTL},
        {"max-fetching", required_argument, NULL, O_MAXFETCH},
        {"max-waiters", required_argument, NULL, O_MAXWAIT},
        {"rate", required_argument, NULL, O_RATE},
        {"burst", required_argument, NULL, O_BURST},
        {"repeat", required_argument, NULL, O_REPEAT},
        {"pause-ms", required_argument, NULL, O_PAUSE},
        {"random-hwid", no_argument, NULL, O_RANDOM},
        {"with-vcek", no_argument, NULL, O_WITHVCEK},
        {"probe-delay-ms", required_argument, NULL, O_PROBE},
        {"probe-crl", no_argument, NULL, O_PROBECRL},
        {},
    };
    NtKdsConfig cfg = {.count = count};
    _cleanup_(nt_kds_freep) NtKds *k = NULL;
    _cleanup_(sim_chip_freep) SimChip *chip = NULL;
    Job jobs[64];
    pthread_t th[64];
    int nthreads = 1, repeat = 1, n_pauses = 0, c, r;
    long pauses[MAX_REPEAT], probe_delay = -1;
    bool random_hwid = false, with_vcek = false, probe_crl = false;
    uint64_t t0;
    int64_t max_age = 3600;
    const char *op, *dir;
    uint8_t rd[64] = {0}, raw[SNP_REPORT_SIZE];
    SnpReport rep;
    bool mixed = false;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
        switch (c) {
        case O_URL:
            cfg.base_url = optarg;
            break;
        case O_CACHE:
            cfg.cache_dir = optarg;
            break;
        case O_OFFLINE:
            cfg.offline_dir = optarg;
            break;
        case O_TIMEOUT:
            cfg.timeout_ms = atol(optarg);
            break;
        case O_BBASE:
            cfg.backoff_base_ms = (unsigned)atol(optarg);
            break;
        case O_BMAX:
            cfg.backoff_max_ms = (unsigned)atol(optarg);
            break;
        case O_THREADS:
            nthreads = atoi(optarg);
            break;
        case O_MAXAGE:
            max_age = atoll(optarg);
            break;
        case O_NEGTTL:
            cfg.negative_ttl_s = atoll(optarg);
            break;
        case O_MAXFETCH:
            cfg.max_concurrent_fetches = (unsigned)atol(optarg);
            break;
        case O_MAXWAIT:
            cfg.max_flight_waiters = (unsigned)atol(optarg);
            break;
        case O_RATE:
            cfg.max_fetches_per_s = atof(optarg);
            break;
        case O_BURST:
            cfg.fetch_burst = (unsigned)atol(optarg);
            break;
        case O_REPEAT:
            repeat = atoi(optarg);
            break;
        case O_PAUSE:
            for (char *s = optarg, *e; *s && n_pauses < MAX_REPEAT; s = *e ? e + 1 : e) {
                pauses[n_pauses++] = strtol(s, &e, 10);
                if (e == s)
                    return 2;
            }
            break;
        case O_RANDOM:
            random_hwid = true;
            break;
        case O_WITHVCEK:
            with_vcek = true;
            break;
        case O_PROBE:
            probe_delay = atol(optarg);
            break;
        case O_PROBECRL:
            probe_crl = true;
            break;
        default:
            return 2;
        }
    }
    if (argc - optind != 2 && argc - optind != 3) {
        fprintf(stderr, "usage: kds-test [options] OP CHIPDIR | make-crl CHIPDIR OUT\n");
        return 2;
    }
    op = argv[optind];
    dir = argv[optind + 1];
    if (streq(op, "make-crl")) {
        r = argc - optind == 3 ? make_crl(dir, argv[optind + 2]) : -EINVAL;
        if (r < 0)
            fprintf(stderr, "make-crl: %s\n", strerror(-r));
        return r < 0;
    }
    if (nthreads < 1 || nthreads > (int)ELEMENTSOF(th) || repeat < 1 || repeat > MAX_REPEAT)
        return 2;

    r = sim_chip_load(dir, &chip);
    if (r < 0) {
        fprintf(stderr, "cannot load chip '%s': %s\n", dir, strerror(-r));
        return 2;
    }
    r = sim_chip_get_report(chip, rd, 0, raw);
    if (r < 0 || snp_report_parse(raw, sizeof(raw), &rep, NULL) < 0) {
        fprintf(stderr, "cannot get a report\n");
        return 2;
    }
    r = nt_kds_new(&cfg, &k);
    if (r < 0) {
        fprintf(stderr, "nt_kds_new: %s\n", strerror(-r));
        return 2;
    }
    for (int i = 0; i < nthreads; i++) {
        jobs[i] = (Job){.k = k,
                        .op = op,
                        .chipdir = dir,
                        .chip = chip,
                        .p = sim_chip_product(chip),
                        .rep = rep,
                        .max_age = max_age,
                        .with_vcek = with_vcek,
                        .random_hwid = random_hwid,
                        .repeat = repeat,
                        .pauses = pauses,
                        .n_pauses = n_pauses};
    }
    t0 = mono_ms();
    for (int i = 0; i < nthreads; i++)
        if (pthread_create(&th[i], NULL, run, &jobs[i]) != 0)
            return 2;
    if (probe_delay >= 0) {
        (void)usleep((useconds_t)probe_delay * 1000u);
        probe(k, sim_chip_product(chip), &rep, probe_crl, max_age);
    }
    for (int i = 0; i < nthreads; i++)
        (void)pthread_join(th[i], NULL);
    printf("elapsed_ms: %" PRIu64 "\n", mono_ms() - t0);
    if (streq(op, "crl"))
        printf("fetched_at: %lld\n", (long long)jobs[0].fetched_at);
    for (int i = 0; i < nthreads; i++)
        printf("thread %d: %s %" PRIu64 "\n", i, errname(jobs[i].r), jobs[i].ms);
    printf("results:");
    for (int i = 0; i < repeat; i++)
        printf(" %s", errname(jobs[0].rs[i]));
    printf("\n");
    for (int i = 1; i < nthreads; i++)
        mixed |= jobs[i].r != jobs[0].r;
    if (mixed) {
        printf("result: MIXED");
        for (int i = 0; i < nthreads; i++)
            printf(" %s", errname(jobs[i].r));
        printf("\n");
    } else
        printf("result: %s\n", errname(jobs[0].r));
    printf("counts: fetch=%lu cache_hit=%lu http_429=%lu http_error=%lu backoff=%lu "
           "negative_hit=%lu fetch_refused=%lu\n",
           n_fetch, n_hit, n_429, n_err, n_backoff, n_neg, n_refused);
    return !mixed && jobs[0].r == 0 ? 0 : 1;
}
