/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The appraisal policy: what an authentic report must also show to be accepted (reference
 * measurements, guest policy bits, minimum TCB, ...). A JSON file, documented in docs/policy.md.
 *
 * Parsing is strict: unknown keys, wrong types, out-of-range numbers, malformed hex and empty
 * allow-lists are errors that name the key (e.g. "min_tcb.snp: expected an integer 0..255").
 * Absent keys take the safe defaults documented in docs/policy.md (debug forbidden, migration
 * agent forbidden, masked chip id forbidden, ...). A parsed NtPolicy is immutable and may be
 * shared between threads.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/macro.h"
#include "snp/report.h"
#include "verify/chain.h"
#include "verify/verdict.h"

typedef struct NtHexList {
    uint8_t *items; /* n * item_len bytes */
    size_t n;
    size_t item_len;
} NtHexList;

typedef enum NtChipIdMasked {
    NT_CHIP_ID_MASKED_FORBID,
    NT_CHIP_ID_MASKED_ALLOW,
    NT_CHIP_ID_MASKED_REQUIRE,
    _NT_CHIP_ID_MASKED_MAX,
    _NT_CHIP_ID_MASKED_INVALID = -EINVAL,
} NtChipIdMasked;

/* Bits of NtPolicy.min_tcb_set. */
#define NT_TCB_BOOTLOADER (1u << 0)
#define NT_TCB_TEE (1u << 1)
#define NT_TCB_SNP (1u << 2)
#define NT_TCB_MICROCODE (1u << 3)
#define NT_TCB_FMC (1u << 4)

typedef struct NtPolicy {
    NtHexList measurements;       /* 48-byte items; n == 0: not checked */
    NtHexList host_data;          /* 32 */
    NtHexList id_key_digests;     /* 48 */
    NtHexList author_key_digests; /* 48 */
    bool has_report_data;
    uint8_t report_data[64];
    unsigned min_tcb_set; /* NT_TCB_* bits given */
    SnpTcb min_tcb;
    bool has_min_guest_svn;
    uint32_t min_guest_svn;
    unsigned vmpls; /* bit per allowed VMPL 0..3; 0: not checked */
    bool allow_debug, allow_migrate_ma, allow_smt, require_single_socket;
    bool has_min_abi;
    uint8_t min_abi_major, min_abi_minor;
    bool has_min_firmware;
    uint8_t min_fw_major, min_fw_minor;
    uint32_t min_report_version; /* 0: not checked */
    NtChipIdMasked chip_id_masked;
    unsigned signing_keys; /* bit (1 << NT_CERT_ROLE_VCEK / VLEK) */
    unsigned products;     /* bit (1 << SnpProduct) */
} NtPolicy;

/* Parses a policy from JSON text (untrusted). Returns 0 and *ret, or -EBADMSG with, if ret_error
 * is not NULL, a malloc'd message naming the key in *ret_error; -ENOMEM. */
int nt_policy_parse(const char *text, size_t len, NtPolicy **ret, char **ret_error);
/* Reads and parses a file (at most 1 MiB). I/O errors are returned as negative errno (with a
 * message in *ret_error too). */
int nt_policy_load(const char *path, NtPolicy **ret, char **ret_error);
NtPolicy *nt_policy_free(NtPolicy *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(NtPolicy *, nt_policy_free);

/* Appraises an authentic report: appends one policy-class check per policy item to v.
 * product is the verified product, signing_role VCEK or VLEK. */
void nt_policy_apply(const NtPolicy *p, const SnpReport *r, SnpProduct product,
                     NtCertRole signing_role, NtVerdict *v);

/* TCB helpers used by the policy and the verifier. Formats "bl=3 tee=0 snp=8 ucode=115" (plus
 * "fmc=N " first on Turin) into buf. */
void nt_tcb_format(const SnpTcb *t, SnpProduct p, char *buf, size_t size);
/* Component-wise minimum check over the components in mask (NT_TCB_*; FMC only on Turin).
 * Returns true if every selected component of t is >= min; else false and the first component
 * below the minimum's name in *ret_component. */
bool nt_tcb_meets(const SnpTcb *t, const SnpTcb *min, unsigned mask, SnpProduct p,
                  const char **ret_component);
