#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# nitride verify on AMD's real reports and certificates (tests/vectors/snp): every vector passes
# with the built-in anchors, the expired VLEK fails today and passes inside its validity, sampled
# byte flips fail with the right check named, and usage, I/O and policy errors get their own
# exit codes (1 invalid evidence, 2 policy mismatch, 3 usage, 4 I/O).
set -euo pipefail
nitride=$1
vectors=${NT_VECTORS:-$(dirname "$0")/../vectors}/snp
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
# expect CODE CMD...: runs CMD with a timeout, checks its exit code; output in $tmp/out, $tmp/err.
expect() {
  local want=$1; shift
  local got=0
  timeout 60 "$@" >"$tmp/out" 2>"$tmp/err" || got=$?
  [ "$got" = "$want" ] || { cat "$tmp/out" "$tmp/err" >&2; fail "exit $got, wanted $want: $*"; }
}
failed_check() { jq -r '[.checks[] | select(.result == "fail") | .check][0] // "none"' "$tmp/out"; }

# 1. Every vector verifies with the built-in anchors.
for d in "$vectors"/*/; do
  name=$(basename "$d")
  at=(); case $name in *vlek*) at=(--at 2025-01-01T00:00:00Z);; esac
  expect 0 "$nitride" verify "$d/report.bin" --certs "$d" "${at[@]}" --json
  [ "$(jq -r .verdict "$tmp/out")" = pass ] || fail "$name: verdict"
  [ "$(jq -r '.anchor | test("built-in")' "$tmp/out")" = true ] || fail "$name: anchor"
  expect 0 "$nitride" verify "$d/report.bin" --certs "$d" "${at[@]}"
  grep -q '^Verdict: PASS' "$tmp/out" || fail "$name: human verdict"
done

# 2. The VLEK expired on 2025-12-10.
v=$vectors/milan-v3-trustee-vlek
expect 1 "$nitride" verify "$v/report.bin" --certs "$v"
grep -q 'cert_validity' "$tmp/err" || fail "VLEK: check not named"
grep -q 'certificate expired: VLEK' "$tmp/err" || fail "VLEK: expiry not named"
expect 1 "$nitride" verify "$v/report.bin" --certs "$v" --json
[ "$(failed_check)" = cert_validity ] || fail "VLEK json"
[ "$(jq -r .verdict "$tmp/out")" = invalid ] || fail "VLEK json verdict"
expect 0 "$nitride" verify "$v/report.bin" --cert "$v/vlek.der" --at 2025-01-01T00:00:00Z --json
[ "$(jq -r .csp_id "$tmp/out")" = "CN=cc-us-east-2.amazonaws.com" ] || fail "cspID"
[ "$(jq -r .signing_key "$tmp/out")" = VLEK ] || fail "signing key"

# 3. Certificates as separate files (roles recognised), and the VCEK alone (built-in ASK).
m=$vectors/milan-v2-virtee-vcek
expect 0 "$nitride" verify "$m/report.bin" --cert "$m/ask.pem" --cert "$m/vcek.der" --cert "$m/ark.pem"
expect 0 "$nitride" verify "$m/report.bin" --cert "$m/vcek.der"

# An extended report's certificate table (report || table as in fuzz/corpus/evidence).
src=${NT_SOURCE_ROOT:-$(dirname "$0")/../..}
ev=$src/fuzz/corpus/evidence/turin-v5-msft-vcek.bin
head -c 1184 "$ev" >"$tmp/tr.bin"
tail -c +1185 "$ev" >"$tmp/tt.bin"
cmp -s "$tmp/tr.bin" "$vectors/turin-v5-msft-vcek/report.bin" || fail "evidence seed is not the Turin report"
expect 0 "$nitride" verify "$tmp/tr.bin" --cert-table "$tmp/tt.bin" --json
[ "$(jq -r .product "$tmp/out")" = Turin ] || fail "cert table product"
head -c 20 "$tmp/tt.bin" >"$tmp/bad-table.bin"
expect 1 "$nitride" verify "$tmp/tr.bin" --cert-table "$tmp/bad-table.bin"
grep -q "Invalid certificate table" "$tmp/err" || fail "bad table message"
expect 4 "$nitride" verify "$tmp/tr.bin" --cert-table "$tmp/nonexistent.bin"

# 4. Sampled byte flips: report fields, the signature, a certificate.
flip() { # in out offset [xor mask, default 1]
  cp "$1" "$2"
  local b; b=$(od -An -tu1 -j "$3" -N1 "$1" | tr -d ' ')
  printf "$(printf '\\%03o' $(( b ^ ${4:-1} )))" | dd of="$2" bs=1 seek="$3" conv=notrunc status=none
}
for off in 0x50 0x90 0xC0 0x140 0x180 0x1A0 0x2A0 0x2B0 0x2E8 0x300; do
  flip "$m/report.bin" "$tmp/r.bin" $((off))
  expect 1 "$nitride" verify "$tmp/r.bin" --certs "$m" --json
  [ "$(failed_check)" = report_signature ] || fail "flip $off: $(failed_check)"
done
flip "$m/report.bin" "$tmp/r.bin" 0 4 # version 2 -> 6
expect 1 "$nitride" verify "$tmp/r.bin" --certs "$m" --json
[ "$(failed_check)" = report_format ] || fail "flip version: $(failed_check)"
mkdir "$tmp/c"
cp "$m/ask.pem" "$m/ark.pem" "$tmp/c/"
for off in 100 400 900 1300; do
  flip "$m/vcek.der" "$tmp/c/vcek.der" $off
  expect 1 "$nitride" verify "$m/report.bin" --certs "$tmp/c" --json
  case $(failed_check) in certificates|cert_chain) ;; *) fail "cert flip $off: $(failed_check)";; esac
done
# Another chip's VCEK: the report signature does not verify.
expect 1 "$nitride" verify "$m/report.bin" --cert "$vectors/milan-v2-gosevguest-vcek/vcek.der" --json
[ "$(failed_check)" = report_signature ] || fail "foreign VCEK"
# A trusted ARK of another product in the evidence.
expect 1 "$nitride" verify "$m/report.bin" --cert "$m/vcek.der" --cert "$vectors/genoa-v3-msft-vcek/ark.pem" --json
[ "$(failed_check)" = ark ] || fail "foreign ARK"
# --product must agree.
expect 1 "$nitride" verify "$m/report.bin" --certs "$m" --product genoa --json
[ "$(failed_check)" = product ] || fail "product"

# 5. Policy.
g=$vectors/milan-v2-gosevguest-vcek
echo '{}' >"$tmp/p.json"
expect 2 "$nitride" verify "$g/report.bin" --certs "$g" --policy "$tmp/p.json" --json
[ "$(failed_check)" = debug ] || fail "debug policy"
[ "$(jq -r .verdict "$tmp/out")" = policy ] || fail "policy verdict"
echo '{"allow_debug": true, "min_tcb": {"snp": 5, "microcode": 68}}' >"$tmp/p.json"
expect 0 "$nitride" verify "$g/report.bin" --certs "$g" --policy "$tmp/p.json"
echo '{"allow_debug": true, "min_tcb": {"snp": 6, "microcode": 1}}' >"$tmp/p.json"
expect 2 "$nitride" verify "$g/report.bin" --certs "$g" --policy "$tmp/p.json"
grep -q 'min_tcb' "$tmp/err" || fail "min_tcb not named"
echo "{\"measurements\": [\"$(printf 'ab%.0s' $(seq 48))\"]}" >"$tmp/p.json"
expect 2 "$nitride" verify "$m/report.bin" --certs "$m" --policy "$tmp/p.json"
grep -q 'FAIL  measurement .*expected one of \[abab.*\], found 7a1e5c266c01' "$tmp/out" || fail "measurement detail"
grep -q 'measurement: expected one of \[abab.*\], found 7a1e5c266c01' "$tmp/err" || fail "measurement on stderr"
# The documented example policy parses.
expect 2 "$nitride" verify "$m/report.bin" --certs "$m" --policy "$src/docs/policy-example.json"
t=$vectors/turin-v5-msft-vcek
expect 0 "$nitride" verify "$t/report.bin" --certs "$t" --policy "$src/docs/policy-example.json" --json
[ "$(jq '[.checks[] | select(.class == "policy" and .result == "pass")] | length' "$tmp/out")" -ge 15 ] || fail "example policy checks"

# 6. Usage, configuration and I/O errors.
expect 3 "$nitride" verify
expect 3 "$nitride" verify "$m/report.bin" --at yesterday
expect 3 "$nitride" verify "$m/report.bin" --product rome
expect 3 "$nitride" verify "$m/report.bin" --bogus
expect 3 "$nitride" verify "$m/report.bin" a b
echo '{"allow_debug": "yes"}' >"$tmp/p.json"
expect 3 "$nitride" verify "$m/report.bin" --certs "$m" --policy "$tmp/p.json"
grep -q "allow_debug" "$tmp/err" || fail "policy error does not name the key"
echo '{"measurment": []}' >"$tmp/p.json"
expect 3 "$nitride" verify "$m/report.bin" --certs "$m" --policy "$tmp/p.json"
grep -q "unknown key 'measurment'" "$tmp/err" || fail "unknown key not named"
expect 3 "$nitride" verify "$m/report.bin" --certs "$m" --trust-anchor "$m/ask.pem"
expect 4 "$nitride" verify "$tmp/nonexistent.bin" --certs "$m"
expect 4 "$nitride" verify "$m/report.bin" --certs "$tmp/nonexistent"
expect 4 "$nitride" verify "$m/report.bin" --certs "$m" --policy "$tmp/nonexistent.json"
head -c 1000 "$m/report.bin" >"$tmp/short.bin"
expect 1 "$nitride" verify "$tmp/short.bin" --certs "$m" --json
[ "$(failed_check)" = report_format ] || fail "short report"
echo "garbage" >"$tmp/garbage.pem"
expect 1 "$nitride" verify "$m/report.bin" --cert "$tmp/garbage.pem"
# Report on stdin.
expect 0 "$nitride" verify - --certs "$m" <"$m/report.bin"
# Quiet: nothing on stdout.
expect 0 "$nitride" verify "$m/report.bin" --certs "$m" -q
[ ! -s "$tmp/out" ] || fail "--quiet printed"
echo "verify-cli: all passed"
