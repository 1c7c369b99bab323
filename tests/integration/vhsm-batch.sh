#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Pipelined batches (libvhsm vhsm_batch_*) against the real daemon: mixed operations with failures
# in the middle, decrypt round trips, a batch larger than the socket buffers (no deadlock against
# the daemon's output limit), several batches in flight on one connection (windowed pipelining);
# fairness between connections on a single worker, and with two workers spinning (--spin-us).
# Arguments: nitride vhsmd vhsm vhsm-batch-test (the 4th takes the helper's slot in vhsm-lib.sh).
. "$(dirname "$0")/vhsm-lib.sh"

start_vhsmd --threads 2
V key create b-p256 --type p256 >/dev/null
V key create b-aes --type aes256 >/dev/null
V key create b-hmac --type hmac-sha256 >/dev/null
V key create b-ed --type ed25519 >/dev/null

timeout 120 "$HELPER" "$SOCK" || fail "batch checks failed"

# The daemon must still be healthy and serve single calls after the batches.
V ping >/dev/null || fail "vhsmd unhealthy after batches"
stop_vhsmd || fail "vhsmd did not stop cleanly"

# Fairness: one worker, one connection flooding slow signatures, another one pinging.
start_vhsmd --threads 1
V key create b-rsa4k --type rsa4096 >/dev/null
timeout 120 "$HELPER" "$SOCK" fair || fail "fairness check failed"
stop_vhsmd || fail "vhsmd did not stop cleanly"
# Fairness with the daemon spinning for synchronous clients' next requests (--spin-us): two
# clients that always answer within the window must not keep both workers from a third.
start_vhsmd --threads 2 --spin-us 10000
timeout 120 "$HELPER" "$SOCK" spinfair || fail "spin fairness check failed"
stop_vhsmd || fail "vhsmd did not stop cleanly"
echo "vhsm-batch: OK"
