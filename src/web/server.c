/* SPDX-License-Identifier: Apache-2.0 */
/*
 * HTTP server on libmicrohttpd. MHD runs MHD_OPTION_THREAD_POOL_SIZE event-driven threads
 * (epoll where available) that share the listening socket and do all network I/O. Handlers run
 * on as many worker threads of ours: a complete request's connection is suspended
 * (MHD_suspend_connection) and queued; a worker runs the handler and resumes the connection,
 * and MHD sends the reply. So a slow handler (a KDS fetch) holds one worker, never an event
 * thread with the hundreds of connections it serves; and handlers run concurrently even when
 * one event thread accepted all the connections (it accepts up to 10 per wake-up). Per request the
 * access callback is called: first with the headers (we route, rate-limit and check Content-Length
 * there, and may answer at once), then with each piece of body (copied up to max_body), then once
 * more with nothing left, when the handler runs.
 *
 * Inline routes skip the hand-off for requests that need no waiting: the suspend, the worker's
 * wake-up and the resume with its wake-up of the event thread cost two thread switches per
 * request (some 15-20 us on an idle machine, much more on a loaded one, where each wake-up waits
 * for a core). Their handler runs at once on the event thread in that last call, if that thread
 * serves no other live connection (see tl_connections): else, or if the handler returns
 * NT_WEB_REQUEUE (the request needs what may block, e.g. a KDS fetch; the reply is then dropped),
 * the request is suspended and queued like any other, its body kept, and a worker runs the
 * handler (again). Either way the request counts in `answering` from the moment a handler is
 * first given it until its reply is sent, so a stop waits for inline replies too.
 *
 * A body over max_body is answered 413 without storing it: at once, without reading the body,
 * when Content-Length announces it. A chunked upload has no length up front, and MHD 0.9.75
 * accepts a response only before the body or after all of it: past the cap the rest is read and
 * dropped (not stored) up to DISCARD_MAX more bytes, then answered 413; an upload that goes on
 * beyond that is cut off (connection closed without a reply).
 *
 * The listening socket is ours (bound in nt_web_server_start so that bind errors are reported
 * and port 0 works) and handed to MHD with MHD_OPTION_LISTEN_SOCKET.
 */
#include "web/server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>

#include <gnutls/gnutls.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "core/fileio.h"
#include "core/log.h"
#include "core/openssl-util.h"
#include "web/svc-conf.h"

#define DEFAULT_THREADS 4
#define DEFAULT_MAX_BODY (64 * 1024)
#define DEFAULT_TIMEOUT_S 10
#define DEFAULT_MAX_CONNECTIONS 1024
#define DEFAULT_PER_IP 64
#define DISCARD_MAX (1024 * 1024)
#define STOP_DRAIN_MS 3000 /* at stop, the longest wait for replies being written */
#define TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"
#define RATE_SETS 256
#define RATE_WAYS 8

typedef struct Route {
    char *method, *path, *endpoint;
    NtWebHandler handler;
    void *userdata;
    bool inline_run; /* nt_web_server_route_inline() */
} Route;

typedef struct Ctx Ctx;

typedef struct RateEntry {
    char addr[INET6_ADDRSTRLEN + 4];
    double tokens;
    uint64_t last_ns;
    bool used;
} RateEntry;

struct NtWebServer {
    char *listen_host; /* numeric address */
    uint16_t listen_port, bound_port;
    struct sockaddr_storage sa;
    socklen_t sa_len;
    char *cert_pem, *key_pem;
    char *client_ca_pem;         /* given to GnuTLS: makes it ask for client certificates */
    X509_STORE *client_ca_store; /* the same CAs: OpenSSL verifies what clients present */
    bool tls;
    unsigned threads, timeout_s, max_connections, per_ip;
    size_t max_body;
    double rate_per_s;
    unsigned rate_burst;
    NtMetrics *metrics;
    char *m_requests, *m_duration, *m_requeued;

    Route *routes;
    size_t n_routes;

    struct MHD_Daemon *daemon;
    int listen_fd;

    pthread_mutex_t rate_lock;
    RateEntry rate[RATE_SETS][RATE_WAYS];

    /* Handler workers: a request whose body is complete is suspended in MHD and queued here, so
     * that a slow handler occupies a worker, not an MHD event thread with its other
     * connections. */
    pthread_mutex_t q_lock;
    pthread_cond_t q_cond;
    Ctx *q_head, *q_tail;
    bool q_stopping; /* workers drain the queue and exit; new jobs run inline */
    pthread_t *workers;
    unsigned n_workers;
    unsigned answering; /* requests given to a handler whose reply is not yet sent (atomic) */
};

/* Per-request state, *con_cls of MHD. */
typedef enum CtxState {
    CTX_READING, /* headers and body arriving */
    CTX_QUEUED,  /* connection suspended, waiting for or in a worker */
    CTX_DONE,    /* handler finished: reply and handler_r set, connection resumed */
} CtxState;

struct Ctx {
    NtWebServer *server;
    uint64_t start_ns;
    const Route *route; /* NULL: answered */
    uint8_t *body;
    size_t body_len, body_alloc;
    bool too_large;
    size_t discarded;
    char client_addr[INET6_ADDRSTRLEN];
    char rate_key[INET6_ADDRSTRLEN + 4]; /* client_addr, or its /64 for IPv6 */
    CtxState state;
    struct MHD_Connection *conn;
    const char *method, *url; /* MHD's, valid until the request completes */
    NtWebReply reply;
    int handler_r;
    bool suspended;   /* counted in tl_suspended of its event thread */
    bool answering;   /* counted in NtWebServer.answering */
    struct Ctx *next; /* job queue */
};

/* Per MHD event thread (MHD accepts, serves and closes a connection on one thread of its pool):
 * connections open on it, and of those, suspended ones (waiting for a worker). An inline handler
 * runs only when the thread serves no other connection that is not suspended: while it runs, the
 * thread reads and writes nothing, and another client's request must not wait for it (two
 * keep-alive clients that landed on one thread would be served one after the other, with the
 * other threads idle). Such requests go to the workers as before. */
