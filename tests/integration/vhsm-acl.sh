#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Access control by peer identity: clients run as other uids/gids (the C helper forks and drops
# to setgroups/setgid/setuid before exec'ing the CLI). Needs root to switch users.
. "$(dirname "$0")/vhsm-lib.sh"
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root to run clients as other uids"; exit 77; }
start_vhsmd
printf 'hello\n' >"$T/msg"
chmod 644 "$T/msg"

U=4242 G=4343 A=4545 O=4646 PG=4747
as() { local uid=$1 gid=$2; shift 2; H as-user "$uid" "$gid" -- "$VHSM" --socket "$SOCK" "$@"; }
expect_as() { # code uid gid cmd...
  local want=$1 uid=$2 gid=$3 got=0; shift 3
  as "$uid" "$gid" "$@" >"$T/out" 2>"$T/err" || got=$?
  [ "$got" = "$want" ] || { cat "$T/err" >&2; fail "uid $uid: expected exit $want, got $got: $*"; }
}

# A key for uid U (use) administered by uid A.
V key create app --type p256 --allow-uid $U --admin-uid $A
expect_exit_root() { local want=$1 got=0; shift; "$@" >"$T/out" 2>"$T/err" || got=$?; [ "$got" = "$want" ] || fail "root: expected $want, got $got: $*"; }
# public key export is a use of the key: root is refused, the user gets it
expect_exit_root 5 V pubkey app
expect_as 0 $U $G pubkey 0/app
cp "$T/out" "$T/app.pem"
expect_as 0 $U $G sign 0/app --raw --in "$T/msg"
cp "$T/out" "$T/sig"
openssl dgst -sha256 -verify "$T/app.pem" -signature "$T/sig" "$T/msg" >/dev/null || fail "signature of the permitted uid"
# another uid is refused, with a message naming the key and the reason
expect_as 5 $O $O sign 0/app --in "$T/msg"
grep -q "'0/app'" "$T/err" && grep -qi "permission denied" "$T/err" || fail "denial message: $(cat "$T/err")"
# use vs admin separation
expect_as 5 $U $G key rotate 0/app
expect_as 5 $U $G key delete 0/app
expect_as 5 $A $A sign 0/app --in "$T/msg"
expect_as 0 $A $A key rotate 0/app
[ "$(cat "$T/out")" = 2 ] || fail "admin rotation"
expect_as 0 $U $G sign 0/app --raw --in "$T/msg"   # the user now signs with version 2
# root administers every key but does not get use rights implicitly
expect_exit_root 5 V sign app --in "$T/msg"
expect_exit_root 0 V key info app
# an ACL change is an admin action: root grants itself use, visibly
V key acl app --allow-uid $U --allow-uid 0 --admin-uid $A
expect_exit_root 0 V sign app --in "$T/msg"
# the other uid does not even see the key
expect_as 0 $O $O --json key list
[ "$(jq 'map(.name) | index("0/app")' "$T/out")" = null ] || fail "key visible to an unrelated uid"

# A key permitted by group: the peer's primary gid (SO_PEERCRED) counts, and so do its
# supplementary groups (SO_PEERGROUPS, recorded by the kernel at connect()), as for files
V key create grp --type ed25519 --allow-gid $PG
expect_as 0 5001 $PG sign 0/grp --in "$T/msg"
expect_as 5 5002 5002 sign 0/grp --in "$T/msg"
H as-user 5003 5003 $PG -- "$VHSM" --socket "$SOCK" sign 0/grp --in "$T/msg" >/dev/null ||
  fail "a listed supplementary gid was refused"
rc=0; H as-user 5004 5004 4242 -- "$VHSM" --socket "$SOCK" sign 0/grp --in "$T/msg" >/dev/null 2>&1 || rc=$?
[ "$rc" = 5 ] || fail "an unlisted supplementary gid: exit $rc, expected 5 (permission denied)"
# supplementary groups count for administration too
V key create grp-admin --type aes256 --admin-gid $PG
H as-user 5003 5003 $PG -- "$VHSM" --socket "$SOCK" key rotate 0/grp-admin >/dev/null ||
  fail "a supplementary admin gid could not rotate"

# A key permitted by cgroup: the client's cgroup (read by vhsmd from /proc/PID/cgroup and
# verified through a live SO_PEERPIDFD pidfd) must lie at or below a listed prefix.
CG=$(sed -n 's/^0:://p' /proc/self/cgroup)
if [ -n "$CG" ]; then
  V key create cg --type ed25519 --allow-cgroup "$CG"
  V key create cg2 --type ed25519 --allow-cgroup "${CG%/}/nitride-test-elsewhere"
  if grep -q "No SO_PEERPIDFD" "$VHSMD_LOG"; then # kernel < 6.5: cgroups never trusted
    expect_as 5 5005 5005 sign 0/cg --in "$T/msg"
  else
    expect_as 0 5005 5005 sign 0/cg --in "$T/msg"
  fi
  expect_as 5 5005 5005 sign 0/cg2 --in "$T/msg"
else
  echo "note: no cgroup v2 membership visible; cgroup ACL not checked"
fi

# A key created by a non-root user: that user only; root can delete it but not use it
expect_as 0 $O $O key create mine --type aes256
expect_as 0 $O $O encrypt mine --in "$T/msg"
expect_as 5 $U $G encrypt $O/mine --in "$T/msg"
expect_exit_root 5 V encrypt $O/mine --in "$T/msg"
# Names have owners (finding 4): a plain name lies in the caller's own namespace. An attacker
# cannot create a key under the victim's namespace, and a key the attacker pre-creates under the
# victim's usual name (granting the victim use) does not capture the victim's "create; exists is
# fine" step: the victim's plain name resolves to its own key.
expect_as 12 $O $O key create $U/db --type aes256 --allow-uid $U
grep -q "another owner's namespace" "$T/err" || fail "not-owner message: $(cat "$T/err")"
expect_as 12 $O $O key create kms/db --type aes256
expect_as 12 $O $O key create 0/db --type aes256
expect_as 0 $O $O key create db --type aes256 --allow-uid $U --allow-uid $O
expect_as 0 $U $G key create db --type aes256   # the service's idempotent set-up step
expect_as 0 $U $G encrypt db --in "$T/msg"
cp "$T/out" "$T/db.ct"; chmod 644 "$T/db.ct"
expect_as 5 $O $O decrypt $U/db --in "$T/db.ct"
expect_as 7 $O $O decrypt db --in "$T/db.ct"     # the attacker's own key does not open it
expect_as 0 $U $G decrypt db --in "$T/db.ct"
cmp -s "$T/out" "$T/msg" || fail "the victim's own key decrypts"
expect_as 8 $U $G key create db --type aes256   # taken: in the caller's own namespace only
[ "$(as $U $G --json key info db | jq -r .name)" = "$U/db" ] || fail "plain name resolves to own namespace"

# transfer keys, release import and attestation verdicts are root-only
expect_as 5 $O $O transfer-key create
printf 'e30.e30.sig\n' >"$T/not-a-token"; chmod 644 "$T/not-a-token"
expect_as 5 $O $O attestation set --token "$T/not-a-token"
expect_as 5 $O $O import-release "$T/not-a-token"
expect_exit_root 0 V key delete $O/mine
expect_as 4 $O $O encrypt $O/mine --in "$T/msg"

stop_vhsmd || fail "vhsmd exit status"
echo "vhsm-acl: ok"
