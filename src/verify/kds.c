/* SPDX-License-Identifier: Apache-2.0 */
/*
 * AMD KDS client and persistent certificate cache (see kds.h for the URLs, the cache layout and
 * the concurrency/backoff contract).
 *
 * Invariants: a body reaches the cache (disk or memory) only after it validated as exactly what
 * was asked for; a cache or offline file is validated again when read, so a corrupted or planted
 * file is treated as absent. One entry is fetched at most once at a time per process (the
 * in-flight table) and per host (the entry's flock, then a re-check of the cache). Request
 * threads never sleep for a backoff: they read its deadline and fail with -EAGAIN.
 *
 * HTTP goes through src/web's client (nt_http_request), the backoff arithmetic is web's
 * NtBackoff; what is KDS-specific (the shared state file, the validation) stays here.
 */
#include "verify/kds.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "core/encoding.h"
#include "core/fileio.h"
#include "core/log.h"
#include "core/macro.h"
#include "core/openssl-util.h"
#include "web/backoff.h"
#include "web/client.h"

#define KDS_MAX_BODY (1024u * 1024u)
#define KDS_MEMO_MAX 4096u
#define KDS_DEFAULT_TIMEOUT_MS 10000L
#define KDS_DEFAULT_BACKOFF_BASE_MS 1000u
#define KDS_DEFAULT_BACKOFF_MAX_MS 300000u
#define KDS_NEGATIVE_MAX 4096u
#define KDS_DEFAULT_NEGATIVE_TTL_S 600
#define KDS_DEFAULT_MAX_FETCHING 2u
#define KDS_DEFAULT_FETCH_RATE 5.0
#define KDS_DEFAULT_FETCH_BURST 10u
#define KDS_DEFAULT_MAX_FLIGHT_WAITERS 2u

/* Delay of the next backoff: the server's Retry-After (capped at max_ms), else web's exponential
 * full jitter, but at least base_ms: a storm of requests refused at once must not come back at
 * once because the jitter drew zero. */
static unsigned kds_backoff_next(NtBackoff *b, long retry_after_s) {
    unsigned d = nt_backoff_next(b, retry_after_s);
    if (retry_after_s < 0 && d < b->base_ms)
        d = b->base_ms;
    return d;
}

/* ---- The client ---- */

typedef struct Memo {
    struct Memo *next;
    char *key; /* cache-relative path */
    uint8_t *data;
    size_t len;
    time_t fetched_at;
} Memo;

typedef struct Flight {
    struct Flight *next;
    char *key;
    bool done;
    unsigned waiters;
    int r;
    uint8_t *data;
    size_t len;
    time_t fetched_at;
} Flight;

/* A VCEK that KDS answered 404 for, remembered until until_ms (monotonic). */
typedef struct Negative {
    uint64_t hash; /* of key, to skip most string compares */
    uint64_t until_ms;
    char *key;
} Negative;

struct NtKds {
    char *base_url, *cache_dir, *offline_dir, *ca_file;
    long timeout_ms;
    void (*count)(void *ud, const char *event);
    void *count_ud;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    Flight *flights;
    Memo *memo;
    size_t n_memo;
    NtBackoff backoff;
    uint64_t backoff_until_ms; /* this process's view; the file is authoritative when shared */

    /* What KDS may cost per process, whoever asks: unauthenticated requests reach kds_get()
     * before any signature is checked, so each of these is the attacker's budget. */
    uint64_t negative_ttl_ms; /* 0: no negative cache */
    Negative *negative;       /* ring of KDS_NEGATIVE_MAX; the oldest insertion is evicted */
    size_t negative_next;
    unsigned max_fetching, n_fetching; /* KDS requests in flight */
    unsigned max_waiters, n_waiters;   /* threads waiting for another's fetch (all flights) */
    double fetch_rate, fetch_burst, fetch_tokens;
    uint64_t fetch_tokens_at_ms; /* monotonic */
};

static const char *const product_names[_SNP_PRODUCT_MAX] = {
    [SNP_PRODUCT_MILAN] = "Milan",
    [SNP_PRODUCT_GENOA] = "Genoa",
    [SNP_PRODUCT_TURIN] = "Turin",
};

static void kds_count(NtKds *k, const char *ev) {
    if (k->count)
        k->count(k->count_ud, ev);
}