static _Thread_local unsigned tl_connections, tl_suspended;

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe) {
    if (toe == MHD_CONNECTION_NOTIFY_STARTED)
        tl_connections++;
    else if (tl_connections > 0)
        tl_connections--;
}

/* Only this request's connection is live on this thread. tl_connections is 0 if MHD told us of
 * the connection on another thread: then never inline. */
static bool thread_alone(void) {
    return tl_connections >= 1 && tl_connections - MIN(tl_suspended, tl_connections) <= 1;
}

static void ctx_unsuspended(Ctx *ctx) {
    if (ctx->suspended) {
        ctx->suspended = false;
        if (tl_suspended > 0)
            tl_suspended--;
    }
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* --- replies --- */

void nt_web_reply_clear(NtWebReply *r) {
    if (!r)
        return;
    free(r->body);
    for (size_t i = 0; i < r->n_headers; i++) {
        free(r->headers[i][0]);
        free(r->headers[i][1]);
    }
    *r = (NtWebReply){};
}

static int reply_set_body(NtWebReply *r, unsigned status, const char *content_type, char *body,
                          size_t len) {
    free(r->body);
    r->status = status;
    r->content_type = content_type;
    r->body = body;
    r->body_len = len;
    return 0;
}

int nt_web_reply_json(NtWebReply *r, unsigned status, json_t *steal) {
    json_auto_t *j = steal;
    char *s;

    if (!r || !j || status < 100 || status > 599)
        return -EINVAL;
    s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!s)
        return -ENOMEM;
    return reply_set_body(r, status, "application/json", s, strlen(s));
}

int nt_web_reply_error(NtWebReply *r, unsigned status, const char *error, const char *check,
                       const char *expected, const char *found) {
    json_t *j = json_object();
    if (!j)
        return -ENOMEM;
    if ((error && json_object_set_new(j, "error", json_string(error)) < 0) ||
        (check && json_object_set_new(j, "check", json_string(check)) < 0) ||
        (expected && json_object_set_new(j, "expected", json_string(expected)) < 0) ||
        (found && json_object_set_new(j, "found", json_string(found)) < 0)) {
        json_decref(j);
        return -ENOMEM; /* also a non-UTF-8 string; json_string() cannot tell us which */
    }
    return nt_web_reply_json(r, status, j);
}

int nt_web_reply_text(NtWebReply *r, unsigned status, const char *content_type, const char *text) {
    char *s;
    if (!r || !text || status < 100 || status > 599)
        return -EINVAL;
    s = strdup(text);
    if (!s)
        return -ENOMEM;
    return reply_set_body(r, status, content_type ? content_type : "text/plain; charset=utf-8", s,
                          strlen(s));
}

static bool header_value_ok(const char *s) {
    return s && !strpbrk(s, "\r\n");
}

int nt_web_reply_header(NtWebReply *r, const char *name, const char *value) {
    if (!r || !name || !*name || !header_value_ok(name) || strchr(name, ':') ||
        !header_value_ok(value) || strcasecmp(name, "Content-Type") == 0 ||
        strcasecmp(name, "Cache-Control") == 0 || strcasecmp(name, "Content-Length") == 0)
        return -EINVAL;
    if (r->n_headers >= ELEMENTSOF(r->headers))
        return -E2BIG;
    char *n = strdup(name), *v = strdup(value);
    if (!n || !v) {
        free(n);
        free(v);
        return -ENOMEM;
    }
    r->headers[r->n_headers][0] = n;
    r->headers[r->n_headers][1] = v;
    r->n_headers++;
    return 0;
}

/* --- requests --- */

const char *nt_web_request_header(const NtWebRequest *req, const char *name) {
    if (!req || !req->conn || !name)
        return NULL;
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *nt_web_request_query(const NtWebRequest *req, const char *key) {
    if (!req || !req->conn || !key)
        return NULL;
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, key);
}

/* Nesting depth of a JSON text, ignoring brackets inside strings. jansson recurses per level
 * (up to 2048 deep); we refuse far earlier and without parsing. */
static size_t json_depth(const uint8_t *p, size_t n) {
    size_t depth = 0, max = 0;
    bool in_string = false, escape = false;

    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (in_string) {
            if (escape)
                escape = false;
            else if (c == '\\')
                escape = true;
            else if (c == '"')
                in_string = false;
        } else if (c == '"')
            in_string = true;
        else if (c == '{' || c == '[') {
            depth++;
            max = MAX(max, depth);
        } else if ((c == '}' || c == ']') && depth > 0)
            depth--;
    }
    return max;
}

int nt_web_request_json(const NtWebRequest *req, json_t **ret, char err[static 200]) {
    json_error_t e;
    json_t *j;

    if (!req || !ret)
        return -EINVAL;
    if (!req->body || req->body_len == 0) {
        (void)snprintf(err, 200, "body is empty, expected a JSON object");
        return -EBADMSG;
    }
    if (json_depth(req->body, req->body_len) > NT_WEB_JSON_MAX_DEPTH) {
        (void)snprintf(err, 200, "body is nested too deeply (more than %d levels)",
                       NT_WEB_JSON_MAX_DEPTH);
        return -EBADMSG;
    }
    j = json_loadb((const char *)req->body, req->body_len, JSON_REJECT_DUPLICATES, &e);
    if (!j) {
        (void)snprintf(err, 200, "body is not JSON: line %d: %s", e.line, e.text);
        return -EBADMSG;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        (void)snprintf(err, 200, "body must be a JSON object");
        return -EBADMSG;
    }
    *ret = j;
    return 0;
}

/* --- server --- */

