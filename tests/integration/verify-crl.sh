#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# nitride sim crl and nitride "${verify[@]}" --crl: a CRL from the chip's ARK that revokes nothing
# passes (DER and PEM); one revoking the VCEK or the ASK fails "revocation" naming the
# certificate; a CRL of another chip's ARK, a stale one and a tampered one fail; the CRL is
# what openssl itself accepts as signed by the ARK (RSASSA-PSS SHA-384, v2, issuer = ARK).
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
check_detail() { jq -r "[.checks[] | select(.check == \"$1\") | .detail][0] // \"\"" "$tmp/out"; }

expect 0 "$nitride" sim init "$tmp/a" --product milan
expect 0 "$nitride" sim init "$tmp/b" --product milan
mkdir "$tmp/e"
expect 0 "$evidence" "$tmp/a" "$tmp/e"
verify=("$nitride" verify "$tmp/e/report.bin" --cert-table "$tmp/e/certs.bin" --trust-anchor "$tmp/a/ark.pem" --json)

# The CRL's shape, as openssl sees it.
expect 0 "$nitride" sim crl "$tmp/a" --out "$tmp/empty.der"
expect 0 openssl crl -inform der -in "$tmp/empty.der" -noout -text
grep -q "Version 2" "$tmp/out" || fail "not a v2 CRL"
grep -q "rsassaPss" "$tmp/out" && grep -q "sha384" "$tmp/out" && grep -q "Salt Length: 0x30" "$tmp/out" || fail "not RSASSA-PSS SHA-384"
grep -q "Issuer: .*CN = ARK-Milan" "$tmp/out" || fail "issuer"
expect 0 openssl crl -inform der -in "$tmp/empty.der" -noout -CAfile "$tmp/a/ark.pem"
grep -q "verify OK" "$tmp/err" "$tmp/out" || fail "openssl does not verify the CRL with the ARK"

# Nothing revoked: passes, DER and PEM.
expect 0 "${verify[@]}" --crl "$tmp/empty.der"
[ "$(jq -r '.checks[] | select(.check == "revocation") | .result' "$tmp/out")" = pass ] || fail "no revocation check"
openssl crl -inform der -in "$tmp/empty.der" -out "$tmp/empty.pem"
expect 0 "${verify[@]}" --crl "$tmp/empty.pem"

# The VCEK, the ASK revoked.
for what in vcek ask; do
  expect 0 "$nitride" sim crl "$tmp/a" --revoke "$what" --out "$tmp/$what.der"
  expect 1 "${verify[@]}" --crl "$tmp/$what.der"
  [ "$(failed_check)" = revocation ] || fail "revoked $what: $(failed_check)"
  check_detail revocation | grep -qi "the $what certificate" || fail "revoked $what not named: $(check_detail revocation)"
  grep -q "revocation" "$tmp/err" || fail "revocation not named on stderr"
done
# Unknown names and a VLEK on a chip without one are usage errors.
expect 3 "$nitride" sim crl "$tmp/a" --revoke ark --out "$tmp/x.der"
expect 3 "$nitride" sim crl "$tmp/a" --revoke vlek --out "$tmp/x.der"

# Another chip's ARK signed it.
expect 0 "$nitride" sim crl "$tmp/b" --out "$tmp/other.der"
expect 1 "${verify[@]}" --crl "$tmp/other.der"
[ "$(failed_check)" = revocation ] || fail "other ARK's CRL: $(failed_check)"

# Stale: nextUpdate in the past; and not yet valid.
expect 0 "$nitride" sim crl "$tmp/a" --this-update @$(( $(date +%s) - 7200 )) --next-update @$(( $(date +%s) - 3600 )) --out "$tmp/stale.der"
expect 1 "${verify[@]}" --crl "$tmp/stale.der"
check_detail revocation | grep -q stale || fail "stale CRL: $(check_detail revocation)"
expect 0 "$nitride" sim crl "$tmp/a" --this-update @$(( $(date +%s) + 3600 )) --out "$tmp/future.der"
expect 1 "${verify[@]}" --crl "$tmp/future.der"
[ "$(failed_check)" = revocation ] || fail "future CRL: $(failed_check)"

# Tampered: the last byte of the signature.
cp "$tmp/empty.der" "$tmp/bad.der"
last=$(( $(stat -c %s "$tmp/bad.der") - 1 ))
printf '\x00' | dd of="$tmp/bad.der" bs=1 seek="$last" conv=notrunc status=none
cmp -s "$tmp/bad.der" "$tmp/empty.der" && printf '\x01' | dd of="$tmp/bad.der" bs=1 seek="$last" conv=notrunc status=none
expect 1 "${verify[@]}" --crl "$tmp/bad.der"
[ "$(failed_check)" = revocation ] || fail "tampered CRL: $(failed_check)"

# A file that is no CRL at all.
echo "-----BEGIN X509 CRL-----" >"$tmp/junk.pem"
expect 3 "${verify[@]}" --crl "$tmp/junk.pem"
echo "verify-crl: ok"
