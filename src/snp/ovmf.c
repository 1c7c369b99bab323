/* SPDX-License-Identifier: Apache-2.0 */
#include "snp/ovmf.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/macro.h"
#include "snp/guid.h"

#define FOUR_GIB 0x100000000ull
#define PAGE 4096u
#define ENTRY_HDR 18u /* u16 length + GUID */
#define META_HDR 16u
#define META_DESC 12u

static _printf_(2, 3) int fail(char *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, SNP_OVMF_ERR_MAX, fmt, ap);
    va_end(ap);
    return -EBADMSG;
}

static uint16_t rd16(const uint8_t *p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}
static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

const char *snp_ovmf_section_name(uint32_t type) {
    switch (type) {
    case SNP_OVMF_SECTION_SEC_MEM:
        return "SNP_SEC_MEM";
    case SNP_OVMF_SECTION_SECRETS:
        return "SNP_SECRETS";
    case SNP_OVMF_SECTION_CPUID:
        return "CPUID";
    case SNP_OVMF_SECTION_SVSM_CAA:
        return "SVSM_CAA";
    case SNP_OVMF_SECTION_KERNEL_HASHES:
        return "SNP_KERNEL_HASHES";
    default:
        return NULL;
    }
}

const SnpOvmfSection *snp_ovmf_find_section(const SnpOvmfInfo *info, uint32_t type) {
    for (size_t i = 0; i < info->n_sections; i++)
        if (info->sections[i].type == type)
            return &info->sections[i];
    return NULL;
}

static int parse_metadata(const uint8_t *tail, size_t tail_len, uint64_t image_size,
                          uint32_t offset, SnpOvmfInfo *info, char *err) {
    if (offset < META_HDR || offset > tail_len || offset > image_size)
        return fail(err,
                    "SEV metadata offset %" PRIu32 " from the end of the image is out of range",
                    offset);
    const uint8_t *h = tail + (tail_len - offset);
    size_t avail = offset; /* bytes from the header to the end of the image */
    if (memcmp(h, "ASEV", 4) != 0)
        return fail(err, "SEV metadata header has a bad signature (expected \"ASEV\")");
    uint32_t len = rd32(h + 4), version = rd32(h + 8), count = rd32(h + 12);
    if (version != 1)
        return fail(err, "SEV metadata header has unknown version %" PRIu32 " (expected 1)",
                    version);
    if (count == 0 || count > SNP_OVMF_MAX_SECTIONS)
        return fail(err, "SEV metadata has %" PRIu32 " sections (expected 1 to %u)", count,
                    SNP_OVMF_MAX_SECTIONS);
    if (len != META_HDR + (uint64_t)count * META_DESC || len > avail)
        return fail(err,
                    "SEV metadata length %" PRIu32 " does not match %" PRIu32
                    " sections or runs past the end of the image",
                    len, count);

    info->n_sections = 0;
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *d = h + META_HDR + (size_t)i * META_DESC;
        SnpOvmfSection s = {.gpa = rd32(d), .size = rd32(d + 4), .type = rd32(d + 8)};
        const char *name = snp_ovmf_section_name(s.type);
        if (!name)
            return fail(err, "SEV metadata section %" PRIu32 " has unknown type 0x%" PRIx32, i,
                        s.type);
        if (s.size == 0 || s.gpa % PAGE != 0 || s.size % PAGE != 0 ||
            (uint64_t)s.gpa + s.size > FOUR_GIB)
            return fail(err,
                        "SEV metadata section %s at 0x%" PRIx32 " size 0x%" PRIx32
                        " is empty, not page-aligned or above 4 GiB",
                        name, s.gpa, s.size);
        if ((s.type == SNP_OVMF_SECTION_SECRETS || s.type == SNP_OVMF_SECTION_CPUID ||
             s.type == SNP_OVMF_SECTION_KERNEL_HASHES) &&
            s.size != PAGE)
            return fail(err, "SEV metadata section %s has size 0x%" PRIx32 " (expected one page)",
                        name, s.size);
        if (s.type != SNP_OVMF_SECTION_SEC_MEM && snp_ovmf_find_section(info, s.type))
            return fail(err, "SEV metadata has more than one %s section", name);
        if ((uint64_t)s.gpa + s.size > info->gpa)
            return fail(err, "SEV metadata section %s at 0x%" PRIx32 " overlaps the firmware", name,
                        s.gpa);
        for (size_t j = 0; j < info->n_sections; j++) {
            const SnpOvmfSection *o = &info->sections[j];
            if (s.gpa < (uint64_t)o->gpa + o->size && o->gpa < (uint64_t)s.gpa + s.size)
                return fail(err, "SEV metadata sections %s and %s overlap", name,
                            snp_ovmf_section_name(o->type));
        }
        info->sections[info->n_sections++] = s;
    }
    if (!snp_ovmf_find_section(info, SNP_OVMF_SECTION_SECRETS))
        return fail(err, "SEV metadata has no SNP_SECRETS section");
    return 0;
}

