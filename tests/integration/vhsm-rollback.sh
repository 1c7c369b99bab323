#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Rollback of the sealed keystore (issue 8, docs/vault.md "Freshness and rollback"): an older
# copy of the keystore file put back while vhsmd is stopped (what the host, which holds the disk,
# can do) is refused at start-up with both generations named, and left untouched; so is a
# deleted keystore and a forged anchor. --accept-rollback of exactly the file's generation
# starts, logs an AUDIT line, and from then on the newer files stay refused.
. "$(dirname "$0")/vhsm-lib.sh"

# start_refused LOG [extra args]: vhsmd must exit non-zero at start-up without a socket.
start_refused() {
  local log=$1 rc=0
  shift
  timeout 20 "$VHSMD" --foreground --socket "$SOCK" --keystore "$KS" --provider sim \
    --sim-dir "$SIM" --freshness-anchor "file:$ANCHOR" "$@" >"$log" 2>&1 || rc=$?
  [ "$rc" != 0 ] && [ "$rc" != 124 ] || fail "vhsmd started (rc $rc): $(cat "$log")"
  [ ! -e "$SOCK" ] || fail "socket created by a daemon that refused to start"
}

start_vhsmd
V key create doomed --type aes256
V key create keep --type p256
V pubkey keep >"$T/keep.pub"
cp "$KS" "$T/ks.old"
V key delete doomed
if V key info doomed >/dev/null 2>&1; then fail "deleted key still there"; fi
stop_vhsmd
[ -s "$ANCHOR" ] || fail "no freshness anchor written"
cp "$KS" "$T/ks.new"

# The host restores the old file: refused, with both generations, file untouched.
cp "$T/ks.old" "$KS"
sha_before=$(sha256sum "$KS")
start_refused "$T/rollback.log"
grep -q "Refusing to start" "$T/rollback.log" || fail "message: $(cat "$T/rollback.log")"
grep -q "rollback" "$T/rollback.log" || fail "message does not say rollback: $(cat "$T/rollback.log")"
old=$(sed -n 's/.* is generation \([0-9]*\), older than generation.*/\1/p' "$T/rollback.log")
anchor=$(sed -n 's/.*older than generation \([0-9]*\) recorded in the freshness anchor.*/\1/p' \
  "$T/rollback.log")
[ -n "$old" ] && [ -n "$anchor" ] || fail "generations not named: $(cat "$T/rollback.log")"
[ "$old" -lt "$anchor" ] || fail "old generation $old not below anchor $anchor"
grep -q -- "--accept-rollback $old" "$T/rollback.log" || fail "override not suggested"
[ "$(sha256sum "$KS")" = "$sha_before" ] || fail "refused keystore was modified"

# An override of another generation accepts nothing.
start_refused "$T/wrong.log" --accept-rollback $((old + 1))
grep -q "does not match" "$T/wrong.log" || fail "wrong override message: $(cat "$T/wrong.log")"
[ "$(sha256sum "$KS")" = "$sha_before" ] || fail "keystore modified by a wrong override"

# A deleted keystore is a rollback too (to generation 0).
rm "$KS"
start_refused "$T/deleted.log"
grep -q "missing" "$T/deleted.log" || fail "deleted keystore message: $(cat "$T/deleted.log")"
[ ! -e "$KS" ] || fail "an empty keystore was created"

# A forged anchor (its generation lowered to match the old file; the MAC cannot be recomputed
# without the VM's key) and a garbage one are refused, not silently replaced.
cp "$T/ks.old" "$KS"
cp "$ANCHOR" "$T/anchor.good"
printf "$(printf '\\%03o' 0 0 0 0 0 0 0 "$old")" | dd of="$ANCHOR" bs=1 seek=8 conv=notrunc status=none
start_refused "$T/forged.log"
grep -q "Freshness anchor .* is not valid (.*authentication.*)\|Freshness anchor .* is not valid" \
  "$T/forged.log" || fail "forged anchor: $(cat "$T/forged.log")"
cmp -s "$ANCHOR" "$T/anchor.good" && fail "the anchor was not modified by the test"
head -c 48 /dev/urandom >"$ANCHOR"
start_refused "$T/garbage.log"
grep -q "Freshness anchor .* is not valid" "$T/garbage.log" || fail "garbage anchor accepted"
cp "$T/anchor.good" "$ANCHOR"

# The operator accepts exactly the old generation: starts, audit line, old state back.
cp "$T/ks.old" "$KS"
start_vhsmd --accept-rollback "$old"
grep -q "AUDIT: keystore rollback accepted by the operator (--accept-rollback $old)" "$VHSMD_LOG" ||
  fail "no audit line"
V key info doomed >/dev/null || fail "accepted state lacks the restored key"
cmp -s <(V pubkey keep) "$T/keep.pub" || fail "key changed across the accepted rollback"
stop_vhsmd

# Generations went on above the old anchor: the newer file the host still has is refused now.
cp "$KS" "$T/ks.current"
cp "$T/ks.new" "$KS"
start_refused "$T/newer.log"
grep -q "older than generation" "$T/newer.log" || fail "newer file accepted: $(cat "$T/newer.log")"
cp "$T/ks.current" "$KS"
start_vhsmd
V key info doomed >/dev/null || fail "state lost after the accepted rollback"
stop_vhsmd
echo "vhsm-rollback: ok"
