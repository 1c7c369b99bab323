/* SPDX-License-Identifier: Apache-2.0 */
/*
 * AMD Key Distribution Service (KDS) client with a persistent certificate cache.
 *
 * Supplies VCEK certificates, the ASK/ASVK+ARK chains and the product CRLs that evidence lacks,
 * in this order: the on-disk cache, a read-only offline bundle (same layout), then KDS over
 * HTTPS (libcurl). Nothing fetched is trusted: the verifier chains it to an anchor. But nothing
 * that is not what was asked for is ever stored either: a VCEK body must parse as one DER
 * X.509 certificate whose role is VCEK and whose hwID, TCB (blSPL, teeSPL, snpSPL, ucodeSPL and,
 * on Turin, fmcSPL) and product name equal the request; a chain must be exactly ASK (or ASVK)
 * then ARK of the product; a CRL must parse as a DER X509_CRL. An error page, a truncated body
 * or another chip's certificate is refused with -EBADMSG and not cached. A fetched VCEK must also
 * be signed by the product's ASK when the VCEK chain is already in memory, the cache or the offline
 * bundle (-EBADMSG otherwise, nothing cached).
 *
 * KDS URLs (base_url + path):
 *   /vcek/v1/{Milan|Genoa|Turin}/{hwid hex}?blSPL=NN&teeSPL=NN&snpSPL=NN&ucodeSPL=NN
 *       Milan/Genoa: hwid = the 64 bytes of CHIP_ID (128 hex digits);
 *       Turin: ?fmcSPL=NN&blSPL=..., hwid = the first 8 bytes of CHIP_ID (16 hex digits).
 *       NN is decimal, two digits at least ("blSPL=07").
 *   /vcek/v1/{product}/cert_chain   PEM, ASK then ARK
 *   /vlek/v1/{product}/cert_chain   PEM, ASVK then ARK
 *   /vcek/v1/{product}/crl          DER
 *
 * Cache layout (cache_dir and offline_dir; directories 0700, files 0600 in cache_dir):
 *   vcek/{Product}/{hwid hex}/{tcb hex}.der   VCEK, DER; tcb hex = 16 hex digits of the TCB
 *                                             encoded for the product (snp_tcb_encode)
 *   chain/{Product}/vcek.pem                  ASK then ARK, PEM
 *   chain/{Product}/vlek.pem                  ASVK then ARK, PEM
 *   crl/{Product}.der                         CRL, DER
 *   crl/{Product}.fetched                     decimal Unix time the CRL was fetched, "\n"
 *   lock/{entry name with '/' -> '_'}.lock    flock(2) per entry (cache_dir only)
 *   backoff                                   shared backoff state: "until_unix_ms attempt\n"
 * {Product} is "Milan", "Genoa" or "Turin". Files are written atomically (temporary file,
 * fsync, rename, fsync of the directory), so a reader sees an old entry, a new one or none,
 * never a partial one. Entries are re-validated when read; an invalid cache file is ignored
 * (treated as absent) and replaced on the next fetch. An offline bundle needs no .fetched file
 * for its CRL (the CRL's own lastUpdate is used then).
 *
 * Concurrency: an NtKds is thread-safe. Concurrent requests in one process for the same entry
 * wait for one fetch (single-flight); across processes sharing cache_dir, the fetcher holds the
 * entry's flock and every other process re-checks the cache after taking it, so one fetch
 * happens in total. HTTP 429 and 5xx start a backoff (Retry-After when given, else exponential
 * with full jitter between backoff_base_ms and backoff_max_ms) recorded in cache_dir/backoff
 * for every process; while it lasts, requests that the cache or offline bundle can serve are
 * served and the others fail at once with -EAGAIN (request threads never sleep for it). A
 * successful fetch resets it.
 *
 * What KDS may cost, per process (a verifier asks for the VCEK before it can check the report's
 * signature, so anyone who can submit a report spends this): a VCEK 404 is remembered in memory
 * for negative_ttl_s (at most 4096 entries, the oldest evicted first) and answered -ENOENT
 * without a request; at most max_concurrent_fetches requests are in flight and at most
 * max_fetches_per_s (token bucket of fetch_burst) are started; a request beyond either fails at
 * once with -EAGAIN instead of waiting. Requests for an entry already being fetched wait for that
 * fetch (bounded by timeout_ms) and take neither a slot nor a token, but at most
 * max_flight_waiters threads wait at a time (all entries together): one more fails at once with
 * -EAGAIN ("fetch_refused"), so reports repeating one unknown CHIP_ID cannot hold every request
 * thread until KDS answers. Cache hits are never limited.
 *
 * Counted events (cfg->count): "fetch" (an HTTP request to KDS), "cache_hit" (served from the
 * cache or the offline bundle), "http_429", "http_error" (5xx, other unexpected statuses,
 * transport errors, garbage bodies), "backoff" (a request refused with -EAGAIN while backing
 * off), "negative_hit" (-ENOENT from the negative cache), "fetch_refused" (-EAGAIN: too many
 * requests in flight or waiting, or over the fetch budget).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "core/macro.h"
#include "snp/report.h"
#include "verify/chain.h"

typedef struct NtKds NtKds;

typedef struct NtKdsConfig {
    const char *base_url;    /* e.g. "https://kdsintf.amd.com"; NULL: never go to the network */
    const char *cache_dir;   /* persistent cache (created 0700); NULL: no cache */
    const char *offline_dir; /* read-only bundle with the cache's layout (air-gapped sites) */
    const char *ca_file;     /* TLS CA for base_url, NULL = system */
    long timeout_ms;         /* per request, 0 = default 10000 */
    unsigned backoff_base_ms, backoff_max_ms; /* 0 = defaults 1000, 300000 */
    int64_t negative_ttl_s;          /* remember a VCEK 404; 0 = default 600, < 0 = never */
    unsigned max_concurrent_fetches; /* KDS requests in flight; 0 = default 2 */
    double max_fetches_per_s;        /* KDS requests started per second; 0 = default 5 */
    unsigned fetch_burst;            /* token bucket size for the above; 0 = default 10 */
    unsigned max_flight_waiters;     /* threads waiting for another's fetch; 0 = default 2 */
    void (*count)(void *ud, const char *event);
    void *count_ud;
} NtKdsConfig;

