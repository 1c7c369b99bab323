/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A small HTTP(S)+JSON server on libmicrohttpd (TLS by its GnuTLS backend: cert and key are PEM
 * files) for nitride-attestd and nitride-kmsd. MHD runs an internal thread pool of event-driven
 * (epoll) threads: a slow or garbage connection costs a socket and a little memory, never a
 * thread, so floods cannot starve a valid request. Limits: connection timeout, total and per-IP
 * connections, request body size (a larger body is answered 413 without reading it all), and an
 * optional per-client-address token bucket (429 + Retry-After).
 *
 * Every response carries Content-Type and "Cache-Control: no-store". Errors the server produces
 * itself (404, 405, 413, 429, 500) are JSON objects {"error": "..."}. Handlers run on the pool
 * threads concurrently and must be thread-safe. Exception: what MHD refuses before a request
 * reaches us (malformed HTTP, header too large, unparsable Content-Length) gets MHD's own short
 * reply and is not counted in the metrics; connections over the limits are closed unanswered.
 * Listening on "[::]:port" is IPv6 only (IPV6_V6ONLY); listen on 0.0.0.0 for IPv4.
 * TLS: versions 1.2 and 1.3 only (GnuTLS priorities "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2").
 * Client certificates: with tls_client_ca_file the server asks clients for a certificate (it
 * does not require one: the TLS handshake succeeds without); a handler that wants a client's
 * identity calls nt_web_request_client_cert(), which verifies the presented chain with OpenSSL
 * against those CAs.
 * Routes: a path whose last segment is "*" (e.g. "/v1/secrets/" followed by "*") matches every
 * longer path with that prefix; the handler reads req->path. Exact routes are matched first.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/macro.h"
#include "web/metrics.h"

typedef struct NtWebServer NtWebServer;

typedef struct NtWebRequest {
    const char *method; /* "GET", "POST" */
    const char *path;   /* without query string */
    const uint8_t *body;
    size_t body_len;         /* complete body (NUL-terminated copy too), capped by max_body */
    const char *client_addr; /* "127.0.0.1" / "::1" */
    bool inline_run; /* on the connection's MHD event thread (an inline route's first run): must
                      * not block; may return NT_WEB_REQUEUE. false on a worker. */
    void *conn;      /* internal: for header lookup */
    void *server;    /* internal: the NtWebServer (client certificates) */
} NtWebRequest;

/* Request header value (case-insensitive name), NULL if absent. Valid during the handler. */
const char *nt_web_request_header(const NtWebRequest *req, const char *name);
/* Query-string argument (URL-decoded), NULL if absent. Valid during the handler. */
const char *nt_web_request_query(const NtWebRequest *req, const char *key);

/* The client's TLS certificate: when the client presented one and it verifies (purpose TLS
 * client, validity at now) against the configured tls_client_ca_file, writes its subject (RFC 2253
 * form, e.g. "CN=admin,O=Example") into subject and returns 0. Returns -ENOENT (no certificate
 * presented, or plain HTTP), -EKEYREJECTED (a certificate that does not verify), -EOPNOTSUPP (no
 * client CA configured), -ENOBUFS (subject longer than size), -ENOMEM, -EIO. Valid during the
 * handler. */
int nt_web_request_client_cert(const NtWebRequest *req, char *subject, size_t size);

#define NT_WEB_JSON_MAX_DEPTH 32

/* Parses the body as one JSON object (jansson, JSON_REJECT_DUPLICATES, depth bounded by
 * NT_WEB_JSON_MAX_DEPTH, size bounded by max_body). Returns 0 and *ret (owned by the caller), or
 * -EBADMSG with a message in err (size 200) such as "body is not JSON: line 1: ..." / "body must
 * be a JSON object" / "body is nested too deeply". */
int nt_web_request_json(const NtWebRequest *req, json_t **ret, char err[static 200]);

typedef struct NtWebReply { /* filled by handlers; the server owns and frees it */
    unsigned status;
    char *body;
    size_t body_len;
    const char *content_type; /* static string */
    char *headers[8][2];      /* malloc'd name/value */
    size_t n_headers;
    const char *result; /* metrics label (static), e.g. "ok", "policy", "malformed"; default
                           derived from status */
} NtWebReply;

/* The reply functions replace any body set before. Return 0 or -ENOMEM (-EINVAL for a bad
 * argument). */
/* Compact JSON; takes the reference of steal (also on failure). */
int nt_web_reply_json(NtWebReply *r, unsigned status, json_t *steal);
/* {"error": error, "check": check, "expected": expected, "found": found} (NULL members omitted) */
int nt_web_reply_error(NtWebReply *r, unsigned status, const char *error, const char *check,
                       const char *expected, const char *found);
