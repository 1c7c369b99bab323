/* SPDX-License-Identifier: Apache-2.0 */
#include "snp/measure.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "core/macro.h"
#include "core/openssl-util.h"
#include "snp/guid.h"

#define PAGE 4096u
#define FOUR_GIB 0x100000000ull
#define PAGE_INFO_LEN 0x70u
#define VMSA_GPA 0xFFFFFFFFF000ull
#define BSP_EIP 0xfffffff0u

enum {
    PAGE_TYPE_NORMAL = 1,
    PAGE_TYPE_VMSA = 2,
    PAGE_TYPE_ZERO = 3,
    PAGE_TYPE_UNMEASURED = 4,
    PAGE_TYPE_SECRETS = 5,
    PAGE_TYPE_CPUID = 6,
};

static _printf_(3, 4) int fail(char *err, int r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, SNP_OVMF_ERR_MAX, fmt, ap);
    va_end(ap);
    return r;
}

static void wr16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static void wr32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static void wr64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* ---- the guest context: the launch digest being extended ---- */

struct SnpGctx {
    EVP_MD *sha384;
    EVP_MD_CTX *ctx;
    uint8_t ld[SNP_MEASUREMENT_SIZE];
};

SnpGctx *snp_gctx_new(void) {
    SnpGctx *g = calloc(1, sizeof(*g));
    if (!g)
        return NULL;
    g->sha384 = EVP_MD_fetch(NULL, "SHA384", NULL);
    g->ctx = EVP_MD_CTX_new();
    if (!g->sha384 || !g->ctx) {
        snp_gctx_free(g);
        return NULL;
    }
    return g;
}

