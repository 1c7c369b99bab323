/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The appraisal policy (see policy.h, docs/policy.md): a strict JSON parser and the appraisal of
 * an authentic report against it. Every check compares component by component; TCBs are never
 * compared as one 64-bit number (a higher microcode SPL must not hide a lower SNP SPL).
 */
#include "verify/policy.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "core/alloc.h"
#include "core/encoding.h"
#include "core/fileio.h"
#include "core/log.h"

#define POLICY_FILE_MAX (1024u * 1024u)
#define LIST_MAX 4096u

static void perr_set(char **ret_error, const char *fmt, ...) _printf_(2, 3);
/* Every parse error is -EBADMSG, spelled out in the macro rather than returned by the variadic
 * perr_set() (never inlined): so the compiler, like the reader, sees that an error path never
 * returns 0 without having filled its output. */
#define perr(ret_error, ...) (perr_set(ret_error, __VA_ARGS__), -EBADMSG)
static void perr_set(char **ret_error, const char *fmt, ...) {
    va_list ap;
    char *s = NULL;

    if (ret_error) {
        va_start(ap, fmt);
        if (vasprintf(&s, fmt, ap) < 0)
            s = NULL;
        va_end(ap);
        free(*ret_error);
        *ret_error = s;
    }
}

static void hex_list_done(NtHexList *l) {
    free(l->items);
    *l = (NtHexList){0};
}

NtPolicy *nt_policy_free(NtPolicy *p) {
    if (!p)
        return NULL;
    hex_list_done(&p->measurements);
    hex_list_done(&p->host_data);
    hex_list_done(&p->id_key_digests);
    hex_list_done(&p->author_key_digests);
    free(p);
    return NULL;
}

static int parse_hex(json_t *v, const char *key, uint8_t *out, size_t n, char **ret_error) {
    if (!json_is_string(v))
        return perr(ret_error, "%s: expected a string of %zu hex characters", key, 2 * n);
    if (json_string_length(v) != 2 * n)
        return perr(ret_error, "%s: expected %zu hex characters (%zu bytes)", key, 2 * n, n);
    int r = hex_decode_exact(json_string_value(v), out, n);
    if (r == -ENOMEM)
        return r;
    if (r < 0)
        return perr(ret_error, "%s: expected %zu hex characters (%zu bytes)", key, 2 * n, n);
    return 0;
}

static int parse_hex_list(json_t *v, const char *key, size_t item_len, NtHexList *out,
                          char **ret_error) {
    size_t n = json_is_array(v) ? json_array_size(v) : 0;
    if (!json_is_array(v))
        return perr(ret_error, "%s: expected an array of hex strings", key);
    if (n == 0)
        return perr(ret_error, "%s: must not be empty (omit the key to not check it)", key);
    if (n > LIST_MAX)
        return perr(ret_error, "%s: more than %u entries", key, LIST_MAX);
    uint8_t *items = nt_calloc(n, item_len);
    if (!items)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        char k[64];
        snprintf(k, sizeof k, "%s[%zu]", key, i);
        int r = parse_hex(json_array_get(v, i), k, items + i * item_len, item_len, ret_error);
        if (r < 0) {
            free(items);
            return r;
        }
    }
    *out = (NtHexList){.items = items, .n = n, .item_len = item_len};
    return 0;
}

static int parse_uint(json_t *v, const char *key, json_int_t max, json_int_t *ret,
                      char **ret_error) {
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > max)
        return perr(ret_error, "%s: expected an integer 0..%lld", key, (long long)max);
    *ret = json_integer_value(v);
    return 0;
}

static int parse_bool(json_t *v, const char *key, bool *ret, char **ret_error) {
    if (!json_is_boolean(v))
        return perr(ret_error, "%s: expected true or false", key);
    *ret = json_is_true(v);
    return 0;
}

