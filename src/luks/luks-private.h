/* SPDX-License-Identifier: Apache-2.0 */
/* Internal helpers of libnt_luks shared by its files (not for callers: luks.h is the API). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "luks/luks.h"

/* The bind of a re-seal when a token has none: measurement and policy. */
#define LUKS_DEFAULT_BIND (SNP_GFS_MEASUREMENT | SNP_GFS_GUEST_POLICY)

void luks_refuse(LuksRefusal *r, const char *check, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The fault hook (luks_set_fault_hook) at step; 0 when none is set. */
int luks_fault(const char *step);
int64_t luks_now_ms(void); /* CLOCK_MONOTONIC */
/* Opens *prov from o->provider when it is NULL (luks_provider_open), with the refusal
 * "provider" when none is usable. Returns 0 or luks_provider_open's error. */
int luks_provider_ensure(const LuksUnlockOptions *o, SnpProvider **prov, LuksRefusal *refusal);

/* The remote slot of t (luks-remote.c): attestation, kmsd's release sealed to this process's own
 * transfer key, opened here. *prov is opened when NULL (and kept for the re-seal). Returns 0 and
 * the key (not yet checked against the keyslot), -EAGAIN (no provider, services unreachable
 * within the deadline), -ECONNREFUSED (a service refuses connections: it is down), -EPERM (attestd
 * or kmsd refused: *refusal), -EBADMSG (bad answer). */
int luks_unlock_remote(struct crypt_device *cd, const LuksToken *t, const LuksUnlockOptions *o,
                       int64_t deadline_ms, SnpProvider **prov, const char *purpose,
                       Secret **ret_key, LuksRefusal *refusal);
