/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The configfs-tsm provider. One report = one uniquely named directory under the report root:
 * read generation, write privlevel and inblob (exactly 64 bytes), read outblob (the report) and
 * auxblob (the certificate table, optional), read generation again. Each write bumps generation
 * by one, so anything but +2 means another process wrote to our entry between our writes and our
 * reads, and the report may not carry our REPORT_DATA: that is an error ("racing writer"), never
 * retried silently. The directory is always removed.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fileio.h"
#include "core/log.h"
#include "snp/certtable.h"
#include "snp/provider-internal.h"
#include "snp/provider-tsm.h"

#define ATTR_MAX (256u * 1024u)

typedef struct Tsm {
    char *root;
    SnpTsmOps ops;
} Tsm;

static int default_make_dir(const char *path, void *userdata) {
    return mkdir(path, 0700) < 0 ? negative_errno() : 0;
}

static int default_remove_dir(const char *path, void *userdata) {
    return rmdir(path) < 0 ? negative_errno() : 0;
}

typedef struct ReportEntry {
    const Tsm *tsm;
    char *path;
} ReportEntry;

static void report_entry_done(ReportEntry *e) {
    if (!e->path)
        return;
    int r = e->tsm->ops.remove_dir(e->path, e->tsm->ops.userdata);
    if (r < 0)
        log_debug_errno(r, "Failed to remove report entry '%s': %m", e->path);
    free(e->path);
    e->path = NULL;
}

static int entry_create(const Tsm *t, ReportEntry *ret) {
    uint8_t rnd[8];
    char *path = NULL;
    int r;

    if (RAND_bytes(rnd, sizeof rnd) != 1)
        return -EIO;
    if (asprintf(&path, "%s/nitride-%d-%02x%02x%02x%02x%02x%02x%02x%02x", t->root, (int)getpid(),
                 rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]) < 0)
        return -ENOMEM;
    r = t->ops.make_dir(path, t->ops.userdata);
    if (r < 0) {
        free(path);
        return log_debug_errno(r, "Cannot create a configfs-tsm report entry under '%s': %m",
                               t->root);
    }
    ret->tsm = t;
    ret->path = path;
    return 0;
}

static int attr_read(const char *dir, const char *name, uint8_t **ret, size_t *ret_len) {
    _cleanup_free_ char *p = NULL;
    if (asprintf(&p, "%s/%s", dir, name) < 0)
        return -ENOMEM;
    return read_full_file(p, ATTR_MAX, ret, ret_len);
}

static int attr_write(const char *dir, const char *name, const void *data, size_t len) {
    _cleanup_free_ char *p = NULL;
    _cleanup_close_ int fd = -EBADF;
    ssize_t n;

    if (asprintf(&p, "%s/%s", dir, name) < 0)
        return -ENOMEM;
    fd = open(p, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return log_debug_errno(negative_errno(), "Cannot open '%s': %m", p);
    /* configfs attributes take one write(). */
    n = write(fd, data, len);
    if (n < 0)
        return log_debug_errno(negative_errno(), "Cannot write '%s': %m", p);
    if ((size_t)n != len)
        return log_debug_errno(-EIO, "Short write to '%s'.", p);
    if (close(TAKE_FD(fd)) < 0)
        return log_debug_errno(negative_errno(), "Cannot write '%s': %m", p);
    return 0;
}

static int read_generation(const char *dir, uint64_t *ret) {
    _cleanup_free_ uint8_t *buf = NULL;
    size_t len = 0;
    char *end = NULL;
    unsigned long long v;
    int r;

    r = attr_read(dir, "generation", &buf, &len);
    if (r < 0)
        return log_debug_errno(r, "Cannot read '%s/generation': %m", dir);
    errno = 0;
    v = strtoull((const char *)buf, &end, 10);
    if (errno != 0 || end == (char *)buf || (*end && *end != '\n'))
        return log_debug_errno(-EBADMSG, "'%s/generation' is not a number.", dir);
    *ret = v;
    return 0;
}

static int check_provider(const char *dir) {
    _cleanup_free_ uint8_t *buf = NULL;
    size_t len = 0;
    int r;

    r = attr_read(dir, "provider", &buf, &len);
    if (r < 0)
        return log_debug_errno(-ENODEV, "Cannot read '%s/provider' (not configfs-tsm?): %s", dir,
                               strerror(-r));
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' '))
        buf[--len] = 0;
    if (!streq((const char *)buf, "sev_guest"))
        return log_debug_errno(-ENODEV, "configfs-tsm provider is '%s', not sev_guest.",
                               (const char *)buf);
    return 0;
}