static int parse_version(json_t *v, const char *key, uint8_t *major, uint8_t *minor,
                         char **ret_error) {
    unsigned a, b;
    int n = 0;
    const char *s = json_string_value(v);
    if (!s || sscanf(s, "%3u.%3u%n", &a, &b, &n) != 2 || (size_t)n != strlen(s) || a > 255 ||
        b > 255 || !(s[0] >= '0' && s[0] <= '9'))
        return perr(ret_error, "%s: expected a string \"MAJOR.MINOR\" (each 0..255)", key);
    *major = (uint8_t)a;
    *minor = (uint8_t)b;
    return 0;
}

static int parse_min_tcb(json_t *v, NtPolicy *p, char **ret_error) {
    static const struct {
        const char *name;
        unsigned bit;
        size_t off;
    } comps[] = {
        {"bootloader", NT_TCB_BOOTLOADER, offsetof(SnpTcb, bootloader)},
        {"tee", NT_TCB_TEE, offsetof(SnpTcb, tee)},
        {"snp", NT_TCB_SNP, offsetof(SnpTcb, snp)},
        {"microcode", NT_TCB_MICROCODE, offsetof(SnpTcb, microcode)},
        {"fmc", NT_TCB_FMC, offsetof(SnpTcb, fmc)},
    };
    const char *k;
    json_t *c;

    if (!json_is_object(v))
        return perr(ret_error, "min_tcb: expected an object");
    if (json_object_size(v) == 0)
        return perr(ret_error, "min_tcb: must name at least one component");
    json_object_foreach(v, k, c) {
        size_t i;
        char key[64];
        json_int_t n;
        for (i = 0; i < ELEMENTSOF(comps); i++)
            if (streq(k, comps[i].name))
                break;
        if (i >= ELEMENTSOF(comps))
            return perr(ret_error,
                        "min_tcb: unknown key '%.40s' (bootloader, tee, snp, microcode, fmc)", k);
        snprintf(key, sizeof key, "min_tcb.%s", k);
        int r = parse_uint(c, key, 255, &n, ret_error);
        if (r < 0)
            return r;
        ((uint8_t *)&p->min_tcb)[comps[i].off] = (uint8_t)n;
        p->min_tcb_set |= comps[i].bit;
    }
    return 0;
}

static int parse_name_list(json_t *v, const char *key, bool products, unsigned *ret,
                           char **ret_error) {
    unsigned mask = 0;
    size_t i;
    json_t *e;

    if (!json_is_array(v) || json_array_size(v) == 0)
        return perr(ret_error, "%s: expected a non-empty array of strings", key);
    json_array_foreach(v, i, e) {
        const char *s = json_string_value(e);
        if (!s)
            return perr(ret_error, "%s[%zu]: expected a string", key, i);
        if (products) {
            /* Exact product names only: "Milan-B0" is a certificate's name, not a policy's. */
            SnpProduct pr = _SNP_PRODUCT_INVALID;
            for (int k = 0; k < _SNP_PRODUCT_MAX; k++)
                if (strcasecmp(s, snp_product_to_string((SnpProduct)k)) == 0)
                    pr = (SnpProduct)k;
            if (pr < 0)
                return perr(ret_error, "%s[%zu]: unknown product '%.40s' (milan, genoa, turin)",
                            key, i, s);
            mask |= 1u << pr;
        } else if (streq(s, "vcek"))
            mask |= 1u << NT_CERT_ROLE_VCEK;
        else if (streq(s, "vlek"))
            mask |= 1u << NT_CERT_ROLE_VLEK;
        else
            return perr(ret_error, "%s[%zu]: unknown signing key '%.40s' (vcek, vlek)", key, i, s);
    }
    *ret = mask;
    return 0;
}