int snp_ovmf_parse(const uint8_t *tail, size_t tail_len, uint64_t image_size, SnpOvmfInfo *ret,
                   char *err) {
    SnpOvmfInfo info = {.image_size = image_size};
    bool have_meta = false, have_reset = false;
    uint32_t meta_offset = 0;

    if (image_size == 0 || image_size % PAGE != 0)
        return fail(err,
                    "firmware image size %" PRIu64 " is not a non-zero multiple of 4096 "
                    "(truncated?)",
                    image_size);
    if (image_size > SNP_OVMF_IMAGE_MAX)
        return fail(err, "firmware image of %" PRIu64 " bytes is larger than %llu", image_size,
                    SNP_OVMF_IMAGE_MAX);
    if (tail_len > image_size || tail_len < 32 + ENTRY_HDR)
        return fail(err, "firmware image too small for an OVMF footer table");
    info.gpa = FOUR_GIB - image_size;

    /* The footer entry: u16 length, GUID, then 32 bytes to the end of the image. */
    size_t foot = tail_len - 32 - ENTRY_HDR;
    if (memcmp(tail + foot + 2, SNP_GUID_OVMF_TABLE_FOOTER, 16) != 0)
        return fail(err, "no OVMF footer GUID table at the end of the firmware (not an SEV-capable "
                         "OVMF image, or truncated)");
    size_t total = rd16(tail + foot);
    if (total < ENTRY_HDR || total - ENTRY_HDR > foot)
        return fail(err, "OVMF footer table has a bad length %zu", total);

    size_t start = foot - (total - ENTRY_HDR);
    size_t end = foot; /* entries are walked backwards from the footer */
    size_t n_seen = 0;
    uint8_t seen[32][16];
    while (end > start) {
        if (end - start < ENTRY_HDR)
            return fail(err, "OVMF footer table has %zu trailing bytes that are not an entry",
                        end - start);
        const uint8_t *guid = tail + end - 16;
        size_t elen = rd16(tail + end - ENTRY_HDR);
        if (elen < ENTRY_HDR || elen > end - start)
            return fail(err, "OVMF footer table entry has a bad length %zu", elen);
        const uint8_t *data = tail + end - elen;
        size_t dlen = elen - ENTRY_HDR;
        for (size_t i = 0; i < n_seen; i++)
            if (memcmp(seen[i], guid, 16) == 0)
                return fail(err, "OVMF footer table has a duplicate entry");
        if (n_seen == ELEMENTSOF(seen))
            return fail(err, "OVMF footer table has too many entries");
        memcpy(seen[n_seen++], guid, 16);

        if (memcmp(guid, SNP_GUID_SEV_ES_RESET_BLOCK, 16) == 0) {
            if (dlen < 4)
                return fail(err, "SEV-ES reset block entry is too short");
            info.sev_es_reset_eip = rd32(data);
            have_reset = true;
        } else if (memcmp(guid, SNP_GUID_SEV_HASH_TABLE_RV, 16) == 0) {
            if (dlen < 8)
                return fail(err, "SEV hashes table entry is too short");
            info.hashes_table_gpa = rd32(data);
            info.hashes_table_size = rd32(data + 4);
            info.has_hashes_table = true;
        } else if (memcmp(guid, SNP_GUID_OVMF_SEV_METADATA, 16) == 0) {
            if (dlen < 4)
                return fail(err, "SEV metadata entry is too short");
            meta_offset = rd32(data);
            have_meta = true;
        }
        end -= elen;
    }

    if (!have_meta)
        return fail(err, "firmware has no SEV metadata (OVMF_SEV_METADATA entry); it cannot be "
                         "launched as an SEV-SNP guest");
    if (!have_reset)
        return fail(err, "firmware has no SEV-ES reset block (AP reset vector)");
    int r = parse_metadata(tail, tail_len, image_size, meta_offset, &info, err);
    if (r < 0)
        return r;
    *ret = info;
    return 0;
}
