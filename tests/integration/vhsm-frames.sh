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
# A client that half-closes with replies pending and reads them late: the daemon waits for it
# (no worker spinning on the half-close) and every reply arrives.
ticks() { awk '{ print $14 + $15 }' "/proc/$VHSMD_PID/stat"; }
H pin "$SOCK" halfclose 1 1200 "$T/half" & # within the 1.5 s stall timeout
HALF=$!
for _ in $(seq 1 200); do [ -s "$T/half" ] && break; sleep 0.02; done
[ -s "$T/half" ] || fail "halfclose helper not ready"
t0=$(ticks); sleep 0.8; t1=$(ticks)
wait "$HALF" || fail "replies lost after a half-close"
[ $((t1 - t0)) -lt 20 ] || fail "vhsmd used $((t1 - t0)) ticks of CPU in 0.8 s waiting on a half-closed client"
V ping || fail "daemon no longer answers"
stop_vhsmd || fail "vhsmd exit status"
echo "vhsm-frames: ok"
