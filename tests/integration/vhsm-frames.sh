#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Malformed frames (truncated header/body, oversized length, bad magic/version/kind, garbage,
# unknown opcode, TLV overruns, bad field sizes) each get an error reply or a close while a
# well-behaved client keeps being served; a client stalled mid-frame blocks nobody and is
# disconnected after the stall timeout; a buffer filled exactly by slow requests is answered.
. "$(dirname "$0")/vhsm-lib.sh"
start_vhsmd --stall-timeout 1500
H badframes "$SOCK" || fail "malformed frames"
H stall "$SOCK" 1500 || fail "stalled client"
H pipeline "$SOCK" 300 || fail "pipelined requests with large replies"
# Exactly one full input buffer of slow requests in one write (the turn ends while it is served):
# every reply still arrives, on one worker and on several.
V key create b-p256 --type p256 >/dev/null
timeout 60 "$HELPER" pin "$SOCK" exact 3 0 "$T/exact" || fail "replies lost for an exactly full buffer"
V ping || fail "daemon no longer answers"
stop_vhsmd || fail "vhsmd exit status"
echo "vhsm-frames: ok"
