#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Integration test for 'nitride report show|get', driving the real binary.
#   show: every real report in tests/vectors/snp, human output and --json (checked with jq)
#         against the values in each vector's SOURCE.txt; stdin; every class of malformed file
#         gives exit 1 and names the reason; usage errors exit 3; I/O errors exit 4.
#   get:  against the simulator provider (a chip made with 'nitride sim init'): REPORT_DATA is
#         SHA-512 of --nonce, the certificate table and --certs-dir hold the chip's certs;
#         usage errors exit 3; an unusable provider exits 5.
# Usage: report-show.sh NITRIDE_BINARY   (NT_VECTORS points at tests/vectors)
set -euo pipefail

nitride=${1:?usage: report-show.sh NITRIDE}
vectors=${NT_VECTORS:?NT_VECTORS not set}/snp
work=$(mktemp -d "${TMPDIR:-/tmp}/nt-report-show.XXXXXX")
trap 'rm -rf "$work"' EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
# expect_exit CODE PATTERN CMD...: runs CMD, checks its exit code and that stderr matches PATTERN.
expect_exit() {
  local want=$1 pattern=$2 rc=0; shift 2
  timeout 30 "$@" >"$work/out" 2>"$work/err" || rc=$?
  [ "$rc" -eq "$want" ] || { cat "$work/err" >&2; fail "'$*' exited $rc, expected $want"; }
  [ -z "$pattern" ] || grep -qE -- "$pattern" "$work/err" ||
    { cat "$work/err" >&2; fail "'$*': stderr lacks /$pattern/"; }
}
field() { sed -n "s/^  $2: \([^ ]*\).*/\1/p" "$1/SOURCE.txt" | head -1; }
# field_line LABEL VALUE: the human output has a line "LABEL <spaces> VALUE".
has_line() { grep -qE "^ +$1 +$2( |\$)" "$work/out" || fail "show output lacks '$1 $2'"; }

n=0
for dir in "$vectors"/*/; do
  dir=${dir%/}; name=$(basename "$dir")
  version=$(field "$dir" version)
  measurement=$(field "$dir" measurement)
  chip_id=$(field "$dir" chip_id)
  reported=$(field "$dir" reported_tcb)
  policy=$(field "$dir" policy)
  vmpl=$(field "$dir" vmpl)
  [ -n "$measurement" ] && [ -n "$reported" ] || fail "$name: SOURCE.txt not understood"

  # Human output.
  expect_exit 0 "" "$nitride" report show "$dir/report.bin"
  has_line "Version:" "$version"
  has_line "Measurement:" "$measurement"
  has_line "Chip ID:" "$chip_id"
  has_line "Reported TCB:" "$reported"
  has_line "Policy:" "$policy"
  has_line "VMPL:" "$vmpl"

  # JSON, also from stdin.
  expect_exit 0 "" "$nitride" report show - --json <"$dir/report.bin"
  jq -e --arg m "$measurement" --arg c "$chip_id" --arg t "$reported" --argjson v "$version" \
     --argjson vmpl "$vmpl" --arg p "$policy" \
     '.measurement == $m and .chip_id == $c and .reported_tcb.raw == $t and .version == $v
      and .vmpl == $vmpl and .policy.raw == $p and (.signature.r | length) == 96' \
     "$work/out" >/dev/null || fail "$name: --json fields differ from SOURCE.txt"

  case $name in
    milan-v2-*)
      jq -e '.product == null and (.reported_tcb | keys) == ["raw"] and (has("cpuid") | not)' \
         "$work/out" >/dev/null || fail "$name: v2 without --product must not guess a product"
      grep -q "product unknown" <("$nitride" report show "$dir/report.bin") ||
        fail "$name: v2 human output must say the product is unknown"
      expect_exit 0 "" "$nitride" report show --product milan --json "$dir/report.bin"
      ucode=$(sed -n 's/^  reported_tcb: .*ucode=\([0-9]*\).*/\1/p' "$dir/SOURCE.txt")
      jq -e --argjson u "$ucode" '.product == "Milan" and .product_source == "option"
         and .reported_tcb.microcode == $u' "$work/out" >/dev/null ||
        fail "$name: --product milan does not decode the TCB"
      ;;
    milan-v3-trustee-vlek)
      jq -e '.product == "Milan" and .flags.signing_key == "VLEK" and .vmpl == 1
             and .reported_tcb.microcode == 217 and .current_tcb.microcode == 220
             and .committed_tcb.microcode == 219' "$work/out" >/dev/null ||
        fail "$name: VLEK / TCB fields"
      ;;
    genoa-*)
      jq -e '.product == "Genoa" and .cpuid.model == 17 and .reported_tcb.snp == 23
             and .current_version == "1.55.40"' "$work/out" >/dev/null || fail "$name: Genoa fields"
      ;;
    turin-*)
      jq -e '.product == "Turin" and .reported_tcb.fmc == 1 and .reported_tcb.bootloader == 1
             and .reported_tcb.microcode == 81 and .launch_mit_vector == "0x000000000000003f"
             and .current_mit_vector == "0x000000000000003f" and .platform_info.alias_check_complete'\
         "$work/out" >/dev/null || fail "$name: Turin fields"
      ;;
  esac
  n=$((n + 1))
