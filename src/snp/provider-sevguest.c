/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The sev-guest provider: SNP_GET_REPORT, SNP_GET_EXT_REPORT and SNP_GET_DERIVED_KEY on
 * /dev/sev-guest, with the structure layouts of linux/sev-guest.h (checked below against the
 * sizes and offsets in SNP-NOTES.md).
 *
 * Errors come in three layers and each is translated: the ioctl errno; exitinfo2 = {fw_error
 * (SEV firmware status of the guest request), vmm_error (1: certificate buffer too small, the
 * needed length is written back to certs_len; 2: host busy)}; and the status word at the start
 * of the MSG_*_RSP response (0x16 invalid parameter, 0x27 invalid key selection).
 */
#include <assert.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "core/bytes.h"
#include "core/log.h"
#include "snp/certtable.h"
#include "snp/provider-internal.h"
#include "snp/provider-sevguest.h"

static_assert(sizeof(struct snp_guest_request_ioctl) == 32, "snp_guest_request_ioctl size");
static_assert(offsetof(struct snp_guest_request_ioctl, req_data) == 8, "req_data offset");
static_assert(offsetof(struct snp_guest_request_ioctl, resp_data) == 16, "resp_data offset");
static_assert(offsetof(struct snp_guest_request_ioctl, exitinfo2) == 24, "exitinfo2 offset");
static_assert(sizeof(struct snp_report_req) == 96, "snp_report_req size");
static_assert(offsetof(struct snp_report_req, vmpl) == 64, "snp_report_req vmpl offset");
static_assert(sizeof(struct snp_report_resp) == 4000, "snp_report_resp size");
static_assert(sizeof(struct snp_derived_key_req) == 32, "snp_derived_key_req size");
static_assert(offsetof(struct snp_derived_key_req, guest_field_select) == 8, "gfs offset");
static_assert(offsetof(struct snp_derived_key_req, vmpl) == 16, "key vmpl offset");
static_assert(offsetof(struct snp_derived_key_req, guest_svn) == 20, "guest_svn offset");
static_assert(offsetof(struct snp_derived_key_req, tcb_version) == 24, "tcb_version offset");
static_assert(sizeof(struct snp_derived_key_resp) == 64, "snp_derived_key_resp size");
static_assert(offsetof(struct snp_ext_report_req, certs_address) == 96, "certs_address offset");
static_assert(offsetof(struct snp_ext_report_req, certs_len) == 104, "certs_len offset");
static_assert(SNP_GET_REPORT == 0xC0205300u, "SNP_GET_REPORT");
static_assert(SNP_GET_DERIVED_KEY == 0xC0205301u, "SNP_GET_DERIVED_KEY");
static_assert(SNP_GET_EXT_REPORT == 0xC0205302u, "SNP_GET_EXT_REPORT");

#define PAGE 4096u
#define MSG_VERSION 1
#define RESP_HEADER 0x20u
#define MSG_STATUS_INVALID_PARAM 0x16u
#define MSG_STATUS_INVALID_KEY 0x27u

typedef struct SevGuest {
    int fd;
    SnpSevGuestTransport transport;
    void *userdata;
} SevGuest;

static int ioctl_transport(void *userdata, unsigned long request,
                           struct snp_guest_request_ioctl *io) {
    SevGuest *g = userdata;
    if (ioctl(g->fd, request, io) < 0)
        return negative_errno();
    return 0;
}

/* One guest request; retries while the host reports busy. */
static int guest_request(SevGuest *g, unsigned long request, void *req, void *resp,
                         struct snp_guest_request_ioctl *ret_io) {
    for (unsigned attempt = 0;; attempt++) {
        struct snp_guest_request_ioctl io = {
            .msg_version = MSG_VERSION,
            .req_data = (uint64_t)(uintptr_t)req,
            .resp_data = (uint64_t)(uintptr_t)resp,
        };
        int r = g->transport(g->userdata, request, &io);
        *ret_io = io;
        if (r >= 0)
            return 0;
        if (io.vmm_error != SNP_GUEST_VMM_ERR_BUSY)
            return r;
        if (attempt >= SNP_SEVGUEST_BUSY_RETRIES)
            return log_debug_errno(-EBUSY, "The host stayed busy after %u attempts.", attempt + 1);
        log_debug("Host busy, retrying guest request (attempt %u).", attempt + 1);
        (void)usleep(SNP_SEVGUEST_BUSY_SLEEP_US << attempt);
    }
}

