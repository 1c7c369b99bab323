#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The PKCS#11 module's cmocka tests (pkcs11-test.c) on a real vhsmd that the test starts and
# restarts itself. Arguments: nitride vhsmd pkcs11-test module.so
set -euo pipefail
NITRIDE=$1 VHSMD=$2 TEST=$3 MODULE=$4
T=$(mktemp -d /tmp/nt-p11-test.XXXXXX)
trap 'rm -rf "$T"' EXIT
"$NITRIDE" sim init "$T/sim" --product milan >/dev/null
rc=0
P11T_MODULE=$MODULE P11T_VHSMD=$VHSMD P11T_DIR=$T timeout 600 "$TEST" || rc=$?
if [ $rc -ne 0 ] && [ -f "$T/vhsmd.log" ]; then
  echo "--- vhsmd log (tail)" >&2
  tail -20 "$T/vhsmd.log" >&2
fi
exit $rc
