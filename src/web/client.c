/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libcurl client. One easy handle per request: no connection reuse, but no shared state either,
 * so any thread may call it. With keep_alive, the calling thread's own handle is used instead,
 * kept between its keep_alive calls (reset before and after each: no option, header or token
 * carries over) so that its connections and TLS sessions are reused; it is freed when the
 * thread exits. The response body is collected up to max_response; a larger one
 * (announced by Content-Length or found while reading) aborts the transfer with -EFBIG.
 */
#include "web/client.h"

#include <curl/curl.h>
#include <ctype.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "core/log.h"
#include "core/macro.h"

#define DEFAULT_CONNECT_TIMEOUT_MS 5000
#define DEFAULT_TIMEOUT_MS 30000
#define DEFAULT_MAX_RESPONSE (1024 * 1024)
#define MAX_REDIRECTS 5
/* Never through a proxy from the environment: plain http to loopback stays on the host. */
#define NO_PROXY "localhost,127.0.0.0/8,::1"

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result = CURLE_FAILED_INIT;

static void curl_init(void) {
    curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(CURL *, curl_easy_cleanup);

/* keep_alive: each thread's kept handle, freed by the key's destructor at thread exit. */
static pthread_once_t kept_once = PTHREAD_ONCE_INIT;
static pthread_key_t kept_key;
static bool kept_key_ok;

static void kept_free(void *h) {
    curl_easy_cleanup(h);
}

static void kept_init(void) {
    kept_key_ok = pthread_key_create(&kept_key, kept_free) == 0;
}

typedef struct Handle {
    CURL *h;
    bool kept;
} Handle;

/* A new handle, or with keep_alive this thread's kept one (reset). NULL when out of memory. */
static CURL *handle_get(Handle *x, bool keep_alive) {
    if (keep_alive) {
        (void)pthread_once(&kept_once, kept_init);
        if (kept_key_ok) {
            x->h = pthread_getspecific(kept_key);
            if (x->h)
                curl_easy_reset(x->h);
            else if ((x->h = curl_easy_init()) && pthread_setspecific(kept_key, x->h) != 0) {
                curl_easy_cleanup(x->h);
                x->h = NULL;
            }
            x->kept = x->h != NULL;
            if (x->h)
                return x->h;
        }
    }
    x->h = curl_easy_init();
    return x->h;
}

/* A kept handle is reset (it must not point at this call's buffers and headers) but keeps its
 * connections; another is freed. */
static void handle_release(Handle *x) {
    if (!x->h)
        return;
    if (x->kept)
        curl_easy_reset(x->h);
    else
        curl_easy_cleanup(x->h);
    x->h = NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(struct curl_slist *, curl_slist_free_all);

typedef struct Collect {
    uint8_t *p;
    size_t len, alloc, max;
    bool too_large, oom;
    long retry_after_s;
    time_t now;
} Collect;

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *userdata) {
    Collect *c = userdata;
    size_t n = size * nmemb;

    if (n > c->max - c->len) {
        c->too_large = true;
        return 0; /* aborts with CURLE_WRITE_ERROR */
    }
    if (c->len + n + 1 > c->alloc) {
        size_t a = MAX(c->alloc * 2, c->len + n + 1);
        a = MIN(a, c->max + 1);
        uint8_t *np = realloc(c->p, a);
        if (!np) {
            c->oom = true;
            return 0;
        }
        c->p = np;
        c->alloc = a;
    }
    memcpy(c->p + c->len, ptr, n);
    c->len += n;
    c->p[c->len] = 0;
    return n;
}

long nt_http_parse_retry_after(const char *value, time_t now) {
    const char *p = value;
    size_t n;

    if (!value)
        return -1;
    while (*p == ' ' || *p == '\t')
        p++;
    n = strlen(p);
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '\r' || p[n - 1] == '\n'))
        n--;
    if (n == 0 || n > 64)
        return -1;
    char buf[65];
    memcpy(buf, p, n);
    buf[n] = 0;

    if (strspn(buf, "0123456789") == n) {
        long v = 0;
        for (size_t i = 0; i < n; i++) {
            if (v > (LONG_MAX - 9) / 10)
                return LONG_MAX; /* absurdly far: the caller caps it */
            v = v * 10 + (buf[i] - '0');
        }
        return v;
    }
    /* An HTTP-date: IMF-fixdate, RFC 850 or asctime, all parsed by curl_getdate(); it must name
     * a day (a letter first), so that "-5" or "1.5" are not taken for dates. */
    if (!isalpha((unsigned char)buf[0]))
        return -1;
    time_t t = curl_getdate(buf, NULL);
    if (t == (time_t)-1)
        return -1;
    return t > now ? (long)MIN((long long)(t - now), (long long)LONG_MAX) : 0;
}

