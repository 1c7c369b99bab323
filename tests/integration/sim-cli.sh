#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# nitride sim init|set|show on real chip directories: AMD-shaped certificates that verify with
# the openssl CLI, launch changes that show up in reports, the VCEK re-issued for a new reported
# TCB, usage errors with their exit codes, and no secret ever in the output.
set -euo pipefail

NITRIDE=${1:?usage: sim-cli.sh NITRIDE}
tmp=$(mktemp -d /tmp/nt-sim-cli-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
expect_exit() { # code, command...
  local want=$1; shift
  set +e; "$@" >"$tmp/out" 2>"$tmp/err"; local got=$?; set -e
  [ "$got" -eq "$want" ] || { cat "$tmp/err" >&2; fail "'$*' exited $got, expected $want"; }
}

chip=$tmp/turin
"$NITRIDE" sim init "$chip" --product turin --vlek >/dev/null
for f in chip.json ark.pem ask.pem vcek.pem asvk.pem vlek.pem; do
  [ -f "$chip/$f" ] || fail "missing $f"
done
[ "$(stat -c %a "$chip/secrets")" = 700 ] || fail "secrets/ is not 0700"
for f in "$chip"/secrets/*; do
  [ "$(stat -c %a "$f")" = 600 ] || fail "$f is not 0600"
done

# The chain verifies with the openssl CLI, link by link.
openssl verify -check_ss_sig -CAfile "$chip/ark.pem" "$chip/ark.pem" >/dev/null
openssl verify -CAfile "$chip/ark.pem" -untrusted "$chip/ask.pem" "$chip/vcek.pem" >/dev/null
openssl verify -CAfile "$chip/ark.pem" -untrusted "$chip/asvk.pem" "$chip/vlek.pem" >/dev/null
openssl x509 -in "$chip/vcek.pem" -noout -subject | grep -q 'CN = SEV-VCEK' || fail "VCEK subject"
openssl x509 -in "$chip/vcek.pem" -noout -issuer | grep -q 'CN = SEV-Turin' || fail "VCEK issuer"
openssl x509 -in "$chip/ark.pem" -noout -text | grep -q 'Salt Length: 0x30' || fail "PSS salt"

# show: the public configuration, human and JSON.
"$NITRIDE" sim show "$chip" >"$tmp/show.txt"
"$NITRIDE" sim show "$chip" --json >"$tmp/show.json"
grep -q '^product *Turin' "$tmp/show.txt" || fail "show: product"
grep -q 'fmc=' "$tmp/show.txt" || fail "show: Turin TCB not decoded"
jq -e '.product == "Turin" and .report_version == 5 and .vlek == true' "$tmp/show.json" >/dev/null \
  || fail "show --json"

# No secret in any output: the private scalars and the root secrets, as hex.
secrets_hex() {
  for k in "$chip"/secrets/*.key; do
    openssl pkey -in "$k" -noout -text 2>/dev/null | awk '/^priv/{f=1;next} /^[a-z]/{f=0} f' \
      | tr -d ' :\n' | head -c 40; echo
  done
  for b in "$chip"/secrets/*.bin; do od -An -tx1 -N20 "$b" | tr -d ' \n'; echo; done
}
secrets_hex | grep -v '^$' >"$tmp/secrets"
[ "$(wc -l <"$tmp/secrets")" -ge 4 ] || fail "could not extract the secrets to look for"
while read -r s; do
  for f in "$tmp/show.txt" "$tmp/show.json" "$chip/chip.json" "$chip"/*.pem; do
    if grep -qi "$s" "$f"; then fail "secret material found in $f"; fi
  done
  if od -An -tx1 -v "$chip"/vcek.pem | tr -d ' \n' | grep -qi "$s"; then fail "secret in vcek.pem"; fi
done <"$tmp/secrets"

# set: a different VM on the same chip.
m=$(printf 'ab%.0s' $(seq 48))
"$NITRIDE" sim set "$chip" --measurement "$m" --policy 0x30000 --guest-svn 7 --vmpl 1 \
  --host-data "$(printf '11%.0s' $(seq 32))" --mask-chip-id on --signing-key vlek
"$NITRIDE" sim show "$chip" --json >"$tmp/show2.json"
jq -e --arg m "$m" '.measurement == $m and .guest_svn == 7 and .vmpl == 1 and .mask_chip_id
  and .signing_key == "vlek"' "$tmp/show2.json" >/dev/null || fail "set did not persist"
[ "$(jq -r .report_id "$tmp/show.json")" != "$(jq -r .report_id "$tmp/show2.json")" ] \
  || fail "a new launch must get a new report_id"

# A new reported TCB re-issues the VCEK with the same key and matching SPL extensions.
pub_before=$(openssl x509 -in "$chip/vcek.pem" -noout -pubkey)
"$NITRIDE" sim set "$chip" --reported-tcb fmc=2,bl=3,tee=4,snp=5,ucode=99
[ "$pub_before" = "$(openssl x509 -in "$chip/vcek.pem" -noout -pubkey)" ] || fail "VCEK key changed"
openssl verify -CAfile "$chip/ark.pem" -untrusted "$chip/ask.pem" "$chip/vcek.pem" >/dev/null
ext() { openssl asn1parse -in "$chip/vcek.pem" | grep -A1 ":1.3.6.1.4.1.3704.1.$1\$" | tail -1 \
  | sed 's/.*HEX DUMP\]://'; }
[ "$(ext 3.9)" = 020102 ] || fail "fmcSPL $(ext 3.9)"
[ "$(ext 3.1)" = 020103 ] || fail "blSPL $(ext 3.1)"
[ "$(ext 3.2)" = 020104 ] || fail "teeSPL $(ext 3.2)"
[ "$(ext 3.3)" = 020105 ] || fail "snpSPL $(ext 3.3)"
[ "$(ext 3.8)" = 020163 ] || fail "ucodeSPL $(ext 3.8)"
[ "$(ext 4 | tr -d '\n' | wc -c)" -eq 16 ] || fail "Turin hwID must be 8 bytes"
jq -e '.reported_tcb == "0x6300000005040302"' <("$NITRIDE" sim show "$chip" --json) >/dev/null \
  || fail "reported_tcb encoding (Turin layout)"

# Errors: usage (3), I/O or missing chip (4); nothing changes on a refused set.
cp "$chip/chip.json" "$tmp/chip.before"
expect_exit 3 "$NITRIDE" sim init "$chip" --product turin
expect_exit 3 "$NITRIDE" sim init "$tmp/x" --product epyc
expect_exit 3 "$NITRIDE" sim init "$tmp/x" --product milan --report-version 4
expect_exit 3 "$NITRIDE" sim set "$chip" --measurement abcd
expect_exit 3 "$NITRIDE" sim set "$chip" --vmpl 4
expect_exit 3 "$NITRIDE" sim set "$chip" --reported-tcb bl=300
expect_exit 3 "$NITRIDE" sim set "$chip" --reported-tcb warp=1
expect_exit 3 "$NITRIDE" sim set "$chip" --policy 0x0
grep -q 'must-be-one' "$tmp/err" || fail "policy error does not say why"
expect_exit 3 "$NITRIDE" sim set "$chip" --mask-chip-id maybe
expect_exit 4 "$NITRIDE" sim show "$tmp/none"
grep -q "No simulated chip in '$tmp/none'" "$tmp/err" || fail "missing-chip message"
cmp -s "$chip/chip.json" "$tmp/chip.before" || fail "a refused set changed chip.json"

milan=$tmp/milan
"$NITRIDE" sim init "$milan" --product milan --report-version 2 >/dev/null
expect_exit 3 "$NITRIDE" sim set "$milan" --signing-key vlek
grep -q 'has no VLEK' "$tmp/err" || fail "no-VLEK message"
expect_exit 3 "$NITRIDE" sim set "$milan" --reported-tcb fmc=1
jq -e '.report_version == 2 and .product == "Milan"' <("$NITRIDE" sim show "$milan" --json) \
  >/dev/null || fail "milan v2"
# A report through the sim provider, its signature checked with the openssl CLI alone:
# r and s are little-endian at 0x2A0/0x2E8, ECDSA P-384 over SHA-384 of bytes 0..0x29F.
nonce=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff
"$NITRIDE" report get --provider sim --sim-dir "$milan" --nonce "$nonce" --out "$tmp/r.bin" \
  --extended --certs-out "$tmp/certs.bin"
[ "$(stat -c %s "$tmp/r.bin")" -eq 1184 ] || fail "report size"
be() { od -An -tx1 -v -j "$1" -N 72 "$tmp/r.bin" | tr -s ' \n' '\n' | grep -v '^$' | tac | tr -d '\n'; }
printf 'asn1=SEQUENCE:sig\n[sig]\nr=INTEGER:0x%s\ns=INTEGER:0x%s\n' "$(be 672)" "$(be 744)" \
  >"$tmp/sig.conf"
openssl asn1parse -genconf "$tmp/sig.conf" -out "$tmp/sig.der" -noout
head -c 672 "$tmp/r.bin" >"$tmp/signed.bin"
openssl x509 -in "$milan/vcek.pem" -noout -pubkey >"$tmp/vcek.pub"
openssl dgst -sha384 -verify "$tmp/vcek.pub" -signature "$tmp/sig.der" "$tmp/signed.bin" \
  >/dev/null || fail "report signature does not verify with the VCEK"
printf '\001' | dd of="$tmp/signed.bin" bs=1 seek=80 conv=notrunc 2>/dev/null
if openssl dgst -sha384 -verify "$tmp/vcek.pub" -signature "$tmp/sig.der" "$tmp/signed.bin" \
  >/dev/null 2>&1; then fail "a modified report still verifies"; fi
[ "$(od -An -tx1 -j 0 -N 1 "$tmp/r.bin" | tr -d ' ')" = 02 ] || fail "report version 2"

# No provider at all: exit 5 and a message that says how to use the simulator.
expect_exit 5 env NITRIDE_SEV_GUEST_DEV="$tmp/none" NITRIDE_TSM_ROOT="$tmp/none" \
  "$NITRIDE" report get --nonce "$nonce" --out "$tmp/r2.bin"
grep -q "nitride sim init" "$tmp/err" || fail "missing-provider message"
grep -q "$tmp/none" "$tmp/err" || fail "missing-provider message does not name the paths"
echo "sim-cli: OK"
