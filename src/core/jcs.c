/* SPDX-License-Identifier: Apache-2.0 */
/*
 * RFC 8785 JCS. Invariants: output is built in one growing buffer; object members are sorted by
 * comparing their names as UTF-16 code-unit sequences (decoded from UTF-8 on the fly: UTF-8 byte
 * order equals code-point order, which differs from UTF-16 order only for U+E000..U+FFFF against
 * supplementary characters); numbers follow ECMAScript Number.prototype.toString (shortest digits
 * that round-trip, found by trying 1..17 significant digits).
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/jcs.h"
#include "core/macro.h"

typedef struct Buf {
    char *p;
    size_t len, cap;
} Buf;

static int buf_put(Buf *b, const char *s, size_t n) {
    if (n > SIZE_MAX / 2 - b->len - 1)
        return -ENOMEM;
    if (b->len + n + 1 > b->cap) {
        size_t cap = MAX(b->cap * 2, b->len + n + 1);
        cap = MAX(cap, (size_t)64);
        char *p = realloc(b->p, cap);
        if (!p)
            return -ENOMEM;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
    return 0;
}

static int buf_puts(Buf *b, const char *s) {
    return buf_put(b, s, strlen(s));
}

/* Decodes one UTF-8 sequence at s[*i] (strict: no overlongs, surrogates or > U+10FFFF).
 * Returns the code point or -EBADMSG. */
static int32_t utf8_next(const unsigned char *s, size_t len, size_t *i) {
    unsigned char c = s[*i];
    uint32_t cp;
    size_t n;
    if (c < 0x80) {
        (*i)++;
        return c;
    } else if (c >= 0xC2 && c <= 0xDF) {
        cp = c & 0x1F;
        n = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        cp = c & 0x0F;
        n = 2;
    } else if (c >= 0xF0 && c <= 0xF4) {
        cp = c & 0x07;
        n = 3;
    } else
        return -EBADMSG;
    if (len - *i <= n)
        return -EBADMSG;
    for (size_t k = 1; k <= n; k++) {
        unsigned char d = s[*i + k];
        if ((d & 0xC0) != 0x80)
            return -EBADMSG;
        cp = (cp << 6) | (d & 0x3F);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return -EBADMSG;
    *i += n + 1;
    return (int32_t)cp;
}

/* Iterator over the UTF-16 code units of a UTF-8 string. */
typedef struct U16It {
    const unsigned char *s;
    size_t len, i;
    int32_t low; /* pending low surrogate, or -1 */
} U16It;

/* Next code unit, -1 at the end, -EBADMSG on invalid UTF-8. */
static int32_t u16_next(U16It *it) {
    if (it->low >= 0) {
        int32_t u = it->low;
        it->low = -1;
        return u;
    }
    if (it->i >= it->len)
        return -1;
    int32_t cp = utf8_next(it->s, it->len, &it->i);
    if (cp < 0)
        return cp;
    if (cp >= 0x10000) {
        cp -= 0x10000;
        it->low = 0xDC00 + (cp & 0x3FF);
        return 0xD800 + (cp >> 10);
    }
    return cp;
}

typedef struct Member {
    const char *key;
    size_t key_len;
    const json_t *value;
} Member;

static bool utf8_valid(const char *s, size_t len) {
    for (size_t i = 0; i < len;)
        if (utf8_next((const unsigned char *)s, len, &i) < 0)
            return false;
    return true;
}

/* Keys are validated before sorting, so decoding cannot fail here. */
static int member_cmp(const void *a, const void *b) {
    const Member *x = a, *y = b;
    U16It i = {(const unsigned char *)x->key, x->key_len, 0, -1};
    U16It j = {(const unsigned char *)y->key, y->key_len, 0, -1};
    for (;;) {
        int32_t u = u16_next(&i), v = u16_next(&j);
        if (u != v)
            return u < v ? -1 : 1;
        if (u == -1)
            return 0;
    }
}

static int dump_string(Buf *b, const char *s, size_t len) {
    const unsigned char *u = (const unsigned char *)s;
    size_t start = 0, i = 0;
    int r = buf_put(b, "\"", 1);
    if (r < 0)
        return r;
    while (i < len) {
        unsigned char c = u[i];
        const char *esc = NULL;
        char tmp[8];
        if (c >= 0x80) {
            if (utf8_next(u, len, &i) < 0)
                return -EBADMSG;
            continue;
        }
        switch (c) {
        case '\b':
            esc = "\\b";
            break;
        case '\f':
            esc = "\\f";
            break;
        case '\n':
            esc = "\\n";
            break;
        case '\r':
            esc = "\\r";
            break;
        case '\t':
            esc = "\\t";
            break;
        case '"':
            esc = "\\\"";
            break;
        case '\\':
            esc = "\\\\";
            break;
        default:
            if (c < 0x20) {
                snprintf(tmp, sizeof tmp, "\\u%04x", c);
                esc = tmp;
            }
        }
        if (esc) {
            r = buf_put(b, s + start, i - start);
            if (r >= 0)
                r = buf_puts(b, esc);
            if (r < 0)
                return r;
            start = i + 1;
        }
        i++;
    }
    r = buf_put(b, s + start, len - start);
    return r < 0 ? r : buf_put(b, "\"", 1);
}

/* ECMAScript Number::toString for a finite double. */
static int dump_double(Buf *b, double d) {
    char tmp[40], digits[24], out[48];
    int exp10 = 0, nd = 0;

    if (!isfinite(d))
        return -EDOM;
    if (d == 0)
        return buf_puts(b, "0");
    if (d < 0) {
        int r = buf_puts(b, "-");
        if (r < 0)
            return r;
        d = -d;
    }
    /* Shortest precision that round-trips; %.*e gives d.ddde[+-]xx. */
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, d);
        if (strtod(tmp, NULL) == d)
            break;
    }
    char *e = strchr(tmp, 'e');
    if (!e)
        return -EDOM;
    exp10 = atoi(e + 1);
    for (const char *p = tmp; p < e; p++)
        if (*p >= '0' && *p <= '9')
            digits[nd++] = *p;
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    digits[nd] = 0;

    /* ES: value = 0.digits * 10^n, with n = exp10 + 1. */
    int n = exp10 + 1, k = nd;
    if (k <= n && n <= 21) {
        memcpy(out, digits, k);
        memset(out + k, '0', n - k);
        out[n] = 0;
    } else if (0 < n && n <= 21) {
        memcpy(out, digits, n);
        out[n] = '.';
        memcpy(out + n + 1, digits + n, k - n);
        out[k + 1] = 0;
    } else if (-6 < n && n <= 0) {
        out[0] = '0';
        out[1] = '.';
        memset(out + 2, '0', -n);
        memcpy(out + 2 - n, digits, k);
        out[2 - n + k] = 0;
    } else {
        int m = 0;
        out[m++] = digits[0];
        if (k > 1) {
            out[m++] = '.';
            memcpy(out + m, digits + 1, k - 1);
            m += k - 1;
        }
        snprintf(out + m, sizeof out - m, "e%c%d", n - 1 < 0 ? '-' : '+', abs(n - 1));
    }
    return buf_puts(b, out);
}

