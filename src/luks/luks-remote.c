/* SPDX-License-Identifier: Apache-2.0 */
/* The remote slot (docs/luks.md "The remote flow"). */
#include <errno.h>

#include "luks/luks-private.h"

int luks_unlock_remote(struct crypt_device *cd, const LuksToken *t, const LuksUnlockOptions *o,
                       int64_t deadline_ms, SnpProvider **prov, Secret **ret_key,
                       LuksRefusal *refusal) {
    luks_refuse(refusal, "remote", "the remote flow is not in this build yet");
    return -EAGAIN;
}
