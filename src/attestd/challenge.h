/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Stateless challenges. A nonce is base64url(random[32] || expires[8, big-endian seconds] ||
 * HMAC-SHA-256(secret, "nitride-challenge-v1" || random || expires)), so any replica holding the
 * challenge secret can check one without shared state. Each replica remembers the nonces it has
 * accepted until they expire (a bounded open-addressing table), so a nonce is accepted once per
 * replica and never after its expiry.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "core/macro.h"

#define NT_CHALLENGE_RANDOM_SIZE 32
#define NT_CHALLENGE_RAW_SIZE (NT_CHALLENGE_RANDOM_SIZE + 8 + 32)
#define NT_CHALLENGE_SECRET_MIN 32

typedef struct NtChallenger NtChallenger;

/* secret: at least NT_CHALLENGE_SECRET_MIN bytes (copied into locked memory). lifetime_s: how
 * long a nonce is valid (1..3600). replay_capacity: nonces remembered at once (>= 16). Returns 0,
 * -EINVAL or -ENOMEM. */
int nt_challenger_new(const uint8_t *secret, size_t secret_len, int64_t lifetime_s,
                      size_t replay_capacity, NtChallenger **ret);
NtChallenger *nt_challenger_free(NtChallenger *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(NtChallenger *, nt_challenger_free);

/* Reads a challenge secret file: must be a regular file not readable or writable by group or
 * others, holding at least NT_CHALLENGE_SECRET_MIN bytes (raw, or hex/base64 text is just bytes
 * too). Errors name the problem in ret_error (malloc'd). */
int nt_challenger_new_from_file(const char *path, int64_t lifetime_s, size_t replay_capacity,
                                NtChallenger **ret, char **ret_error);

/* Issues a nonce valid until *ret_expires. */
int nt_challenge_issue(NtChallenger *c, time_t now, char **ret_nonce, time_t *ret_expires);

typedef enum NtChallengeResult {
    NT_CHALLENGE_OK,
    NT_CHALLENGE_MALFORMED, /* not base64url of the right length */
    NT_CHALLENGE_FORGED,    /* MAC does not verify: not issued with this secret */
    NT_CHALLENGE_EXPIRED,
    NT_CHALLENGE_REPLAYED, /* already accepted by this replica */
    NT_CHALLENGE_BUSY,     /* replay table full of live nonces: try later */
} NtChallengeResult;

const char *nt_challenge_result_to_string(NtChallengeResult r);

/* Checks nonce at now; with consume, an OK nonce is recorded so that it is refused next time.
 * *ret_expires (may be NULL) gets the nonce's expiry when it parsed. Thread-safe. */
NtChallengeResult nt_challenge_check(NtChallenger *c, const char *nonce, time_t now, bool consume,
                                     time_t *ret_expires);

/* Live entries in the replay table (for metrics and tests). */
size_t nt_challenger_replay_size(NtChallenger *c, time_t now);
