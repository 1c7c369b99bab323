/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The metadata an SEV-capable OVMF image carries for the VMM (edk2 OvmfPkg/ResetVector):
 *
 *  - the footer GUID table, which ends 32 bytes before the end of the image: entries laid out
 *    backwards, each {data[], u16 length, guid[16]} where length counts data, length and GUID;
 *    the table itself is such an entry (GUID 96b582de-...) whose data is all the other entries;
 *  - SEV_ES_RESET_BLOCK (00f771de-...): u32 AP reset EIP;
 *  - SEV_HASH_TABLE_RV (7255371f-...): u32 GPA, u32 size of the area for the SEV hashes table
 *    (measured direct boot);
 *  - OVMF_SEV_METADATA (dc886566-...): u32 offset, from the end of the image, of the SEV metadata:
 *    header {"ASEV", u32 length, u32 version = 1, u32 count} then count descriptors
 *    {u32 gpa, u32 size, u32 type} naming the pages the VMM must add at launch (SNP_SEC_MEM 1,
 *    SNP_SECRETS 2, CPUID 3, SVSM_CAA 4, SNP_KERNEL_HASHES 0x10).
 *
 * Parsing is strict: the image must be a non-empty multiple of 4 KiB no larger than 4 GiB, and a
 * missing or malformed footer table, a missing reset block, missing SEV metadata, an unknown
 * metadata version or section type, unaligned or out-of-range sections, duplicate GUIDs or
 * duplicate single sections are all refused with a message naming the fault.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    SNP_OVMF_SECTION_SEC_MEM = 1,
    SNP_OVMF_SECTION_SECRETS = 2,
    SNP_OVMF_SECTION_CPUID = 3,
    SNP_OVMF_SECTION_SVSM_CAA = 4,
    SNP_OVMF_SECTION_KERNEL_HASHES = 0x10,
};

#define SNP_OVMF_MAX_SECTIONS 64u
/* The parser needs at most this many bytes from the end of the image (footer and metadata). */
#define SNP_OVMF_TAIL_MAX (256u * 1024u)
#define SNP_OVMF_IMAGE_MAX (64ull * 1024u * 1024u)
#define SNP_OVMF_ERR_MAX 256u

typedef struct SnpOvmfSection {
    uint32_t gpa;
    uint32_t size;
    uint32_t type;
} SnpOvmfSection;

typedef struct SnpOvmfInfo {
    uint64_t image_size;
    uint64_t gpa; /* 4 GiB - image_size */
    uint32_t sev_es_reset_eip;
    bool has_hashes_table;
    uint32_t hashes_table_gpa;
    uint32_t hashes_table_size;
    SnpOvmfSection sections[SNP_OVMF_MAX_SECTIONS];
    size_t n_sections;
} SnpOvmfInfo;

/* Parses the last tail_len bytes of an image of image_size bytes (tail_len <= image_size; pass
 * min(image_size, SNP_OVMF_TAIL_MAX)). Returns 0, or -EBADMSG with a message in err (at least
 * SNP_OVMF_ERR_MAX bytes). *ret is written only on success. */
int snp_ovmf_parse(const uint8_t *tail, size_t tail_len, uint64_t image_size, SnpOvmfInfo *ret,
                   char *err);
/* The section of a type, or NULL. */
const SnpOvmfSection *snp_ovmf_find_section(const SnpOvmfInfo *info, uint32_t type);
const char *snp_ovmf_section_name(uint32_t type);
