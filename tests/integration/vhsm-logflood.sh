#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# vhsmd's log under a flood (issue 8, finding 6). One uid hammering requests it is denied and
# another churning connections over its per-uid limit used to produce tens of thousands of
# "Denied ..." and "Connection limit ..." lines per second, which journald's rate limit then
# dropped together with the audit lines. Now: those lines are rate-limited (per uid, and a global
# budget of 60 per 10 s), a connection that keeps sending denied requests is closed after 64
# denials, and audit lines ("AUDIT: ...") are never suppressed: root's ACL change during the
# flood is logged.
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root to run clients as other uids"; exit 77; }
. "$(dirname "$0")/vhsm-lib.sh"
OUT=$T/out
mkdir -m 1777 "$OUT"
FLOOD_MS=4000

start_vhsmd --threads 2
V key create audited --type aes256 >/dev/null
L0=$(wc -l <"$VHSMD_LOG")
T0=$(date +%s%N)
H as-user 7101 7101 -- "$HELPER" deny "$SOCK" "$FLOOD_MS" "$OUT/deny" 2>>"$T/deny.log" &
DENY=$!
# 140 at a time: over the default limit of 128 per uid.
H as-user 7102 7102 -- "$HELPER" churn "$SOCK" 140 "$FLOOD_MS" 2>>"$T/churn.log" &
CHURN=$!
sleep 2
# Root's audited change in the middle of the flood.
V key acl audited --allow-uid 7103 || fail "root's ACL change failed during the flood"
wait "$DENY" || { cat "$T/deny.log" >&2; fail "deny helper failed"; }
wait "$CHURN" || { cat "$T/churn.log" >&2; fail "churn helper failed"; }
T1=$(date +%s%N)
L1=$(wc -l <"$VHSMD_LOG")
LINES=$((L1 - L0)) MS=$(((T1 - T0) / 1000000))
read -r DENIED CLOSES MAXRUN < <(sed 's/denied=\([0-9]*\) closes=\([0-9]*\) maxrun=\([0-9]*\)/\1 \2 \3/' "$OUT/deny")
echo "flood of ${MS} ms: $DENIED denied requests, $CLOSES connections closed by vhsmd" \
  "(at most $MAXRUN denials on one); $LINES log lines ($((LINES * 1000 / MS)) per s)"

[ "$DENIED" -ge 200 ] || fail "only $DENIED denied requests: no flood"
grep -q "Denied attestation-set\|Denied .* to uid 7101" "$VHSMD_LOG" || fail "no denial logged at all"
grep -q "Connection limit reached.*uid 7102" "$VHSMD_LOG" || fail "no connection limit hit logged"
# Bounded: the global budget is 60 lines per 10 s, plus a summary or two and the audit line.
[ "$LINES" -le 70 ] || fail "$LINES log lines during the flood (unbounded?)"
# Connections sending denied requests are closed after 64 denials (the 65th is answered).
[ "$CLOSES" -ge 1 ] || fail "a connection sending only denied requests was never closed"
[ "$MAXRUN" -le 65 ] || fail "$MAXRUN denials answered on one connection"
grep -q "AUDIT: ACL of key '0/audited' replaced by uid 0" "$VHSMD_LOG" ||
  fail "the audit line of root's ACL change is missing"
# The daemon is still fine for others.
V ping >/dev/null || fail "root not served after the flood"
H as-user 7101 7101 -- "$VHSM" --socket "$SOCK" ping >/dev/null || fail "uid 7101 not served after"
stop_vhsmd || fail "vhsmd exit status"
echo "vhsm-logflood: ok"