done
[ "$n" -ge 5 ] || fail "expected at least 5 vectors, found $n"

# Malformed reports: exit 1, with the specific reason.
good=$vectors/genoa-v3-msft-vcek/report.bin
head -c 1183 "$good" >"$work/truncated.bin"
expect_exit 1 "1183 bytes.*1184" "$nitride" report show "$work/truncated.bin"
: >"$work/empty.bin"
expect_exit 1 "0 bytes" "$nitride" report show "$work/empty.bin"
{ cat "$good"; printf 'x'; } >"$work/long.bin"
expect_exit 1 "1185 bytes" "$nitride" report show "$work/long.bin"
head -c 100000 /dev/zero >"$work/huge.bin"
expect_exit 1 "larger than" "$nitride" report show "$work/huge.bin"
patch() { # file offset hexbyte -> copy of $good with one byte changed
  cp "$good" "$1"; printf "\\x$3" | dd of="$1" bs=1 seek=$(($2)) conv=notrunc status=none
}
patch "$work/r1eb.bin" 0x1EB 01
expect_exit 1 "reserved 0x1EB" "$nitride" report show "$work/r1eb.bin"
patch "$work/sig.bin" 0x400 ff
expect_exit 1 "signature reserved 0x330..0x49F" "$nitride" report show "$work/sig.bin"
patch "$work/v4.bin" 0 04
expect_exit 1 "unsupported report version" "$nitride" report show "$work/v4.bin"
patch "$work/algo.bin" 0x34 02
expect_exit 1 "unknown signature algorithm" "$nitride" report show "$work/algo.bin"
patch "$work/mit.bin" 0x1F8 01
expect_exit 1 "mitigation vectors" "$nitride" report show "$work/mit.bin"

# Usage and I/O errors.
expect_exit 4 "$work/missing.bin" "$nitride" report show "$work/missing.bin"
expect_exit 3 "FILE" "$nitride" report show
expect_exit 3 "Unknown product 'sparc'" "$nitride" report show --product sparc "$good"
expect_exit 3 "Unexpected argument" "$nitride" report show "$good" "$good"
expect_exit 3 "expected show or get" "$nitride" report frobnicate
expect_exit 0 "" "$nitride" report show --help

# report get: argument checking happens before any provider is touched.
expect_exit 3 "needs --out" "$nitride" report get --nonce 00
expect_exit 3 "exactly one of" "$nitride" report get --out "$work/x.bin"
expect_exit 3 "exactly one of" "$nitride" report get --out "$work/x.bin" --nonce 00 \
  --report-data "$(printf '0%.0s' $(seq 128))"
expect_exit 3 "128 hex digits" "$nitride" report get --out "$work/x.bin" --report-data abcd
expect_exit 3 "Invalid --nonce" "$nitride" report get --out "$work/x.bin" --nonce xyz
expect_exit 3 "Invalid --vmpl" "$nitride" report get --out "$work/x.bin" --nonce 00 --vmpl 4
expect_exit 3 "Unknown provider" "$nitride" report get --out "$work/x.bin" --nonce 00 \
  --provider magic