static int parse_listen(NtWebServer *s, const char *listen, char **ret_error) {
    _cleanup_free_ char *host = NULL;
    const char *port_s;
    char *end;

    if (!listen || !*listen)
        return svc_errf(ret_error, -EINVAL, "No listen address given");
    if (listen[0] == '[') {
        const char *close = strchr(listen, ']');
        if (!close || close[1] != ':')
            return svc_errf(ret_error, -EINVAL, "Bad listen address '%s' (want [addr]:port)",
                            listen);
        host = strndup(listen + 1, (size_t)(close - listen - 1));
        port_s = close + 2;
    } else {
        const char *colon = strrchr(listen, ':');
        if (!colon || strchr(listen, ':') != colon)
            return svc_errf(ret_error, -EINVAL, "Bad listen address '%s' (want addr:port)", listen);
        host = strndup(listen, (size_t)(colon - listen));
        port_s = colon + 1;
    }
    if (!host)
        return -ENOMEM;
    errno = 0;
    unsigned long port = strtoul(port_s, &end, 10);
    if (!*port_s || *end || errno || port > 65535 || *port_s == '-' || *port_s == '+')
        return svc_errf(ret_error, -EINVAL, "Bad port in listen address '%s'", listen);

    memset(&s->sa, 0, sizeof(s->sa));
    struct sockaddr_in *in4 = (struct sockaddr_in *)&s->sa;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&s->sa;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        s->sa_len = sizeof(*in4);
    } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        s->sa_len = sizeof(*in6);
    } else
        return svc_errf(ret_error, -EINVAL,
                        "Bad address in listen address '%s' (a numeric IPv4 or IPv6 address)",
                        listen);
    s->listen_port = (uint16_t)port;
    s->listen_host = TAKE_PTR(host);
    return 0;
}

static int read_pem(const char *path, char **ret, char **ret_error) {
    _cleanup_fclose_ FILE *f = fopen(path, "re");
    char *buf = NULL;
    size_t len = 0, alloc = 0;

    if (!f)
        return svc_errf(ret_error, -errno, "Failed to open '%s': %s", path, strerror(errno));
    /* No stdio buffer: the key file's bytes end up only in buf, which we wipe. */
    (void)setvbuf(f, NULL, _IONBF, 0);
    for (;;) {
        if (alloc - len < 4096) {
            if (alloc > 1024 * 1024) {
                free(buf);
                return svc_errf(ret_error, -EFBIG, "'%s' is too large for a PEM file", path);
            }
            char *n = realloc(buf, alloc + 65536);
            if (!n) {
                free(buf);
                return -ENOMEM;
            }
            buf = n;
            alloc += 65536;
        }
        size_t k = fread(buf + len, 1, alloc - len - 1, f);
        len += k;
        if (k == 0)
            break;
    }
    if (ferror(f)) {
        free(buf);
        return svc_errf(ret_error, -EIO, "Failed to read '%s'", path);
    }
    buf[len] = 0;
    if (!strstr(buf, "-----BEGIN ")) {
        explicit_bzero(buf, len);
        free(buf);
        return svc_errf(ret_error, -EBADMSG, "'%s' is not a PEM file", path);
    }
    *ret = buf;
    return 0;
}

/* Reads the client CA file twice over: the PEM text for GnuTLS (so that it requests client
 * certificates), and an X509_STORE for OpenSSL, which verifies them. */
static int load_client_ca(NtWebServer *s, const char *path, char **ret_error) {
    _cleanup_(BIO_free_allp) BIO *bio = NULL;
    int r, n = 0;

    r = read_pem(path, &s->client_ca_pem, ret_error);
    if (r < 0)
        return r;
    s->client_ca_store = X509_STORE_new();
    bio = BIO_new_mem_buf(s->client_ca_pem, -1);
    if (!s->client_ca_store || !bio)
        return -ENOMEM;
    for (;;) {
        _cleanup_(X509_freep) X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (!x)
            break;
        if (X509_STORE_add_cert(s->client_ca_store, x) != 1)
            return svc_errf(ret_error, nt_openssl_error(-EIO, "client CA"),
                            "Failed to add a certificate of '%s' to the client CA store", path);
        n++;
    }
    ERR_clear_error(); /* the end of the PEM stream */
    if (n == 0)
        return svc_errf(ret_error, -EBADMSG, "'%s' holds no PEM certificate (client CA)", path);
    return 0;
}

int nt_web_request_client_cert(const NtWebRequest *req, char *subject, size_t size) {
    const NtWebServer *s = req ? req->server : NULL;
    const union MHD_ConnectionInfo *ci;
    const gnutls_datum_t *peers;
    unsigned n_peers = 0;
    _cleanup_(X509_freep) X509 *leaf = NULL;
    _cleanup_(sk_X509_pop_freep) STACK_OF(X509) *chain = NULL;
    _cleanup_(X509_STORE_CTX_freep) X509_STORE_CTX *vctx = NULL;
    _cleanup_(BIO_free_allp) BIO *out = NULL;
    char *text = NULL;
    long len;

    if (!s || !req->conn || !subject || size == 0)
        return -EINVAL;
    if (!s->client_ca_store)
        return -EOPNOTSUPP;
    ci = MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    if (!ci || !ci->tls_session)
        return -ENOENT;
    peers = gnutls_certificate_get_peers((gnutls_session_t)ci->tls_session, &n_peers);
    if (!peers || n_peers == 0)
        return -ENOENT;
    chain = sk_X509_new_null();
    if (!chain)
        return -ENOMEM;
    for (unsigned i = 0; i < n_peers && i < 10; i++) {
        const unsigned char *p = peers[i].data;
        X509 *x = d2i_X509(NULL, &p, (long)peers[i].size);
        if (!x || p != peers[i].data + peers[i].size) {
            X509_free(x);
            ERR_clear_error();
            return -EKEYREJECTED;
        }
        if (i == 0)
            leaf = x;
        else if (!sk_X509_push(chain, x)) {
            X509_free(x);
            return -ENOMEM;
        }
    }
    vctx = X509_STORE_CTX_new();
    if (!vctx || X509_STORE_CTX_init(vctx, s->client_ca_store, leaf, chain) != 1)
        return nt_openssl_error(-ENOMEM, "client certificate");
    (void)X509_STORE_CTX_set_purpose(vctx, X509_PURPOSE_SSL_CLIENT);
    if (X509_verify_cert(vctx) != 1) {
        log_debug("Client certificate from %s refused: %s", req->client_addr,
                  X509_verify_cert_error_string(X509_STORE_CTX_get_error(vctx)));
        ERR_clear_error();
        return -EKEYREJECTED;
    }
    out = BIO_new(BIO_s_mem());
    if (!out || X509_NAME_print_ex(out, X509_get_subject_name(leaf), 0, XN_FLAG_RFC2253) < 0)
        return nt_openssl_error(-ENOMEM, "client certificate subject");
    len = BIO_get_mem_data(out, &text);
    if (len < 0 || (size_t)len >= size)
        return -ENOBUFS;
    memcpy(subject, text, (size_t)len);
    subject[len] = 0;
    return 0;
}

