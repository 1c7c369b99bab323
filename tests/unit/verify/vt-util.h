/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Helpers shared by the verify unit tests: reading the real vectors (tests/vectors/snp, found
 * through $NT_VECTORS) and small assertions on verdicts.
 */
#pragma once

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fileio.h"
#include "verify/verify.h"

static const char *const vt_vectors[] = {
    "genoa-v3-msft-vcek",    "milan-v2-gosevguest-vcek", "milan-v2-virtee-vcek",
    "milan-v3-trustee-vlek", "turin-v5-msft-vcek",
};
#define VT_N_VECTORS (sizeof(vt_vectors) / sizeof(vt_vectors[0]))
/* 2025-01-01T00:00:00Z: inside every vector's validity, including the VLEK's. */
#define VT_AT_2025 ((time_t)1735689600)

static inline void vt_path(char *buf, size_t size, const char *vec, const char *file) {
    const char *root = getenv("NT_VECTORS");
    snprintf(buf, size, "%s/snp/%s%s%s", root ? root : "tests/vectors", vec, file ? "/" : "",
             file ? file : "");
}

static inline uint8_t *vt_read(const char *vec, const char *file, size_t *ret_len) {
    char p[4096];
    uint8_t *data = NULL;
    vt_path(p, sizeof p, vec, file);
    if (read_full_file(p, 1024 * 1024, &data, ret_len) < 0) {
        fprintf(stderr, "cannot read %s\n", p);
        abort();
    }
    return data;
}

static inline NtCertBundle *vt_bundle(const char *vec) {
    char p[4096];
    NtCertBundle *b = nt_cert_bundle_new();
    vt_path(p, sizeof p, vec, NULL);
    if (!b || nt_cert_bundle_add_dir(b, p) < 0)
        abort();
    return b;
}

static inline const char *vt_failed_check(const NtVerdict *v) {
    const NtCheck *c = nt_verdict_first_failure(v);
    return c ? c->name : "(none)";
}

/* ---- simulated chips made for a test (sim_chip_init in a temporary directory) ---- */

#include <limits.h>
#include <stdbool.h>

#include "snp/sim.h"

typedef struct Chip {
    const char *name;
    SnpProduct product;
    bool vlek;
    uint32_t version;
    char dir[PATH_MAX];
} Chip;

/* Makes tmpdir (a mkdtemp template) and one simulated chip per entry in tmpdir/NAME. */
static inline int vt_chips_init(char *tmpdir, Chip *chips, size_t n) {
    if (!mkdtemp(tmpdir))
        return -1;
    for (size_t i = 0; i < n; i++) {
        SimInitOptions o = {.product = chips[i].product,
                            .with_vlek = chips[i].vlek,
                            .report_version = chips[i].version};
        snprintf(chips[i].dir, sizeof chips[i].dir, "%s/%s", tmpdir, chips[i].name);
        if (sim_chip_init(chips[i].dir, &o) < 0)
            return -1;
    }
    return 0;
}

static inline int vt_chips_remove(const char *tmpdir) {
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}