void snp_gctx_free(SnpGctx *g) {
    if (!g)
        return;
    EVP_MD_CTX_free(g->ctx);
    EVP_MD_free(g->sha384);
    free(g);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(SnpGctx *, snp_gctx_free);

static int sha384(SnpGctx *g, const uint8_t *data, size_t len, uint8_t out[48]) {
    unsigned n = 0;
    if (EVP_DigestInit_ex2(g->ctx, g->sha384, NULL) != 1 ||
        EVP_DigestUpdate(g->ctx, data, len) != 1 || EVP_DigestFinal_ex(g->ctx, out, &n) != 1 ||
        n != SNP_MEASUREMENT_SIZE)
        return -EIO;
    return 0;
}

int snp_gctx_update(SnpGctx *g, uint8_t page_type, uint64_t gpa, const uint8_t *contents) {
    uint8_t info[PAGE_INFO_LEN] = {0};
    memcpy(info, g->ld, SNP_MEASUREMENT_SIZE);
    if (contents) {
        int r = sha384(g, contents, PAGE, info + 48);
        if (r < 0)
            return r;
    }
    wr16(info + 96, PAGE_INFO_LEN);
    info[98] = page_type;
    /* IMI_PAGE, VMPL3/2/1_PERMS and the reserved byte stay 0 */
    wr64(info + 104, gpa);
    return sha384(g, info, sizeof(info), g->ld);
}

void snp_gctx_digest(const SnpGctx *g, uint8_t out[SNP_MEASUREMENT_SIZE]) {
    memcpy(out, g->ld, SNP_MEASUREMENT_SIZE);
}

static int gctx_zero_pages(SnpGctx *g, uint8_t type, uint64_t gpa, uint64_t size) {
    for (uint64_t off = 0; off < size; off += PAGE) {
        int r = snp_gctx_update(g, type, gpa + off, NULL);
        if (r < 0)
            return r;
    }
    return 0;
}

/* ---- VMSA ---- */

/* VMCB segment {u16 selector, u16 attrib, u32 limit, u64 base} at index i (es, cs, ss, ds, fs,
 * gs, gdtr, ldtr, idtr, tr). */
static void vmsa_seg(uint8_t *page, unsigned i, uint16_t sel, uint16_t attrib, uint32_t limit,
                     uint64_t base) {
    uint8_t *p = page + 16 * i;
    wr16(p, sel);
    wr16(p + 2, attrib);
    wr32(p + 4, limit);
    wr64(p + 8, base);
}

void snp_vmsa_build(uint8_t page[4096], uint32_t eip, uint32_t vcpu_sig, SnpVmm vmm,
                    uint64_t guest_features) {
    uint16_t cs_flags, ss_flags, tr_flags, fcw;
    uint32_t mxcsr;
    uint64_t rdx, g_pat = 0x7040600070406ull; /* the PAT MSR's reset value */

    switch (vmm) {
    case SNP_VMM_EC2: /* EC2's reset state: fixed RDX, no x87/SSE defaults */
        cs_flags = eip == BSP_EIP ? 0x9a : 0x9b;
        ss_flags = 0x92;
        tr_flags = 0x83;
        rdx = 0x600;
        mxcsr = 0;
        fcw = 0;
        break;
    case SNP_VMM_GCE: /* KVM segments, fixed RDX, no x87/SSE defaults, GCE's own PAT */
        cs_flags = 0x9b;
        ss_flags = 0x93;
        tr_flags = 0x8b;
        rdx = 0x600;
        mxcsr = 0;
        fcw = 0;
        g_pat = 0x00070106;
        break;
    case SNP_VMM_QEMU:
    default:
        cs_flags = 0x9b;
        ss_flags = 0x93;
        tr_flags = 0x8b;
        rdx = vcpu_sig;
        mxcsr = 0x1f80;
        fcw = 0x37f;
        break;
    }

    memset(page, 0, PAGE);
    vmsa_seg(page, 0, 0, 0x93, 0xffff, 0);                          /* es */
    vmsa_seg(page, 1, 0xf000, cs_flags, 0xffff, eip & 0xffff0000u); /* cs */
    vmsa_seg(page, 2, 0, ss_flags, 0xffff, 0);                      /* ss */
    vmsa_seg(page, 3, 0, 0x93, 0xffff, 0);                          /* ds */
    vmsa_seg(page, 4, 0, 0x93, 0xffff, 0);                          /* fs */
    vmsa_seg(page, 5, 0, 0x93, 0xffff, 0);                          /* gs */
    vmsa_seg(page, 6, 0, 0, 0xffff, 0);                             /* gdtr */
    vmsa_seg(page, 7, 0, 0x82, 0xffff, 0);                          /* ldtr */
    vmsa_seg(page, 8, 0, 0, 0xffff, 0);                             /* idtr */
    vmsa_seg(page, 9, 0, tr_flags, 0xffff, 0);                      /* tr */
    wr64(page + 0xd0, 0x1000);                                      /* EFER: KVM sets SVME */
    wr64(page + 0x148, 0x40);                                       /* CR4: KVM sets MCE */
    wr64(page + 0x158, 0x10);                                       /* CR0: ET */
    wr64(page + 0x160, 0x400);                                      /* DR7 */
    wr64(page + 0x168, 0xffff0ff0);                                 /* DR6 */
    wr64(page + 0x170, 0x2);                                        /* RFLAGS */
    wr64(page + 0x178, eip & 0xffff);                               /* RIP */
    wr64(page + 0x268, g_pat);                                      /* G_PAT */
    wr64(page + 0x310, rdx);                                        /* RDX */
    wr64(page + 0x3b0, guest_features);                             /* SEV_FEATURES */
    wr64(page + 0x3e8, 0x1);                                        /* XCR0 */
    wr32(page + 0x408, mxcsr);                                      /* MXCSR */
    wr16(page + 0x410, fcw);                                        /* x87 FCW */
}

/* ---- names ---- */

static const char *const vmm_names[_SNP_VMM_MAX] = {
    [SNP_VMM_QEMU] = "qemu",
    [SNP_VMM_EC2] = "ec2",
    [SNP_VMM_GCE] = "gce",
};

SnpVmm snp_vmm_from_string(const char *s) {
    for (int i = 0; i < _SNP_VMM_MAX; i++)
        if (s && strcasecmp(s, vmm_names[i]) == 0)
            return (SnpVmm)i;
    return _SNP_VMM_INVALID;
}

const char *snp_vmm_to_string(SnpVmm v) {
    return v >= 0 && v < _SNP_VMM_MAX ? vmm_names[v] : NULL;
}

int snp_cpu_sig(unsigned family, unsigned model, unsigned stepping, uint32_t *ret) {
    if (family > 0xf + 0xff || model > 0xff || stepping > 0xf)
        return -EINVAL;
    unsigned fam_lo = family > 0xf ? 0xf : family;
    unsigned fam_hi = family > 0xf ? family - 0xf : 0;
    *ret = (uint32_t)((fam_hi << 20) | ((model >> 4) << 16) | (fam_lo << 8) | ((model & 0xf) << 4) |
                      stepping);
    return 0;
}

static const struct {
    const char *name;
    unsigned family, model, stepping;
    unsigned max_version; /* NAME-v1..vN accepted */
} vcpu_models[] = {
    /* QEMU's builtin_x86_defs (target/i386/cpu.c) */
    {"EPYC", 23, 1, 2, 4},       {"EPYC-IBPB", 23, 1, 2, 0},   {"EPYC-Rome", 23, 49, 0, 5},
    {"EPYC-Milan", 25, 1, 1, 3}, {"EPYC-Genoa", 25, 17, 0, 2}, {"EPYC-Turin", 26, 0, 0, 1},
};

int snp_vcpu_sig_from_name(const char *name, uint32_t *ret) {
    if (!name)
        return -ENOENT;
    for (size_t i = 0; i < ELEMENTSOF(vcpu_models); i++) {
        size_t n = strlen(vcpu_models[i].name);
        if (strncasecmp(name, vcpu_models[i].name, n) != 0)
            continue;
        const char *rest = name + n;
        if (*rest != '\0') {
            if (rest[0] != '-' || (rest[1] != 'v' && rest[1] != 'V') || rest[2] < '1' ||
                rest[2] > '9' || rest[3] != '\0' ||
                (unsigned)(rest[2] - '0') > vcpu_models[i].max_version)
                continue;
        }
        return snp_cpu_sig(vcpu_models[i].family, vcpu_models[i].model, vcpu_models[i].stepping,
                           ret);
    }
    return -ENOENT;
}

/* ---- files ---- */

static int read_full_at(int fd, uint8_t *buf, size_t len, off_t off) {
    while (len > 0) {
        ssize_t n = pread(fd, buf, len, off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EIO; /* shrank under us */
        buf += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

/* SHA-256 of a file, streamed. */
static int sha256_file(const char *path, uint8_t out[32], char *err) {
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(err, -errno, "Failed to open '%s': %s", path, strerror(errno));
    _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex2(ctx, EVP_sha256(), NULL) != 1)
        return fail(err, -EIO, "OpenSSL SHA-256 failed");
    uint8_t buf[65536];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return fail(err, -errno, "Failed to read '%s': %s", path, strerror(errno));
        }
        if (n == 0)
            break;
        if (EVP_DigestUpdate(ctx, buf, (size_t)n) != 1)
            return fail(err, -EIO, "OpenSSL SHA-256 failed");
    }
    unsigned n = 0;
    if (EVP_DigestFinal_ex(ctx, out, &n) != 1 || n != 32)
        return fail(err, -EIO, "OpenSSL SHA-256 failed");
    return 0;
}

static int sha256_buf(const void *buf, size_t len, uint8_t out[32]) {
    unsigned n = 0;
    return EVP_Digest(buf, len, out, &n, EVP_sha256(), NULL) == 1 && n == 32 ? 0 : -EIO;
}

/* QEMU's SEV hashes table (target/i386/sev.c): header GUID, u16 length, then the command line,
 * initrd and kernel entries {GUID, u16 length = 50, SHA-256}; the length excludes the padding to
 * 16 bytes. Written into an otherwise zero page at offset. */
#define HT_ENTRY_LEN (16u + 2u + 32u)
#define HT_LEN (16u + 2u + 3u * HT_ENTRY_LEN)
#define HT_LEN_PADDED ((HT_LEN + 15u) & ~15u)

static void hashes_page(uint8_t page[4096], size_t offset, const SnpMeasureResult *res) {
    memset(page, 0, PAGE);
    uint8_t *p = page + offset;
    memcpy(p, SNP_GUID_SEV_HASH_TABLE_HEADER, 16);
    wr16(p + 16, HT_LEN);
    p += 18;
    const char *guids[3] = {SNP_GUID_SEV_CMDLINE_ENTRY, SNP_GUID_SEV_INITRD_ENTRY,
                            SNP_GUID_SEV_KERNEL_ENTRY};
    const uint8_t *hashes[3] = {res->cmdline_sha256, res->initrd_sha256, res->kernel_sha256};
    for (int i = 0; i < 3; i++) {
        memcpy(p, guids[i], 16);
        wr16(p + 16, HT_ENTRY_LEN);
        memcpy(p + 18, hashes[i], 32);
        p += HT_ENTRY_LEN;
    }
}

int snp_measure(const SnpMeasureInput *in, SnpMeasureResult *ret, char *err) {
    SnpMeasureResult res = {0};
    SnpOvmfInfo info;
    int r;

    if (!in->ovmf_path)
        return fail(err, -EINVAL, "No firmware image given");
    if (in->vcpus < 1 || in->vcpus > SNP_MEASURE_MAX_VCPUS)
        return fail(err, -EINVAL, "vCPU count %u out of range 1..%u", in->vcpus,
                    SNP_MEASURE_MAX_VCPUS);
    if (in->vmm < 0 || in->vmm >= _SNP_VMM_MAX)
        return fail(err, -EINVAL, "Unknown VMM");
    if (!(in->guest_features & 1))
        return fail(err, -EINVAL,
                    "Guest features 0x%" PRIx64 " lack bit 0 (SNPActive), required for SEV-SNP",
                    in->guest_features);
    if (!in->kernel_path && (in->initrd_path || in->append))
        return fail(err, -EINVAL, "An initrd or a command line needs a kernel (--kernel)");

    _cleanup_close_ int fd = open(in->ovmf_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(err, -errno, "Failed to open firmware '%s': %s", in->ovmf_path,
                    strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0)
        return fail(err, -errno, "Failed to stat '%s': %s", in->ovmf_path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return fail(err, -EBADMSG, "Firmware '%s' is not a regular file", in->ovmf_path);
    uint64_t size = (uint64_t)st.st_size;

    /* Parse the footer and metadata before hashing anything. */
    size_t tail_len = (size_t)MIN(size, (uint64_t)SNP_OVMF_TAIL_MAX);
    _cleanup_free_ uint8_t *tail = malloc(tail_len ? tail_len : 1);
    if (!tail)
        return fail(err, -ENOMEM, "Out of memory");
    if (tail_len > 0) {
        r = read_full_at(fd, tail, tail_len, (off_t)(size - tail_len));
        if (r < 0)
            return fail(err, r, "Failed to read '%s': %s", in->ovmf_path, strerror(-r));
    }
    char perr[SNP_OVMF_ERR_MAX];
    r = snp_ovmf_parse(tail, tail_len, size, &info, perr);
    if (r < 0)
        return fail(err, r, "Firmware '%s': %s", in->ovmf_path, perr);
    if (in->vcpus > 1 && info.sev_es_reset_eip == 0)
        return fail(err, -EBADMSG, "Firmware '%s' has no AP reset vector (SEV-ES reset block is 0)",
                    in->ovmf_path);
    res.sev_es_reset_eip = info.sev_es_reset_eip;
    res.ovmf_size = size;

    const SnpOvmfSection *khs = snp_ovmf_find_section(&info, SNP_OVMF_SECTION_KERNEL_HASHES);
    size_t ht_offset = 0;
    if (in->kernel_path) {
        if (!khs)
            return fail(err, -EINVAL,
                        "Firmware '%s' has no SNP_KERNEL_HASHES section: it cannot verify a "
                        "kernel (measured direct boot needs an OVMF built with kernel hashes, "
                        "e.g. OvmfPkg/AmdSev)",
                        in->ovmf_path);
        if (!info.has_hashes_table)
            return fail(err, -EBADMSG,
                        "Firmware '%s' has an SNP_KERNEL_HASHES section but no SEV hashes table "
                        "entry in its footer table",
                        in->ovmf_path);
        if ((info.hashes_table_gpa & ~(uint32_t)(PAGE - 1)) != khs->gpa ||
            (info.hashes_table_gpa & (PAGE - 1)) + HT_LEN_PADDED > PAGE ||
            info.hashes_table_size < HT_LEN_PADDED)
            return fail(err, -EBADMSG,
                        "Firmware '%s': SEV hashes table at 0x%" PRIx32 " (size 0x%" PRIx32
                        ") does not fit the SNP_KERNEL_HASHES page at 0x%" PRIx32,
                        in->ovmf_path, info.hashes_table_gpa, info.hashes_table_size, khs->gpa);
        ht_offset = info.hashes_table_gpa & (PAGE - 1);

        res.direct_boot = true;
        r = sha256_file(in->kernel_path, res.kernel_sha256, err);
        if (r < 0)
            return r;
        if (in->initrd_path) {
            r = sha256_file(in->initrd_path, res.initrd_sha256, err);
            if (r < 0)
                return r;
        } else if (sha256_buf("", 0, res.initrd_sha256) < 0)
            return fail(err, -EIO, "OpenSSL SHA-256 failed");
        const char *cmdline = in->append ? in->append : "";
        if (sha256_buf(cmdline, strlen(cmdline) + 1, res.cmdline_sha256) < 0) /* with its NUL */
            return fail(err, -EIO, "OpenSSL SHA-256 failed");
    }

    _cleanup_(snp_gctx_freep) SnpGctx *g = snp_gctx_new();
    _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *fw256 = EVP_MD_CTX_new();
    if (!g || !fw256 || EVP_DigestInit_ex2(fw256, EVP_sha256(), NULL) != 1)
        return fail(err, -ENOMEM, "Out of memory");

    /* 1. The firmware, a page at a time. */
    uint8_t page[PAGE];
    for (uint64_t off = 0; off < size; off += PAGE) {
        r = read_full_at(fd, page, PAGE, (off_t)off);
        if (r < 0)
            return fail(err, r, "Failed to read '%s': %s", in->ovmf_path, strerror(-r));
        if (EVP_DigestUpdate(fw256, page, PAGE) != 1 ||
            snp_gctx_update(g, PAGE_TYPE_NORMAL, info.gpa + off, page) < 0)
            return fail(err, -EIO, "OpenSSL digest failed");
    }
    unsigned n = 0;
    if (EVP_DigestFinal_ex(fw256, res.ovmf_sha256, &n) != 1)
        return fail(err, -EIO, "OpenSSL digest failed");
    snp_gctx_digest(g, res.ovmf_digest);

    /* 2. The metadata sections. */
    for (size_t i = 0; i < info.n_sections; i++) {
        const SnpOvmfSection *s = &info.sections[i];
        switch (s->type) {
        case SNP_OVMF_SECTION_SEC_MEM: /* GCE adds it as UNMEASURED pages */
            r = gctx_zero_pages(g, in->vmm == SNP_VMM_GCE ? PAGE_TYPE_UNMEASURED : PAGE_TYPE_ZERO,
                                s->gpa, s->size);
            break;
        case SNP_OVMF_SECTION_SVSM_CAA:
            r = gctx_zero_pages(g, PAGE_TYPE_ZERO, s->gpa, s->size);
            break;
        case SNP_OVMF_SECTION_SECRETS:
            r = snp_gctx_update(g, PAGE_TYPE_SECRETS, s->gpa, NULL);
            break;
        case SNP_OVMF_SECTION_CPUID:
            r = in->vmm == SNP_VMM_EC2 ? 0 : snp_gctx_update(g, PAGE_TYPE_CPUID, s->gpa, NULL);
            break;
        case SNP_OVMF_SECTION_KERNEL_HASHES:
            if (res.direct_boot) {
                hashes_page(page, ht_offset, &res);
                r = snp_gctx_update(g, PAGE_TYPE_NORMAL, s->gpa, page);
            } else
                r = gctx_zero_pages(g, PAGE_TYPE_ZERO, s->gpa, s->size);
            break;
        default:
            r = -EBADMSG; /* the parser admits only the types above */
        }
        if (r < 0)
            return fail(err, r, "Failed to measure section %s", snp_ovmf_section_name(s->type));
    }
    if (in->vmm == SNP_VMM_EC2) /* EC2 adds the CPUID page last */
        for (size_t i = 0; i < info.n_sections; i++)
            if (info.sections[i].type == SNP_OVMF_SECTION_CPUID &&
                snp_gctx_update(g, PAGE_TYPE_CPUID, info.sections[i].gpa, NULL) < 0)
                return fail(err, -EIO, "OpenSSL digest failed");

    /* 3. One VMSA per vCPU: the BSP, then the APs (all identical). */
    uint8_t ap[PAGE];
    snp_vmsa_build(page, BSP_EIP, in->vcpu_sig, in->vmm, in->guest_features);
    snp_vmsa_build(ap, info.sev_es_reset_eip, in->vcpu_sig, in->vmm, in->guest_features);
    for (unsigned i = 0; i < in->vcpus; i++)
        if (snp_gctx_update(g, PAGE_TYPE_VMSA, VMSA_GPA, i == 0 ? page : ap) < 0)
            return fail(err, -EIO, "OpenSSL digest failed");

    snp_gctx_digest(g, res.measurement);
    *ret = res;
    return 0;
}
