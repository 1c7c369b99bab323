#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# 32 client threads (one connection each) doing mixed operations at once; every result is
# verified independently (OpenSSL with known keys or the exported public key).
. "$(dirname "$0")/vhsm-lib.sh"
start_vhsmd --threads 4
AESHEX=$(hex_random 32)
HMHEX=$(hex_random 32)
kms_import caes aes256 "$AESHEX"
kms_import chm hmac-sha256 "$HMHEX"
V key create cec --type p256
H stress "$SOCK" 32 200 kms/caes "$AESHEX" kms/chm "$HMHEX" cec || fail "stress run"
# Meanwhile-created state is intact and the daemon still answers.
V key info cec >/dev/null
stop_vhsmd || fail "vhsmd exit status"
echo "vhsm-concurrency: ok"