static size_t on_header(char *ptr, size_t size, size_t nitems, void *userdata) {
    Collect *c = userdata;
    size_t n = size * nitems;
    static const char name[] = "retry-after:";

    if (n > (sizeof(name) - 1) && strncasecmp(ptr, name, (sizeof(name) - 1)) == 0 && n < 256) {
        char v[256];
        memcpy(v, ptr + (sizeof(name) - 1), n - (sizeof(name) - 1));
        v[n - (sizeof(name) - 1)] = 0;
        c->retry_after_s = nt_http_parse_retry_after(v, c->now);
    } else if (n >= 5 && strncmp(ptr, "HTTP/", 5) == 0)
        c->retry_after_s = -1; /* a new response (after 100 Continue): forget the old one's */
    return n;
}

static int map_curl_error(CURLcode cc, CURL *h, const Collect *col) {
    long os_errno = 0;

    if (col->too_large || cc == CURLE_FILESIZE_EXCEEDED)
        return -EFBIG;
    if (col->oom || cc == CURLE_OUT_OF_MEMORY)
        return -ENOMEM;
    switch (cc) {
    case CURLE_OPERATION_TIMEDOUT:
        return -ETIMEDOUT;
    case CURLE_COULDNT_CONNECT:
        (void)curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &os_errno);
        if (os_errno == ETIMEDOUT)
            return -ETIMEDOUT;
        return os_errno == ECONNREFUSED ? -ECONNREFUSED : -EHOSTUNREACH;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return -EHOSTUNREACH;
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        return -EINVAL;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
        return -ECONNRESET;
    default:
        /* TLS handshake and certificate failures (CURLE_SSL_*, CURLE_PEER_FAILED_VERIFICATION),
         * a reply that is not HTTP, an empty reply, too many redirects. */
        return -EPROTO;
    }
}

DEFINE_TRIVIAL_CLEANUP_FUNC(CURLU *, curl_url_cleanup);

/* Scheme, host and port of url (default port filled in), lower-cased by libcurl. */
static int url_origin(const char *url, char **scheme, char **host, char **port) {
    _cleanup_(curl_url_cleanupp) CURLU *u = curl_url();

    *scheme = *host = *port = NULL;
    if (!u || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, host, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PORT, port, CURLU_DEFAULT_PORT) != CURLUE_OK)
        return -EINVAL;
    return 0;
}

/* True if to has the same scheme, host and port as from. */
static bool same_origin(const char *from, const char *to) {
    char *s1, *h1, *p1, *s2, *h2, *p2;
    bool same = url_origin(from, &s1, &h1, &p1) == 0 && url_origin(to, &s2, &h2, &p2) == 0 &&
                strcasecmp(s1, s2) == 0 && strcasecmp(h1, h2) == 0 && strcmp(p1, p2) == 0;
    curl_free(s1);
    curl_free(h1);
    curl_free(p1);
    curl_free(s2);
    curl_free(h2);
    curl_free(p2);
    return same;
}

void nt_http_response_clear(NtHttpResponse *resp) {
    if (!resp)
        return;
    free(resp->body);
    free(resp->content_type);
    *resp = (NtHttpResponse){.retry_after_s = -1};
}