static int parse_vmpls(json_t *v, NtPolicy *p, char **ret_error) {
    size_t i;
    json_t *e;
    if (!json_is_array(v) || json_array_size(v) == 0)
        return perr(ret_error, "vmpls: expected a non-empty array of integers 0..3");
    json_array_foreach(v, i, e) {
        char key[32];
        json_int_t n;
        snprintf(key, sizeof key, "vmpls[%zu]", i);
        int r = parse_uint(e, key, 3, &n, ret_error);
        if (r < 0)
            return r;
        p->vmpls |= 1u << n;
    }
    return 0;
}

static int parse_object(json_t *root, NtPolicy *p, char **ret_error) {
    const char *k;
    json_t *v;
    int r = 0;

    json_object_foreach(root, k, v) {
        json_int_t n;

        if (streq(k, "measurements"))
            r = parse_hex_list(v, k, 48, &p->measurements, ret_error);
        else if (streq(k, "host_data"))
            r = parse_hex_list(v, k, 32, &p->host_data, ret_error);
        else if (streq(k, "id_key_digests"))
            r = parse_hex_list(v, k, 48, &p->id_key_digests, ret_error);
        else if (streq(k, "author_key_digests"))
            r = parse_hex_list(v, k, 48, &p->author_key_digests, ret_error);
        else if (streq(k, "report_data")) {
            r = parse_hex(v, k, p->report_data, 64, ret_error);
            p->has_report_data = r >= 0;
        } else if (streq(k, "min_tcb"))
            r = parse_min_tcb(v, p, ret_error);
        else if (streq(k, "min_guest_svn")) {
            r = parse_uint(v, k, UINT32_MAX, &n, ret_error);
            if (r >= 0) {
                p->min_guest_svn = (uint32_t)n;
                p->has_min_guest_svn = true;
            }
        } else if (streq(k, "vmpls"))
            r = parse_vmpls(v, p, ret_error);
        else if (streq(k, "allow_debug"))
            r = parse_bool(v, k, &p->allow_debug, ret_error);
        else if (streq(k, "allow_migrate_ma"))
            r = parse_bool(v, k, &p->allow_migrate_ma, ret_error);
        else if (streq(k, "allow_smt"))
            r = parse_bool(v, k, &p->allow_smt, ret_error);
        else if (streq(k, "require_single_socket"))
            r = parse_bool(v, k, &p->require_single_socket, ret_error);
        else if (streq(k, "min_abi")) {
            r = parse_version(v, k, &p->min_abi_major, &p->min_abi_minor, ret_error);
            p->has_min_abi = r >= 0;
        } else if (streq(k, "min_firmware")) {
            r = parse_version(v, k, &p->min_fw_major, &p->min_fw_minor, ret_error);
            p->has_min_firmware = r >= 0;
        } else if (streq(k, "min_report_version")) {
            r = parse_uint(v, k, 255, &n, ret_error);
            if (r >= 0)
                p->min_report_version = (uint32_t)n;
        } else if (streq(k, "chip_id_masked")) {
            const char *s = json_string_value(v);
            if (streq_ptr(s, "forbid"))
                p->chip_id_masked = NT_CHIP_ID_MASKED_FORBID;
            else if (streq_ptr(s, "allow"))
                p->chip_id_masked = NT_CHIP_ID_MASKED_ALLOW;
            else if (streq_ptr(s, "require"))
                p->chip_id_masked = NT_CHIP_ID_MASKED_REQUIRE;
            else
                r = perr(ret_error,
                         "chip_id_masked: expected \"forbid\", \"allow\" or \"require\"");
        } else if (streq(k, "signing_keys"))
            r = parse_name_list(v, k, false, &p->signing_keys, ret_error);
        else if (streq(k, "products"))
            r = parse_name_list(v, k, true, &p->products, ret_error);
        else
            r = perr(ret_error, "unknown key '%.64s'", k);
        if (r < 0)
            return r;
    }
    return 0;
}