/* Translates a failed request (errno + exitinfo2). */
static int request_error(int r, const struct snp_guest_request_ioctl *io, const char *what) {
    if (r == -EBUSY)
        return r;
    if (io->fw_error != 0) {
        int e = io->fw_error == MSG_STATUS_INVALID_PARAM ? -EINVAL
                : io->fw_error == MSG_STATUS_INVALID_KEY ? -ENOKEY
                : io->fw_error == 0x07                   ? -EPERM
                                                         : -EIO;
        return log_debug_errno(e, "%s failed: firmware error 0x%x (%s), vmm error %u.", what,
                               io->fw_error, snp_fw_strerror(io->fw_error), io->vmm_error);
    }
    if (io->vmm_error != 0)
        return log_debug_errno(-EPROTO, "%s failed: host (VMM) error %u.", what, io->vmm_error);
    return log_debug_errno(r, "%s failed: %m", what);
}

/* The MSG_*_RSP status word. */
static int response_status(const uint8_t *resp, const char *what) {
    uint32_t status = bytes_get_le32(resp);
    if (status == 0)
        return 0;
    return log_debug_errno(status == MSG_STATUS_INVALID_PARAM ? -EINVAL
                           : status == MSG_STATUS_INVALID_KEY ? -ENOKEY
                                                              : -EIO,
                           "%s: firmware status 0x%x (%s).", what, status, snp_fw_strerror(status));
}

static int copy_report(const struct snp_report_resp *resp, uint8_t **ret, size_t *ret_len) {
    uint32_t size;
    uint8_t *rep;
    int r;

    r = response_status(resp->data, "Report request");
    if (r < 0)
        return r;
    size = bytes_get_le32(resp->data + 4);
    if (size != SNP_REPORT_SIZE)
        return log_debug_errno(-EPROTO, "Firmware returned a %u-byte report, expected %u.", size,
                               SNP_REPORT_SIZE);
    rep = malloc(SNP_REPORT_SIZE);
    if (!rep)
        return -ENOMEM;
    memcpy(rep, resp->data + RESP_HEADER, SNP_REPORT_SIZE);
    *ret = rep;
    *ret_len = SNP_REPORT_SIZE;
    return 0;
}

/* The host's certificate table: validated, trimmed to its last certificate, copied. */
static int copy_certs(const uint8_t *buf, size_t n, uint8_t **ret, size_t *ret_len) {
    SnpCertTable t;
    size_t end;
    int r;

    r = snp_cert_table_parse(buf, n, &t);
    if (r < 0)
        return log_debug_errno(-EBADMSG, "The host supplied a malformed certificate table.");
    if (t.n_entries == 0) {
        *ret = NULL;
        *ret_len = 0;
        return 0;
    }
    end = (t.n_entries + 1) * 24;
    for (size_t i = 0; i < t.n_entries; i++)
        end = MAX(end, (size_t)(t.entries[i].der - buf) + t.entries[i].der_len);
    *ret = malloc(end);
    if (!*ret)
        return -ENOMEM;
    memcpy(*ret, buf, end);
    *ret_len = end;
    return 0;
}

