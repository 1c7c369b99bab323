#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Key material leaves no trace in the daemon's memory: a key whose bytes the test knows (imported
# as a KMS release) is found in /proc/PID/mem while it exists (control: the scan works) and
# nowhere once it is deleted, or once its version is retired; plaintext is wiped from the
# daemon's buffers once its reply is sent.
. "$(dirname "$0")/vhsm-lib.sh"
[ "$(id -u)" = 0 ] || { echo "SKIP: reading another process's memory needs root"; exit 77; }
start_vhsmd
printf 'some data' >"$T/msg"

KEY=$(hex_random 32)
kms_import mem aes256 "$KEY"
V encrypt kms/mem --in "$T/msg" | V decrypt kms/mem >/dev/null
V wrap kms/mem --in "$T/msg" >/dev/null
H memscan "$VHSMD_PID" "$KEY" || fail "control: the live key was not found in memory (scan broken?)"
V key delete kms/mem
rc=0; H memscan "$VHSMD_PID" "$KEY" || rc=$?
[ "$rc" = 1 ] || fail "deleted AES key still in vhsmd memory (memscan exit $rc)"

HKEY=$(hex_random 32)
kms_import hm hmac-sha256 "$HKEY"
V mac kms/hm --in "$T/msg" >/dev/null
H memscan "$VHSMD_PID" "$HKEY" || fail "control: live HMAC key not found"
kms_import hm hmac-sha256 "$(hex_random 32)" 2   # version 2, released by the KMS
V key min-version kms/hm 2
rc=0; H memscan "$VHSMD_PID" "$HKEY" || rc=$?
[ "$rc" = 1 ] || fail "retired HMAC version still in vhsmd memory (memscan exit $rc)"
V mac kms/hm --in "$T/msg" >/dev/null   # the key itself lives on with version 2

# Plaintext does not linger in the daemon once answered: on a connection kept open, a marker is
# encrypted (plaintext in the request: input wiped when consumed) and decrypted (plaintext in the
# reply: marked secret, so its buffer is wiped once sent although replies of public data are not),
# then a ping reuses the buffer without covering it. (The scanner's control is the live key above.)
V key create pt --type aes256 >/dev/null
MARK=$(hex_random 32)
H hold "$SOCK" pt "$MARK" 3000 "$T/ct.hex" &
HOLD=$!
for _ in $(seq 1 100); do [ -s "$T/ct.hex" ] && break; sleep 0.02; done
[ -s "$T/ct.hex" ] || fail "hold helper did not get its replies"
rc=0; H memscan "$VHSMD_PID" "$MARK" || rc=$?
[ "$rc" = 1 ] || fail "decrypted plaintext still in vhsmd memory after its reply was sent (memscan exit $rc)"
wait "$HOLD" || fail "hold helper failed"

stop_vhsmd || fail "vhsmd exit status"
echo "vhsm-memory: ok"
