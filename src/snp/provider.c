/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Evidence provider selection and the common entry points; the "sim" provider (the simulated
 * firmware of sim.h behind the provider interface); the firmware status table.
 *
 * Auto-detection only ever picks real hardware interfaces (sev-guest, then configfs-tsm): the
 * simulator is used only when asked for by name, so a misconfigured guest cannot silently produce
 * simulated evidence.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/log.h"
#include "core/openssl-util.h"
#include "snp/provider-internal.h"
#include "snp/provider-sevguest.h"
#include "snp/provider-tsm.h"
#include "snp/sim.h"

struct SnpProvider {
    SnpProviderInfo info;
    const SnpProviderOps *ops;
    void *impl;
};

int snp_provider_new(const char *name, const char *detail, const SnpProviderOps *ops, void *impl,
                     SnpProvider **ret) {
    SnpProvider *p = calloc(1, sizeof *p);
    if (!p) {
        ops->done(impl);
        return -ENOMEM;
    }
    p->info.name = name;
    (void)snprintf(p->info.detail, sizeof p->info.detail, "%s", detail ? detail : "");
    p->ops = ops;
    p->impl = impl;
    *ret = p;
    return 0;
}

SnpProvider *snp_provider_free(SnpProvider *p) {
    if (!p)
        return NULL;
    p->ops->done(p->impl);
    free(p);
    return NULL;
}

const SnpProviderInfo *snp_provider_info(const SnpProvider *p) {
    return &p->info;
}

int snp_provider_get_report(SnpProvider *p, const uint8_t report_data[64], uint32_t vmpl,
                            uint8_t **ret_report, size_t *ret_report_len) {
    if (!p || !report_data || !ret_report || !ret_report_len)
        return -EINVAL;
    if (vmpl > 3)
        return -EINVAL;
    return p->ops->get_report(p->impl, report_data, vmpl, ret_report, ret_report_len, NULL, NULL);
}

int snp_provider_get_ext_report(SnpProvider *p, const uint8_t report_data[64], uint32_t vmpl,
                                uint8_t **ret_report, size_t *ret_report_len, uint8_t **ret_certs,
                                size_t *ret_certs_len) {
    if (!p || !report_data || !ret_report || !ret_report_len || !ret_certs || !ret_certs_len)
        return -EINVAL;
    if (vmpl > 3)
        return -EINVAL;
    return p->ops->get_report(p->impl, report_data, vmpl, ret_report, ret_report_len, ret_certs,
                              ret_certs_len);
}

int snp_provider_get_derived_key(SnpProvider *p, const SnpDerivedKeyRequest *req,
                                 Secret **ret_key) {
    if (!p || !req || !ret_key)
        return -EINVAL;
    if (!p->ops->get_derived_key)
        return -EOPNOTSUPP;
    return p->ops->get_derived_key(p->impl, req, ret_key);
}

/* ---- sim ---- */

static int sim_get_report(void *impl, const uint8_t report_data[64], uint32_t vmpl,
                          uint8_t **ret_report, size_t *ret_report_len, uint8_t **ret_certs,
                          size_t *ret_certs_len) {
    SimChip *c = impl;
    _cleanup_free_ uint8_t *rep = malloc(SNP_REPORT_SIZE);
    _cleanup_free_ uint8_t *certs = NULL;
    size_t certs_len = 0;
    int r;

    if (!rep)
        return -ENOMEM;
    r = sim_chip_get_report(c, report_data, vmpl, rep);
    if (r < 0)
        return log_debug_errno(r, "Simulated firmware refused the report request: %m");
    if (ret_certs) {
        r = sim_chip_get_cert_table(c, &certs, &certs_len);
        if (r < 0)
            return r;
        *ret_certs = TAKE_PTR(certs);
        *ret_certs_len = certs_len;
    }
    *ret_report = TAKE_PTR(rep);
    *ret_report_len = SNP_REPORT_SIZE;
    return 0;
}

static int sim_get_derived_key(void *impl, const SnpDerivedKeyRequest *req, Secret **ret_key) {
    return sim_chip_get_derived_key(impl, req, ret_key);
}

static void sim_done(void *impl) {
    sim_chip_free(impl);
}

static const SnpProviderOps sim_ops = {
    .get_report = sim_get_report,
    .get_derived_key = sim_get_derived_key,
    .done = sim_done,
};

static int provider_open_sim(const char *dir, SnpProvider **ret) {
    SimChip *c = NULL;
    int r;

    if (!dir || !*dir)
        dir = getenv("NITRIDE_SIM_DIR");
    if (!dir || !*dir)
        return log_debug_errno(-ENODEV, "The sim provider needs a chip directory "
                                        "(--sim-dir or $NITRIDE_SIM_DIR).");
    r = sim_chip_load(dir, &c);
    if (r < 0)
        return log_debug_errno(r, "Failed to load the simulated chip in '%s': %m", dir);
    return snp_provider_new("sim", dir, &sim_ops, c, ret);
}

/* ---- selection ---- */

static const char *sev_guest_path(void) {
    const char *e = getenv("NITRIDE_SEV_GUEST_DEV");
    return e && *e ? e : "/dev/sev-guest";
}