static int sevguest_get_report(void *impl, const uint8_t report_data[64], uint32_t vmpl,
                               uint8_t **ret_report, size_t *ret_report_len, uint8_t **ret_certs,
                               size_t *ret_certs_len) {
    SevGuest *g = impl;
    _cleanup_free_ struct snp_report_resp *resp = calloc(1, sizeof *resp);
    _cleanup_free_ uint8_t *report = NULL, *certs = NULL;
    struct snp_guest_request_ioctl io;
    struct snp_ext_report_req ext = {};
    size_t report_len = 0, n = SNP_SEVGUEST_CERTS_INITIAL;
    int r;

    if (!resp)
        return -ENOMEM;
    memcpy(ext.data.user_data, report_data, sizeof ext.data.user_data);
    ext.data.vmpl = vmpl;

    if (!ret_certs) {
        r = guest_request(g, SNP_GET_REPORT, &ext.data, resp, &io);
        if (r < 0)
            return request_error(r, &io, "SNP_GET_REPORT");
        return copy_report(resp, ret_report, ret_report_len);
    }

    for (unsigned tries = 0;; tries++) {
        free(certs);
        certs = aligned_alloc(PAGE, n);
        if (!certs)
            return -ENOMEM;
        memset(certs, 0, n);
        ext.certs_address = (uint64_t)(uintptr_t)certs;
        ext.certs_len = (uint32_t)n;
        r = guest_request(g, SNP_GET_EXT_REPORT, &ext, resp, &io);
        if (r >= 0)
            break;
        if (io.vmm_error != SNP_GUEST_VMM_ERR_INVALID_LEN)
            return request_error(r, &io, "SNP_GET_EXT_REPORT");
        /* The kernel wrote the length it needs into certs_len. */
        if (ext.certs_len <= n || tries >= 3)
            return log_debug_errno(-EPROTO,
                                   "The host asked for a %u-byte certificate buffer after %zu "
                                   "bytes were offered.",
                                   ext.certs_len, n);
        if (ext.certs_len > SNP_SEVGUEST_CERTS_MAX)
            return log_debug_errno(-E2BIG, "The host's certificates need %u bytes (limit %u).",
                                   ext.certs_len, SNP_SEVGUEST_CERTS_MAX);
        n = ((size_t)ext.certs_len + PAGE - 1) / PAGE * PAGE;
    }
    r = copy_report(resp, &report, &report_len);
    if (r < 0)
        return r;
    r = copy_certs(certs, n, ret_certs, ret_certs_len);
    if (r < 0)
        return r;
    *ret_report = TAKE_PTR(report);
    *ret_report_len = report_len;
    return 0;
}

static int sevguest_get_derived_key(void *impl, const SnpDerivedKeyRequest *req, Secret **ret_key) {
    SevGuest *g = impl;
    struct snp_derived_key_req kreq = {
        .root_key_select = req->root_key_select,
        .guest_field_select = req->guest_field_select,
        .vmpl = req->vmpl,
        .guest_svn = req->guest_svn,
        .tcb_version = req->tcb_version,
    };
    struct snp_derived_key_resp resp = {};
    struct snp_guest_request_ioctl io;
    Secret *key = NULL;
    int r;

    /* The uapi request has no LAUNCH_MIT_VECTOR field: selecting it cannot be honoured. */
    if (req->guest_field_select & SNP_GFS_LAUNCH_MIT_VECTOR)
        return log_debug_errno(-EOPNOTSUPP, "The sev-guest interface cannot carry a launch "
                                            "mitigation vector in a key request.");
    r = guest_request(g, SNP_GET_DERIVED_KEY, &kreq, &resp, &io);
    if (r < 0) {
        explicit_bzero(&resp, sizeof resp);
        return request_error(r, &io, "SNP_GET_DERIVED_KEY");
    }
    r = response_status(resp.data, "Key request");
    if (r >= 0)
        r = secret_new_copy(resp.data + RESP_HEADER, 32, &key);
    explicit_bzero(&resp, sizeof resp);
    if (r < 0)
        return r;
    *ret_key = key;
    return 0;
}

static void sevguest_done(void *impl) {
    SevGuest *g = impl;
    if (!g)
        return;
    if (g->fd >= 0)
        (void)close(g->fd);
    free(g);
}

static const SnpProviderOps sevguest_ops = {
    .get_report = sevguest_get_report,
    .get_derived_key = sevguest_get_derived_key,
    .done = sevguest_done,
};

int snp_provider_sevguest_open(const char *path, SnpProvider **ret) {
    SevGuest *g;
    int fd;

    fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return log_debug_errno(negative_errno(), "Cannot open '%s': %m", path);
    g = calloc(1, sizeof *g);
    if (!g) {
        (void)close(fd);
        return -ENOMEM;
    }
    g->fd = fd;
    g->transport = ioctl_transport;
    g->userdata = g;
    return snp_provider_new("sev-guest", path, &sevguest_ops, g, ret);
}

int snp_provider_sevguest_new(SnpSevGuestTransport transport, void *userdata, SnpProvider **ret) {
    SevGuest *g;

    if (!transport || !ret)
        return -EINVAL;
    g = calloc(1, sizeof *g);
    if (!g)
        return -ENOMEM;
    g->fd = -EBADF;
    g->transport = transport;
    g->userdata = userdata;
    return snp_provider_new("sev-guest", "(custom transport)", &sevguest_ops, g, ret);
}