int nt_web_server_new(const NtWebConfig *cfg, NtWebServer **ret, char **ret_error) {
    _cleanup_(nt_web_server_freep) NtWebServer *s = NULL;
    int r;

    if (ret_error)
        *ret_error = NULL;
    if (!cfg || !ret)
        return -EINVAL;
    s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->listen_fd = -EBADF;
    pthread_mutex_init(&s->rate_lock, NULL);
    pthread_mutex_init(&s->q_lock, NULL);
    pthread_cond_init(&s->q_cond, NULL);

    r = parse_listen(s, cfg->listen, ret_error);
    if (r < 0)
        return r;
    if (!!cfg->tls_cert_file != !!cfg->tls_key_file)
        return svc_errf(ret_error, -EINVAL, "TLS needs both a certificate and a key file");
    if (cfg->tls_cert_file) {
        if (cfg->plain_http)
            return svc_errf(ret_error, -EINVAL,
                            "Both TLS files and plain HTTP configured; choose one");
        r = read_pem(cfg->tls_cert_file, &s->cert_pem, ret_error);
        if (r < 0)
            return r;
        r = read_pem(cfg->tls_key_file, &s->key_pem, ret_error);
        if (r < 0)
            return r;
        s->tls = true;
        if (cfg->tls_client_ca_file) {
            r = load_client_ca(s, cfg->tls_client_ca_file, ret_error);
            if (r < 0)
                return r;
        }
    } else if (!cfg->plain_http)
        return svc_errf(ret_error, -EINVAL,
                        "No TLS certificate and key configured, and plain HTTP not explicitly "
                        "enabled");
    else if (cfg->tls_client_ca_file)
        return svc_errf(ret_error, -EINVAL,
                        "A client CA (client certificates) needs TLS, not plain HTTP");

    s->threads = cfg->threads ? MIN(cfg->threads, 256u) : DEFAULT_THREADS;
    s->max_body = cfg->max_body ? cfg->max_body : DEFAULT_MAX_BODY;
    s->timeout_s = cfg->timeout_s ? cfg->timeout_s : DEFAULT_TIMEOUT_S;
    s->max_connections = cfg->max_connections ? cfg->max_connections : DEFAULT_MAX_CONNECTIONS;
    s->per_ip = cfg->per_ip_connections ? cfg->per_ip_connections : DEFAULT_PER_IP;
    if (cfg->rate_per_s < 0 || !isfinite(cfg->rate_per_s))
        return svc_errf(ret_error, -EINVAL, "Bad rate limit");
    if (cfg->rate_per_s > 0 && cfg->rate_burst > 0) {
        s->rate_per_s = cfg->rate_per_s;
        s->rate_burst = cfg->rate_burst;
    }
    if (cfg->metrics) {
        const char *prefix = cfg->metrics_prefix ? cfg->metrics_prefix : "nitride_http";
        s->metrics = cfg->metrics;
        if (asprintf(&s->m_requests, "%s_http_requests_total", prefix) < 0) {
            s->m_requests = NULL;
            return -ENOMEM;
        }
        if (asprintf(&s->m_duration, "%s_http_request_duration_seconds", prefix) < 0) {
            s->m_duration = NULL;
            return -ENOMEM;
        }
        r = nt_metrics_declare(s->metrics, s->m_requests, "counter",
                               "HTTP requests by endpoint and result.", NULL, 0);
        if (r < 0 && r != -EEXIST)
            return svc_errf(ret_error, r, "Bad metrics prefix '%s'", prefix);
        r = nt_metrics_declare(s->metrics, s->m_duration, "histogram",
                               "HTTP request latency by endpoint, in seconds.", NULL, 0);
        if (r < 0 && r != -EEXIST)
            return svc_errf(ret_error, r, "Bad metrics prefix '%s'", prefix);
        if (asprintf(&s->m_requeued, "%s_http_requeued_total", prefix) < 0) {
            s->m_requeued = NULL;
            return -ENOMEM;
        }
        r = nt_metrics_declare(s->metrics, s->m_requeued, "counter",
                               "Requests of inline routes handed on to a worker, by endpoint.",
                               NULL, 0);
        if (r < 0 && r != -EEXIST)
            return svc_errf(ret_error, r, "Bad metrics prefix '%s'", prefix);
    }
    *ret = TAKE_PTR(s);
    return 0;
}

static int route_add(NtWebServer *s, const char *method, const char *path, const char *endpoint,
                     NtWebHandler h, void *userdata, bool inline_run) {
    if (!s || !method || !path || path[0] != '/' || !h)
        return -EINVAL;
    if (s->daemon)
        return -EBUSY;
    for (size_t i = 0; i < s->n_routes; i++)
        if (strcmp(s->routes[i].method, method) == 0 && strcmp(s->routes[i].path, path) == 0)
            return -EEXIST;
    Route *n = realloc(s->routes, (s->n_routes + 1) * sizeof(Route));
    if (!n)
        return -ENOMEM;
    s->routes = n;
    Route rt = {.handler = h, .userdata = userdata, .inline_run = inline_run};
    rt.method = strdup(method);
    rt.path = strdup(path);
    rt.endpoint = strdup(endpoint ? endpoint : path);
    if (!rt.method || !rt.path || !rt.endpoint) {
        free(rt.method);
        free(rt.path);
        free(rt.endpoint);
        return -ENOMEM;
    }
    s->routes[s->n_routes++] = rt;
    return 0;
}