static const char *tsm_root(void) {
    const char *e = getenv("NITRIDE_TSM_ROOT");
    return e && *e ? e : "/sys/kernel/config/tsm/report";
}

static _Thread_local char missing_message[1024];

static void set_missing_message(const char *why) {
    (void)snprintf(missing_message, sizeof missing_message,
                   "No SEV-SNP evidence provider is usable: %s. This host is not an SEV-SNP guest, "
                   "or the sev-guest driver is not loaded (modprobe sev-guest). To use the "
                   "simulated SNP firmware instead, create a chip with 'nitride sim init DIR "
                   "--product milan|genoa|turin', then pass '--provider sim --sim-dir DIR' or set "
                   "NITRIDE_SIM_DIR=DIR with '--provider sim'.",
                   why);
}

const char *snp_provider_missing_message(void) {
    if (!missing_message[0])
        set_missing_message("neither /dev/sev-guest nor /sys/kernel/config/tsm/report is present");
    return missing_message;
}

int snp_provider_open(const char *name, const char *sim_dir, SnpProvider **ret) {
    char why[600];
    int r, r2;

    if (!ret)
        return -EINVAL;
    if (streq_ptr(name, "sim"))
        return provider_open_sim(sim_dir, ret);
    if (streq_ptr(name, "sev-guest"))
        return snp_provider_sevguest_open(sev_guest_path(), ret);
    if (streq_ptr(name, "tsm"))
        return snp_provider_tsm_open(tsm_root(), NULL, ret);
    if (name && !streq(name, "auto"))
        return log_debug_errno(-EINVAL, "Unknown evidence provider '%s'.", name);

    r = snp_provider_sevguest_open(sev_guest_path(), ret);
    if (r >= 0)
        return r;
    r2 = snp_provider_tsm_open(tsm_root(), NULL, ret);
    if (r2 >= 0)
        return r2;
    (void)snprintf(why, sizeof why,
                   "'%s' cannot be opened (%s), and the configfs-tsm report directory '%s' is "
                   "%s",
                   sev_guest_path(), strerror(-r), tsm_root(),
                   r2 == -ENOENT ? "missing"
                                 : "not usable for SEV-SNP (provider is not sev_guest)");
    set_missing_message(why);
    return log_debug_errno(-ENODEV, "%s", missing_message);
}

/* ---- firmware status codes (SEV-SNP ABI "Status Codes", linux/psp-sev.h) ---- */

const char *snp_fw_strerror(uint32_t fw_error) {
    static const char *const table[] = {
        [0x00] = "success",
        [0x01] = "invalid platform state",
        [0x02] = "invalid guest state",
        [0x03] = "invalid platform configuration",
        [0x04] = "invalid buffer length",
        [0x05] = "platform already owned",
        [0x06] = "invalid certificate",
        [0x07] = "request not allowed by guest policy",
        [0x08] = "guest is inactive",
        [0x09] = "invalid address",
        [0x0A] = "bad signature",
        [0x0B] = "bad measurement",
        [0x0C] = "ASID already owned",
        [0x0D] = "invalid ASID",
        [0x0E] = "WBINVD required",
        [0x0F] = "DF_FLUSH required",
        [0x10] = "invalid guest handle",
        [0x11] = "invalid command",
        [0x12] = "guest is active",
        [0x13] = "hardware error (platform)",
        [0x14] = "hardware error (unsafe)",
        [0x15] = "feature not supported",
        [0x16] = "invalid parameter",
        [0x17] = "resource limit reached",
        [0x18] = "secure data invalid",
        [0x19] = "invalid page size",
        [0x1A] = "invalid page state",
        [0x1B] = "invalid metadata entry",
        [0x1C] = "invalid page owner",
        [0x1D] = "AEAD counter overflow (the guest must be relaunched)",
        [0x1F] = "exit ring buffer",
        [0x20] = "RMP initialisation required",
        [0x21] = "bad SVN",
        [0x22] = "bad version",
        [0x23] = "shutdown required",
        [0x24] = "update failed",
        [0x25] = "restore required",
        [0x26] = "RMP initialisation failed",
        [0x27] = "invalid key (key selection not available)",
    };
    if (fw_error == UINT32_MAX)
        return "no firmware call was made (the request failed in the guest driver or host)";
    if (fw_error < ELEMENTSOF(table) && table[fw_error])
        return table[fw_error];
    return "unknown firmware status";
}

int snp_provider_sealing_key(SnpProvider *p, const SnpDerivedKeyRequest *req, const char *info,
                             Secret **ret_key) {
    _cleanup_(secret_freep) Secret *dk = NULL, *key = NULL;
    int r;

    if (!info || !ret_key)
        return -EINVAL;
    if ((r = snp_provider_get_derived_key(p, req, &dk)) < 0)
        return r;
    if ((r = secret_new(32, &key)) < 0)
        return r;
    if ((r = nt_hkdf_sha256(secret_const_data(dk), secret_size(dk), info, secret_data(key), 32)) <
        0)
        return r;
    *ret_key = TAKE_PTR(key);
    return 0;
}
