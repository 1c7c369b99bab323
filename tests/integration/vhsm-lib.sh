# SPDX-License-Identifier: Apache-2.0
# Shared set-up for the vhsm-*.sh integration tests (sourced). Arguments of every test:
#   $1 nitride  $2 vhsmd  $3 vhsm  $4 vhsm-test-helper  [$5 release-tool]
# Provides: $T (temp dir, removed on exit), $SOCK, $KS, $SIM, $ANCHOR (the freshness anchor,
# standing in for /run/vhsm), start_vhsmd, stop_vhsmd, kill_vhsmd,
# V (the CLI on $SOCK), H (the helper), fail, hex_random. The daemon always runs on a unix socket
# in $T with the simulated SNP provider; every wait is bounded.
# With release-tool ($RELTOOL): a KMS release key in $T/kms and an attestd token key (and a
# simulated chip for its verdicts) in $T/attestd, both pinned by every vhsmd started here
# (--kms-keys, --attestd-jwks, --attestd-issuer https://attestd.test); kms_import puts a key of
# known bytes into kms/ as a signed release.
set -euo pipefail

NITRIDE=$1 VHSMD=$2 VHSM=$3 HELPER=$4 RELTOOL=${5:-}
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
TRUST_ARGS=()
if [ -n "$RELTOOL" ]; then
  "$RELTOOL" keys "$T/kms"
  "$RELTOOL" keys "$T/attestd"
  TRUST_ARGS=(--kms-keys "$T/kms/jwks.json" --attestd-jwks "$T/attestd/jwks.json"
              --attestd-issuer https://attestd.test)
fi

# kms_import NAME TYPE KEYHEX [VERSION [USE_UID...]]: the key bytes as a release of kms/NAME
# (policy local; ACL: the given uids may use it, root administers; none: root only), signed by
# $T/kms's key for a fresh transfer key, imported by root through the CLI.
kms_import() {
  local name=$1 type=$2 hex=$3 ver=${4:-1} acl=""
  shift 3
  [ $# -gt 0 ] && shift
  [ $# -gt 0 ] && acl=",\"acl\":{\"use_uid\":[$(IFS=,; echo "$*")]}"
  V transfer-key create --lifetime 60 >"$T/kms-tk.jwk"
  printf '{"name":"kms/%s","type":"%s","version":%s,"policy":"local","secret_id":"test","token_jti":"dGVzdA"%s}' \
    "$name" "$type" "$ver" "$acl" >"$T/kms-h.json"
  "$RELTOOL" sign "$T/kms" "$T/kms-tk.jwk" "$T/kms-h.json" "$hex" >"$T/kms-rel"
  V import-release "$T/kms-rel" >/dev/null
}

# start_vhsmd [extra vhsmd args...]: starts in the background, waits until it answers.
start_vhsmd() {
  "$VHSMD" --foreground --socket "$SOCK" --keystore "$KS" --provider sim --sim-dir "$SIM" \
    --freshness-anchor "file:$ANCHOR" ${TRUST_ARGS[@]+"${TRUST_ARGS[@]}"} "$@" >>"$VHSMD_LOG" 2>&1 &
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