int nt_policy_parse(const char *text, size_t len, NtPolicy **ret, char **ret_error) {
    json_error_t jerr;
    json_auto_t *root = NULL;
    NtPolicy *p;
    int r;

    if (ret_error)
        *ret_error = NULL;
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return perr(ret_error, "not valid JSON: %s (line %d, column %d)", jerr.text, jerr.line,
                    jerr.column);
    if (!json_is_object(root))
        return perr(ret_error, "expected a JSON object at the top level");
    p = nt_calloc(1, sizeof(NtPolicy));
    if (!p)
        return -ENOMEM;
    /* Safe defaults; see docs/policy.md. */
    p->allow_smt = true;
    p->chip_id_masked = NT_CHIP_ID_MASKED_FORBID;
    p->signing_keys = (1u << NT_CERT_ROLE_VCEK) | (1u << NT_CERT_ROLE_VLEK);
    p->products = (1u << _SNP_PRODUCT_MAX) - 1;
    r = parse_object(root, p, ret_error);
    if (r < 0) {
        nt_policy_free(p);
        return r;
    }
    *ret = p;
    return 0;
}

int nt_policy_load(const char *path, NtPolicy **ret, char **ret_error) {
    _cleanup_free_ uint8_t *data = NULL;
    size_t len = 0;
    int r;

    if (ret_error)
        *ret_error = NULL;
    r = read_full_file(path, POLICY_FILE_MAX, &data, &len);
    if (r < 0) {
        if (ret_error && asprintf(ret_error, "cannot read: %s", strerror(-r)) < 0)
            *ret_error = NULL;
        return r;
    }
    return nt_policy_parse((const char *)data, len, ret, ret_error);
}

/* ---- TCB helpers ---- */

void nt_tcb_format(const SnpTcb *t, SnpProduct p, char *buf, size_t size) {
    if (p == SNP_PRODUCT_TURIN)
        snprintf(buf, size, "fmc=%u bl=%u tee=%u snp=%u ucode=%u", t->fmc, t->bootloader, t->tee,
                 t->snp, t->microcode);
    else
        snprintf(buf, size, "bl=%u tee=%u snp=%u ucode=%u", t->bootloader, t->tee, t->snp,
                 t->microcode);
}

bool nt_tcb_meets(const SnpTcb *t, const SnpTcb *min, unsigned mask, SnpProduct p,
                  const char **ret_component) {
    const struct {
        unsigned bit;
        uint8_t have, want;
        const char *name;
    } c[] = {
        {NT_TCB_FMC, t->fmc, min->fmc, "fmc"},
        {NT_TCB_BOOTLOADER, t->bootloader, min->bootloader, "bootloader"},
        {NT_TCB_TEE, t->tee, min->tee, "tee"},
        {NT_TCB_SNP, t->snp, min->snp, "snp"},
        {NT_TCB_MICROCODE, t->microcode, min->microcode, "microcode"},
    };
    for (size_t i = 0; i < ELEMENTSOF(c); i++) {
        if (!(mask & c[i].bit))
            continue;
        if (c[i].bit == NT_TCB_FMC && p != SNP_PRODUCT_TURIN)
            continue;
        if (c[i].have < c[i].want) {
            if (ret_component)
                *ret_component = c[i].name;
            return false;
        }
    }
    return true;
}

/* ---- appraisal ---- */

static char *format_list(const NtHexList *l) {
    size_t shown = MIN(l->n, (size_t)8);
    size_t size = 16 + shown * (2 * l->item_len + 2) + 32;
    char *s = nt_malloc(size), *q;
    if (!s)
        return NULL;
    q = s;
    q += sprintf(q, "one of [");
    for (size_t i = 0; i < shown; i++) {
        if (i)
            q += sprintf(q, ", ");
        hex_encode(l->items + i * l->item_len, l->item_len, q);
        q += 2 * l->item_len;
    }
    if (shown < l->n)
        q += sprintf(q, ", ... %zu more", l->n - shown);
    sprintf(q, "]");
    return s;
}