int nt_http_request(const NtHttpOptions *o, const char *method, const char *url,
                    const char *content_type, const void *body, size_t body_len,
                    NtHttpResponse *resp) {
    _cleanup_(handle_release) Handle hd = {};
    _cleanup_(curl_slist_free_allp) struct curl_slist *hdrs = NULL;
    CURL *h;
    char errbuf[CURL_ERROR_SIZE] = "";
    NtHttpOptions opts = {};
    Collect col = {.retry_after_s = -1, .now = time(NULL)};
    CURLcode cc;
    bool https;
    int r;

    if (!resp)
        return -EINVAL;
    *resp = (NtHttpResponse){.retry_after_s = -1};
    if (o)
        opts = *o;
    if (opts.connect_timeout_ms <= 0)
        opts.connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
    if (opts.timeout_ms <= 0)
        opts.timeout_ms = DEFAULT_TIMEOUT_MS;
    if (opts.max_response == 0)
        opts.max_response = DEFAULT_MAX_RESPONSE;
    col.max = opts.max_response;

    if (!method || !url) {
        (void)snprintf(resp->error, sizeof(resp->error), "no method or URL");
        return -EINVAL;
    }
    if (strncasecmp(url, "https://", 8) == 0)
        https = true;
    else if (strncasecmp(url, "http://", 7) == 0)
        https = false;
    else {
        (void)snprintf(resp->error, sizeof(resp->error), "not an http:// or https:// URL");
        return -EINVAL;
    }

    (void)pthread_once(&curl_once, curl_init);
    if (curl_init_result != CURLE_OK) {
        (void)snprintf(resp->error, sizeof(resp->error), "curl_global_init failed");
        return -ENOMEM;
    }
    h = handle_get(&hd, opts.keep_alive);
    if (!h) {
        (void)snprintf(resp->error, sizeof(resp->error), "out of memory");
        return -ENOMEM;
    }
    if (content_type) {
        char line[256];
        if (strpbrk(content_type, "\r\n") ||
            snprintf(line, sizeof(line), "Content-Type: %s", content_type) >= (int)sizeof(line)) {
            (void)snprintf(resp->error, sizeof(resp->error), "bad content type");
            return -EINVAL;
        }
        hdrs = curl_slist_append(hdrs, line);
        if (!hdrs)
            return -ENOMEM;
    }
    /* No "Expect: 100-continue" round trip for small bodies. */
    struct curl_slist *n = curl_slist_append(hdrs, "Expect:");
    if (!n)
        return -ENOMEM;
    hdrs = n;

    cc = CURLE_OK;
#define SETOPT(opt, val)                                                                           \
    do {                                                                                           \
        if (cc == CURLE_OK)                                                                        \
            cc = curl_easy_setopt(h, opt, val);                                                    \
    } while (0)
    SETOPT(CURLOPT_URL, url);
#if LIBCURL_VERSION_NUM >= 0x075500
    SETOPT(CURLOPT_PROTOCOLS_STR, https ? "https" : "http");
#else
    SETOPT(CURLOPT_PROTOCOLS, https ? (long)CURLPROTO_HTTPS : (long)CURLPROTO_HTTP);
#endif
    /* libcurl would follow a Location to any host: redirects are followed below, if at all. */
    SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
    SETOPT(CURLOPT_NOPROXY, NO_PROXY);
    SETOPT(CURLOPT_NOSIGNAL, 1L);
    SETOPT(CURLOPT_SSL_VERIFYPEER, 1L);
    SETOPT(CURLOPT_SSL_VERIFYHOST, 2L);
    SETOPT(CURLOPT_CONNECTTIMEOUT_MS, opts.connect_timeout_ms);
    SETOPT(CURLOPT_TIMEOUT_MS, opts.timeout_ms);
    SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)MIN(opts.max_response, (size_t)INT64_MAX));
    SETOPT(CURLOPT_ERRORBUFFER, errbuf);
    SETOPT(CURLOPT_WRITEFUNCTION, on_data);
    SETOPT(CURLOPT_WRITEDATA, &col);
    SETOPT(CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(CURLOPT_HEADERDATA, &col);
    SETOPT(CURLOPT_HTTPHEADER, hdrs);
    SETOPT(CURLOPT_USERAGENT, "nitride/" NT_VERSION);
    if (opts.ca_file)
        SETOPT(CURLOPT_CAINFO, opts.ca_file);
    if (opts.client_cert)
        SETOPT(CURLOPT_SSLCERT, opts.client_cert);
    if (opts.client_key)
        SETOPT(CURLOPT_SSLKEY, opts.client_key);
    if (opts.bearer_token) {
        if (strpbrk(opts.bearer_token, "\r\n")) {
            (void)snprintf(resp->error, sizeof(resp->error), "bad bearer token");
            return -EINVAL;
        }
        /* libcurl sends it only to the host of the URL (redirects never carry it along). */
        SETOPT(CURLOPT_HTTPAUTH, (long)CURLAUTH_BEARER);
        SETOPT(CURLOPT_XOAUTH2_BEARER, opts.bearer_token);
    }
    if (strcmp(method, "GET") == 0)
        SETOPT(CURLOPT_HTTPGET, 1L);
    else if (strcmp(method, "HEAD") == 0)
        SETOPT(CURLOPT_NOBODY, 1L);
    else {
        if (strcmp(method, "POST") != 0)
            SETOPT(CURLOPT_CUSTOMREQUEST, method);
        SETOPT(CURLOPT_POSTFIELDS, body ? body : "");
        SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? body_len : 0));
    }