/* Creates a client (strings are copied). Creates cache_dir (0700) if missing. Returns 0,
 * -EINVAL (no base_url, cache_dir nor offline_dir; or a bad base_url), -ENOMEM, or the errno of
 * creating cache_dir. */
int nt_kds_new(const NtKdsConfig *cfg, NtKds **ret);
/* Frees the client (NULL accepted); no request may be running. Returns NULL. */
NtKds *nt_kds_free(NtKds *k);
DEFINE_TRIVIAL_CLEANUP_FUNC(NtKds *, nt_kds_free);

/* An NtVcekSource (verify/chain.h) that adds, for report r: the VCEK for (product, hwID,
 * reported TCB) and ASK+ARK (role VCEK), or ASVK+ARK (role VLEK: the VLEK itself must come with
 * the evidence; only its chain is fetched). Order: cache -> offline dir -> KDS. Its fetch_local
 * (local mode) stops before KDS: -EREMOTE where fetch would ask KDS or wait for another thread's
 * fetch of the same entry; the answers known without asking (nothing configured to ask, a
 * remembered 404) are the same as fetch's. The fetch
 * returns 0, -ENOENT (KDS says 404, now or within negative_ttl_s / none), -EAGAIN (backing off
 * after 429/5xx, or over the fetch limits, and nothing cached), -EHOSTUNREACH / -ETIMEDOUT (KDS
 * unreachable), -EBADMSG (KDS answered garbage; nothing cached), -EINVAL (the product is unknown or
 * the report's TCB does not decode). The source borrows k: k must outlive every verifier it is
 * installed in. */
void nt_kds_vcek_source(NtKds *k, NtVcekSource *ret);

/* The VCEK (DER) for a chip and TCB: cache -> offline -> KDS (then cache). Errors as above.
 * *ret_der is malloc'd. */
int nt_kds_get_vcek(NtKds *k, SnpProduct p, const uint8_t *hwid, size_t hwid_len, const SnpTcb *tcb,
                    uint8_t **ret_der, size_t *ret_len);
/* The cert_chain (PEM, ASK then ARK; or ASVK then ARK when vlek). Errors as above. */
int nt_kds_get_chain(NtKds *k, SnpProduct p, bool vlek, char **ret_pem, size_t *ret_len);

/* The product's CRL (DER) from cache if younger than max_age_s, else KDS (then cache).
 * *ret_fetched_at = when it was fetched. Does not verify its signature (the verifier does) but
 * refuses a body that is not a DER X509_CRL. max_age_s is when to refresh, not when to discard:
 * when the refresh fails for any reason (backing off, unreachable, 404/5xx, garbage, no
 * base_url, the fetch limits) the last validated CRL (memory, cache or offline bundle) is
 * returned with its own fetched_at, and the caller's nextUpdate/staleness check decides; the
 * errors above only when there is none. A CRL refresh takes neither a fetch slot nor a token of
 * the fetch budget (clients cannot drive it), but honours the backoff. */
int nt_kds_get_crl(NtKds *k, SnpProduct p, int64_t max_age_s, uint8_t **ret_der, size_t *ret_len,
                   time_t *ret_fetched_at);
/* The same without the network and without waiting for another thread's fetch: the CRL from
 * memory, the cache or the offline bundle when it is younger than max_age_s; -EREMOTE when
 * nt_kds_get_crl() would try KDS (a refresh is due: the old CRL is not served then, the caller
 * asks nt_kds_get_crl(), which falls back to it if the refresh fails). Errors otherwise as
 * nt_kds_get_crl(). For request threads that must not block (NtRevocationSource.get_crl_local). */
int nt_kds_get_crl_local(NtKds *k, SnpProduct p, int64_t max_age_s, uint8_t **ret_der,
                         size_t *ret_len, time_t *ret_fetched_at);

/* Fills the cache for a chip and TCB ahead of time (VCEK + VCEK chain + CRL). hwid_len is 64
 * (Milan, Genoa) or 8 (Turin; 64 accepted, the first 8 bytes are used). Returns 0 or the first
 * error, as above. */
int nt_kds_prefetch(NtKds *k, SnpProduct p, const uint8_t *hwid, size_t hwid_len,
                    const SnpTcb *tcb);

/* ---- Response validation (exposed for the fuzz target and tests) ----
 * Each returns 0 or -EBADMSG; they never trust the body. */
/* One DER certificate, role VCEK, extensions hwID == hwid (8 bytes compared on Turin), TCB ==
 * tcb, product name naming p. */
int nt_kds_check_vcek(const uint8_t *der, size_t len, SnpProduct p, const uint8_t *hwid,
                      size_t hwid_len, const SnpTcb *tcb);
/* Exactly two PEM certificates: ASK (vlek: ASVK) then ARK, both naming product p. */
int nt_kds_check_chain(const uint8_t *pem, size_t len, SnpProduct p, bool vlek);
/* One DER X509_CRL and nothing after it. */
int nt_kds_check_crl(const uint8_t *der, size_t len);