static void check_list(NtVerdict *v, const char *name, const NtHexList *l, const uint8_t *value) {
    char found[2 * 64 + 1];

    if (l->n == 0) {
        nt_verdict_skip(v, name, NT_CHECK_POLICY, "not configured");
        return;
    }
    for (size_t i = 0; i < l->n; i++)
        if (memcmp(l->items + i * l->item_len, value, l->item_len) == 0) {
            nt_verdict_pass(v, name, NT_CHECK_POLICY, NULL);
            return;
        }
    _cleanup_free_ char *expected = format_list(l);
    hex_encode(value, l->item_len, found);
    nt_verdict_fail(v, name, NT_CHECK_POLICY, -EKEYREJECTED, expected ? expected : "(list)", found,
                    NULL);
}

static void check_bit(NtVerdict *v, const char *name, const SnpReport *r, uint64_t bit,
                      bool allowed, const char *what) {
    bool set = r->policy & bit;
    if (set && !allowed)
        nt_verdict_fail(v, name, NT_CHECK_POLICY, -EKEYREJECTED, "off", "on",
                        "guest policy allows %s, the appraisal policy does not", what);
    else
        nt_verdict_pass(v, name, NT_CHECK_POLICY, "%s", set ? "on (allowed)" : "off");
}

/* A plain integer minimum: skipped when not configured, else found >= min. */
static void check_min(NtVerdict *v, const char *name, bool configured, unsigned found,
                      unsigned min) {
    char e[32], f[32];
    if (!configured) {
        nt_verdict_skip(v, name, NT_CHECK_POLICY, "not configured");
        return;
    }
    if (found >= min) {
        nt_verdict_pass(v, name, NT_CHECK_POLICY, "%u", found);
        return;
    }
    snprintf(e, sizeof e, ">= %u", min);
    snprintf(f, sizeof f, "%u", found);
    nt_verdict_fail(v, name, NT_CHECK_POLICY, -EKEYREJECTED, e, f, NULL);
}

