/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Evidence providers: one interface, three implementations.
 *   sev-guest  /dev/sev-guest ioctls (SNP_GET_REPORT, SNP_GET_EXT_REPORT, SNP_GET_DERIVED_KEY)
 *   tsm        configfs-tsm (/sys/kernel/config/tsm/report)
 *   sim        the simulated SNP firmware (sim.h), for hosts without SEV-SNP
 * snp_provider_open(NULL or "auto") detects: sev-guest if /dev/sev-guest opens, else tsm if the
 * configfs report directory exists with provider sev_guest, else -ENODEV with a message that
 * names what is missing and how to use the simulator ($NITRIDE_SIM_DIR or --provider sim).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/secret.h"
#include "snp/report.h"

typedef struct SnpProvider SnpProvider;

/* MSG_KEY_REQ (SEV-SNP ABI "MSG_KEY_REQ Message Structure"). */
#define SNP_KEY_ROOT_VCEK 0u
#define SNP_KEY_ROOT_VMRK 1u
/* GUEST_FIELD_SELECT bits. */
#define SNP_GFS_GUEST_POLICY (1ull << 0)
#define SNP_GFS_IMAGE_ID (1ull << 1)
#define SNP_GFS_FAMILY_ID (1ull << 2)
#define SNP_GFS_MEASUREMENT (1ull << 3)
#define SNP_GFS_GUEST_SVN (1ull << 4)
#define SNP_GFS_TCB_VERSION (1ull << 5)
#define SNP_GFS_LAUNCH_MIT_VECTOR (1ull << 6)

typedef struct SnpDerivedKeyRequest {
    uint32_t root_key_select; /* SNP_KEY_ROOT_VCEK or SNP_KEY_ROOT_VMRK */
    uint64_t guest_field_select;
    uint32_t vmpl;        /* must be >= the caller's VMPL */
    uint32_t guest_svn;   /* must be <= the guest's SVN */
    uint64_t tcb_version; /* must be <= the committed TCB */
    uint64_t launch_mit_vector;
} SnpDerivedKeyRequest;

typedef struct SnpProviderInfo {
    const char *name; /* "sev-guest", "tsm", "sim" */
    char detail[256]; /* device path, configfs path or sim directory */
} SnpProviderInfo;

/* name: "sev-guest", "tsm", "sim", NULL/"auto". For "sim", sim_dir names the chip directory
 * (else $NITRIDE_SIM_DIR). Returns 0, -ENODEV (nothing usable; a clear message was logged at
 * error level by the caller-visible helper snp_provider_missing_message()), or negative errno.
 * Device paths: $NITRIDE_SEV_GUEST_DEV (default /dev/sev-guest), $NITRIDE_TSM_ROOT (default
 * /sys/kernel/config/tsm/report). Auto never picks "sim". A named provider returns its own
 * error: sev-guest the open() errno, tsm -ENOENT (no root) or -ENODEV (provider not sev_guest),
 * sim -ENODEV (no directory given) or sim_chip_load()'s error; unknown names -EINVAL.
 * Report errors: -EINVAL firmware INVALID_PARAM (e.g. a VMPL below the guest's), -ENOKEY invalid
 * key selection, -EPERM (sim, tsm) a VMPL below the guest's, -EBUSY host busy after bounded
 * retries or (tsm) a racing writer on the report entry, -EPROTO malformed answer, -EBADMSG a
 * malformed certificate table from the host, -E2BIG certificates larger than 256 KiB. */
int snp_provider_open(const char *name, const char *sim_dir, SnpProvider **ret);
SnpProvider *snp_provider_free(SnpProvider *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(SnpProvider *, snp_provider_free);
const SnpProviderInfo *snp_provider_info(const SnpProvider *p);
/* A human message explaining that no provider is usable and how to use the simulator. */
const char *snp_provider_missing_message(void);

/* Requests a report with 64 bytes of REPORT_DATA at the given VMPL. *ret gets the raw
 * SNP_REPORT_SIZE bytes (malloc'd). Firmware errors are translated (see snp_fw_strerror). */
int snp_provider_get_report(SnpProvider *p, const uint8_t report_data[64], uint32_t vmpl,
                            uint8_t **ret_report, size_t *ret_report_len);
/* Extended report: the report plus the certificate table (certtable.h format), both malloc'd.
 * *ret_certs may be NULL with *ret_certs_len 0 when the host supplies no certificates. */
int snp_provider_get_ext_report(SnpProvider *p, const uint8_t report_data[64], uint32_t vmpl,
                                uint8_t **ret_report, size_t *ret_report_len, uint8_t **ret_certs,
                                size_t *ret_certs_len);
/* Derived key (32 bytes) into a Secret. -EOPNOTSUPP if the provider cannot derive keys (tsm). */
int snp_provider_get_derived_key(SnpProvider *p, const SnpDerivedKeyRequest *req, Secret **ret_key);
/* A 32-byte sealing key: HKDF-SHA256 (no salt) over the derived key for req, with info as the
 * HKDF info. Errors as snp_provider_get_derived_key, -EIO on an OpenSSL failure. */
int snp_provider_sealing_key(SnpProvider *p, const SnpDerivedKeyRequest *req, const char *info,
                             Secret **ret_key);

/* Firmware status codes (SEV-SNP ABI "Status Codes") to text. */
const char *snp_fw_strerror(uint32_t fw_error);
