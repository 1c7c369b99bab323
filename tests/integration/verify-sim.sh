#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# nitride verify against simulated chips (nitride sim): a sim ARK is trusted only with
# --trust-anchor; evidence from an extended report's certificate table verifies; the wrong
# product, debug under a policy that forbids it, and wrong report data are rejected with the
# right check and exit code; VLEK signing reports the cspID.
set -euo pipefail
nitride=$1
evidence=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
expect() {
  local want=$1; shift
  local got=0
  timeout 120 "$@" >"$tmp/out" 2>"$tmp/err" || got=$?
  [ "$got" = "$want" ] || { cat "$tmp/out" "$tmp/err" >&2; fail "exit $got, wanted $want: $*"; }
}
failed_check() { jq -r '[.checks[] | select(.result == "fail") | .check][0] // "none"' "$tmp/out"; }

expect 0 "$nitride" sim init "$tmp/milan" --product milan --vlek
expect 0 "$nitride" sim init "$tmp/genoa" --product genoa
mkdir "$tmp/e" "$tmp/g"
rd=$(printf '5a%.0s' $(seq 64))
expect 0 "$evidence" "$tmp/milan" "$tmp/e" "$rd"
expect 0 "$evidence" "$tmp/genoa" "$tmp/g"

# Not trusted without --trust-anchor; trusted with it.
expect 1 "$nitride" verify "$tmp/e/report.bin" --cert-table "$tmp/e/certs.bin" --json
[ "$(failed_check)" = ark ] || fail "sim ARK trusted without --trust-anchor"
expect 1 "$nitride" verify "$tmp/e/report.bin" --cert "$tmp/milan/vcek.pem" --cert "$tmp/milan/ask.pem" --json
[ "$(failed_check)" = cert_chain ] || fail "sim chain accepted by AMD's anchors"
expect 0 "$nitride" verify "$tmp/e/report.bin" --cert-table "$tmp/e/certs.bin" --trust-anchor "$tmp/milan/ark.pem" --json
[ "$(jq -r .product "$tmp/out")" = Milan ] || fail "product"
[ "$(jq -r .report.report_data "$tmp/out")" = "$rd" ] || fail "report data"
expect 0 "$nitride" verify "$tmp/e/report.bin" --certs "$tmp/milan" --trust-anchor "$tmp/milan/ark.pem"

# Wrong product: Genoa evidence, only the Milan sim ARK trusted.
expect 1 "$nitride" verify "$tmp/g/report.bin" --cert "$tmp/genoa/vcek.pem" --cert "$tmp/genoa/ask.pem" --trust-anchor "$tmp/milan/ark.pem" --json
[ "$(failed_check)" = cert_chain ] || fail "Genoa chain against the Milan anchor: $(failed_check)"
expect 0 "$nitride" verify "$tmp/g/report.bin" --cert-table "$tmp/g/certs.bin" --trust-anchor "$tmp/genoa/ark.pem" --trust-anchor "$tmp/milan/ark.pem"
# Swapped ASK: Milan VCEK with the Genoa chip's ASK.
expect 1 "$nitride" verify "$tmp/e/report.bin" --cert "$tmp/milan/vcek.pem" --cert "$tmp/genoa/ask.pem" --trust-anchor "$tmp/milan/ark.pem" --trust-anchor "$tmp/genoa/ark.pem" --json
[ "$(failed_check)" = cert_chain ] || fail "swapped ASK: $(failed_check)"

# Policy: wrong report data, debug.
want=$(printf '11%.0s' $(seq 64))
echo "{\"report_data\": \"$want\"}" >"$tmp/p.json"
expect 2 "$nitride" verify "$tmp/e/report.bin" --cert-table "$tmp/e/certs.bin" --trust-anchor "$tmp/milan/ark.pem" --policy "$tmp/p.json" --json
[ "$(failed_check)" = report_data ] || fail "report data policy"
grep -q "report_data" "$tmp/err" || fail "report_data not named on stderr"
expect 0 "$nitride" sim set "$tmp/milan" --policy 0xb0000
expect 0 "$evidence" "$tmp/milan" "$tmp/e"
echo '{}' >"$tmp/p.json"
expect 2 "$nitride" verify "$tmp/e/report.bin" --cert-table "$tmp/e/certs.bin" --trust-anchor "$tmp/milan/ark.pem" --policy "$tmp/p.json" --json
[ "$(failed_check)" = debug ] || fail "debug policy"
echo '{"allow_debug": true}' >"$tmp/p.json"
expect 0 "$nitride" verify "$tmp/e/report.bin" --cert-table "$tmp/e/certs.bin" --trust-anchor "$tmp/milan/ark.pem" --policy "$tmp/p.json"

# VLEK signing: cspID in the verdict; a VCEK-only policy refuses it.
expect 0 "$nitride" sim set "$tmp/milan" --signing-key vlek
expect 0 "$evidence" "$tmp/milan" "$tmp/e"
expect 0 "$nitride" verify "$tmp/e/report.bin" --cert-table "$tmp/e/certs.bin" --trust-anchor "$tmp/milan/ark.pem" --json
[ "$(jq -r .signing_key "$tmp/out")" = VLEK ] || fail "VLEK"
[ "$(jq -r .csp_id "$tmp/out")" != null ] || fail "cspID"
echo '{"allow_debug": true, "signing_keys": ["vcek"]}' >"$tmp/p.json"
expect 2 "$nitride" verify "$tmp/e/report.bin" --cert-table "$tmp/e/certs.bin" --trust-anchor "$tmp/milan/ark.pem" --policy "$tmp/p.json" --json
[ "$(failed_check)" = allowed_signing_key ] || fail "signing key policy"
echo "verify-sim: all passed"