void nt_policy_apply(const NtPolicy *p, const SnpReport *r, SnpProduct product,
                     NtCertRole signing_role, NtVerdict *v) {
    char e[128], f[128];

    /* Identity of the signer and platform. */
    if (p->signing_keys & (1u << signing_role))
        nt_verdict_pass(v, "allowed_signing_key", NT_CHECK_POLICY, "%s",
                        nt_cert_role_to_string(signing_role));
    else
        nt_verdict_fail(v, "allowed_signing_key", NT_CHECK_POLICY, -EKEYREJECTED,
                        (p->signing_keys & (1u << NT_CERT_ROLE_VCEK)) ? "VCEK" : "VLEK",
                        nt_cert_role_to_string(signing_role), NULL);
    if (p->products & (1u << product))
        nt_verdict_pass(v, "allowed_product", NT_CHECK_POLICY, "%s",
                        snp_product_to_string(product));
    else {
        e[0] = 0;
        for (int k = 0; k < _SNP_PRODUCT_MAX; k++)
            if (p->products & (1u << k))
                snprintf(e + strlen(e), sizeof e - strlen(e), "%s%s", e[0] ? ", " : "one of ",
                         snp_product_to_string((SnpProduct)k));
        nt_verdict_fail(v, "allowed_product", NT_CHECK_POLICY, -EKEYREJECTED, e,
                        snp_product_to_string(product), NULL);
    }

    /* Reference values. */
    check_list(v, "measurement", &p->measurements, r->measurement);
    check_list(v, "host_data", &p->host_data, r->host_data);
    check_list(v, "id_key_digest", &p->id_key_digests, r->id_key_digest);
    check_list(v, "author_key_digest", &p->author_key_digests, r->author_key_digest);
    if (!p->has_report_data)
        nt_verdict_skip(v, "report_data", NT_CHECK_POLICY, "not configured");
    else if (CRYPTO_memcmp(p->report_data, r->report_data, 64) == 0)
        nt_verdict_pass(v, "report_data", NT_CHECK_POLICY, NULL);
    else {
        char ex[129], fo[129];
        hex_encode(p->report_data, 64, ex);
        hex_encode(r->report_data, 64, fo);
        nt_verdict_fail(v, "report_data", NT_CHECK_POLICY, -EKEYREJECTED, ex, fo, NULL);
    }

    /* Versions. */
    if (p->min_tcb_set == 0)
        nt_verdict_skip(v, "min_tcb", NT_CHECK_POLICY, "not configured");
    else if (product != SNP_PRODUCT_TURIN && (p->min_tcb_set & ~NT_TCB_FMC) == 0) {
        /* A minimum that names no component this product's TCB has would check nothing: fail
         * rather than pass vacuously (the policy was written for Turin only). */
        snprintf(f, sizeof f, "%s TCB (no fmc)", snp_product_to_string(product));
        nt_verdict_fail(v, "min_tcb", NT_CHECK_POLICY, -EKEYREJECTED, "fmc", f,
                        "min_tcb names only fmc, which milan/genoa TCBs lack (%s report)",
                        snp_product_to_string(product));
    } else {
        SnpTcb t;
        const char *comp = NULL;
        if (snp_tcb_decode(r->reported_tcb, product, &t) < 0)
            nt_verdict_fail(v, "min_tcb", NT_CHECK_POLICY, -EBADMSG, NULL, NULL,
                            "reported_tcb 0x%016llx does not decode for %s",
                            (unsigned long long)r->reported_tcb, snp_product_to_string(product));
        else if (nt_tcb_meets(&t, &p->min_tcb, p->min_tcb_set, product, &comp))
            nt_verdict_pass(v, "min_tcb", NT_CHECK_POLICY, NULL);
        else {
            size_t n = 0;
            e[0] = 0;
            static const struct {
                unsigned bit;
                const char *name;
                size_t off;
            } cs[] = {
                {NT_TCB_FMC, "fmc", offsetof(SnpTcb, fmc)},
                {NT_TCB_BOOTLOADER, "bl", offsetof(SnpTcb, bootloader)},
                {NT_TCB_TEE, "tee", offsetof(SnpTcb, tee)},
                {NT_TCB_SNP, "snp", offsetof(SnpTcb, snp)},
                {NT_TCB_MICROCODE, "ucode", offsetof(SnpTcb, microcode)},
            };
            for (size_t i = 0; i < ELEMENTSOF(cs); i++)
                if ((p->min_tcb_set & cs[i].bit) &&
                    (cs[i].bit != NT_TCB_FMC || product == SNP_PRODUCT_TURIN))
                    n += (size_t)snprintf(e + n, sizeof e - n, "%s%s>=%u", n ? " " : "", cs[i].name,
                                          ((const uint8_t *)&p->min_tcb)[cs[i].off]);
            nt_tcb_format(&t, product, f, sizeof f);
            nt_verdict_fail(v, "min_tcb", NT_CHECK_POLICY, -EKEYREJECTED, e, f,
                            "reported TCB %s SPL below the minimum", comp);
        }
    }
    check_min(v, "min_guest_svn", p->has_min_guest_svn, r->guest_svn, p->min_guest_svn);
    check_min(v, "min_report_version", p->min_report_version != 0, r->version,
              p->min_report_version);
    unsigned abi_major = (unsigned)((r->policy >> SNP_POLICY_ABI_MAJOR_SHIFT) & 0xff);
    unsigned abi_minor = (unsigned)(r->policy & SNP_POLICY_ABI_MINOR_MASK);
    if (!p->has_min_abi)
        nt_verdict_skip(v, "min_abi", NT_CHECK_POLICY, "not configured");
    else if (abi_major > p->min_abi_major ||
             (abi_major == p->min_abi_major && abi_minor >= p->min_abi_minor))
        nt_verdict_pass(v, "min_abi", NT_CHECK_POLICY, "guest policy ABI %u.%u", abi_major,
                        abi_minor);
    else {
        snprintf(e, sizeof e, ">= %u.%u", p->min_abi_major, p->min_abi_minor);
        snprintf(f, sizeof f, "%u.%u", abi_major, abi_minor);
        nt_verdict_fail(v, "min_abi", NT_CHECK_POLICY, -EKEYREJECTED, e, f,
                        "guest policy minimum ABI");
    }
    if (!p->has_min_firmware)
        nt_verdict_skip(v, "min_firmware", NT_CHECK_POLICY, "not configured");
    else if (r->current_major > p->min_fw_major ||
             (r->current_major == p->min_fw_major && r->current_minor >= p->min_fw_minor))
        nt_verdict_pass(v, "min_firmware", NT_CHECK_POLICY, "%u.%u build %u", r->current_major,
                        r->current_minor, r->current_build);
    else {
        snprintf(e, sizeof e, ">= %u.%u", p->min_fw_major, p->min_fw_minor);
        snprintf(f, sizeof f, "%u.%u", r->current_major, r->current_minor);
        nt_verdict_fail(v, "min_firmware", NT_CHECK_POLICY, -EKEYREJECTED, e, f,
                        "current firmware version");
    }

    /* Guest policy bits and placement. */
    check_bit(v, "debug", r, SNP_POLICY_DEBUG, p->allow_debug, "debugging");
    check_bit(v, "migrate_ma", r, SNP_POLICY_MIGRATE_MA, p->allow_migrate_ma, "a migration agent");
    check_bit(v, "smt", r, SNP_POLICY_SMT, p->allow_smt, "SMT");
    if (p->require_single_socket && !(r->policy & SNP_POLICY_SINGLE_SOCKET))
        nt_verdict_fail(v, "single_socket", NT_CHECK_POLICY, -EKEYREJECTED, "on", "off",
                        "the appraisal policy requires single-socket guests");
    else
        nt_verdict_pass(v, "single_socket", NT_CHECK_POLICY, "%s",
                        (r->policy & SNP_POLICY_SINGLE_SOCKET) ? "on" : "off (not required)");
    if (p->vmpls == 0)
        nt_verdict_skip(v, "vmpl", NT_CHECK_POLICY, "not configured: any VMPL accepted");
    else if (r->vmpl < 4 && (p->vmpls & (1u << r->vmpl)))
        nt_verdict_pass(v, "vmpl", NT_CHECK_POLICY, "%u", r->vmpl);
    else {
        size_t n = (size_t)snprintf(e, sizeof e, "one of [");
        for (unsigned k = 0, first = 1; k < 4; k++)
            if (p->vmpls & (1u << k)) {
                n += (size_t)snprintf(e + n, sizeof e - n, "%s%u", first ? "" : ", ", k);
                first = 0;
            }
        snprintf(e + n, sizeof e - n, "]");
        snprintf(f, sizeof f, "%u", r->vmpl);
        nt_verdict_fail(v, "vmpl", NT_CHECK_POLICY, -EKEYREJECTED, e, f, NULL);
    }
    bool masked = r->flags & SNP_FLAG_MASK_CHIP_KEY;
    if (masked && p->chip_id_masked == NT_CHIP_ID_MASKED_FORBID)
        nt_verdict_fail(v, "chip_id_masked", NT_CHECK_POLICY, -EKEYREJECTED, "not masked", "masked",
                        "MASK_CHIP_KEY is set, so the report is not bound to a chip");
    else if (!masked && p->chip_id_masked == NT_CHIP_ID_MASKED_REQUIRE)
        nt_verdict_fail(v, "chip_id_masked", NT_CHECK_POLICY, -EKEYREJECTED, "masked", "not masked",
                        NULL);
    else
        nt_verdict_pass(v, "chip_id_masked", NT_CHECK_POLICY, "%s",
                        masked ? "masked (allowed)" : "not masked");
}