static int dump(Buf *b, const json_t *v, unsigned depth) {
    int r;
    if (depth > NT_JCS_MAX_DEPTH)
        return -ELOOP;
    switch (json_typeof(v)) {
    case JSON_NULL:
        return buf_puts(b, "null");
    case JSON_TRUE:
        return buf_puts(b, "true");
    case JSON_FALSE:
        return buf_puts(b, "false");
    case JSON_INTEGER: {
        json_int_t i = json_integer_value(v);
        char tmp[32];
        /* Beyond 2^53 an I-JSON number is not exact: refuse rather than round. */
        if (i > (json_int_t)1 << 53 || i < -((json_int_t)1 << 53))
            return -EDOM;
        snprintf(tmp, sizeof tmp, "%" JSON_INTEGER_FORMAT, i);
        return buf_puts(b, tmp);
    }
    case JSON_REAL:
        return dump_double(b, json_real_value(v));
    case JSON_STRING:
        return dump_string(b, json_string_value(v), json_string_length(v));
    case JSON_ARRAY: {
        r = buf_puts(b, "[");
        for (size_t i = 0; r >= 0 && i < json_array_size(v); i++) {
            if (i > 0)
                r = buf_puts(b, ",");
            if (r >= 0)
                r = dump(b, json_array_get(v, i), depth + 1);
        }
        return r < 0 ? r : buf_puts(b, "]");
    }
    case JSON_OBJECT: {
        size_t n = json_object_size(v), i = 0;
        const char *key;
        json_t *value;
        _cleanup_free_ Member *m = NULL;
        if (n > 0) {
            m = calloc(n, sizeof *m);
            if (!m)
                return -ENOMEM;
        }
        json_object_foreach((json_t *)v, key, value) {
            if (i >= n)
                return -EINVAL;
#if JANSSON_VERSION_HEX >= 0x020e00
            m[i] = (Member){key, json_object_iter_key_len(json_object_key_to_iter(key)),
                            value}; /* keys may hold NUL */
#else
            m[i] = (Member){key, strlen(key), value};
#endif
            if (!utf8_valid(m[i].key, m[i].key_len))
                return -EBADMSG;
            i++;
        }
        if (n > 1)
            qsort(m, n, sizeof *m, member_cmp);
        r = buf_puts(b, "{");
        for (i = 0; r >= 0 && i < n; i++) {
            if (i > 0)
                r = buf_puts(b, ",");
            if (r >= 0)
                r = dump_string(b, m[i].key, m[i].key_len);
            if (r >= 0)
                r = buf_puts(b, ":");
            if (r >= 0)
                r = dump(b, m[i].value, depth + 1);
        }
        return r < 0 ? r : buf_puts(b, "}");
    }
    }
    return -EINVAL;
}

int nt_jcs_dump(const json_t *v, char **ret, size_t *ret_len) {
    Buf b = {};
    int r;
    if (!v || !ret)
        return -EINVAL;
    r = dump(&b, v, 0);
    if (r >= 0 && !b.p)
        r = -EINVAL;
    if (r < 0) {
        free(b.p);
        return r;
    }
    *ret = b.p;
    if (ret_len)
        *ret_len = b.len;
    return 0;
}