int nt_web_reply_text(NtWebReply *r, unsigned status, const char *content_type, const char *text);
/* Adds a header (copied). -E2BIG when 8 are set already, -EINVAL for CR/LF in name or value or
 * for Content-Type/Cache-Control/Content-Length (the server sets those). */
int nt_web_reply_header(NtWebReply *r, const char *name, const char *value);
/* Frees what the reply holds and resets it (the server does this; for tests). */
void nt_web_reply_clear(NtWebReply *r);

/* Handlers return 0 (reply filled) or a negative errno (the server answers 500
 * {"error":"internal error"} and logs it). Handlers run on the server's pool threads,
 * concurrently. A handler of an inline route running with req->inline_run may instead return
 * NT_WEB_REQUEUE: whatever it put in the reply is dropped, and the same request (body and all)
 * is handed to a worker, where the handler runs again with inline_run false. It must have
 * changed nothing that the second run depends on (e.g. not spent a nonce). NT_WEB_REQUEUE from a
 * worker run is a handler failure (500). */
typedef int (*NtWebHandler)(void *userdata, const NtWebRequest *req, NtWebReply *reply);
#define NT_WEB_REQUEUE 1

typedef struct NtWebConfig {
    const char *listen;        /* "127.0.0.1:8443", "[::1]:0", "0.0.0.0:80"; port 0 = ephemeral */
    const char *tls_cert_file; /* PEM chain */
    const char *tls_key_file;  /* PEM */
    const char *tls_client_ca_file; /* PEM CAs for client certificates (optional, TLS only) */
    bool plain_http;    /* required when no TLS files are given; logs a warning at start */
    unsigned threads;   /* pool size, default 4: MHD event threads, and as many handler workers */
    size_t max_body;    /* default 64 KiB; larger: 413 {"error"} without reading it all */
    unsigned timeout_s; /* per-connection idle timeout, default 10 */
    unsigned max_connections;    /* default 1024 */
    unsigned per_ip_connections; /* default 64 */
    double rate_per_s;
    unsigned rate_burst; /* per client address token bucket; 0 = off; excess: 429 + Retry-After.
                          * IPv6 clients share a bucket per /64. Checked before routing (404s
                          * count too); refused requests are counted as endpoint="rate_limited". */
    NtMetrics *metrics;  /* optional: requests by endpoint and result, latency histogram, inline
                          * requests requeued to a worker by endpoint */
    const char *metrics_prefix; /* e.g. "nitride_attestd" (default "nitride_http") */
} NtWebConfig;

/* Validates cfg and reads the TLS files (copied; cfg need not outlive the call, metrics must).
 * Returns 0, -EINVAL (bad listen address, TLS files without plain_http unset, ...) or an error
 * reading the files; *ret_error (may be NULL) gets a malloc'd message. */
int nt_web_server_new(const NtWebConfig *cfg, NtWebServer **ret, char **ret_error);
/* Adds a route before start. endpoint: label for metrics ("challenge"). Unknown path: 404 JSON;
 * known path wrong method: 405 + Allow. Returns 0, -EEXIST, -EBUSY (started), -ENOMEM. */
int nt_web_server_route(NtWebServer *s, const char *method, const char *path, const char *endpoint,
                        NtWebHandler h, void *userdata);
/* As nt_web_server_route(), for a handler that is quick and never blocks (no network, no
 * waiting for other threads beyond short locks): it runs on the MHD event thread that read the
 * request (req->inline_run), without the hand-off to a worker and back (a suspend/resume of the
 * connection: two thread switches), when that thread serves no other live connection (one that
 * waits for a worker does not count), since nothing else is read or written on the thread while
 * it runs; otherwise on a worker (req->inline_run false). A request that turns out to need more
 * returns NT_WEB_REQUEUE and goes to a worker. */
int nt_web_server_route_inline(NtWebServer *s, const char *method, const char *path,
                               const char *endpoint, NtWebHandler h, void *userdata);
/* Binds and starts the pool. Returns 0, -EADDRINUSE/-EACCES/-EIO; *ret_error as above. */
int nt_web_server_start(NtWebServer *s, char **ret_error);
/* The bound port (useful with port 0), 0 before start. */
uint16_t nt_web_server_port(const NtWebServer *s);
/* Stops accepting and waits for the pool threads (running handlers finish). Idempotent. */
void nt_web_server_stop(NtWebServer *s);
NtWebServer *nt_web_server_free(NtWebServer *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(NtWebServer *, nt_web_server_free);
