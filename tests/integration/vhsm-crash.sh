#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Crash safety: vhsmd is SIGKILLed at random moments while clients rotate keys and create new
# ones (each a keystore write), 20 rounds. After every restart the keystore must open, and
# every change the client saw acknowledged must be there.
. "$(dirname "$0")/vhsm-lib.sh"
ROUNDS=${NT_CRASH_ROUNDS:-20}
start_vhsmd
V key create rk --type aes256
printf 'persist me' | V encrypt rk >"$T/ct0"
: >"$T/acked_keys"
echo 1 >"$T/acked_rot"

for round in $(seq 1 "$ROUNDS"); do
  (
    i=0
    while :; do
      if v=$(V key rotate rk 2>/dev/null); then echo "$v" >>"$T/acked_rot"; else exit 0; fi
      if V key create "k$round-$i" --type hmac-sha256 2>/dev/null; then echo "k$round-$i" >>"$T/acked_keys"; else exit 0; fi
      i=$((i + 1))
    done
  ) &
  loop=$!
  sleep "0.$(( (RANDOM % 40) + 5 ))"
  kill_vhsmd
  wait "$loop" || true
  start_vhsmd   # fails the test if the keystore does not open
  latest=$(V --json key info rk | jq .latest_version)
  acked=$(tail -1 "$T/acked_rot")
  [ "$latest" -ge "$acked" ] || fail "round $round: acknowledged version $acked lost (have $latest)"
  while read -r k; do
    V key info "$k" >/dev/null 2>&1 || fail "round $round: acknowledged key '$k' lost"
  done <"$T/acked_keys"
  V decrypt rk <"$T/ct0" | grep -x 'persist me' >/dev/null || fail "round $round: old ciphertext no longer opens"
done
echo "vhsm-crash: $ROUNDS rounds, $(wc -l <"$T/acked_keys") keys and $(tail -1 "$T/acked_rot") versions survived"
stop_vhsmd || fail "vhsmd exit status"