int nt_web_server_route(NtWebServer *s, const char *method, const char *path, const char *endpoint,
                        NtWebHandler h, void *userdata) {
    return route_add(s, method, path, endpoint, h, userdata, false);
}

int nt_web_server_route_inline(NtWebServer *s, const char *method, const char *path,
                               const char *endpoint, NtWebHandler h, void *userdata) {
    return route_add(s, method, path, endpoint, h, userdata, true);
}

static const char *result_for_status(unsigned status) {
    if (status < 400)
        return "ok";
    switch (status) {
    case 400:
        return "malformed";
    case 401:
    case 403:
        return "denied";
    case 404:
        return "not_found";
    case 405:
        return "method";
    case 413:
        return "too_large";
    case 429:
        return "rate_limited";
    default:
        return status >= 500 ? "error" : "client_error";
    }
}

static bool rate_allow(NtWebServer *s, const char *addr, unsigned *ret_retry_s) {
    uint64_t h = 1469598103934665603ull, now = now_ns();
    RateEntry *set, *e = NULL, *victim = NULL;

    for (const char *p = addr; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    pthread_mutex_lock(&s->rate_lock);
    set = s->rate[h % RATE_SETS];
    for (size_t i = 0; i < RATE_WAYS; i++) {
        if (set[i].used && strcmp(set[i].addr, addr) == 0) {
            e = &set[i];
            break;
        }
        if (!victim || !set[i].used || (victim->used && set[i].last_ns < victim->last_ns))
            victim = &set[i];
    }
    if (!e) {
        /* Evicting the least recently seen address gives it a full bucket when it returns:
         * generous to it, and bounded memory whatever the number of client addresses. */
        e = victim;
        (void)snprintf(e->addr, sizeof(e->addr), "%s", addr);
        e->tokens = s->rate_burst;
        e->last_ns = now;
        e->used = true;
    }
    e->tokens =
        MIN((double)s->rate_burst, e->tokens + (double)(now - e->last_ns) / 1e9 * s->rate_per_s);
    e->last_ns = now;
    bool ok = e->tokens >= 1.0;
    if (ok)
        e->tokens -= 1.0;
    else
        *ret_retry_s = (unsigned)MAX(1.0, ceil((1.0 - e->tokens) / s->rate_per_s));
    pthread_mutex_unlock(&s->rate_lock);
    return ok;
}

static void record_metrics(NtWebServer *s, Ctx *ctx, const char *endpoint, const char *result) {
    char ep[128], res[64], labels[256];

    if (!s->metrics)
        return;
    if (nt_metrics_label_escape(endpoint, ep, sizeof(ep)) < 0)
        strcpy(ep, "other");
    if (nt_metrics_label_escape(result, res, sizeof(res)) < 0)
        strcpy(res, "other");
    (void)snprintf(labels, sizeof(labels), "endpoint=\"%s\",result=\"%s\"", ep, res);
    nt_metrics_add(s->metrics, s->m_requests, labels, 1);
    (void)snprintf(labels, sizeof(labels), "endpoint=\"%s\"", ep);
    nt_metrics_observe(s->metrics, s->m_duration, labels, (double)(now_ns() - ctx->start_ns) / 1e9);
}

/* Sends reply (consumed). Returns the MHD result. */
static enum MHD_Result send_reply(NtWebServer *s, struct MHD_Connection *c, Ctx *ctx,
                                  const char *endpoint, NtWebReply *reply) {
    struct MHD_Response *resp;
    enum MHD_Result ret;

    if (!reply->body) {
        /* A handler that filled headers only (e.g. 204): an empty JSON-typed body. */
        reply->body = strdup("");
        reply->body_len = 0;
        if (!reply->content_type)
            reply->content_type = "application/json";
        if (!reply->body) {
            nt_web_reply_clear(reply);
            return MHD_NO;
        }
    }
    if (reply->status < 100 || reply->status > 599)
        reply->status = 500;
    resp = MHD_create_response_from_buffer(reply->body_len, reply->body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        nt_web_reply_clear(reply);
        return MHD_NO;
    }
    reply->body = NULL; /* now MHD's */
    if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                                reply->content_type ? reply->content_type : "application/json") !=
            MHD_YES ||
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") != MHD_YES) {
        MHD_destroy_response(resp);
        nt_web_reply_clear(reply);
        return MHD_NO;
    }
    for (size_t i = 0; i < reply->n_headers; i++)
        if (MHD_add_response_header(resp, reply->headers[i][0], reply->headers[i][1]) != MHD_YES)
            log_debug("Dropping response header '%s'.", reply->headers[i][0]);
    record_metrics(s, ctx, endpoint,
                   reply->result ? reply->result : result_for_status(reply->status));
    ret = MHD_queue_response(c, reply->status, resp);
    MHD_destroy_response(resp);
    nt_web_reply_clear(reply);
    return ret;
}

static enum MHD_Result send_error(NtWebServer *s, struct MHD_Connection *c, Ctx *ctx,
                                  const char *endpoint, unsigned status, const char *error,
                                  const char *hname, const char *hvalue) {
    NtWebReply reply = {};
    if (nt_web_reply_error(&reply, status, error, NULL, NULL, NULL) < 0)
        return MHD_NO;
    if (hname && nt_web_reply_header(&reply, hname, hvalue) < 0) {
        nt_web_reply_clear(&reply);
        return MHD_NO;
    }
    return send_reply(s, c, ctx, endpoint, &reply);
}

