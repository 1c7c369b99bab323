/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Hex and base64 / base64url conversions. Base64 goes through OpenSSL's EVP encoder; base64url
 * is the same alphabet mapping, unpadded (RFC 4648 section 5, as JOSE uses it).
 * Decoders are strict: they reject bad characters, wrong padding and trailing garbage with
 * -EBADMSG and write nothing on failure.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Writes 2*n lowercase hex chars plus NUL into out (size >= 2*n+1). */
void hex_encode(const uint8_t *in, size_t n, char *out);
/* Returns a newly allocated lowercase hex string, or NULL on OOM. */
char *hex_encode_alloc(const uint8_t *in, size_t n);
/* Decodes exactly out_len bytes from a hex string of exactly 2*out_len chars (either case).
 * Returns 0, or -EBADMSG on wrong length or a non-hex char. */
int hex_decode_exact(const char *hex, uint8_t *out, size_t out_len);
/* Decodes a hex string of any even length into a newly allocated buffer. */
int hex_decode_alloc(const char *hex, uint8_t **ret, size_t *ret_len);

/* base64 (padded, standard alphabet). Allocating; return 0 or negative errno. */
int base64_encode_alloc(const uint8_t *in, size_t n, char **ret);
int base64_decode_alloc(const char *in, size_t in_len, uint8_t **ret, size_t *ret_len);
/* base64url, unpadded. */
int base64url_encode_alloc(const uint8_t *in, size_t n, char **ret);
int base64url_decode_alloc(const char *in, size_t in_len, uint8_t **ret, size_t *ret_len);
