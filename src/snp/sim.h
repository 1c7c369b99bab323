/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The simulated SNP firmware: a chip on disk (a directory) for hosts without SEV-SNP.
 *
 * DIR layout (created by sim_chip_init, all private files mode 0600):
 *   chip.json      product, chip_id, TCBs, launch configuration (measurement, policy, host data,
 *                  id/author key digests, family/image id, guest svn, vmpl, platform info)
 *   ark.pem ask.pem vcek.pem [asvk.pem vlek.pem]   public certificates, AMD's names/extensions
 *   secrets/       ark.key ask.key vcek.key [asvk.key vlek.key] and vmrk/vcek root secrets for
 *                  derived keys. Never printed, never logged, never placed in a report.
 * Reports are byte-exact ATTESTATION_REPORTs signed like hardware (ECDSA P-384/SHA-384 over
 * bytes 0x000..0x29F, r and s little-endian in 72-byte fields).
 * Derived keys follow MSG_KEY_REQ: HKDF over the root secret and the selected guest fields, so
 * the same inputs give the same key and any selected field change gives a different key.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <jansson.h>

#include "core/secret.h"
#include "snp/provider.h"
#include "snp/report.h"

typedef struct SimChip SimChip;

typedef struct SimInitOptions {
    SnpProduct product;
    bool with_vlek;          /* also create ASVK + VLEK */
    uint32_t report_version; /* 2, 3 or 5; 0 = product default (Milan 3, Genoa 3, Turin 5) */
} SimInitOptions;

/* Creates a new chip in dir (created if missing; refuses a non-empty dir with -EEXIST). */
int sim_chip_init(const char *dir, const SimInitOptions *opts);
/* Loads a chip. Returns 0, -ENOENT, -EBADMSG on a corrupt chip. */
int sim_chip_load(const char *dir, SimChip **ret);
SimChip *sim_chip_free(SimChip *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(SimChip *, sim_chip_free);

/* Launch configuration access: the report template the chip signs. Changing it (e.g. a new
 * measurement) models launching a different VM on the same chip. sim_chip_save() persists it. */
SnpReport *sim_chip_launch(SimChip *c);
SnpProduct sim_chip_product(const SimChip *c);
int sim_chip_save(SimChip *c);
/* SNP_LAUNCH_START..FINISH of a guest (the measurement computed from its images, snp/measure.h):
 * sets the launch configuration's measurement, policy, host data and, with an ID block, what it
 * puts into reports (ID and author key digests, AUTHOR_KEY_EN, family id, image id, guest SVN;
 * all zero without one), then saves the chip. id_block/id_auth: both or neither.
 * With an ID block the firmware's checks apply (snp/idblock.h, snp_id_launch_check): a refusal
 * returns -EKEYREJECTED with the firmware status in *ret_fw_status and a message in err
 * (SNP_ID_ERR_MAX), and leaves the chip unchanged. Other returns as sim_chip_save(). */
typedef struct SimLaunchParams {
    uint8_t measurement[48];
    uint64_t policy;
    uint8_t host_data[32];
    const uint8_t *id_block; /* SNP_ID_BLOCK_SIZE bytes, or NULL */
    const uint8_t *id_auth;  /* SNP_ID_AUTH_SIZE bytes, or NULL */
    bool author_key_en;
} SimLaunchParams;
int sim_chip_launch_finish(SimChip *c, const SimLaunchParams *p, int *ret_fw_status, char *err);

/* Sets which key signs reports (VCEK or VLEK, if the chip has one). */
int sim_chip_set_signing_key(SimChip *c, SnpSigningKey k);

/* True if the chip has a VLEK chain (created with --vlek). */
bool sim_chip_has_vlek(const SimChip *c);

/* Produces a signed report with the requested VMPL in it (as firmware). Returns 0, -EINVAL for a
 * VMPL above 3, -EPERM for a VMPL below the guest's (firmware: INVALID_PARAM), -ENOKEY when the
 * selected signing key is missing.
 * sim_chip_save() validates the launch configuration (-EINVAL for a bad TCB encoding, VMPL,
 * policy without the must-be-one bit, changed chip identity; -ENOKEY for VLEK without one).
 * When a guest field changed it draws a new REPORT_ID and VM root key (a new launch); when the
 * reported TCB changed it re-issues the VCEK (and VLEK) certificate for that TCB with the same
 * keys, as AMD's KDS issues one per TCB. */
int sim_chip_get_report(SimChip *c, const uint8_t report_data[64], uint32_t vmpl,
                        uint8_t ret_report[SNP_REPORT_SIZE]);
/* Certificate table for an extended report (VCEK or VLEK, ASK or ASVK, ARK). malloc'd. */
int sim_chip_get_cert_table(SimChip *c, uint8_t **ret, size_t *ret_len);
/* MSG_KEY_REQ. Returns 0 and a 32-byte key, or (firmware answers INVALID_PARAM for each):
 * -EINVAL reserved root/field select bits (bit 6 is reserved below report version 5), VMPL > 3,
 * or a TCB that does not decode for the product; -EPERM a VMPL below the guest's; -ERANGE a guest
 * SVN above the guest's, or a mitigation vector with bits the launch vector lacks; -EOVERFLOW a
 * TCB above the committed TCB. Key = HKDF-SHA384(root secret, encoding of root select, field
 * select, vmpl and each selected field); unselected fields contribute nothing. */
int sim_chip_get_derived_key(SimChip *c, const SnpDerivedKeyRequest *req, Secret **ret_key);
/* A CRL like AMD KDS's /vcek/v1/{product}/crl: X.509 v2 CRL, DER, issuer = the ARK's subject,
 * signed with the chip's ARK key (RSASSA-PSS, SHA-384, MGF1-SHA-384, salt 48), listing the
 * serial numbers of the chip's certificates named in revoke ("vcek", "vlek", "ask", "asvk"),
 * revoked at this_update. Returns 0, -EINVAL (unknown name, next_update before this_update),
 * -ENOKEY (a VLEK/ASVK named on a chip without), -EIO, -ENOMEM. malloc'd *ret_der. */
int sim_chip_make_crl(SimChip *c, const char *const *revoke, size_t n, time_t this_update,
                      time_t next_update, uint8_t **ret_der, size_t *ret_len);
/* Test hook, for verifier tests only: signs rep exactly as given, with no firmware rule applied
 * (a CHIP_ID tail, reserved bytes, any VMPL), with the VCEK or VLEK as rep's SIGNING_KEY field
 * says. Overwrites rep's signature fields. Returns 0, -ENOKEY, -EIO. */
int sim_chip_sign_raw(SimChip *c, SnpReport *rep, uint8_t ret_report[SNP_REPORT_SIZE]);
/* The public configuration (chip.json plus "dir") as JSON; never contains secrets. */
int sim_chip_to_json(const SimChip *c, json_t **ret);
/* Paths of the public certificates (for --trust-anchor etc.). */
const char *sim_chip_dir(const SimChip *c);