static void client_address(struct MHD_Connection *c, Ctx *ctx) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;

    strcpy(ctx->client_addr, "unknown");
    if (sa && sa->sa_family == AF_INET)
        (void)inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, ctx->client_addr,
                        sizeof(ctx->client_addr));
    else if (sa && sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a))
            (void)inet_ntop(AF_INET, &a->s6_addr[12], ctx->client_addr, sizeof(ctx->client_addr));
        else {
            /* One host usually owns a whole /64: rate-limit per /64, not per address. */
            struct in6_addr net = *a;
            char buf[INET6_ADDRSTRLEN];
            memset(&net.s6_addr[8], 0, 8);
            (void)inet_ntop(AF_INET6, a, ctx->client_addr, sizeof(ctx->client_addr));
            if (inet_ntop(AF_INET6, &net, buf, sizeof(buf)))
                (void)snprintf(ctx->rate_key, sizeof(ctx->rate_key), "%s/64", buf);
            return;
        }
    }
    (void)snprintf(ctx->rate_key, sizeof(ctx->rate_key), "%s", ctx->client_addr);
}

typedef struct Framing {
    unsigned n_content_length, n_transfer_encoding;
} Framing;

static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value) {
    Framing *f = cls;
    if (key && strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0)
        f->n_content_length++;
    else if (key && strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0)
        f->n_transfer_encoding++;
    return MHD_YES;
}

/* pass 0: exact routes; pass 1: prefix routes (their path ends in "/" + "*"). */
static bool route_matches(const Route *rt, const char *url, bool prefix) {
    size_t n = strlen(rt->path);
    bool is_prefix = n >= 2 && rt->path[n - 1] == '*' && rt->path[n - 2] == '/';
    if (!prefix)
        return !is_prefix && strcmp(rt->path, url) == 0;
    return is_prefix && strncmp(rt->path, url, n - 1) == 0 && strlen(url) > n - 1;
}

static enum MHD_Result first_call(NtWebServer *s, struct MHD_Connection *c, Ctx *ctx,
                                  const char *url, const char *method) {
    const Route *route = NULL;
    bool path_known = false;
    char allow[256] = "";
    unsigned retry_s = 0;

    if (s->rate_burst > 0 && !rate_allow(s, ctx->rate_key, &retry_s)) {
        char v[32];
        (void)snprintf(v, sizeof(v), "%u", retry_s);
        return send_error(s, c, ctx, "rate_limited", 429, "too many requests", "Retry-After", v);
    }
    /* Request smuggling: MHD frames the body by the first Content-Length (or by the chunking),
     * a proxy in front may pick another one. Two Content-Length headers, or Transfer-Encoding
     * with Content-Length, are refused (RFC 9112 6.3), and the connection closed. */
    Framing f = {};
    (void)MHD_get_connection_values(c, MHD_HEADER_KIND, count_framing, &f);
    if (f.n_content_length > 1 || (f.n_content_length > 0 && f.n_transfer_encoding > 0))
        return send_error(s, c, ctx, "unknown", 400, "ambiguous request framing", "Connection",
                          "close");
    /* Exact paths first; only when none matches, the prefix routes ("/a/b/" + "*"). */
    for (int pass = 0; pass < 2 && !path_known; pass++)
        for (size_t i = 0; i < s->n_routes; i++) {
            if (!route_matches(&s->routes[i], url, pass == 1))
                continue;
            path_known = true;
            if (strcmp(s->routes[i].method, method) == 0)
                route = &s->routes[i];
            size_t n = strlen(allow);
            (void)snprintf(allow + n, sizeof(allow) - n, "%s%s", n ? ", " : "",
                           s->routes[i].method);
        }
    if (!path_known)
        return send_error(s, c, ctx, "unknown", 404, "not found", NULL, NULL);
    if (!route)
        return send_error(s, c, ctx, "unknown", 405, "method not allowed", "Allow", allow);

    const char *cl =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (errno || *end || n > s->max_body)
            return send_error(s, c, ctx, route->endpoint, 413, "request body too large", NULL,
                              NULL);
    }
    ctx->route = route;
    return MHD_YES;
}

/* Runs the route's handler for a complete request: on a worker, or on the event thread
 * (inline_run: an inline route's first run; or any run when stopping, then not inline_run). */
static void run_handler(Ctx *ctx, bool inline_run) {
    NtWebRequest req = {
        .method = ctx->method,
        .path = ctx->url,
        .body = ctx->body ? ctx->body : (const uint8_t *)"",
        .body_len = ctx->body_len,
        .client_addr = ctx->client_addr,
        .inline_run = inline_run,
        .conn = ctx->conn,
        .server = ctx->server,
    };
    ctx->handler_r = ctx->route->handler(ctx->route->userdata, &req, &ctx->reply);
    ctx->state = CTX_DONE;
}

/* Sends the handler's reply, or a 500 if it failed (on the MHD thread of the connection). */
static enum MHD_Result finish(NtWebServer *s, struct MHD_Connection *c, Ctx *ctx) {
    const Route *route = ctx->route;
    int r = ctx->handler_r;

    ctx->route = NULL; /* answered */
    if (r < 0 || r == NT_WEB_REQUEUE || ctx->reply.status == 0) {
        nt_web_reply_clear(&ctx->reply);
        if (r == NT_WEB_REQUEUE)
            log_error("Handler of %s %s asked for a worker on a worker.", ctx->method, route->path);
        if (r >= 0)
            r = -EINVAL;
        log_error_errno(r, "Handler of %s %s failed: %m", ctx->method, route->path);
        return send_error(s, c, ctx, route->endpoint, 500, "internal error", NULL, NULL);
    }
    return send_reply(s, c, ctx, route->endpoint, &ctx->reply);
}

