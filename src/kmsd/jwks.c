/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The JWKS cache. Two locks: `lock` guards the current set and its times (held for a pointer
 * swap only); `fetch_lock` serialises fetches, so that a crowd of requests arriving when the set
 * expires causes one fetch. A request that finds the set expired but still usable (within
 * max_stale) refreshes it only if no other request is fetching (trylock), and otherwise goes on
 * with the old set: a slow attestd delays one request, not all of them.
 */
#include "kmsd/jwks.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jose/jose.h>

#include "core/fileio.h"
#include "core/log.h"
#include "token/jose-util.h"
#include "web/client.h"

#define JWKS_MAX_SIZE (256 * 1024)
#define JWKS_MAX_KEYS 64

struct KmsdJwks {
    char *url, *ca_file, *file;
    int64_t ttl_s, min_refresh_s, max_stale_s, timeout_s;
    void (*count)(void *userdata, const char *event);
    void *userdata;

    pthread_mutex_t lock;
    json_t *jwks;         /* current set, or NULL */
    int64_t fetched_at;   /* monotonic seconds of the current set */
    int64_t attempted_at; /* monotonic seconds of the last fetch attempt, 0 = never */
    char last_error[200];

    pthread_mutex_t fetch_lock;
};

static int64_t mono_s(void) {
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec + 1; /* never 0: 0 means "never" */
}

static void count(KmsdJwks *j, const char *event) {
    if (j->count)
        j->count(j->userdata, event);
}

/* Checks the shape: {"keys": [1..64 public EC keys with kid]}. */
static int jwks_check(const json_t *jwks, char *err, size_t size) {
    const json_t *keys = json_object_get(jwks, "keys"), *k;
    size_t i;

    if (!json_is_array(keys) || json_array_size(keys) == 0 ||
        json_array_size(keys) > JWKS_MAX_KEYS) {
        snprintf(err, size, "not a JWKS with 1..%d keys", JWKS_MAX_KEYS);
        return -EBADMSG;
    }
    json_array_foreach(keys, i, k) {
        if (!json_is_object(k) || !json_is_string(json_object_get(k, "kid")) ||
            !json_is_string(json_object_get(k, "kty"))) {
            snprintf(err, size, "key %zu without kid or kty", i);
            return -EBADMSG;
        }
        if (json_object_get(k, "d")) {
            snprintf(err, size, "key %zu is a private key", i);
            return -EBADMSG;
        }
    }
    return 0;
}

static int fetch(KmsdJwks *j, json_t **ret, char *err, size_t size) {
    json_auto_t *jwks = NULL;
    json_error_t jerr;
    int r;

    if (j->file) {
        _cleanup_free_ uint8_t *data = NULL;
        size_t len = 0;
        r = read_full_file(j->file, JWKS_MAX_SIZE, &data, &len);
        if (r < 0) {
            snprintf(err, size, "%.120s: %.60s", j->file, strerror(-r));
            return r;
        }
        jwks = json_loadb((const char *)data, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!jwks) {
            snprintf(err, size, "%.100s: line %d: %.60s", j->file, jerr.line, jerr.text);
            return -EBADMSG;
        }
    } else {
        NtHttpOptions o = {
            .ca_file = j->ca_file,
            .connect_timeout_ms = (long)MIN(j->timeout_s * 1000, (int64_t)5000),
            .timeout_ms = (long)(j->timeout_s * 1000),
            .max_response = JWKS_MAX_SIZE,
        };
        NtHttpResponse resp = {};
        r = nt_http_request(&o, "GET", j->url, NULL, NULL, 0, &resp);
        if (r < 0) {
            snprintf(err, size, "%.100s: %.90s", j->url, resp.error[0] ? resp.error : strerror(-r));
            nt_http_response_clear(&resp);
            return r;
        }
        if (resp.status != 200) {
            snprintf(err, size, "%.150s: HTTP %ld", j->url, resp.status);
            nt_http_response_clear(&resp);
            return -EPROTO;
        }
        jwks = resp.body ? json_loadb((const char *)resp.body, resp.body_len,
                                      JSON_REJECT_DUPLICATES, &jerr)
                         : NULL;
        nt_http_response_clear(&resp);
        if (!jwks) {
            snprintf(err, size, "%.150s: the reply is not JSON", j->url);
            return -EBADMSG;
        }
    }
    r = jwks_check(jwks, err, size);
    if (r < 0)
        return r;
    *ret = TAKE_PTR(jwks);
    return 0;
}

/* Fetches and installs a new set. force: even if the set is fresh (unknown kid), but not more
 * often than min_refresh_s. seen_at: the fetched_at the caller saw (another thread may have
 * refreshed since, which then counts as done). Returns 0 (a set is installed, possibly by
 * another thread), -EAGAIN (rate-limited), or the fetch error. */
