/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The SEV-SNP extended-report certificate table (GHCB specification, "SNP Extended Guest
 * Request": the certificate table; Linux SNP_GET_EXT_REPORT certs buffer; configfs-tsm auxblob).
 *
 * Layout: an array of 24-byte entries {guid[16], u32 offset, u32 length} (little-endian), ended
 * by an all-zero entry, followed by the certificates. Offsets are from the start of the table.
 * GUIDs are stored in RFC 4122 byte order (the order of the hex digits in the string form), as
 * the kernel, virtee/sev and go-sev-guest read them.
 *
 * Invariants of an accepted table: the terminator lies inside the buffer and is all zero; every
 * certificate is non-empty, lies inside the buffer, after the entry array (terminator included),
 * and does not overlap another certificate; no GUID appears twice; at most
 * SNP_CERT_TABLE_MAX_ENTRIES entries. Bytes after the last certificate are allowed: the kernel
 * hands back whole pages.
 */
#include "snp/certtable.h"

#include <string.h>

#include "core/alloc.h"
#include "core/bytes.h"
#include "core/log.h"
#include "core/macro.h"

#define ENTRY_SIZE 24u
#define GUID_SIZE 16u

static const struct {
    SnpCertKind kind;
    uint8_t guid[GUID_SIZE];
    const char *name;
} known_guids[] = {
    /* c0b406a4-a803-4952-9743-3fb6014cd0ae */
    {SNP_CERT_ARK,
     {0xc0, 0xb4, 0x06, 0xa4, 0xa8, 0x03, 0x49, 0x52, 0x97, 0x43, 0x3f, 0xb6, 0x01, 0x4c, 0xd0,
      0xae},
     "ARK"},
    /* 4ab7b379-bbac-4fe4-a02f-05aef327c782 */
    {SNP_CERT_ASK,
     {0x4a, 0xb7, 0xb3, 0x79, 0xbb, 0xac, 0x4f, 0xe4, 0xa0, 0x2f, 0x05, 0xae, 0xf3, 0x27, 0xc7,
      0x82},
     "ASK"},
    /* 63da758d-e664-4564-adc5-f4b93be8accd */
    {SNP_CERT_VCEK,
     {0x63, 0xda, 0x75, 0x8d, 0xe6, 0x64, 0x45, 0x64, 0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac,
      0xcd},
     "VCEK"},
    /* a8074bc2-a25a-483e-aae6-39c045a0b8a1 */
    {SNP_CERT_VLEK,
     {0xa8, 0x07, 0x4b, 0xc2, 0xa2, 0x5a, 0x48, 0x3e, 0xaa, 0xe6, 0x39, 0xc0, 0x45, 0xa0, 0xb8,
      0xa1},
     "VLEK"},
};

static SnpCertKind kind_from_guid(const uint8_t guid[GUID_SIZE]) {
    for (size_t i = 0; i < ELEMENTSOF(known_guids); i++)
        if (memcmp(guid, known_guids[i].guid, GUID_SIZE) == 0)
            return known_guids[i].kind;
    return SNP_CERT_OTHER;
}

static const uint8_t *guid_from_kind(SnpCertKind k) {
    for (size_t i = 0; i < ELEMENTSOF(known_guids); i++)
        if (known_guids[i].kind == k)
            return known_guids[i].guid;
    return NULL;
}

const char *snp_cert_kind_to_string(SnpCertKind k) {
    if (k == SNP_CERT_OTHER)
        return "other";
    for (size_t i = 0; i < ELEMENTSOF(known_guids); i++)
        if (known_guids[i].kind == k)
            return known_guids[i].name;
    return NULL;
}

int snp_cert_table_parse(const uint8_t *buf, size_t len, SnpCertTable *ret) {
    SnpCertTable t = {};
    size_t n = 0, array_end;

    if (!buf && len > 0)
        return -EINVAL;

    /* Pass 1: find the terminator. An entry whose GUID is zero must be all zero. */
    for (;; n++) {
        const uint8_t *e;
        if (n > SNP_CERT_TABLE_MAX_ENTRIES)
            return log_debug_errno(-E2BIG, "Certificate table has more than %u entries.",
                                   SNP_CERT_TABLE_MAX_ENTRIES);
        if (len / ENTRY_SIZE < n + 1)
            return log_debug_errno(-EBADMSG, "Certificate table has no terminating entry.");
        e = buf + n * ENTRY_SIZE;
        if (bytes_is_zero(e, GUID_SIZE)) {
            if (!bytes_is_zero(e + GUID_SIZE, ENTRY_SIZE - GUID_SIZE))
                return log_debug_errno(-EBADMSG,
                                       "Certificate table entry %zu has a zero GUID but a "
                                       "non-zero offset or length.",
                                       n);
            break;
        }
    }
    array_end = (n + 1) * ENTRY_SIZE; /* cannot overflow: n <= 64 and it fit in len */

    /* Pass 2: validate each entry against the buffer, the array and each other. */
    for (size_t i = 0; i < n; i++) {
        const uint8_t *e = buf + i * ENTRY_SIZE;
        size_t off = bytes_get_le32(e + GUID_SIZE), l = bytes_get_le32(e + GUID_SIZE + 4);

        if (l == 0)
            return log_debug_errno(-EBADMSG, "Certificate table entry %zu is empty.", i);
        /* off and l are < 2^32 each, but compare without adding them so that a 32-bit size_t
         * cannot wrap. */
        if (off > len || l > len - off)
            return log_debug_errno(-EBADMSG,
                                   "Certificate table entry %zu (offset %zu, length %zu) lies "
                                   "outside the %zu-byte buffer.",
                                   i, off, l, len);
        if (off < array_end)
            return log_debug_errno(-EBADMSG,
                                   "Certificate table entry %zu overlaps the entry array.", i);
        for (size_t j = 0; j < i; j++) {
            const SnpCertEntry *o = t.entries + j;
            size_t ooff = (size_t)(o->der - buf);
            if (memcmp(o->guid, e, GUID_SIZE) == 0)
                return log_debug_errno(-EBADMSG,
                                       "Certificate table entries %zu and %zu have the same "
                                       "GUID.",
                                       j, i);
            if (off < ooff + o->der_len && ooff < off + l)
                return log_debug_errno(-EBADMSG, "Certificate table entries %zu and %zu overlap.",
                                       j, i);
        }

        memcpy(t.entries[i].guid, e, GUID_SIZE);
        t.entries[i].kind = kind_from_guid(e);
        t.entries[i].der = buf + off;
        t.entries[i].der_len = l;
    }
    t.n_entries = n;

    *ret = t;
    return 0;
}

const SnpCertEntry *snp_cert_table_find(const SnpCertTable *t, SnpCertKind kind) {
    for (size_t i = 0; i < t->n_entries; i++)
        if (t->entries[i].kind == kind)
            return t->entries + i;
    return NULL;
}

int snp_cert_table_build(const SnpCertKind *kinds, const uint8_t *const *ders,
                         const size_t *der_lens, size_t n, uint8_t **ret, size_t *ret_len) {
    _cleanup_free_ uint8_t *buf = NULL;
    size_t total, off;

    if (n > SNP_CERT_TABLE_MAX_ENTRIES)
        return -E2BIG;
    if (n > 0 && (!kinds || !ders || !der_lens))
        return -EINVAL;

    total = (n + 1) * ENTRY_SIZE;
    for (size_t i = 0; i < n; i++) {
        /* OTHER has no GUID of its own; a duplicate would make a table parse rejects. */
        if (!guid_from_kind(kinds[i]) || !ders[i] || der_lens[i] == 0)
            return -EINVAL;
        for (size_t j = 0; j < i; j++)
            if (kinds[j] == kinds[i])
                return -EINVAL;
        if (der_lens[i] > UINT32_MAX - total)
            return -EOVERFLOW; /* offsets and lengths are u32 */
        total += der_lens[i];
    }

    buf = nt_calloc(1, total);
    if (!buf)
        return -ENOMEM;

    off = (n + 1) * ENTRY_SIZE;
    for (size_t i = 0; i < n; i++) {
        uint8_t *e = buf + i * ENTRY_SIZE;
        memcpy(e, guid_from_kind(kinds[i]), GUID_SIZE);
        bytes_put_le32(e + GUID_SIZE, (uint32_t)off);
        bytes_put_le32(e + GUID_SIZE + 4, (uint32_t)der_lens[i]);
        memcpy(buf + off, ders[i], der_lens[i]);
        off += der_lens[i];
    }
    /* The terminator is already zero (calloc). */

    *ret = TAKE_PTR(buf);
    *ret_len = total;
    return 0;
}
