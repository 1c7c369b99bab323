/* SPDX-License-Identifier: Apache-2.0 */
/*
 * HTTP(S) client on libcurl, used by the agent, the KDS client and nitride-kmsd. One easy handle
 * per call (no shared state; thread-safe after the one-time curl_global_init), or with
 * keep_alive one kept per thread, so that a thread's requests reuse its connections.
 * Only http:// and https:// URLs; certificate and host name are always verified. Redirects are not
 * followed: a 3xx is the response (a caller's "plain http only to loopback" check must not be
 * bypassed by a 307 to another host). With follow_redirects, at most 5 are followed, and only to
 * the same scheme, host and port. Loopback (localhost, 127.0.0.0/8, ::1) never goes through a proxy
 * from http_proxy/https_proxy.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <jansson.h>

typedef struct NtHttpOptions {
    const char *ca_file;                  /* NULL: system store. Never an insecure mode. */
    const char *client_cert, *client_key; /* optional mTLS */
    const char *bearer_token;             /* optional "Authorization: Bearer <token>" */
    long connect_timeout_ms;              /* default 5000 */
    long timeout_ms;                      /* whole request, default 30000 */
    size_t max_response;                  /* default 1 MiB; larger: -EFBIG */
    bool follow_redirects;                /* default false; true: same scheme+host+port only */
    bool keep_alive; /* reuse this thread's connections (and TLS sessions) across keep_alive
                        calls: a connection is reused only for the same host, port and TLS
                        settings (CA, client certificate); default false: a new connection */
} NtHttpOptions;

typedef struct NtHttpResponse {
    long status;
    uint8_t *body; /* malloc'd, NUL-terminated (not counted in body_len); NULL if empty */
    size_t body_len;
    char *content_type; /* malloc'd or NULL */
    long retry_after_s; /* Retry-After in seconds (delta or HTTP date), -1 if absent */
    char error[256];    /* transport error text when the call failed */
} NtHttpResponse;

/* opts may be NULL (defaults). Returns 0 when an HTTP response arrived (any status), or
 * -ETIMEDOUT, -ECONNREFUSED, -EHOSTUNREACH (DNS/connect), -EPROTO (TLS/certificate problem),
 * -EFBIG, -ENOMEM, -EINVAL (URL not http/https); resp->error says what. resp is initialised by
 * the call; release it with nt_http_response_clear() in every case. */
int nt_http_request(const NtHttpOptions *o, const char *method, const char *url,
                    const char *content_type, const void *body, size_t body_len,
                    NtHttpResponse *resp);
void nt_http_response_clear(NtHttpResponse *resp);

/* POST a JSON object, parse a JSON object reply (error replies too). Returns 0 with *ret_status
 * and *ret_reply (owned by the caller), a transport error as above, or -EBADMSG if the reply is
 * not a JSON object (*ret_status still set). err gets the message on failure. */
int nt_http_post_json(const NtHttpOptions *o, const char *url, const json_t *req, long *ret_status,
                      json_t **ret_reply, char err[static 256]);

/* Parses a Retry-After value (delta seconds or IMF-fixdate / RFC 850 / asctime HTTP date
 * relative to now). Returns seconds >= 0, or -1 if unparsable. Exposed for tests. */
long nt_http_parse_retry_after(const char *value, time_t now);
