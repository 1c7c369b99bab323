/* SPDX-License-Identifier: Apache-2.0 */
#include "encoding.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "macro.h"

void hex_encode(const uint8_t *in, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0xf];
    }
    out[2 * n] = 0;
}

char *hex_encode_alloc(const uint8_t *in, size_t n) {
    char *s = nt_malloc(2 * n + 1);
    if (s)
        hex_encode(in, n, s);
    return s;
}

static int unhex(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int hex_decode_into(const char *hex, size_t hex_len, uint8_t *out) {
    for (size_t i = 0; i < hex_len / 2; i++) {
        int a = unhex(hex[2 * i]), b = unhex(hex[2 * i + 1]);
        if (a < 0 || b < 0)
            return -EBADMSG;
        out[i] = (uint8_t)(a << 4 | b);
    }
    return 0;
}

int hex_decode_exact(const char *hex, uint8_t *out, size_t out_len) {
    _cleanup_free_ uint8_t *tmp = NULL;
    if (!hex || strlen(hex) != 2 * out_len)
        return -EBADMSG;
    tmp = nt_malloc(out_len);
    if (!tmp)
        return -ENOMEM;
    if (hex_decode_into(hex, 2 * out_len, tmp) < 0)
        return -EBADMSG;
    memcpy(out, tmp, out_len);
    return 0;
}

int hex_decode_alloc(const char *hex, uint8_t **ret, size_t *ret_len) {
    size_t l = hex ? strlen(hex) : 0;
    _cleanup_free_ uint8_t *out = NULL;
    if (!hex || l % 2)
        return -EBADMSG;
    out = nt_malloc(l / 2);
    if (!out)
        return -ENOMEM;
    if (hex_decode_into(hex, l, out) < 0)
        return -EBADMSG;
    *ret = TAKE_PTR(out);
    *ret_len = l / 2;
    return 0;
}

int base64_encode_alloc(const uint8_t *in, size_t n, char **ret) {
    char *out;
    if (n > (size_t)INT32_MAX / 2)
        return -E2BIG;
    out = nt_malloc(4 * ((n + 2) / 3) + 1);
    if (!out)
        return -ENOMEM;
    (void)EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    *ret = out;
    return 0;
}

static bool is_b64(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

int base64_decode_alloc(const char *in, size_t in_len, uint8_t **ret, size_t *ret_len) {
    _cleanup_free_ uint8_t *out = NULL;
    size_t pad = 0;
    int n;

    if (in_len % 4 != 0 || in_len > (size_t)INT32_MAX / 2)
        return -EBADMSG;
    for (size_t i = 0; i < in_len; i++) {
        if (in[i] == '=') {
            if (i < in_len - 2)
                return -EBADMSG;
            pad++;
        } else if (pad > 0 || !is_b64(in[i]))
            return -EBADMSG;
    }
    out = nt_malloc(in_len / 4 * 3 + 1);
    if (!out)
        return -ENOMEM;
    n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)in_len);
    if (n < 0 || (size_t)n < pad)
        return -EBADMSG;
    *ret_len = (size_t)n - pad;
    *ret = TAKE_PTR(out);
    return 0;
}

int base64url_encode_alloc(const uint8_t *in, size_t n, char **ret) {
    char *s = NULL;
    size_t l;
    int r = base64_encode_alloc(in, n, &s);
    if (r < 0)
        return r;
    l = strlen(s);
    while (l > 0 && s[l - 1] == '=')
        s[--l] = 0;
    for (size_t i = 0; i < l; i++)
        s[i] = s[i] == '+' ? '-' : s[i] == '/' ? '_' : s[i];
    *ret = s;
    return 0;
}

int base64url_decode_alloc(const char *in, size_t in_len, uint8_t **ret, size_t *ret_len) {
    _cleanup_free_ char *tmp = NULL;
    size_t l;

    if (in_len % 4 == 1 || in_len > (size_t)INT32_MAX / 2)
        return -EBADMSG;
    l = (in_len + 3) / 4 * 4;
    tmp = nt_malloc(l + 1);
    if (!tmp)
        return -ENOMEM;
    for (size_t i = 0; i < in_len; i++) {
        char c = in[i];
        if (c == '+' || c == '/' || c == '=')
            return -EBADMSG;
        tmp[i] = c == '-' ? '+' : c == '_' ? '/' : c;
    }
    for (size_t i = in_len; i < l; i++)
        tmp[i] = '=';
    tmp[l] = 0;
    return base64_decode_alloc(tmp, l, ret, ret_len);
}