static void *worker(void *userdata) {
    NtWebServer *s = userdata;

    for (;;) {
        Ctx *ctx;
        pthread_mutex_lock(&s->q_lock);
        while (!s->q_head && !s->q_stopping)
            pthread_cond_wait(&s->q_cond, &s->q_lock);
        ctx = s->q_head;
        if (ctx) {
            s->q_head = ctx->next;
            if (!s->q_head)
                s->q_tail = NULL;
        }
        pthread_mutex_unlock(&s->q_lock);
        if (!ctx)
            return NULL; /* stopping and drained */
        run_handler(ctx, false);
        MHD_resume_connection(ctx->conn);
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls) {
    NtWebServer *s = cls;
    Ctx *ctx = *con_cls;

    if (!ctx) {
        ctx = calloc(1, sizeof(*ctx));
        if (!ctx)
            return MHD_NO;
        ctx->server = s;
        ctx->start_ns = now_ns();
        client_address(c, ctx);
        *con_cls = ctx;
        return first_call(s, c, ctx, url, method);
    }
    if (!ctx->route) {
        /* Answered in the first call; MHD may still hand us body pieces: drop them. */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (!ctx->too_large && n > s->max_body - ctx->body_len) {
            ctx->too_large = true;
            if (ctx->body)
                explicit_bzero(ctx->body, ctx->body_alloc);
            free(ctx->body);
            ctx->body = NULL;
            ctx->body_len = ctx->body_alloc = 0;
        }
        if (ctx->too_large) {
            ctx->discarded += n;
            if (ctx->discarded > DISCARD_MAX) {
                log_debug("Chunked upload from %s exceeds %zu bytes, closing the connection.",
                          ctx->client_addr, s->max_body + DISCARD_MAX);
                return MHD_NO;
            }
            return MHD_YES;
        }
        if (ctx->body_len + n + 1 > ctx->body_alloc) {
            size_t a = MAX(ctx->body_alloc * 2, ctx->body_len + n + 1);
            a = MIN(a, s->max_body + 1);
            /* Not realloc: the old copy is wiped (see on_completed). */
            uint8_t *b = malloc(a);
            if (!b)
                return MHD_NO;
            if (ctx->body) {
                memcpy(b, ctx->body, ctx->body_len);
                explicit_bzero(ctx->body, ctx->body_alloc);
                free(ctx->body);
            }
            ctx->body = b;
            ctx->body_alloc = a;
        }
        memcpy(ctx->body + ctx->body_len, upload_data, n);
        ctx->body_len += n;
        ctx->body[ctx->body_len] = 0;
        return MHD_YES;
    }
    if (ctx->too_large) {
        const Route *route = ctx->route;
        ctx->route = NULL; /* answered */
        return send_error(s, c, ctx, route->endpoint, 413, "request body too large", NULL, NULL);
    }

    if (ctx->state == CTX_DONE) {
        ctx_unsuspended(ctx); /* resumed: back on this thread */
        return finish(s, c, ctx);
    }
    if (ctx->state == CTX_QUEUED) /* a spurious call while suspended: nothing to do */
        return MHD_YES;

    /* The whole request is here. */
    ctx->conn = c;
    ctx->method = method;
    ctx->url = url;
    ctx->answering = true;
    __atomic_add_fetch(&s->answering, 1, __ATOMIC_SEQ_CST);
    if (ctx->route->inline_run && thread_alone()) {
        run_handler(ctx, true);
        if (ctx->handler_r != NT_WEB_REQUEUE)
            return finish(s, c, ctx);
        /* It needs a worker: drop what it replied, keep the request as it came. */
        nt_web_reply_clear(&ctx->reply);
        ctx->handler_r = 0;
        if (s->metrics) {
            char ep[128], labels[160];
            if (nt_metrics_label_escape(ctx->route->endpoint, ep, sizeof(ep)) < 0)
                strcpy(ep, "other");
            (void)snprintf(labels, sizeof(labels), "endpoint=\"%s\"", ep);
            nt_metrics_add(s->metrics, s->m_requeued, labels, 1);
        }
    }
    /* Hand it to a worker. */
    pthread_mutex_lock(&s->q_lock);
    if (s->q_stopping) {
        pthread_mutex_unlock(&s->q_lock);
        run_handler(ctx, false);
        return finish(s, c, ctx);
    }
    ctx->state = CTX_QUEUED;
    ctx->suspended = true;
    tl_suspended++;
    MHD_suspend_connection(c);
    ctx->next = NULL;
    if (s->q_tail)
        s->q_tail->next = ctx;
    else
        s->q_head = ctx;
    s->q_tail = ctx;
    pthread_cond_signal(&s->q_cond);
    pthread_mutex_unlock(&s->q_lock);
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    NtWebServer *s = cls;
    Ctx *ctx = *con_cls;
    if (!ctx)
        return;
    if (ctx->answering)
        __atomic_sub_fetch(&s->answering, 1, __ATOMIC_SEQ_CST);
    ctx_unsuspended(ctx);
    nt_web_reply_clear(&ctx->reply);
    /* Bodies may carry secrets (kmsd's admin API takes secret values): wiped, not just freed. */
    if (ctx->body)
        explicit_bzero(ctx->body, ctx->body_alloc);
    free(ctx->body);
    free(ctx);
    *con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap) _printf_(2, 0);
static void mhd_log(void *cls, const char *fmt, va_list ap) {
    char buf[512];
    (void)vsnprintf(buf, sizeof(buf), fmt, ap);
    buf[strcspn(buf, "\n")] = 0;
    log_debug("microhttpd: %s", buf);
}

int nt_web_server_start(NtWebServer *s, char **ret_error) {
    _cleanup_close_ int fd = -EBADF;
    struct sockaddr_storage bound;
    socklen_t bound_len = sizeof(bound);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME;
    int one = 1;

    if (ret_error)
        *ret_error = NULL;
    if (!s)
        return -EINVAL;
    if (s->daemon)
        return -EBUSY;

    fd = socket(s->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return svc_errf(ret_error, -errno, "Failed to create socket: %s", strerror(errno));
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (s->sa.ss_family == AF_INET6)
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&s->sa, s->sa_len) < 0)
        return svc_errf(ret_error, -errno, "Failed to bind %s port %u: %s", s->listen_host,
                        s->listen_port, strerror(errno));
    if (listen(fd, 1024) < 0)
        return svc_errf(ret_error, -errno, "Failed to listen: %s", strerror(errno));
    if (getsockname(fd, (struct sockaddr *)&bound, &bound_len) < 0)
        return svc_errf(ret_error, -errno, "getsockname: %s", strerror(errno));
    s->bound_port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                      : ((struct sockaddr_in *)&bound)->sin_port);

    if (MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES)
        flags |= MHD_USE_EPOLL;
    else
        flags |= MHD_USE_POLL;
    if (s->sa.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    if (s->tls)
        flags |= MHD_USE_TLS;

    struct MHD_OptionItem opts[] = {
        {MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_log, NULL},
        {MHD_OPTION_LISTEN_SOCKET, fd, NULL},
        {MHD_OPTION_THREAD_POOL_SIZE, s->threads, NULL},
        {MHD_OPTION_CONNECTION_TIMEOUT, s->timeout_s, NULL},
        {MHD_OPTION_CONNECTION_LIMIT, s->max_connections, NULL},
        {MHD_OPTION_PER_IP_CONNECTION_LIMIT, s->per_ip, NULL},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, s},
        {MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection, s},
        {s->tls ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, 0, s->cert_pem},
        {s->tls ? MHD_OPTION_HTTPS_MEM_KEY : MHD_OPTION_END, 0, s->key_pem},
        /* GnuTLS's NORMAL still offers TLS 1.0 and 1.1. */
        {s->tls ? MHD_OPTION_HTTPS_PRIORITIES : MHD_OPTION_END, 0, (void *)TLS_PRIORITIES},
        /* Makes GnuTLS request (not require) a client certificate; OpenSSL verifies it. */
        {s->client_ca_pem ? MHD_OPTION_HTTPS_MEM_TRUST : MHD_OPTION_END, 0, s->client_ca_pem},
        {MHD_OPTION_END, 0, NULL},
    };
    s->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s, MHD_OPTION_ARRAY, opts,
                                 MHD_OPTION_END);
    if (!s->daemon)
        return svc_errf(ret_error, -EIO,
                        "Failed to start the HTTP server on %s port %u (bad TLS certificate or "
                        "key?)",
                        s->listen_host, s->bound_port);
    s->listen_fd = TAKE_FD(fd);

    s->workers = calloc(s->threads, sizeof(pthread_t));
    if (!s->workers) {
        nt_web_server_stop(s);
        return -ENOMEM;
    }
    s->q_stopping = false;
    for (s->n_workers = 0; s->n_workers < s->threads; s->n_workers++) {
        int k = pthread_create(&s->workers[s->n_workers], NULL, worker, s);
        if (k != 0) {
            nt_web_server_stop(s);
            return svc_errf(ret_error, -k, "Failed to start a worker thread: %s", strerror(k));
        }
    }
    /* GnuTLS holds its own parsed copy of the key now. */
    if (s->key_pem) {
        explicit_bzero(s->key_pem, strlen(s->key_pem));
        free(s->key_pem);
        s->key_pem = NULL;
    }

    if (s->tls)
        log_info("HTTP server listening on %s%s%s:%u (TLS), %u threads.",
                 s->sa.ss_family == AF_INET6 ? "[" : "", s->listen_host,
                 s->sa.ss_family == AF_INET6 ? "]" : "", s->bound_port, s->threads);
    else
        log_warning("HTTP server listening on %s%s%s:%u (PLAIN HTTP (explicitly configured)), "
                    "%u threads.",
                    s->sa.ss_family == AF_INET6 ? "[" : "", s->listen_host,
                    s->sa.ss_family == AF_INET6 ? "]" : "", s->bound_port, s->threads);
    return 0;
}

