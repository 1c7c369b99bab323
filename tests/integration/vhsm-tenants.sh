#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Hostile local users against the real daemon (issue 8): a uid filling its quota (then several
# filling the shared total) leaves other uids' signing and root's key creation working; an ACL
# burst naming the victim leaves `key list` working; the keystore stays bounded; a keystore with
# more keys than the secure heap holds still starts (and says so), and a restart with a larger
# heap brings every key back. Args: nitride vhsmd vhsm vhsm-tenant-test.
. "$(dirname "$0")/vhsm-lib.sh"
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root to run clients as other uids"; exit 77; }
command -v setpriv >/dev/null || { echo "SKIP: setpriv (util-linux) missing"; exit 77; }
as() { local u=$1; shift; setpriv --reuid "$u" --regid "$u" --clear-groups "$VHSM" --socket "$SOCK" "$@"; }
expect_as() { # code uid cmd...
  local want=$1 uid=$2 got=0; shift 2
  as "$uid" "$@" >"$T/out" 2>"$T/err" || got=$?
  [ "$got" = "$want" ] || { cat "$T/err" >&2; fail "uid $uid: expected exit $want, got $got: $*"; }
}
printf 'hello\n' >"$T/msg"; chmod 644 "$T/msg"
VICTIM=6000

# --- finding 1: quotas. Small limits so that the test is quick; same code paths as the defaults.
start_vhsmd --quota-keys 100 --quota-bytes 1M --quota-total 4M --quota-root 2M
grep -q "Quotas per uid: 100 keys" "$VHSMD_LOG" || fail "quotas not announced"
expect_as 0 $VICTIM key create sig --type p256
H fill "$SOCK" 6101 p256 100000 >"$T/fill" || { cat "$T/fill"; fail "uid 6101 was not stopped by its quota"; }
n=$(sed -n 's/^created \([0-9]*\):.*/\1/p' "$T/fill")
[ "$n" -ge 50 ] && [ "$n" -le 100 ] || fail "uid 6101 created $n keys (quota 100 keys / 1 MiB)"
grep -q "quota exceeded: uid 6101 holds" "$T/fill" || fail "quota message: $(cat "$T/fill")"
expect_as 11 6101 key create one-more --type ed25519
grep -q "quota exceeded" "$T/err" || fail "CLI quota message"
# audit lines of a non-root uid: at most 60 itemised per 10 s, the rest counted exactly in
# "AUDIT: N further actions of uid U" summaries (flushed once the window is over)
sleep 11
items=$(grep -c "AUDIT: Key '6101/f" "$VHSMD_LOG" || true)
more=$(sed -n 's/.*AUDIT: \([0-9]*\) further actions of uid 6101 .*/\1/p' "$VHSMD_LOG" | awk '{s+=$1} END {print s+0}')
echo "audit: $items itemised + $more counted for $n keys created by uid 6101"
[ "$((items + more))" = "$n" ] || fail "audit accounting: $items + $more != $n"
[ "$more" -gt 0 ] && [ "$items" -lt "$n" ] || fail "a burst of key changes was itemised without limit"
expect_as 0 $VICTIM sign sig --in "$T/msg"
expect_as 0 $VICTIM key create sig2 --type rsa2048
# several uids fill the shared non-root total (4 MiB)
for u in 6102 6103 6104 6105; do H fill "$SOCK" $u p384 100000 >"$T/fill" || { cat "$T/fill"; fail "uid $u not stopped"; }; done
expect_as 0 $VICTIM sign sig --in "$T/msg"            # existing keys keep working
expect_as 0 $VICTIM sign sig2 --in "$T/msg"
expect_as 11 $VICTIM key create sig3 --type p256       # the shared limit is reached...
V key create 0/agent --type p384                     # ...but root (the agent) has its reserve
V key create 0/agent-rsa --type rsa2048
V sign 0/agent --in "$T/msg" >/dev/null
# deleting releases the charge
expect_as 0 6102 key delete f0
expect_as 0 6102 key delete f1
expect_as 0 $VICTIM key create sig3 --type p256
# --- finding 8: the keystore stays within half of what the quotas allow (here 3 MiB)
size=$(stat -c %s "$KS")
echo "keystore: $size bytes after the quota fill"
[ "$size" -le $((3 * 1024 * 1024)) ] || fail "keystore $size bytes over the quota bound"

# --- full secure heap at start: a restart with a 16 KiB secure heap still starts
stop_vhsmd || fail "vhsmd stop"
start_vhsmd --quota-keys 100 --quota-bytes 1M --quota-total 4M --quota-root 2M --secure-heap 16K
grep -q "do not fit in the secure heap" "$VHSMD_LOG" || fail "dormant keys not announced"
# root's keys (the agent's) load first: they work; other users' keys are the ones left out
V sign 0/agent --in "$T/msg" >/dev/null || fail "root's key not loaded first"
V sign 0/agent-rsa --in "$T/msg" >/dev/null || fail "root's RSA key not loaded first"
dormant=
for k in $(as 6105 --json key list | jq -r '.[].name'); do
  if [ "$(as 6105 --json key info "$k" | jq .versions[0].loaded)" = false ]; then dormant=$k; break; fi
done
[ -n "$dormant" ] || fail "no dormant key of uid 6105 with a 16 KiB heap"
expect_as 1 6105 sign "$dormant" --in "$T/msg"
grep -q "not loaded" "$T/err" || fail "dormant message: $(cat "$T/err")"
V key create 0/sym --type aes256                     # the daemon still works
V encrypt 0/sym --in "$T/msg" >/dev/null
# a mutation saves dormant keys unchanged: after a restart with the default heap, all are back
stop_vhsmd || fail "vhsmd stop"
: >"$VHSMD_LOG"
start_vhsmd --quota-keys 100 --quota-bytes 1M --quota-total 4M --quota-root 2M
grep -q "do not fit" "$VHSMD_LOG" && fail "keys still dormant with the default heap"
V sign 0/agent --in "$T/msg" >/dev/null || fail "0/agent after restart"
expect_as 0 6105 sign "$dormant" --in "$T/msg"
expect_as 0 $VICTIM sign sig --in "$T/msg"
stop_vhsmd || fail "vhsmd stop"

# --- finding 5: an ACL burst naming the victim (default quotas); `key list` keeps working
# (a new vHSM: its freshness anchor goes too, else the missing keystore is refused as a rollback)
rm -f "$KS" "$ANCHOR"
start_vhsmd
expect_as 0 $VICTIM key create own --type aes256
H aclburst "$SOCK" 6201 $VICTIM 300 >"$T/burst" || { cat "$T/burst"; fail "ACL burst checks"; }
as $VICTIM --json key list >"$T/list" 2>"$T/err" || { cat "$T/err"; fail "victim's key list after the burst"; }
[ "$(jq length "$T/list")" = 301 ] || fail "victim sees $(jq length "$T/list") keys, expected 301"
[ "$(jq -r '.[0].name' "$T/list")" = "$VICTIM/own" ] || fail "list order"
V --json key list >"$T/list" || fail "root's key list after the burst"
[ "$(jq length "$T/list")" = 301 ] || fail "root sees $(jq length "$T/list") keys"
stop_vhsmd || fail "vhsmd exit status"
echo "vhsm-tenants: ok"