static uint64_t now_ms(void) {
    struct timespec ts;
    (void)clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* For the negative cache and the fetch budget: immune to wall clock steps. */
static uint64_t mono_ms(void) {
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void kds_mutex_unlockp(pthread_mutex_t **m) {
    if (*m)
        (void)pthread_mutex_unlock(*m);
}
#define KDS_LOCKED(k)                                                                              \
    _cleanup_(kds_mutex_unlockp) _unused_ pthread_mutex_t *NT_CONCAT(kds_lock_, __COUNTER__) =     \
        (pthread_mutex_lock(&(k)->lock), &(k)->lock)

static void memo_free_all(NtKds *k) {
    while (k->memo) {
        Memo *m = k->memo;
        k->memo = m->next;
        free(m->key);
        free(m->data);
        free(m);
    }
    k->n_memo = 0;
}

int nt_kds_new(const NtKdsConfig *cfg, NtKds **ret) {
    _cleanup_(nt_kds_freep) NtKds *k = NULL;
    int r;

    if (!cfg || !ret)
        return -EINVAL;
    if (!cfg->base_url && !cfg->cache_dir && !cfg->offline_dir)
        return -EINVAL;
    if (cfg->base_url && strncmp(cfg->base_url, "https://", 8) != 0 &&
        strncmp(cfg->base_url, "http://", 7) != 0)
        return -EINVAL;

    k = calloc(1, sizeof(*k));
    if (!k)
        return -ENOMEM;
    (void)pthread_mutex_init(&k->lock, NULL);
    (void)pthread_cond_init(&k->cond, NULL);
    if ((cfg->base_url && !(k->base_url = strdup(cfg->base_url))) ||
        (cfg->cache_dir && !(k->cache_dir = strdup(cfg->cache_dir))) ||
        (cfg->offline_dir && !(k->offline_dir = strdup(cfg->offline_dir))) ||
        (cfg->ca_file && !(k->ca_file = strdup(cfg->ca_file))))
        return -ENOMEM;
    if (k->base_url) {
        size_t n = strlen(k->base_url);
        while (n > 0 && k->base_url[n - 1] == '/')
            k->base_url[--n] = 0;
    }
    k->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : KDS_DEFAULT_TIMEOUT_MS;
    k->backoff.base_ms = cfg->backoff_base_ms ? cfg->backoff_base_ms : KDS_DEFAULT_BACKOFF_BASE_MS;
    k->backoff.max_ms = cfg->backoff_max_ms ? cfg->backoff_max_ms : KDS_DEFAULT_BACKOFF_MAX_MS;
    if (k->backoff.max_ms < k->backoff.base_ms)
        k->backoff.max_ms = k->backoff.base_ms;
    k->count = cfg->count;
    k->count_ud = cfg->count_ud;
    if (cfg->negative_ttl_s >= 0) {
        int64_t ttl = cfg->negative_ttl_s > 0 ? cfg->negative_ttl_s : KDS_DEFAULT_NEGATIVE_TTL_S;
        k->negative_ttl_ms = (uint64_t)MIN(ttl, INT64_C(365) * 86400) * 1000u;
        if (k->base_url) {
            k->negative = calloc(KDS_NEGATIVE_MAX, sizeof(*k->negative));
            if (!k->negative)
                return -ENOMEM;
        }
    }
    k->max_fetching =
        cfg->max_concurrent_fetches ? cfg->max_concurrent_fetches : KDS_DEFAULT_MAX_FETCHING;
    k->max_waiters =
        cfg->max_flight_waiters ? cfg->max_flight_waiters : KDS_DEFAULT_MAX_FLIGHT_WAITERS;
    k->fetch_rate = cfg->max_fetches_per_s > 0 ? cfg->max_fetches_per_s : KDS_DEFAULT_FETCH_RATE;
    k->fetch_burst = cfg->fetch_burst ? cfg->fetch_burst : KDS_DEFAULT_FETCH_BURST;
    k->fetch_tokens = k->fetch_burst;
    k->fetch_tokens_at_ms = mono_ms();
    if (k->cache_dir) {
        r = mkdir_p(k->cache_dir, 0700);
        if (r < 0)
            return r;
    }
    *ret = TAKE_PTR(k);
    return 0;
}

NtKds *nt_kds_free(NtKds *k) {
    if (!k)
        return NULL;
    memo_free_all(k);
    while (k->flights) { /* none may be running; free leftovers defensively */
        Flight *f = k->flights;
        k->flights = f->next;
        free(f->key);
        free(f->data);
        free(f);
    }
    for (size_t i = 0; k->negative && i < KDS_NEGATIVE_MAX; i++)
        free(k->negative[i].key);
    free(k->negative);
    (void)pthread_cond_destroy(&k->cond);
    (void)pthread_mutex_destroy(&k->lock);
    free(k->base_url);
    free(k->cache_dir);
    free(k->offline_dir);
    free(k->ca_file);
    free(k);
    return NULL;
}

/* ---- Validation ---- */

static bool product_ok(SnpProduct p) {
    return p >= 0 && p < _SNP_PRODUCT_MAX;
}

static size_t product_hwid_len(SnpProduct p) {
    return p == SNP_PRODUCT_TURIN ? 8 : 64;
}

int nt_kds_check_vcek(const uint8_t *der, size_t len, SnpProduct p, const uint8_t *hwid,
                      size_t hwid_len, const SnpTcb *tcb) {
    _cleanup_(X509_freep) X509 *x = NULL;
    NtAmdExt e;
    size_t want = product_hwid_len(p);

    if (!der || !product_ok(p) || !hwid || !tcb || hwid_len < want)
        return -EBADMSG;
    if (nt_cert_from_der(der, len, &x) < 0)
        return -EBADMSG;
    if (nt_cert_role_detect(x) != NT_CERT_ROLE_VCEK)
        return -EBADMSG;
    if (nt_cert_amd_ext(x, &e) < 0)
        return -EBADMSG;
    if (e.hwid_len < want || memcmp(e.hwid, hwid, want) != 0)
        return -EBADMSG;
    /* A 64-byte hwID on Turin must carry zeros past the 8 bytes that identify the chip. */
    for (size_t i = want; i < e.hwid_len; i++)
        if (e.hwid[i] != 0)
            return -EBADMSG;
    if (!e.has_bl || !e.has_tee || !e.has_snp || !e.has_ucode)
        return -EBADMSG;
    if (e.spl.bootloader != tcb->bootloader || e.spl.tee != tcb->tee || e.spl.snp != tcb->snp ||
        e.spl.microcode != tcb->microcode)
        return -EBADMSG;
    if (p == SNP_PRODUCT_TURIN && (!e.has_fmc || e.spl.fmc != tcb->fmc))
        return -EBADMSG;
    if (snp_product_from_string(e.product_name) != p)
        return -EBADMSG;
    return 0;
}

static int parse_chain(const uint8_t *pem, size_t len, X509 **ret_ca, X509 **ret_ark) {
    _cleanup_(BIO_free_allp) BIO *bio = NULL;
    _cleanup_(X509_freep) X509 *a = NULL, *b = NULL, *c = NULL;

    if (!pem || len == 0 || len > INT_MAX)
        return -EBADMSG;
    bio = BIO_new_mem_buf(pem, (int)len);
    if (!bio)
        return -ENOMEM;
    a = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    b = a ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    c = b ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    ERR_clear_error();
    if (!a || !b || c)
        return -EBADMSG;
    *ret_ca = TAKE_PTR(a);
    *ret_ark = TAKE_PTR(b);
    return 0;
}

int nt_kds_check_chain(const uint8_t *pem, size_t len, SnpProduct p, bool vlek) {
    _cleanup_(X509_freep) X509 *ca = NULL, *ark = NULL;
    int r;

    if (!product_ok(p))
        return -EBADMSG;
    r = parse_chain(pem, len, &ca, &ark);
    if (r < 0)
        return r == -ENOMEM ? r : -EBADMSG;
    if (nt_cert_role_detect(ca) != (vlek ? NT_CERT_ROLE_ASVK : NT_CERT_ROLE_ASK) ||
        nt_cert_role_detect(ark) != NT_CERT_ROLE_ARK)
        return -EBADMSG;
    if (nt_cert_ca_product(ca) != p || nt_cert_ca_product(ark) != p)
        return -EBADMSG;
    /* Not trust (the verifier anchors the ARK), only consistency: a chain whose halves do not
     * belong together is an error page in disguise as far as the cache is concerned. */
    if (nt_cert_verify_signed_by(ca, ark) < 0) {
        ERR_clear_error();
        return -EBADMSG;
    }
    return 0;
}

int nt_kds_check_crl(const uint8_t *der, size_t len) {
    const unsigned char *q = der;
    X509_CRL *crl;

    if (!der || len == 0 || len > LONG_MAX)
        return -EBADMSG;
    crl = d2i_X509_CRL(NULL, &q, (long)len);
    ERR_clear_error();
    if (!crl)
        return -EBADMSG;
    X509_CRL_free(crl);
    return q == der + len ? 0 : -EBADMSG;
}

/* ---- Entries ---- */

typedef enum EntryKind { ENTRY_VCEK, ENTRY_CHAIN, ENTRY_CRL } EntryKind;

typedef struct Entry {
    EntryKind kind;
    SnpProduct p;
    const uint8_t *hwid;
    SnpTcb tcb;
    bool vlek;
    int64_t max_age_s; /* CRL */
    char key[256];     /* cache-relative path */
    char url_path[256];
} Entry;

static int entry_check(const Entry *e, const uint8_t *d, size_t n) {
    switch (e->kind) {
    case ENTRY_VCEK:
        return nt_kds_check_vcek(d, n, e->p, e->hwid, product_hwid_len(e->p), &e->tcb);
    case ENTRY_CHAIN:
        return nt_kds_check_chain(d, n, e->p, e->vlek);
    case ENTRY_CRL:
        return nt_kds_check_crl(d, n);
    }
    return -EBADMSG;
}

static bool entry_fresh(const Entry *e, time_t fetched_at) {
    if (e->kind != ENTRY_CRL)
        return true;
    if (e->max_age_s < 0)
        return true;
    int64_t age = (int64_t)time(NULL) - (int64_t)fetched_at;
    /* A fetch time in the future (a planted or clock-skewed .fetched) is not fresh. */
    return age >= 0 && age < e->max_age_s;
}

static int dup_bytes(const uint8_t *d, size_t n, uint8_t **ret) {
    uint8_t *c = malloc(n + 1);
    if (!c)
        return -ENOMEM;
    memcpy(c, d, n);
    c[n] = 0; /* PEM users may treat it as a string */
    *ret = c;
    return 0;
}

/* Memo lookup (lock held). */
static Memo *memo_find(NtKds *k, const char *key) {
    for (Memo *m = k->memo; m; m = m->next)
        if (streq(m->key, key))
            return m;
    return NULL;
}

static void memo_put(NtKds *k, const char *key, const uint8_t *d, size_t n, time_t fetched_at) {
    Memo *m;
    KDS_LOCKED(k);

    m = memo_find(k, key);
    if (m) {
        uint8_t *c = NULL;
        if (dup_bytes(d, n, &c) < 0)
            return;
        free(m->data);
        m->data = c;
        m->len = n;
        m->fetched_at = fetched_at;
        return;
    }
    if (k->n_memo >= KDS_MEMO_MAX)
        memo_free_all(k); /* bounded; entries come back from the disk cache */
    m = calloc(1, sizeof(*m));
    if (!m)
        return;
    m->key = strdup(key);
    if (!m->key || dup_bytes(d, n, &m->data) < 0) {
        free(m->key);
        free(m);
        return;
    }
    m->len = n;
    m->fetched_at = fetched_at;
    m->next = k->memo;
    k->memo = m;
    k->n_memo++;
}

static int memo_get(NtKds *k, const Entry *e, uint8_t **ret, size_t *ret_len, time_t *ret_at) {
    Memo *m;
    KDS_LOCKED(k);

    m = memo_find(k, e->key);
    if (!m || !entry_fresh(e, m->fetched_at))
        return -ENOENT;
    if (dup_bytes(m->data, m->len, ret) < 0)
        return -ENOMEM;
    *ret_len = m->len;
    *ret_at = m->fetched_at;
    return 0;
}

static int read_fetched(const char *dir, const Entry *e, time_t *ret) {
    _cleanup_free_ char *path = NULL;
    _cleanup_free_ uint8_t *d = NULL;
    size_t n;
    char *end;
    long long v;
    int r;

    if (asprintf(&path, "%s/crl/%s.fetched", dir, product_names[e->p]) < 0)
        return -ENOMEM;
    r = read_full_file(path, 64, &d, &n);
    if (r < 0)
        return r;
    errno = 0;
    v = strtoll((const char *)d, &end, 10);
    if (errno != 0 || end == (char *)d || (*end != '\n' && *end != 0) || v < 0)
        return -EBADMSG;
    *ret = (time_t)v;
    return 0;
}

static time_t crl_last_update(const uint8_t *der, size_t len) {
    const unsigned char *q = der;
    X509_CRL *crl = d2i_X509_CRL(NULL, &q, (long)len);
    const ASN1_TIME *t;
    struct tm tm;
    time_t at = 0;

    if (!crl)
        return 0;
    t = X509_CRL_get0_lastUpdate(crl);
    if (t && ASN1_TIME_to_tm(t, &tm) == 1)
        at = timegm(&tm);
    X509_CRL_free(crl);
    ERR_clear_error();
    return at;
}

/* Reads and validates an entry from dir (cache or offline). Returns 0, -ENOENT (absent,
 * invalid or too old) or -ENOMEM. */
static int dir_get(const char *dir, bool offline, const Entry *e, uint8_t **ret, size_t *ret_len,
                   time_t *ret_at) {
    _cleanup_free_ char *path = NULL;
    _cleanup_free_ uint8_t *d = NULL;
    time_t at = 0;
    size_t n;
    int r;

    if (!dir)
        return -ENOENT;
    if (asprintf(&path, "%s/%s", dir, e->key) < 0)
        return -ENOMEM;
    r = read_full_file(path, KDS_MAX_BODY, &d, &n);
    if (r == -ENOMEM)
        return r;
    if (r < 0)
        return -ENOENT;
    if (entry_check(e, d, n) < 0) {
        log_debug("KDS cache file '%s' is not a valid entry, ignoring.", path);
        return -ENOENT;
    }
    if (e->kind == ENTRY_CRL) {
        r = read_fetched(dir, e, &at);
        if (r == -ENOMEM)
            return r;
        if (r < 0) {
            if (!offline)
                return -ENOENT; /* written by us with its time; without it, unknown age */
            at = crl_last_update(d, n);
        }
        if (!entry_fresh(e, at))
            return -ENOENT;
    } else {
        struct stat st;
        at = stat(path, &st) == 0 ? st.st_mtime : time(NULL);
    }
    *ret_len = n;
    *ret_at = at;
    *ret = TAKE_PTR(d);
    return 0;
}

static int ensure_parent(const char *path) {
    _cleanup_free_ char *p = strdup(path);
    char *s;
    if (!p)
        return -ENOMEM;
    s = strrchr(p, '/');
    if (!s)
        return 0;
    *s = 0;
    return mkdir_p(p, 0700);
}

static int cache_store(NtKds *k, const Entry *e, const uint8_t *d, size_t n, time_t at) {
    _cleanup_free_ char *path = NULL;
    int r;

    if (!k->cache_dir)
        return 0;
    if (asprintf(&path, "%s/%s", k->cache_dir, e->key) < 0)
        return -ENOMEM;
    r = ensure_parent(path);
    if (r < 0)
        return r;
    r = write_file_atomic(path, d, n, 0600);
    if (r < 0)
        return r;
    if (e->kind == ENTRY_CRL) {
        _cleanup_free_ char *fpath = NULL;
        char buf[32];
        int m = snprintf(buf, sizeof(buf), "%lld\n", (long long)at);
        /* After the CRL: a reader may pair a new CRL with the old time (and refetch), never an
         * old CRL with the new time. */
        if (asprintf(&fpath, "%s/crl/%s.fetched", k->cache_dir, product_names[e->p]) < 0)
            return -ENOMEM;
        r = write_file_atomic(fpath, buf, (size_t)m, 0600);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Opens and flocks a lock file under cache_dir/lock/. Returns an fd or a negative errno. */
static int lock_file(NtKds *k, const char *name) {
    _cleanup_free_ char *dir = NULL, *path = NULL;
    _cleanup_close_ int fd = -EBADF;
    int r;

    _cleanup_free_ char *flat = strdup(name);

    if (!flat || asprintf(&dir, "%s/lock", k->cache_dir) < 0)
        return -ENOMEM;
    for (char *s = flat; *s; s++)
        if (*s == '/')
            *s = '_';
    if (asprintf(&path, "%s/%s.lock", dir, flat) < 0)
        return -ENOMEM;
    r = mkdir_p(dir, 0700);
    if (r < 0)
        return r;
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return negative_errno();
    while (flock(fd, LOCK_EX) < 0)
        if (errno != EINTR)
            return negative_errno();
    return TAKE_FD(fd);
}

/* ---- Shared backoff ---- */

/* Reads cache_dir/backoff into (until, attempt). Lock held by the caller when it matters. */
static void backoff_read_file(NtKds *k, uint64_t *until, unsigned *attempt) {
    _cleanup_free_ char *path = NULL;
    _cleanup_free_ uint8_t *d = NULL;
    unsigned long long u;
    unsigned a;
    size_t n;

    *until = 0;
    *attempt = 0;
    if (!k->cache_dir || asprintf(&path, "%s/backoff", k->cache_dir) < 0)
        return;
    if (read_full_file(path, 128, &d, &n) < 0)
        return;
    if (sscanf((const char *)d, "%llu %u", &u, &a) != 2)
        return;
    *until = u;
    *attempt = MIN(a, 32u);
}

static void backoff_write_file(NtKds *k, uint64_t until, unsigned attempt) {
    _cleanup_free_ char *path = NULL;
    char buf[64];
    int m;

    if (!k->cache_dir || asprintf(&path, "%s/backoff", k->cache_dir) < 0)
        return;
    m = snprintf(buf, sizeof(buf), "%" PRIu64 " %u\n", until, attempt);
    if (write_file_atomic(path, buf, (size_t)m, 0600) < 0)
        log_debug("Failed to record the KDS backoff in '%s', ignoring.", path);
}

/* Returns the ms left in the backoff (0: not backing off). */
static uint64_t backoff_remaining(NtKds *k) {
    uint64_t until, now = now_ms();
    unsigned attempt;

    backoff_read_file(k, &until, &attempt);
    {
        KDS_LOCKED(k);
        if (until > k->backoff_until_ms)
            k->backoff_until_ms = until;
        if (attempt > k->backoff.attempt)
            k->backoff.attempt = attempt;
        until = k->backoff_until_ms;
    }
    return until > now ? until - now : 0;
}

static void backoff_start(NtKds *k, long retry_after_s) {
    _cleanup_close_ int fd = -EBADF;
    uint64_t until, file_until = 0;
    unsigned delay, file_attempt = 0;

    if (k->cache_dir)
        fd = lock_file(k, "backoff");
    backoff_read_file(k, &file_until, &file_attempt);
    {
        KDS_LOCKED(k);
        if (file_attempt > k->backoff.attempt)
            k->backoff.attempt = file_attempt;
        delay = kds_backoff_next(&k->backoff, retry_after_s);
        until = now_ms() + delay;
        until = MAX(until, file_until);
        if (until > k->backoff_until_ms)
            k->backoff_until_ms = until;
        until = k->backoff_until_ms;
        file_attempt = k->backoff.attempt;
    }
    log_debug("KDS: backing off for %u ms (attempt %u).", delay, file_attempt);
    backoff_write_file(k, until, file_attempt);
}

static void backoff_clear(NtKds *k) {
    _cleanup_close_ int fd = -EBADF;
    uint64_t u;
    unsigned a;
    bool had;

    {
        KDS_LOCKED(k);
        had = k->backoff.attempt != 0 || k->backoff_until_ms != 0;
        nt_backoff_reset(&k->backoff);
        k->backoff_until_ms = 0;
    }
    if (!k->cache_dir)
        return;
    backoff_read_file(k, &u, &a);
    if (!had && u == 0 && a == 0)
        return;
    fd = lock_file(k, "backoff");
    backoff_write_file(k, 0, 0);
}

/* ---- What KDS may cost: negative cache, requests in flight, fetch budget ---- */

static uint64_t key_hash(const char *key) {
    uint64_t h = UINT64_C(14695981039346656037); /* FNV-1a */
    for (const unsigned char *s = (const unsigned char *)key; *s; s++)
        h = (h ^ *s) * UINT64_C(1099511628211);
    return h;
}

/* The slot of key in the negative cache (lock held), or NULL. */
static Negative *negative_find(NtKds *k, const char *key, uint64_t h) {
    for (size_t i = 0; i < KDS_NEGATIVE_MAX; i++)
        if (k->negative[i].key && k->negative[i].hash == h && streq(k->negative[i].key, key))
            return &k->negative[i];
    return NULL;
}

/* True if KDS said 404 for e less than negative_ttl ago. */
static bool negative_get(NtKds *k, const Entry *e) {
    uint64_t h = key_hash(e->key);
    Negative *n;
    KDS_LOCKED(k);

    if (!k->negative || e->kind != ENTRY_VCEK)
        return false;
    n = negative_find(k, e->key, h);
    return n && n->until_ms > mono_ms();
}

/* Remembers a 404 for e. Bounded: the oldest insertion makes room (expired or not). */
static void negative_put(NtKds *k, const Entry *e) {
    uint64_t h = key_hash(e->key);
    Negative *n;
    char *key;
    KDS_LOCKED(k);

    if (!k->negative || e->kind != ENTRY_VCEK)
        return;
    n = negative_find(k, e->key, h);
    if (!n) {
        key = strdup(e->key);
        if (!key)
            return; /* not remembered: the next request asks KDS again */
        n = &k->negative[k->negative_next];
        k->negative_next = (k->negative_next + 1) % KDS_NEGATIVE_MAX;
        free(n->key);
        n->key = key;
        n->hash = h;
    }
    n->until_ms = mono_ms() + k->negative_ttl_ms;
}

/* A fetch slot (max_concurrent_fetches); NULL when all are taken. Released by the guard. */
static NtKds *fetch_slot_take(NtKds *k) {
    KDS_LOCKED(k);

    if (k->n_fetching >= k->max_fetching)
        return NULL;
    k->n_fetching++;
    return k;
}

static void fetch_slot_releasep(NtKds **k) {
    if (!*k)
        return;
    KDS_LOCKED(*k);
    (*k)->n_fetching--;
}

/* Takes one token of the fetch budget (max_fetches_per_s, bucket of fetch_burst). */
static bool fetch_token_take(NtKds *k) {
    uint64_t now = mono_ms();
    KDS_LOCKED(k);

    if (now > k->fetch_tokens_at_ms) {
        k->fetch_tokens += (double)(now - k->fetch_tokens_at_ms) * k->fetch_rate / 1000.0;
        if (k->fetch_tokens > k->fetch_burst)
            k->fetch_tokens = k->fetch_burst;
        k->fetch_tokens_at_ms = now;
    }
    if (k->fetch_tokens < 1.0)
        return false;
    k->fetch_tokens -= 1.0;
    return true;
}

/* ---- Fetch ---- */

static int map_transport(int r) {
    switch (r) {
    case -ETIMEDOUT:
        return -ETIMEDOUT;
    case -ECONNREFUSED:
    case -EHOSTUNREACH:
    case -ENETUNREACH:
        return -EHOSTUNREACH;
    case -ENOMEM:
        return -ENOMEM;
    default:
        return -EHOSTUNREACH;
    }
}

/* One HTTP request for e, validated. Returns 0 with the body, or the documented errors. */
static int kds_fetch(NtKds *k, const Entry *e, uint8_t **ret, size_t *ret_len) {
    _cleanup_free_ char *url = NULL;
    NtHttpOptions o = {
        .ca_file = k->ca_file,
        .timeout_ms = k->timeout_ms,
        .max_response = KDS_MAX_BODY,
    };
    NtHttpResponse resp = {.retry_after_s = -1};
    int r;

    if (asprintf(&url, "%s%s", k->base_url, e->url_path) < 0)
        return -ENOMEM;
    kds_count(k, "fetch");
    r = nt_http_request(&o, "GET", url, NULL, NULL, 0, &resp);
    if (r < 0) {
        kds_count(k, "http_error");
        log_debug("KDS request '%s' failed: %s", e->url_path, resp.error);
        nt_http_response_clear(&resp);
        return r == -EFBIG ? -EBADMSG : map_transport(r);
    }
    if (resp.status == 200) {
        r = entry_check(e, resp.body, resp.body_len);
        if (r < 0) {
            kds_count(k, "http_error");
            log_debug("KDS answered '%s' with a body that is not the expected %s, refusing.",
                      e->url_path, e->kind == ENTRY_CRL ? "CRL" : "certificate");
            nt_http_response_clear(&resp);
            return r == -ENOMEM ? r : -EBADMSG;
        }
        backoff_clear(k);
        *ret = TAKE_PTR(resp.body);
        *ret_len = resp.body_len;
        nt_http_response_clear(&resp);
        return 0;
    }
    if (resp.status == 404) {
        nt_http_response_clear(&resp);
        return -ENOENT;
    }
    if (resp.status == 429 || resp.status >= 500) {
        kds_count(k, resp.status == 429 ? "http_429" : "http_error");
        backoff_start(k, resp.retry_after_s);
        nt_http_response_clear(&resp);
        return -EAGAIN;
    }
    kds_count(k, "http_error");
    log_debug("KDS answered '%s' with HTTP %ld.", e->url_path, resp.status);
    nt_http_response_clear(&resp);
    return -EBADMSG;
}

static void entry_chain(Entry *e, SnpProduct p, bool vlek);

/* A fetched VCEK against the product's ASK when the VCEK chain is at hand (memory, cache or
 * offline bundle; never fetched for this): 0 (signed by it, or no chain at hand: the verifier
 * checks the signature anyway), -EBADMSG (not signed by the ASK: another chip's or a forged
 * certificate, not to be cached) or -ENOMEM. */
static int vcek_check_ask(NtKds *k, const Entry *e, const uint8_t *d, size_t n) {
    _cleanup_(X509_freep) X509 *vcek = NULL, *ask = NULL, *ark = NULL;
    _cleanup_free_ uint8_t *pem = NULL;
    size_t len = 0;
    time_t at;
    Entry c;
    int r;

    entry_chain(&c, e->p, false);
    r = memo_get(k, &c, &pem, &len, &at);
    if (r == -ENOENT)
        r = dir_get(k->cache_dir, false, &c, &pem, &len, &at);
    if (r == -ENOENT)
        r = dir_get(k->offline_dir, true, &c, &pem, &len, &at);
    if (r == -ENOENT)
        return 0;
    if (r < 0)
        return r;
    r = parse_chain(pem, len, &ask, &ark);
    if (r < 0)
        return r == -ENOMEM ? r : 0; /* validated when read: cannot happen */
    if (nt_cert_from_der(d, n, &vcek) < 0 || nt_cert_verify_signed_by(vcek, ask) < 0) {
        ERR_clear_error();
        return -EBADMSG;
    }
    return 0;
}

/* The leader's work: backoff check, a fetch slot, cross-process lock, re-check, the fetch
 * budget, fetch, store. A request that finds no slot or no budget fails at once: request
 * threads never queue for KDS (only for a fetch of the same entry already in the air). A CRL
 * refresh takes neither a slot nor a token (the backoff still holds): there is one per product
 * per max_age, clients cannot drive it, and junk VCEK misses must not keep the CRL from being
 * refreshed. */
static int kds_lead(NtKds *k, const Entry *e, uint8_t **ret, size_t *ret_len, time_t *ret_at) {
    _cleanup_(fetch_slot_releasep) NtKds *slot = NULL;
    _cleanup_close_ int fd = -EBADF;
    uint8_t *d = NULL;
    size_t n = 0;
    time_t at;
    int r;

    if (backoff_remaining(k) > 0) {
        kds_count(k, "backoff");
        return -EAGAIN;
    }
    slot = e->kind == ENTRY_CRL ? NULL : fetch_slot_take(k);
    if (!slot && e->kind != ENTRY_CRL) {
        kds_count(k, "fetch_refused");
        log_debug("KDS: %u requests in flight, refusing '%s'.", k->max_fetching, e->key);
        return -EAGAIN;
    }
    if (k->cache_dir) {
        fd = lock_file(k, e->key);
        if (fd < 0) /* e.g. a read-only cache: fetch anyway, one per process still */
            log_debug("Cannot lock KDS cache entry '%s': %s, fetching without the lock.", e->key,
                      strerror(-fd));
        /* Another process may have fetched it (or hit a 429) while we waited for the lock. */
        r = dir_get(k->cache_dir, false, e, ret, ret_len, ret_at);
        if (r != -ENOENT) {
            if (r == 0) {
                kds_count(k, "cache_hit");
                memo_put(k, e->key, *ret, *ret_len, *ret_at);
            }
            return r;
        }
        if (backoff_remaining(k) > 0) {
            kds_count(k, "backoff");
            return -EAGAIN;
        }
    }
    if (e->kind != ENTRY_CRL && !fetch_token_take(k)) {
        kds_count(k, "fetch_refused");
        log_debug("KDS: over %g requests/s, refusing '%s'.", k->fetch_rate, e->key);
        return -EAGAIN;
    }
    r = kds_fetch(k, e, &d, &n);
    if (r == -ENOENT)
        negative_put(k, e);
    if (r == 0 && e->kind == ENTRY_VCEK) {
        r = vcek_check_ask(k, e, d, n);
        if (r < 0) {
            kds_count(k, "http_error");
            log_debug("KDS answered '%s' with a VCEK that the cached ASK did not sign, refusing.",
                      e->url_path);
            free(d);
        }
    }
    if (r < 0)
        return r;
    at = time(NULL);
    r = cache_store(k, e, d, n, at);
    if (r < 0)
        log_debug("Failed to write KDS cache entry '%s': %s, ignoring.", e->key, strerror(-r));
    memo_put(k, e->key, d, n, at);
    *ret = d;
    *ret_len = n;
    *ret_at = at;
    return 0;
}

/* Cache, then offline bundle (memory first). Returns 0, -ENOENT or -ENOMEM. */
static int local_get(NtKds *k, const Entry *e, uint8_t **ret, size_t *ret_len, time_t *ret_at) {
    int r;

    r = memo_get(k, e, ret, ret_len, ret_at);
    if (r == 0) {
        kds_count(k, "cache_hit");
        return 0;
    }
    r = dir_get(k->cache_dir, false, e, ret, ret_len, ret_at);
    if (r == -ENOENT)
        r = dir_get(k->offline_dir, true, e, ret, ret_len, ret_at);
    if (r < 0)
        return r;
    memo_put(k, e->key, *ret, *ret_len, *ret_at);
    kds_count(k, "cache_hit");
    return 0;
}

static void flight_unref(Flight *f) {
    free(f->key);
    free(f->data);
    free(f);
}

/* Joins the flight for e->key if one is in the air (waits for it and copies its result: returns
 * 0 or its error, *ret_f = NULL), else registers a new one and makes the caller its leader
 * (returns 0, *ret_f set). Returns -EBUSY at once when max_flight_waiters threads already wait
 * (for any entry): a waiter holds its caller's thread until KDS answers, and junk reports with
 * one CHIP_ID would otherwise hold every request thread. */
static int flight_join(NtKds *k, const Entry *e, Flight **ret_f, uint8_t **ret, size_t *ret_len,
                       time_t *ret_at) {
    Flight *f;
    int r;
    KDS_LOCKED(k);

    for (f = k->flights; f; f = f->next)
        if (streq(f->key, e->key))
            break;
    if (!f) {
        f = calloc(1, sizeof(*f));
        if (!f)
            return -ENOMEM;
        f->key = strdup(e->key);
        if (!f->key) {
            free(f);
            return -ENOMEM;
        }
        f->next = k->flights;
        k->flights = f;
        *ret_f = f;
        return 0;
    }
    if (k->n_waiters >= k->max_waiters) {
        *ret_f = NULL;
        return -EBUSY;
    }
    k->n_waiters++;
    f->waiters++;
    while (!f->done)
        (void)pthread_cond_wait(&k->cond, &k->lock);
    k->n_waiters--;
    r = f->r;
    if (r == 0) {
        r = dup_bytes(f->data, f->len, ret);
        *ret_len = f->len;
        *ret_at = f->fetched_at;
    }
    if (--f->waiters == 0)
        flight_unref(f);
    *ret_f = NULL;
    return r;
}

/* The leader lands its flight: publishes the result to the waiters. */
static void flight_land(NtKds *k, Flight *f, int r, const uint8_t *d, size_t n, time_t at) {
    KDS_LOCKED(k);

    f->done = true;
    f->r = r;
    if (r == 0 && f->waiters > 0 && dup_bytes(d, n, &f->data) < 0)
        f->r = -ENOMEM;
    f->len = n;
    f->fetched_at = at;
    for (Flight **pp = &k->flights; *pp; pp = &(*pp)->next)
        if (*pp == f) {
            *pp = f->next;
            break;
        }
    if (f->waiters > 0)
        (void)pthread_cond_broadcast(&k->cond);
    else
        flight_unref(f);
}

/* local_only: what memory, the cache and the offline bundle hold, and the answers known without
 * asking (no base_url, a remembered 404); -EREMOTE where KDS would be asked or another thread's
 * fetch waited for. */
static int kds_get(NtKds *k, const Entry *e, bool local_only, uint8_t **ret, size_t *ret_len,
                   time_t *ret_at) {
    uint8_t *d = NULL;
    size_t n = 0;
    time_t at = 0;
    Flight *f = NULL;
    int r;

    r = local_get(k, e, ret, ret_len, ret_at);
    if (r != -ENOENT)
        return r;
    if (!k->base_url)
        return -ENOENT;
    if (negative_get(k, e)) {
        kds_count(k, "negative_hit");
        return -ENOENT;
    }
    if (local_only)
        return -EREMOTE;
    r = flight_join(k, e, &f, &d, &n, &at);
    if (r == -EBUSY) {
        kds_count(k, "fetch_refused");
        log_debug("KDS: %u requests already wait for fetches, refusing '%s'.", k->max_waiters,
                  e->key);
        return -EAGAIN;
    }
    if (r < 0)
        return r;
    if (!f) {
        /* Served by another thread's fetch: for the caller that is a cache hit. */
        kds_count(k, "cache_hit");
    } else {
        r = kds_lead(k, e, &d, &n, &at);
        flight_land(k, f, r, d, n, at);
        if (r < 0)
            return r;
    }
    *ret = d;
    *ret_len = n;
    *ret_at = at;
    return 0;
}

/* ---- Public entry points ---- */

static int entry_vcek(Entry *e, SnpProduct p, const uint8_t *hwid, size_t hwid_len,
                      const SnpTcb *tcb) {
    char hex[129];
    size_t hl;
    const char *pn;
    int m;

    if (!product_ok(p) || !hwid || !tcb)
        return -EINVAL;
    hl = product_hwid_len(p);
    if (hwid_len != hl && hwid_len != 64)
        return -EINVAL;
    pn = product_names[p];
    hex_encode(hwid, hl, hex);
    *e = (Entry){.kind = ENTRY_VCEK, .p = p, .hwid = hwid, .tcb = *tcb};
    if (p == SNP_PRODUCT_TURIN)
        m = snprintf(e->url_path, sizeof(e->url_path),
                     "/vcek/v1/%s/%s?fmcSPL=%02u&blSPL=%02u&teeSPL=%02u&snpSPL=%02u&ucodeSPL=%02u",
                     pn, hex, tcb->fmc, tcb->bootloader, tcb->tee, tcb->snp, tcb->microcode);
    else
        m = snprintf(e->url_path, sizeof(e->url_path),
                     "/vcek/v1/%s/%s?blSPL=%02u&teeSPL=%02u&snpSPL=%02u&ucodeSPL=%02u", pn, hex,
                     tcb->bootloader, tcb->tee, tcb->snp, tcb->microcode);
    if (m < 0 || (size_t)m >= sizeof(e->url_path))
        return -EINVAL;
    m = snprintf(e->key, sizeof(e->key), "vcek/%s/%s/%016" PRIx64 ".der", pn, hex,
                 snp_tcb_encode(tcb, p));
    if (m < 0 || (size_t)m >= sizeof(e->key))
        return -EINVAL;
    return 0;
}

static int get_vcek(NtKds *k, SnpProduct p, const uint8_t *hwid, size_t hwid_len, const SnpTcb *tcb,
                    bool local_only, uint8_t **ret_der, size_t *ret_len) {
    Entry e;
    time_t at;
    int r;

    if (!k || !ret_der || !ret_len)
        return -EINVAL;
    r = entry_vcek(&e, p, hwid, hwid_len, tcb);
    if (r < 0)
        return r;
    return kds_get(k, &e, local_only, ret_der, ret_len, &at);
}

int nt_kds_get_vcek(NtKds *k, SnpProduct p, const uint8_t *hwid, size_t hwid_len, const SnpTcb *tcb,
                    uint8_t **ret_der, size_t *ret_len) {
    return get_vcek(k, p, hwid, hwid_len, tcb, false, ret_der, ret_len);
}

static void entry_chain(Entry *e, SnpProduct p, bool vlek) {
    *e = (Entry){.kind = ENTRY_CHAIN, .p = p, .vlek = vlek};
    (void)snprintf(e->url_path, sizeof(e->url_path), "/%s/v1/%s/cert_chain", vlek ? "vlek" : "vcek",
                   product_names[p]);
    (void)snprintf(e->key, sizeof(e->key), "chain/%s/%s.pem", product_names[p],
                   vlek ? "vlek" : "vcek");
}

static int get_chain(NtKds *k, SnpProduct p, bool vlek, bool local_only, char **ret_pem,
                     size_t *ret_len) {
    Entry e;
    time_t at;
    uint8_t *d = NULL;
    int r;

    if (!k || !product_ok(p) || !ret_pem || !ret_len)
        return -EINVAL;
    entry_chain(&e, p, vlek);
    r = kds_get(k, &e, local_only, &d, ret_len, &at);
    if (r < 0)
        return r;
    *ret_pem = (char *)d; /* NUL-terminated by dup/read */
    return 0;
}

int nt_kds_get_chain(NtKds *k, SnpProduct p, bool vlek, char **ret_pem, size_t *ret_len) {
    return get_chain(k, p, vlek, false, ret_pem, ret_len);
}

static int get_crl(NtKds *k, SnpProduct p, int64_t max_age_s, bool local_only, uint8_t **ret_der,
                   size_t *ret_len, time_t *ret_fetched_at) {
    Entry e;
    time_t at = 0;
    int r;

    if (!k || !product_ok(p) || !ret_der || !ret_len)
        return -EINVAL;
    e = (Entry){.kind = ENTRY_CRL, .p = p, .max_age_s = MAX(max_age_s, 0)};
    (void)snprintf(e.url_path, sizeof(e.url_path), "/vcek/v1/%s/crl", product_names[p]);
    (void)snprintf(e.key, sizeof(e.key), "crl/%s.der", product_names[p]);
    r = kds_get(k, &e, local_only, ret_der, ret_len, &at);
    if (r == -EREMOTE)
        return r; /* a refresh is due: not the old CRL, the caller asks again the full way */
    if (r < 0 && r != -ENOMEM) {
        /* max_age is when to refresh, not when to discard: whatever kept the refresh from
         * happening (backoff, limits, KDS down or answering garbage), the last validated CRL is
         * served with its fetch time, and the verifier's nextUpdate + staleness limit decide. */
        Entry old = e;
        int q;

        old.max_age_s = -1;
        q = local_get(k, &old, ret_der, ret_len, &at);
        if (q == 0)
            log_debug("KDS: CRL refresh for %s failed (%s), serving the CRL fetched at %lld.",
                      product_names[p], strerror(-r), (long long)at);
        if (q != -ENOENT)
            r = q;
    }
    if (r < 0)
        return r;
    if (ret_fetched_at)
        *ret_fetched_at = at;
    return 0;
}

int nt_kds_get_crl(NtKds *k, SnpProduct p, int64_t max_age_s, uint8_t **ret_der, size_t *ret_len,
                   time_t *ret_fetched_at) {
    return get_crl(k, p, max_age_s, false, ret_der, ret_len, ret_fetched_at);
}

int nt_kds_get_crl_local(NtKds *k, SnpProduct p, int64_t max_age_s, uint8_t **ret_der,
                         size_t *ret_len, time_t *ret_fetched_at) {
    return get_crl(k, p, max_age_s, true, ret_der, ret_len, ret_fetched_at);
}

int nt_kds_prefetch(NtKds *k, SnpProduct p, const uint8_t *hwid, size_t hwid_len,
                    const SnpTcb *tcb) {
    _cleanup_free_ uint8_t *v = NULL, *crl = NULL;
    _cleanup_free_ char *chain = NULL;
    size_t n;
    time_t at;
    int r;

    r = nt_kds_get_vcek(k, p, hwid, hwid_len, tcb, &v, &n);
    if (r < 0)
        return r;
    r = nt_kds_get_chain(k, p, false, &chain, &n);
    if (r < 0)
        return r;
    /* A CRL fetched now, unless one was fetched within the last minute. */
    return nt_kds_get_crl(k, p, 60, &crl, &n, &at);
}

/* ---- The VcekSource ---- */

static int add_chain(NtKds *k, SnpProduct p, bool vlek, bool local_only, NtCertBundle *b) {
    _cleanup_free_ char *pem = NULL;
    size_t n;
    int r;

    r = get_chain(k, p, vlek, local_only, &pem, &n);
    if (r < 0)
        return r;
    return nt_cert_bundle_add(b, (const uint8_t *)pem, n, _NT_CERT_ROLE_INVALID,
                              vlek ? "KDS vlek cert_chain" : "KDS vcek cert_chain");
}

static int source_fetch(NtKds *k, const SnpReport *rep, SnpProduct p, NtCertRole role,
                        bool local_only, NtCertBundle *bundle) {
    _cleanup_free_ uint8_t *der = NULL;
    uint8_t zero[64] = {0};
    size_t n;
    SnpTcb tcb;
    int r, rc;

    if (!product_ok(p))
        p = snp_product_from_cpuid(rep->cpuid_fam_id, rep->cpuid_mod_id);
    if (!product_ok(p))
        return -EINVAL;
    if (role == NT_CERT_ROLE_VLEK)
        return add_chain(k, p, true, local_only, bundle);
    if (role != NT_CERT_ROLE_VCEK)
        return -ENOENT;
    /* The chain first: when the evidence carried the VCEK but not its ASK (always the case for
     * MASK_CHIP_ID reports), the chain is what the verifier needs, even if no VCEK can be had. */
    rc = add_chain(k, p, false, local_only, bundle);
    if (rc == -EREMOTE)
        return rc;
    if (memcmp(rep->chip_id, zero, product_hwid_len(p)) == 0)
        return rc < 0 ? rc : -ENOENT; /* MASK_CHIP_ID: no hwID to ask KDS for */
    r = snp_tcb_decode(rep->reported_tcb, p, &tcb);
    if (r < 0)
        return -EINVAL;
    r = get_vcek(k, p, rep->chip_id, sizeof(rep->chip_id), &tcb, local_only, &der, &n);
    if (r < 0)
        return r;
    r = nt_cert_bundle_add(bundle, der, n, NT_CERT_ROLE_VCEK, "KDS VCEK");
    if (r < 0)
        return r;
    return rc;
}

static int kds_source_fetch(void *userdata, const SnpReport *rep, SnpProduct p, NtCertRole role,
                            NtCertBundle *bundle) {
    return source_fetch(userdata, rep, p, role, false, bundle);
}

static int kds_source_fetch_local(void *userdata, const SnpReport *rep, SnpProduct p,
                                  NtCertRole role, NtCertBundle *bundle) {
    return source_fetch(userdata, rep, p, role, true, bundle);
}

void nt_kds_vcek_source(NtKds *k, NtVcekSource *ret) {
    *ret = (NtVcekSource){.name = "AMD KDS",
                          .fetch = kds_source_fetch,
                          .fetch_local = kds_source_fetch_local,
                          .userdata = k};
}