static int refresh(KmsdJwks *j, bool force, int64_t seen_at, bool wait) {
    char err[200] = "";
    json_t *fresh = NULL;
    int64_t now;
    int r;

    if (wait)
        pthread_mutex_lock(&j->fetch_lock);
    else if (pthread_mutex_trylock(&j->fetch_lock) != 0)
        return 0; /* someone else is fetching; go on with what we have */

    pthread_mutex_lock(&j->lock);
    now = mono_s();
    if (j->fetched_at != seen_at) {
        /* Another thread installed a set while we waited. */
        pthread_mutex_unlock(&j->lock);
        pthread_mutex_unlock(&j->fetch_lock);
        return 0;
    }
    if (force && j->attempted_at && now - j->attempted_at < j->min_refresh_s) {
        pthread_mutex_unlock(&j->lock);
        pthread_mutex_unlock(&j->fetch_lock);
        count(j, "refresh_rate_limited");
        return -EAGAIN;
    }
    j->attempted_at = now;
    pthread_mutex_unlock(&j->lock);

    r = fetch(j, &fresh, err, sizeof err);

    pthread_mutex_lock(&j->lock);
    if (r >= 0) {
        json_decref(j->jwks);
        j->jwks = fresh;
        j->fetched_at = mono_s();
        j->last_error[0] = 0;
    } else
        snprintf(j->last_error, sizeof j->last_error, "%.199s", err);
    pthread_mutex_unlock(&j->lock);
    pthread_mutex_unlock(&j->fetch_lock);
    if (r < 0) {
        count(j, "fetch_error");
        log_warning("Fetching attestd's JWKS failed: %s", err);
    } else {
        count(j, "fetch_ok");
        log_debug("Fetched attestd's JWKS (%zu keys).",
                  json_array_size(json_object_get(fresh, "keys")));
    }
    return r;
}

/* The current set (a reference), whether it is within its ttl, and its fetched_at. NULL when
 * there is none or it is past ttl + max_stale. */
static json_t *current(KmsdJwks *j, bool *ret_fresh, int64_t *ret_at) {
    json_t *s = NULL;
    int64_t now = mono_s();
    pthread_mutex_lock(&j->lock);
    *ret_at = j->fetched_at;
    *ret_fresh = false;
    if (j->jwks) {
        int64_t age = now - j->fetched_at;
        *ret_fresh = age < j->ttl_s;
        if (age < j->ttl_s + j->max_stale_s || *ret_fresh)
            s = json_incref(j->jwks);
    }
    pthread_mutex_unlock(&j->lock);
    return s;
}

int kmsd_jwks_new(const KmsdJwksConfig *cfg, KmsdJwks **ret, char **ret_error) {
    KmsdJwks *j;
    int r;

    if (!cfg || !ret || !cfg->url == !cfg->file)
        return -EINVAL;
    j = calloc(1, sizeof *j);
    if (!j)
        return -ENOMEM;
    pthread_mutex_init(&j->lock, NULL);
    pthread_mutex_init(&j->fetch_lock, NULL);
    j->ttl_s = cfg->ttl_s > 0 ? cfg->ttl_s : 300;
    j->min_refresh_s = cfg->min_refresh_s > 0 ? cfg->min_refresh_s : 10;
    j->max_stale_s = MAX(cfg->max_stale_s, (int64_t)0);
    j->timeout_s = cfg->timeout_s > 0 ? cfg->timeout_s : 10;
    j->count = cfg->count;
    j->userdata = cfg->userdata;
    if ((cfg->url && !(j->url = strdup(cfg->url))) ||
        (cfg->ca_file && !(j->ca_file = strdup(cfg->ca_file))) ||
        (cfg->file && !(j->file = strdup(cfg->file)))) {
        kmsd_jwks_free(j);
        return -ENOMEM;
    }
    r = refresh(j, false, 0, true);
    if (r < 0 && j->file) {
        if (ret_error && asprintf(ret_error, "attestd.jwks_file: %s", j->last_error) < 0)
            *ret_error = NULL;
        kmsd_jwks_free(j);
        return r;
    }
    if (r < 0)
        log_warning("attestd's JWKS is not available yet (%s); releases wait for it.",
                    j->last_error);
    *ret = j;
    return 0;
}

KmsdJwks *kmsd_jwks_free(KmsdJwks *j) {
    if (!j)
        return NULL;
    json_decref(j->jwks);
    free(j->url);
    free(j->ca_file);
    free(j->file);
    pthread_mutex_destroy(&j->lock);
    pthread_mutex_destroy(&j->fetch_lock);
    free(j);
    return NULL;
}

int64_t kmsd_jwks_age(KmsdJwks *j) {
    int64_t age = -1;
    pthread_mutex_lock(&j->lock);
    if (j->jwks)
        age = mono_s() - j->fetched_at;
    pthread_mutex_unlock(&j->lock);
    return age;
}

int kmsd_jwks_verify(KmsdJwks *j, const char *token, const NtEarVerifyOptions *o,
                     NtEarVerifyResult *ret, char err[static 256]) {
    json_auto_t *set = NULL;
    bool fresh;
    int64_t at;
    int r;

    err[0] = 0;
    *ret = (NtEarVerifyResult){0};
    set = current(j, &fresh, &at);
    if (!set) {
        /* None at all: wait for a fetch (one at a time; at most every min_refresh_s). */
        r = refresh(j, true, at, true);
        set = current(j, &fresh, &at);
        if (!set) {
            pthread_mutex_lock(&j->lock);
            snprintf(err, 256, "attestd's token keys (JWKS) are not available%s%.200s",
                     j->last_error[0] ? ": " : "", j->last_error);
            pthread_mutex_unlock(&j->lock);
            return -EAGAIN;
        }
    } else if (!fresh) {
        (void)refresh(j, false, at, false);
        json_decref(set);
        set = current(j, &fresh, &at);
        if (!set) {
            snprintf(err, 256, "attestd's token keys (JWKS) expired and cannot be refreshed");
            return -EAGAIN;
        }
    }

    r = nt_ear_verify_ex(token, set, o, ret, err);
    if (!ret->unknown_kid)
        return r;
    /* A kid we do not know: attestd may have rotated. Fetch again (rate-limited). */
    count(j, "unknown_kid_refresh");
    if (refresh(j, true, at, true) < 0)
        return r; /* err still names the unknown kid */
    json_decref(set);
    set = current(j, &fresh, &at);
    if (!set)
        return r;
    return nt_ear_verify_ex(token, set, o, ret, err);
}
