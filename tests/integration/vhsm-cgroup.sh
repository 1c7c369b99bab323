#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# cgroup ACL entries against the real daemon: a key whose ACL lists a cgroup is usable from a
# process in that cgroup (vhsmd reads the cgroup through the peer's SO_PEERPIDFD pidfd) and
# refused elsewhere; with VHSMD_TEST_NO_PEERPIDFD=1 (a kernel without SO_PEERPIDFD, simulated)
# the cgroup is unknown and the same process is refused, while uid entries still work.
# Needs root and a writable cgroup v2 hierarchy (a child cgroup is created and removed).
. "$(dirname "$0")/vhsm-lib.sh"
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (child cgroup, clients as other uids)"; exit 77; }

# The cgroup v2 mount showing our namespace's root, and our own cgroup below it.
MNT=$(awk '{ for (i = 7; $i != "-"; i++); if ($(i + 1) == "cgroup2" && $4 == "/") { print $5; exit } }' \
  /proc/self/mountinfo)
SELF=$(sed -n 's/^0:://p' /proc/self/cgroup)
[ -n "$MNT" ] && [ -n "$SELF" ] || { echo "SKIP: no cgroup v2 hierarchy mounted"; exit 77; }
CG="${SELF%/}/nitride-test-$$"
CGDIR="$MNT$CG"
mkdir "$CGDIR" 2>/dev/null || { echo "SKIP: cannot create $CGDIR (cgroup v2 not writable)"; exit 77; }
trap 'rmdir "$CGDIR" 2>/dev/null || true; cleanup' EXIT
# refuse to go on if a process cannot be moved there (then the test would prove nothing)
sh -c 'echo $$ >"$1/cgroup.procs" && grep -qx "0::$2" /proc/self/cgroup' sh "$CGDIR" "$CG" ||
  { echo "SKIP: cannot move a process into $CGDIR"; exit 77; }

printf 'hello\n' >"$T/msg"
chmod 644 "$T/msg"
U=5101
# in_cg CMD...: runs the CLI as uid U from inside the child cgroup; exit status of the CLI
in_cg() { sh -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' sh "$CGDIR" \
  "$HELPER" as-user $U $U -- "$VHSM" --socket "$SOCK" "$@"; }
outside() { H as-user $U $U -- "$VHSM" --socket "$SOCK" "$@"; }
expect() { # code where cmd...
  local want=$1 where=$2 got=0; shift 2
  "$where" "$@" >"$T/out" 2>"$T/err" || got=$?
  [ "$got" = "$want" ] || { cat "$T/err" >&2; fail "$where: expected exit $want, got $got: $*"; }
}

start_vhsmd
V key create by-cg --type ed25519 --allow-cgroup "$CG"
V key create by-uid --type ed25519 --allow-uid $U
expect 0 in_cg sign 0/by-cg --in "$T/msg"
expect 5 outside sign 0/by-cg --in "$T/msg"
grep -q "'0/by-cg'" "$T/err" && grep -qi "permission denied" "$T/err" ||
  fail "denial message: $(cat "$T/err")"
expect 0 in_cg sign 0/by-uid --in "$T/msg"
stop_vhsmd || fail "vhsmd stop"

# Same keys, a daemon that behaves as on a kernel without SO_PEERPIDFD: cgroup never trusted.
VHSMD_TEST_NO_PEERPIDFD=1 start_vhsmd
expect 5 in_cg sign 0/by-cg --in "$T/msg"
grep -q "'0/by-cg'" "$T/err" && grep -qi "permission denied" "$T/err" ||
  fail "cgroup unknown: denial message: $(cat "$T/err")"
expect 0 in_cg sign 0/by-uid --in "$T/msg" # uid entries still match
grep -q "No SO_PEERPIDFD" "$VHSMD_LOG" || fail "vhsmd did not announce that cgroups are unknown"
stop_vhsmd || fail "vhsmd stop"
echo "ok: cgroup ACL honoured with SO_PEERPIDFD ($CG), refused without"