uint16_t nt_web_server_port(const NtWebServer *s) {
    return s && s->daemon ? s->bound_port : 0;
}

void nt_web_server_stop(NtWebServer *s) {
    if (!s || !s->daemon)
        return;
    /* Workers finish the queued requests (resuming their connections) and exit; a request
     * completing after this runs its handler inline. Only then may MHD stop: it must not be
     * stopped with suspended connections. */
    pthread_mutex_lock(&s->q_lock);
    s->q_stopping = true;
    pthread_cond_broadcast(&s->q_cond);
    pthread_mutex_unlock(&s->q_lock);
    for (unsigned i = 0; i < s->n_workers; i++)
        (void)pthread_join(s->workers[i], NULL);
    free(s->workers);
    s->workers = NULL;
    s->n_workers = 0;
    /* A resumed connection's reply is written by MHD's event thread some time after the worker
     * resumed it: stopping MHD now would cut it off. Wait (bounded) until every request that
     * reached a handler has been answered. */
    for (unsigned i = 0;
         i < STOP_DRAIN_MS / 5 && __atomic_load_n(&s->answering, __ATOMIC_SEQ_CST) > 0; i++)
        (void)usleep(5 * 1000);
    /* MHD_stop_daemon closes the listening socket it was given. */
    MHD_stop_daemon(s->daemon);
    s->daemon = NULL;
    s->listen_fd = -EBADF;
}

NtWebServer *nt_web_server_free(NtWebServer *s) {
    if (!s)
        return NULL;
    nt_web_server_stop(s);
    for (size_t i = 0; i < s->n_routes; i++) {
        free(s->routes[i].method);
        free(s->routes[i].path);
        free(s->routes[i].endpoint);
    }
    free(s->routes);
    free(s->listen_host);
    free(s->cert_pem);
    free(s->client_ca_pem);
    X509_STORE_free(s->client_ca_store);
    if (s->key_pem) {
        explicit_bzero(s->key_pem, strlen(s->key_pem));
        free(s->key_pem);
    }
    free(s->m_requests);
    free(s->m_duration);
    free(s->m_requeued);
    pthread_mutex_destroy(&s->rate_lock);
    pthread_mutex_destroy(&s->q_lock);
    pthread_cond_destroy(&s->q_cond);
    free(s);
    return NULL;
}
