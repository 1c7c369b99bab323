#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The verdict's time comes from attestd's signed token (its iat), not from root's word; a time in
# the future would keep keys of the `attested` policy usable beyond their max_age (review finding
# B). Checks: a token issued beyond the clock skew in the future is refused and changes nothing;
# one within the skew is recorded as now, never later; a token issued in the past is accepted
# and only shortens validity (older than max_age: the key stays refused); an expired token is
# refused; the TIMESTAMP of the old ATTESTATION_SET is refused.
[ "$(id -u)" = 0 ] || { echo "SKIP: ATTESTATION_SET is root-only"; exit 77; }
. "$(dirname "$0")/vhsm-lib.sh"
[ -n "$RELTOOL" ] || fail "needs release-tool (\$5)"
start_vhsmd

printf 'message\n' >"$T/msg"
expect_exit() { # code cmd...
  local want=$1 got=0; shift
  "$@" >"$T/out" 2>"$T/err" || got=$?
  [ "$got" = "$want" ] || { cat "$T/err" >&2; fail "expected exit $want, got $got: $*"; }
}
verdict_time() { V --json attestation status | jq -r '.verdict_time'; }
# token LIFETIME IAT: attestd's token for a fresh transfer key of this vhsmd, in $T/tok
token() {
  V transfer-key create --lifetime 600 >"$T/tk.jwk"
  "$RELTOOL" token "$T/attestd" "$T/attestd/chip" "$T/tk.jwk" "$1" "$2" >"$T/tok"
}

V key create att --type aes256 --policy attested --max-age 5
expect_exit 6 V encrypt att --in "$T/msg"

# Issued far in the future, and beyond the 60 s skew: refused, nothing recorded.
now=$(date +%s)
token 300 $((now + 3600))
expect_exit 9 V attestation set --token "$T/tok"
grep -q "future" "$T/err" || fail "no 'future' in the refusal: $(cat "$T/err")"
token 300 $((now + 90))
expect_exit 9 V attestation set --token "$T/tok"
[ "$(verdict_time)" = null ] || fail "a refused verdict time was recorded"
expect_exit 6 V encrypt att --in "$T/msg"

# Within the skew: accepted, but recorded as the daemon's now, not in its future.
now=$(date +%s)
token 300 $((now + 30))
V attestation set --token "$T/tok"
V --json attestation status >"$T/st"
jq -e '.verdict_time != null and .verdict_time <= .now' "$T/st" >/dev/null \
  || fail "verdict time not clamped to now: $(cat "$T/st")"
V encrypt att --in "$T/msg" >/dev/null

# Issued longer ago than max_age (but not expired): accepted, it only shortens validity.
now=$(date +%s)
token 300 $((now - 100))
V attestation set --token "$T/tok"
[ "$(verdict_time)" = $((now - 100)) ] || fail "past verdict time not recorded as the token's iat"
expect_exit 6 V encrypt att --in "$T/msg"
# Issued within max_age: usable.
token 300 $((now - 1))
V attestation set --token "$T/tok"
V encrypt att --in "$T/msg" >/dev/null

# Expired (exp + skew in the past): refused as attestation-required, the verdict stays.
token 300 $((now - 400))
expect_exit 6 V attestation set --token "$T/tok"
grep -q "expired" "$T/err" || fail "no 'expired' in the refusal: $(cat "$T/err")"
[ "$(verdict_time)" = $((now - 1)) ] || fail "a refused token changed the verdict"

# The old form (root's TIMESTAMP, no token) is refused by the daemon.
python3 - "$SOCK" <<'PY' || fail "TIMESTAMP-only ATTESTATION_SET not refused"
import socket, struct, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
body = struct.pack(">HIQ", 0x001D, 8, 0)
s.sendall(struct.pack(">IBBHII", 0x5648534D, 1, 1, 0x0003, 7, len(body)) + body)
hdr = s.recv(16)
magic, ver, kind, status, rid, blen = struct.unpack(">IBBHII", hdr)
assert kind == 2 and rid == 7 and status == 5, status   # invalid-argument
PY
echo "vhsm-attest-time: ok"
