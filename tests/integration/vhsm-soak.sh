#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The hostile-tenant soak (issue 8): four attacker uids mix valid and hostile requests while a
# victim uid signs, encrypts and creates keys and root keeps creating keys in 0/; every victim
# and root operation must succeed with bounded latency, every hostile request be refused.
# NT_SOAK_SECONDS (default 60; `make soak` runs longer). Args: nitride vhsmd vhsm vhsm-tenant-test.
. "$(dirname "$0")/vhsm-lib.sh"
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root to run clients as other uids"; exit 77; }
secs=${NT_SOAK_SECONDS:-60}
start_vhsmd ${NT_SOAK_VHSMD_ARGS:-}
H soak "$SOCK" "$secs" || fail "soak"
kill -0 "$VHSMD_PID" || fail "vhsmd died"
V ping >/dev/null || fail "vhsmd unresponsive after the soak"
stop_vhsmd || fail "vhsmd exit status"
echo "vhsm-soak: ok"