static int tsm_get_report(void *impl, const uint8_t report_data[64], uint32_t vmpl,
                          uint8_t **ret_report, size_t *ret_report_len, uint8_t **ret_certs,
                          size_t *ret_certs_len) {
    Tsm *t = impl;
    _cleanup_(report_entry_done) ReportEntry e = {};
    _cleanup_free_ uint8_t *report = NULL, *aux = NULL;
    size_t report_len = 0, aux_len = 0;
    uint64_t g0 = 0, g1 = 0;
    char priv[16];
    int r;

    r = entry_create(t, &e);
    if (r < 0)
        return r;
    r = check_provider(e.path);
    if (r < 0)
        return r;
    r = read_generation(e.path, &g0);
    if (r < 0)
        return r;
    (void)snprintf(priv, sizeof priv, "%u\n", vmpl);
    r = attr_write(e.path, "privlevel", priv, strlen(priv));
    if (r < 0)
        return r == -EINVAL ? log_debug_errno(-EPERM,
                                              "The kernel refused privlevel %u (below "
                                              "the guest's floor).",
                                              vmpl)
                            : r;
    r = attr_write(e.path, "inblob", report_data, 64);
    if (r < 0)
        return r;
    r = attr_read(e.path, "outblob", &report, &report_len);
    if (r < 0)
        return log_debug_errno(r, "Cannot read '%s/outblob': %m", e.path);
    if (report_len != SNP_REPORT_SIZE)
        return log_debug_errno(-EPROTO, "outblob holds %zu bytes, expected a %u-byte report.",
                               report_len, SNP_REPORT_SIZE);
    if (ret_certs) {
        r = attr_read(e.path, "auxblob", &aux, &aux_len);
        if (r < 0 && r != -ENOENT)
            return log_debug_errno(r, "Cannot read '%s/auxblob': %m", e.path);
    }
    r = read_generation(e.path, &g1);
    if (r < 0)
        return r;
    if (g1 != g0 + 2)
        return log_debug_errno(-EBUSY,
                               "Racing writer on '%s': generation went from %" PRIu64 " to %" PRIu64
                               " across our 2 writes; the report may not be ours.",
                               e.path, g0, g1);

    if (ret_certs) {
        SnpCertTable table;
        if (aux_len == 0) {
            *ret_certs = NULL;
            *ret_certs_len = 0;
        } else {
            r = snp_cert_table_parse(aux, aux_len, &table);
            if (r < 0)
                return log_debug_errno(-EBADMSG, "auxblob is not a valid certificate table.");
            *ret_certs = TAKE_PTR(aux);
            *ret_certs_len = aux_len;
        }
    }
    *ret_report = TAKE_PTR(report);
    *ret_report_len = report_len;
    return 0;
}

static void tsm_done(void *impl) {
    Tsm *t = impl;
    if (!t)
        return;
    free(t->root);
    free(t);
}

static const SnpProviderOps tsm_ops = {
    .get_report = tsm_get_report,
    .get_derived_key = NULL, /* configfs-tsm has no key derivation */
    .done = tsm_done,
};

int snp_provider_tsm_open(const char *root, const SnpTsmOps *ops, SnpProvider **ret) {
    Tsm *t;
    struct stat st;
    int r;

    if (!root || !ret)
        return -EINVAL;
    if (stat(root, &st) < 0)
        return log_debug_errno(negative_errno(), "Cannot access '%s': %m", root);
    if (!S_ISDIR(st.st_mode))
        return -ENOTDIR;
    t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    t->root = strdup(root);
    if (!t->root) {
        free(t);
        return -ENOMEM;
    }
    t->ops =
        ops ? *ops : (SnpTsmOps){.make_dir = default_make_dir, .remove_dir = default_remove_dir};

    /* Probe: only an entry tells which provider backs configfs-tsm. */
    {
        _cleanup_(report_entry_done) ReportEntry e = {};
        r = entry_create(t, &e);
        if (r >= 0)
            r = check_provider(e.path);
    }
    if (r < 0) {
        tsm_done(t);
        return r;
    }
    return snp_provider_new("tsm", root, &tsm_ops, t, ret);
}
