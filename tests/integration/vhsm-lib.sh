# SPDX-License-Identifier: Apache-2.0
# Shared set-up for the vhsm-*.sh integration tests (sourced). Arguments of every test:
#   $1 nitride  $2 vhsmd  $3 vhsm  $4 vhsm-test-helper
# Provides: $T (temp dir, removed on exit), $SOCK, $KS, $SIM, $ANCHOR (the freshness anchor,
# standing in for /run/vhsm), start_vhsmd, stop_vhsmd, kill_vhsmd,
# V (the CLI on $SOCK), H (the helper), fail, hex_random. The daemon always runs on a unix socket
# in $T with the simulated SNP provider; every wait is bounded.
set -euo pipefail

NITRIDE=$1 VHSMD=$2 VHSM=$3 HELPER=$4
T=$(mktemp -d /tmp/nt-vhsm-test.XXXXXX)
chmod 755 "$T"
SOCK=$T/vhsm.sock
KS=$T/state/keystore
SIM=$T/sim
ANCHOR=$T/run/keystore.anchor
VHSMD_PID=
VHSMD_LOG=$T/vhsmd.log

cleanup() {
  if [ -n "$VHSMD_PID" ] && kill -0 "$VHSMD_PID" 2>/dev/null; then
    kill -KILL "$VHSMD_PID" 2>/dev/null || true
    wait "$VHSMD_PID" 2>/dev/null || true
  fi
  rm -rf "$T"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  if [ -f "$VHSMD_LOG" ]; then echo "--- vhsmd log (tail)" >&2; tail -20 "$VHSMD_LOG" >&2; fi
  exit 1
}

V() { "$VHSM" --socket "$SOCK" "$@"; }
H() { "$HELPER" "$@"; }
hex_random() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

"$NITRIDE" sim init "$SIM" --product milan >/dev/null

# start_vhsmd [extra vhsmd args...]: starts in the background, waits until it answers.
start_vhsmd() {
  "$VHSMD" --foreground --socket "$SOCK" --keystore "$KS" --provider sim --sim-dir "$SIM" \
    --freshness-anchor "file:$ANCHOR" "$@" >>"$VHSMD_LOG" 2>&1 &
  VHSMD_PID=$!
  for _ in $(seq 1 200); do
    if [ -S "$SOCK" ] && V ping >/dev/null 2>&1; then return 0; fi
    kill -0 "$VHSMD_PID" 2>/dev/null || { wait "$VHSMD_PID" || true; fail "vhsmd exited at start-up"; }
    sleep 0.05
  done
  fail "vhsmd did not come up"
}

# stop_vhsmd: SIGTERM, wait (bounded: 30 s, in-flight requests finish first), return its status.
stop_vhsmd() {
  local rc=0
  kill -TERM "$VHSMD_PID"
  for _ in $(seq 1 600); do
    kill -0 "$VHSMD_PID" 2>/dev/null || break
    sleep 0.05
  done
  kill -0 "$VHSMD_PID" 2>/dev/null && fail "vhsmd did not stop on SIGTERM"
  wait "$VHSMD_PID" || rc=$?
  VHSMD_PID=
  return $rc
}

kill_vhsmd() {
  kill -KILL "$VHSMD_PID" 2>/dev/null || true
  wait "$VHSMD_PID" 2>/dev/null || true
  VHSMD_PID=
}
