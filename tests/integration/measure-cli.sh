#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# nitride measure: the known-answer rows through the CLI (hex, base64, --json with every input's
# hash), --policy-out creating and updating an appraisal policy that `nitride verify` accepts,
# and refusals with their exit codes.
set -euo pipefail

NITRIDE=${1:?usage: measure-cli.sh NITRIDE VECTORS_DIR}
VEC=${2:?usage: measure-cli.sh NITRIDE VECTORS_DIR}
tmp=$(mktemp -d /tmp/nt-measure-cli-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
expect_exit() { # code, command...
  local want=$1; shift
  set +e; "$@" >"$tmp/out" 2>"$tmp/err"; local got=$?; set -e
  [ "$got" -eq "$want" ] || { cat "$tmp/err" >&2; fail "'$*' exited $got, expected $want"; }
}

amd=$VEC/ovmf_AmdSev_suffix.bin
x64=$VEC/ovmf_OvmfX64_suffix.bin
want=803f691094946e42068aaa3a8f9e26a5c89f36f7b73ecfb28c653360fe4b3aba7e534442e7e1e17895dfe778d0228977
args=(--ovmf "$amd" --vcpus 1 --vcpu-type EPYC-v4 --vmm qemu --guest-features 0x21
      --kernel /dev/null --initrd /dev/null --append "console=ttyS0 loglevel=7")

[ "$("$NITRIDE" measure "${args[@]}")" = "$want" ] || fail "hex output"
b64=$(echo "$want" | xxd -r -p | base64 -w0)
[ "$("$NITRIDE" measure "${args[@]}" --base64)" = "$b64" ] || fail "base64 output"

# The same vCPU given by signature and by family/model/stepping.
[ "$("$NITRIDE" measure "${args[@]/EPYC-v4/EPYC}")" = "$want" ] || fail "EPYC alias"
a2=("${args[@]}"); a2[4]=--vcpu-sig; a2[5]=0x800f12
[ "$("$NITRIDE" measure "${a2[@]}")" = "$want" ] || fail "--vcpu-sig"
fms=(--ovmf "$amd" --vcpu-family 23 --vcpu-model 1 --vcpu-stepping 2 --guest-features 0x21
     --kernel /dev/null --initrd /dev/null --append "console=ttyS0 loglevel=7")
[ "$("$NITRIDE" measure "${fms[@]}")" = "$want" ] || fail "--vcpu-family/model/stepping"

"$NITRIDE" measure "${args[@]}" --json >"$tmp/m.json"
[ "$(jq -r .measurement "$tmp/m.json")" = "$want" ] || fail "json measurement"
empty=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
[ "$(jq -r .kernel_sha256 "$tmp/m.json")" = "$empty" ] || fail "json kernel hash"
[ "$(jq -r .initrd_sha256 "$tmp/m.json")" = "$empty" ] || fail "json initrd hash"
cmd=$(printf 'console=ttyS0 loglevel=7\0' | sha256sum | cut -d' ' -f1)
[ "$(jq -r .cmdline_sha256 "$tmp/m.json")" = "$cmd" ] || fail "json cmdline hash (with NUL)"
[ "$(jq -r .ovmf_sha256 "$tmp/m.json")" = "$(sha256sum "$amd" | cut -d' ' -f1)" ] || fail "ovmf hash"
[ "$(jq -r .vcpu_sig "$tmp/m.json")" = 0x00800f12 ] || fail "json vcpu_sig"
[ "$(jq -r .guest_features "$tmp/m.json")" = 0x21 ] || fail "json guest_features"

# --policy-out: create, then add a second measurement, keeping other keys; no duplicates.
"$NITRIDE" measure "${args[@]}" --policy-out "$tmp/policy.json" >/dev/null
[ "$(jq -c .measurements "$tmp/policy.json")" = "[\"$want\"]" ] || fail "policy created"
echo '{"vmpls": [0], "measurements": []}' >"$tmp/p2.json"
"$NITRIDE" measure "${args[@]}" --policy-out "$tmp/p2.json" >/dev/null
"$NITRIDE" measure "${args[@]}" --policy-out "$tmp/p2.json" >/dev/null
w2=$("$NITRIDE" measure --ovmf "$x64" --vcpu-type EPYC-Milan --vcpus 2 --policy-out "$tmp/p2.json")
[ "$(jq -c .measurements "$tmp/p2.json")" = "[\"$want\",\"$w2\"]" ] || fail "policy updated"
[ "$(jq -c .vmpls "$tmp/p2.json")" = "[0]" ] || fail "other policy keys kept"
# A policy the verifier would refuse is left unchanged.
echo '{"measurment": []}' >"$tmp/bad.json"
expect_exit 3 "$NITRIDE" measure "${args[@]}" --policy-out "$tmp/bad.json"
grep -q measurment "$tmp/err" || fail "bad policy not named"
[ "$(cat "$tmp/bad.json")" = '{"measurment": []}' ] || fail "bad policy changed"

# Refusals: kernel without a kernel-hashes section (usage, 3), no SEV metadata (1), truncated
# (1), missing file (4), unknown vCPU type and missing vCPU type for QEMU (3).
expect_exit 3 "$NITRIDE" measure --ovmf "$x64" --vcpu-type EPYC-v4 --kernel /dev/null --append x
grep -q SNP_KERNEL_HASHES "$tmp/err" || fail "kernel-hashes error not named"
[ ! -s "$tmp/out" ] || fail "a digest was printed on error"
head -c 8192 /dev/zero >"$tmp/zero.fd"
expect_exit 1 "$NITRIDE" measure --ovmf "$tmp/zero.fd" --vcpu-type EPYC-v4
[ ! -s "$tmp/out" ] || fail "a digest was printed for a non-SEV image"
head -c 4000 "$amd" >"$tmp/trunc.fd"
expect_exit 1 "$NITRIDE" measure --ovmf "$tmp/trunc.fd" --vcpu-type EPYC-v4
expect_exit 4 "$NITRIDE" measure --ovmf "$tmp/missing.fd" --vcpu-type EPYC-v4
expect_exit 3 "$NITRIDE" measure --ovmf "$amd" --vcpu-type EPYC-Skylake
expect_exit 3 "$NITRIDE" measure --ovmf "$amd"
expect_exit 3 "$NITRIDE" measure --ovmf "$amd" --vcpu-type EPYC --vcpu-sig 0x800f12
expect_exit 3 "$NITRIDE" measure --ovmf "$amd" --vcpu-type EPYC --guest-features 0x20
expect_exit 3 "$NITRIDE" measure --ovmf "$amd" --vcpu-type EPYC --vmm hyperv
expect_exit 3 "$NITRIDE" measure --ovmf "$amd" --vcpu-type EPYC --vcpus 0
echo "measure-cli: ok"
