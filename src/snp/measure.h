/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The SEV-SNP launch digest (MEASUREMENT of the attestation report) of a guest, computed from the
 * images the VMM loads, as the AMD SEV-SNP firmware ABI specifies it: every SNP_LAUNCH_UPDATE
 * extends the digest with SHA-384 over a 0x70-byte PAGE_INFO
 *   {DIGEST_CUR[48], CONTENTS[48], u16 LENGTH = 0x70, u8 PAGE_TYPE, u8 IMI_PAGE = 0,
 *    u8 VMPL3_PERMS, VMPL2_PERMS, VMPL1_PERMS = 0, u8 reserved, u64 GPA}
 * where CONTENTS is SHA-384 of the page for NORMAL (1) and VMSA (2) pages and zero for ZERO (3),
 * UNMEASURED (4), SECRETS (5) and CPUID (6) pages; VMSA pages have GPA 0xFFFFFFFFF000.
 *
 * The launch sequence (what QEMU, AWS EC2 and GCE do):
 *  1. the OVMF image as NORMAL pages, mapped to end at 4 GiB;
 *  2. the SEV metadata sections in their order: SNP_SEC_MEM (GCE: UNMEASURED pages) and
 *     SVSM_CAA as ZERO pages, SNP_SECRETS as a SECRETS page, CPUID as a CPUID page (EC2: after all
 * other sections), SNP_KERNEL_HASHES as the NORMAL page holding QEMU's SEV hashes table when a
 * kernel is given (measured direct boot), else as ZERO pages;
 *  3. one VMSA page per vCPU: the BSP at the reset vector 0xFFFFFFF0, the APs at the SEV-ES
 *     reset block's EIP, with the VMM's initial register state and SEV_FEATURES.
 *
 * Images are streamed a page at a time.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "snp/ovmf.h"

#define SNP_MEASUREMENT_SIZE 48u
#define SNP_MEASURE_MAX_VCPUS 512u

typedef enum SnpVmm {
    SNP_VMM_QEMU,
    SNP_VMM_EC2,
    SNP_VMM_GCE,
    _SNP_VMM_MAX,
    _SNP_VMM_INVALID = -1,
} SnpVmm;

typedef struct SnpMeasureInput {
    const char *ovmf_path;   /* required */
    const char *kernel_path; /* NULL: no measured direct boot */
    const char *initrd_path; /* NULL: empty initrd (only with a kernel) */
    const char *append;      /* NULL: empty command line (only with a kernel) */
    unsigned vcpus;          /* 1..SNP_MEASURE_MAX_VCPUS */
    uint32_t vcpu_sig;       /* CPUID Fn0000_0001_EAX; QEMU puts it in RDX */
    SnpVmm vmm;
    uint64_t guest_features; /* SEV_FEATURES of the VMSAs; bit 0 (SNPActive) must be set */
} SnpMeasureInput;

typedef struct SnpMeasureResult {
    uint8_t measurement[SNP_MEASUREMENT_SIZE];
    uint8_t ovmf_sha256[32];
    uint8_t ovmf_digest[SNP_MEASUREMENT_SIZE]; /* the launch digest after the firmware pages */
    bool direct_boot;
    uint8_t kernel_sha256[32], initrd_sha256[32], cmdline_sha256[32];
    uint32_t sev_es_reset_eip;
    uint64_t ovmf_size;
} SnpMeasureResult;

/* Computes the launch digest. Returns 0; -EBADMSG for a firmware image that cannot be launched
 * as an SNP guest (message in err); -EINVAL for bad parameters or a kernel with firmware that has
 * no SNP_KERNEL_HASHES section (message in err); -errno for I/O (message in err). err must hold
 * SNP_OVMF_ERR_MAX bytes. */
int snp_measure(const SnpMeasureInput *in, SnpMeasureResult *ret, char *err);

SnpVmm snp_vmm_from_string(const char *s); /* qemu, ec2, gce (any case) */
const char *snp_vmm_to_string(SnpVmm v);
/* CPUID signature from family, model, stepping (AMD CPUID spec 25481, Fn0000_0001_EAX). Returns
 * -EINVAL for values out of range (family 0..0x10e, model 0..255, stepping 0..15). */
int snp_cpu_sig(unsigned family, unsigned model, unsigned stepping, uint32_t *ret);
/* CPU signature of a QEMU CPU model name (EPYC, EPYC-v1..v4, EPYC-IBPB, EPYC-Rome[-vN],
 * EPYC-Milan[-vN], EPYC-Genoa[-vN], EPYC-Turin[-vN]). Returns 0 or -ENOENT. */
int snp_vcpu_sig_from_name(const char *name, uint32_t *ret);

/* Building blocks, exposed for tests and benchmarks. */
typedef struct SnpGctx SnpGctx;
SnpGctx *snp_gctx_new(void);
void snp_gctx_free(SnpGctx *g);
/* Extends the digest with a page of the given type (contents: 4096 bytes for NORMAL and VMSA,
 * NULL otherwise). Returns 0 or -EIO (OpenSSL failure). */
int snp_gctx_update(SnpGctx *g, uint8_t page_type, uint64_t gpa, const uint8_t *contents);
void snp_gctx_digest(const SnpGctx *g, uint8_t out[SNP_MEASUREMENT_SIZE]);
/* The VMSA page of a vCPU starting at eip. */
void snp_vmsa_build(uint8_t page[4096], uint32_t eip, uint32_t vcpu_sig, SnpVmm vmm,
                    uint64_t guest_features);
