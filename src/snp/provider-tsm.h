/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The configfs-tsm evidence provider (Documentation/ABI/testing/configfs-tsm). Creating and
 * removing the report directory goes through SnpTsmOps so that tests can model configfs (whose
 * attribute files appear with the directory and go with it) on an ordinary file system.
 */
#pragma once

#include "snp/provider.h"

typedef struct SnpTsmOps {
    int (*make_dir)(const char *path, void *userdata);   /* 0 or negative errno */
    int (*remove_dir)(const char *path, void *userdata); /* 0 or negative errno */
    void *userdata;
} SnpTsmOps;

/* root is the report directory (/sys/kernel/config/tsm/report). ops NULL: mkdir(2)/rmdir(2).
 * Probes it (creates a report entry, checks that the provider is sev_guest, removes it).
 * Returns 0, -ENOENT when root is missing, -ENODEV when the provider is not sev_guest, or a
 * negative errno. ops is copied. */
int snp_provider_tsm_open(const char *root, const SnpTsmOps *ops, SnpProvider **ret);