#undef SETOPT
    if (cc != CURLE_OK) {
        (void)snprintf(resp->error, sizeof(resp->error), "curl option: %s", curl_easy_strerror(cc));
        return cc == CURLE_OUT_OF_MEMORY ? -ENOMEM : -EINVAL;
    }

    _cleanup_free_ char *location = NULL;
    for (unsigned redirects = 0;; redirects++) {
        char *next = NULL;
        long status = 0;

        cc = curl_easy_perform(h);
        if (cc != CURLE_OK || !opts.follow_redirects)
            break;
        (void)curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        (void)curl_easy_getinfo(h, CURLINFO_REDIRECT_URL, &next);
        if (status < 300 || status > 399 || !next || redirects >= MAX_REDIRECTS ||
            !same_origin(url, next)) {
            if (next && status >= 300 && status <= 399)
                log_debug("HTTP %s %s: not following %ld to %s", method, url, status, next);
            break;
        }
        free(location);
        location = strdup(next);
        if (!location) {
            free(col.p);
            return -ENOMEM;
        }
        /* 303 (and 301/302 after a POST, as browsers do) continue with a GET. */
        if (status == 303 || ((status == 301 || status == 302) && strcmp(method, "POST") == 0)) {
            cc = curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, NULL);
            if (cc == CURLE_OK)
                cc = curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
        }
        if (cc == CURLE_OK)
            cc = curl_easy_setopt(h, CURLOPT_URL, location);
        if (cc != CURLE_OK)
            break;
        /* The next response replaces this one. */
        col.len = 0;
        if (col.p)
            col.p[0] = 0;
        col.retry_after_s = -1;
    }
    if (cc != CURLE_OK) {
        r = map_curl_error(cc, h, &col);
        if (r == -EFBIG)
            (void)snprintf(resp->error, sizeof(resp->error), "response larger than %zu bytes",
                           opts.max_response);
        else
            (void)snprintf(resp->error, sizeof(resp->error), "%s",
                           errbuf[0] ? errbuf : curl_easy_strerror(cc));
        free(col.p);
        log_debug("HTTP %s %s failed: %s", method, url, resp->error);
        return r;
    }

    char *ct = NULL;
    (void)curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
    (void)curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct);
    if (ct) {
        resp->content_type = strdup(ct);
        if (!resp->content_type) {
            free(col.p);
            return -ENOMEM;
        }
    }
    resp->body = col.p;
    resp->body_len = col.len;
    resp->retry_after_s = col.retry_after_s;
    return 0;
}

int nt_http_post_json(const NtHttpOptions *o, const char *url, const json_t *req, long *ret_status,
                      json_t **ret_reply, char err[static 256]) {
    _cleanup_free_ char *body = NULL;
    NtHttpResponse resp = {};
    json_error_t e;
    json_t *j;
    int r;

    err[0] = 0;
    if (!req || !ret_status || !ret_reply)
        return -EINVAL;
    body = json_dumps(req, JSON_COMPACT);
    if (!body) {
        (void)snprintf(err, 256, "cannot encode the request");
        return -ENOMEM;
    }
    r = nt_http_request(o, "POST", url, "application/json", body, strlen(body), &resp);
    if (r < 0) {
        (void)snprintf(err, 256, "%s", resp.error);
        nt_http_response_clear(&resp);
        return r;
    }
    *ret_status = resp.status;
    j = resp.body ? json_loadb((const char *)resp.body, resp.body_len, JSON_REJECT_DUPLICATES, &e)
                  : NULL;
    if (!j || !json_is_object(j)) {
        if (j)
            (void)snprintf(err, 256, "HTTP %ld: reply is not a JSON object", resp.status);
        else if (!resp.body)
            (void)snprintf(err, 256, "HTTP %ld: empty reply, expected a JSON object", resp.status);
        else
            (void)snprintf(err, 256, "HTTP %ld: reply is not JSON: line %d: %s", resp.status,
                           e.line, e.text);
        json_decref(j);
        nt_http_response_clear(&resp);
        return -EBADMSG;
    }
    nt_http_response_clear(&resp);
    *ret_reply = j;
    return 0;
}
