/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Admin authentication for nitride-kmsd: a bearer token read from a 0600 file (kept only as its
 * SHA-256, compared in constant time with CRYPTO_memcmp), and/or TLS client certificates that
 * verify against a client CA, optionally restricted to a list of subjects. Either credential is
 * enough. Also: reading secret files (the KEK, the bearer token) with a permission check.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "core/macro.h"
#include "core/secret.h"
#include "web/server.h"

/* Reads a regular file of mode 0600 or stricter (group/other bits -> -EPERM, symlinks refused)
 * of min..max bytes into a Secret; the read buffer is wiped. what names the file in *ret_error.
 * Returns 0, -EPERM, -EFBIG / -EBADMSG (size out of range), or -errno. */
int kmsd_read_secret_file(const char *path, const char *what, size_t min, size_t max, Secret **ret,
                          char **ret_error);

typedef struct KmsdAuth KmsdAuth;

/* token_file: the bearer token file (NULL: no bearer auth); the token is its content without
 * trailing white space, 32..1024 printable ASCII characters. client_certs: accept certificates
 * verified by the web server's client CA; subjects (n may be 0: any subject from that CA) are
 * compared exactly (RFC 2253 form). Returns 0, or -errno with *ret_error. */
int kmsd_auth_new(const char *token_file, bool client_certs, char *const *subjects, size_t n,
                  KmsdAuth **ret, char **ret_error);
KmsdAuth *kmsd_auth_free(KmsdAuth *a);
DEFINE_TRIVIAL_CLEANUP_FUNC(KmsdAuth *, kmsd_auth_free);

#define KMSD_ACTOR_MAX 320
#define KMSD_AUTH_REASON_MAX 200

/* Authenticates an admin request. Returns 0 with actor "admin:cert:<subject>" or "admin:bearer",
 * or -EACCES with the reason (no credentials, wrong bearer token, certificate not from the
 * client CA, subject not allowed), and in actor what the request claimed to be ("anonymous",
 * "bearer:wrong", "cert:<subject>"), for the audit. */
int kmsd_auth_admin(const KmsdAuth *a, const NtWebRequest *req, char actor[static KMSD_ACTOR_MAX],
                    char reason[static KMSD_AUTH_REASON_MAX]);

/* The token of "Authorization: Bearer <token>" (scheme case-insensitive), or NULL. Points into
 * the request (valid during the handler). */
const char *kmsd_bearer_token(const NtWebRequest *req);
