/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TEMPORARY: the issue-11 contract's luks_unlock interface (notes/issue11-design.md), sealed
 * path only, until L1's luks_unlock lands in src/luks (then this file and unlock-compat.c go
 * away and the plugin includes luks/luks.h alone). Same names, types and return codes.
 */
#pragma once

#include <stdbool.h>

#include "core/secret.h"
#include "luks/luks.h"

typedef struct LuksUnlockOptions {
    char *provider;      /* evidence provider spec as `nitride --provider` takes; NULL = auto */
    char *vhsm_socket;   /* NULL = default */
    char *ca_file;       /* TLS trust for kmsd/attestd; NULL = system */
    unsigned timeout_ms; /* whole unlock deadline, default 30000 */
    bool allow_remote;   /* default true */
    bool reseal;         /* self-healing re-seal after a remote unlock, default true */
} LuksUnlockOptions;

int luks_unlock_options_load(const char *path, LuksUnlockOptions *ret);
void luks_unlock_options_done(LuksUnlockOptions *o);
int luks_unlock(struct crypt_device *cd, int token, const LuksUnlockOptions *o, Secret **ret_key,
                int *ret_keyslot, LuksRefusal *refusal);
