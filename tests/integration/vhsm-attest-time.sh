#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ATTESTATION_SET takes the verdict time from root's word; a time in the future would keep keys
# of the `attested` policy usable beyond their max_age (review finding B). Checks: a time beyond
# the 2 s clock tolerance is refused and changes nothing; a time within it is recorded as now,
# never later; a past time is accepted and only shortens validity.
[ "$(id -u)" = 0 ] || { echo "SKIP: ATTESTATION_SET is root-only"; exit 77; }
. "$(dirname "$0")/vhsm-lib.sh"
start_vhsmd

printf 'message\n' >"$T/msg"
expect_exit() { # code cmd...
  local want=$1 got=0; shift
  "$@" >"$T/out" 2>"$T/err" || got=$?
  [ "$got" = "$want" ] || { cat "$T/err" >&2; fail "expected exit $want, got $got: $*"; }
}
verdict_time() { V --json attestation status | jq -r '.verdict_time'; }

V key create att --type aes256 --policy attested --max-age 5
expect_exit 6 V encrypt att --in "$T/msg"

# Far and slightly (beyond the tolerance) in the future: refused, nothing recorded.
now=$(date +%s)
expect_exit 9 V attestation set --time $((now + 3600))
grep -q "future" "$T/err" || fail "no 'future' in the refusal: $(cat "$T/err")"
expect_exit 9 V attestation set --time $((now + 10))
[ "$(verdict_time)" = null ] || fail "a refused verdict time was recorded"
expect_exit 6 V encrypt att --in "$T/msg"

# Within the tolerance: accepted, but recorded as the daemon's now, not in its future.
now=$(date +%s)
V attestation set --time $((now + 1))
V --json attestation status >"$T/st"
jq -e '.verdict_time != null and .verdict_time <= .now' "$T/st" >/dev/null \
  || fail "verdict time not clamped to now: $(cat "$T/st")"
V encrypt att --in "$T/msg" >/dev/null

# A past time older than max_age: accepted (it only shortens validity), the key is refused.
now=$(date +%s)
V attestation set --time $((now - 100))
[ "$(verdict_time)" = $((now - 100)) ] || fail "past verdict time not recorded as given"
expect_exit 6 V encrypt att --in "$T/msg"
# A past time within max_age: usable.
V attestation set --time $((now - 1))
V encrypt att --in "$T/msg" >/dev/null
echo "vhsm-attest-time: ok"