[ ! -e "$work/x.bin" ] || fail "a failed 'report get' wrote its output"

# No hardware here (unless there is): sev-guest without /dev/sev-guest is "no provider", 5.
if [ ! -e /dev/sev-guest ]; then
  expect_exit 5 "" "$nitride" report get --provider sev-guest --nonce 00 --out "$work/x.bin"
fi

# report get against the simulator.
chip=$work/chip
expect_exit 0 "" "$nitride" sim init "$chip" --product genoa
nonce=$(head -c 32 /dev/urandom | xxd -p -c 64)
expect_exit 0 "" "$nitride" report get --provider sim --sim-dir "$chip" --nonce "$nonce" \
  --vmpl 2 --out "$work/sim.bin" --certs-out "$work/sim-certs.bin" --certs-dir "$work/certs" \
  --show --json
want=$(printf '%s' "$nonce" | xxd -r -p | openssl dgst -sha512 -binary | xxd -p -c 128)
jq -e --arg rd "$want" '.report_data == $rd and .vmpl == 2 and .product == "Genoa"' \
  "$work/out" >/dev/null || fail "report get: REPORT_DATA is not SHA-512(nonce), or wrong VMPL"
[ "$(stat -c %s "$work/sim.bin")" -eq 1184 ] || fail "report get: --out is not 1184 bytes"
expect_exit 0 "" "$nitride" report show "$work/sim.bin" --json
jq -e --arg rd "$want" '.report_data == $rd' "$work/out" >/dev/null || fail "saved report differs"
for c in vcek ask ark; do
  [ -s "$work/certs/$c.pem" ] || fail "report get: --certs-dir lacks $c.pem"
  cmp -s <(openssl x509 -in "$work/certs/$c.pem" -outform DER) \
         <(openssl x509 -in "$chip/$c.pem" -outform DER) ||
    fail "report get: $c.pem differs from the chip's certificate"
done
[ -s "$work/sim-certs.bin" ] || fail "report get: --certs-out is empty"
# --report-data is used verbatim.
rd=$(head -c 64 /dev/urandom | xxd -p -c 128)
expect_exit 0 "" "$nitride" report get --sim-dir "$chip" --report-data "$rd" --out "$work/rd.bin"
expect_exit 0 "" "$nitride" report show --json "$work/rd.bin"
jq -e --arg rd "$rd" '.report_data == $rd and .vmpl == 0' "$work/out" >/dev/null ||
  fail "report get: --report-data not used verbatim"
# A directory that holds no chip: the simulator is not usable.
mkdir "$work/nochip"
expect_exit 5 "No simulated chip in '$work/nochip'" \
  "$nitride" report get --sim-dir "$work/nochip" --nonce 00 --out "$work/y.bin"
[ ! -e "$work/y.bin" ] || fail "a failed 'report get' wrote its output"

# A Turin chip that signs with its VLEK: the table carries VLEK + ASVK (under the ASK GUID).
vchip=$work/vchip
expect_exit 0 "" "$nitride" sim init "$vchip" --product turin --vlek
expect_exit 0 "" "$nitride" sim set "$vchip" --signing-key vlek
expect_exit 0 "" "$nitride" report get --sim-dir "$vchip" --nonce "$nonce" --out "$work/vlek.bin" \
  --certs-dir "$work/vcerts" --show
has_line "Signing key:" "VLEK"
has_line "Product:" "Turin"
grep -qE "^ +FMC: +[0-9]+$" "$work/out" || fail "Turin report without a decoded FMC"
for c in vlek asvk ark; do
  cmp -s <(openssl x509 -in "$work/vcerts/$c.pem" -outform DER) \
         <(openssl x509 -in "$vchip/$c.pem" -outform DER) ||
    fail "report get: $c.pem differs from the VLEK chip's certificate"
done
[ ! -e "$work/vcerts/vcek.pem" ] && [ ! -e "$work/vcerts/ask.pem" ] ||
  fail "report get: a VLEK table must not produce vcek.pem or ask.pem"

echo "report-show: $n vectors, show and get OK"
