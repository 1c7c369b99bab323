#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# nitride idblock create and nitride sim launch: an ID block made from PEM keys is checked by an
# independent implementation (idblock-verify.py, python3-cryptography over the ABI's byte layout);
# the simulated firmware accepts it for the launch it names and its reports carry the digests,
# family id, image id and guest SVN; a tampered ID block, a tampered ID key signature, a wrong
# measurement and a policy mismatch are each refused at launch with the firmware's status, and
# leave the chip as it was; derived keys follow the launch inputs.
set -euo pipefail

NITRIDE=${1:?usage: idblock-cli.sh NITRIDE VECTORS_DIR}
VEC=${2:?usage: idblock-cli.sh NITRIDE VECTORS_DIR}
VERIFY=$(dirname "$0")/idblock-verify.py
python3 -c 'import cryptography' 2>/dev/null || { echo "python3-cryptography missing: skip"; exit 77; }
tmp=$(mktemp -d /tmp/nt-idblock-cli-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
expect_exit() { # code, command...
  local want=$1; shift
  set +e; "$@" >"$tmp/out" 2>"$tmp/err"; local got=$?; set -e
  [ "$got" -eq "$want" ] || { cat "$tmp/err" >&2; fail "'$*' exited $got, expected $want"; }
}
flip() { # base64 in, byte offset -> base64 with that byte xor 0x01
  printf '%s' "$1" | base64 -d >"$tmp/flip.bin"
  local b; b=$(od -An -tu1 -j "$2" -N1 "$tmp/flip.bin" | tr -d ' ')
  printf "$(printf '\\%03o' $((b ^ 1)))" | dd of="$tmp/flip.bin" bs=1 seek="$2" conv=notrunc status=none
  base64 -w0 <"$tmp/flip.bin"
}

for k in id author; do
  openssl ecparam -name secp384r1 -genkey -noout -out "$tmp/$k.pem"
  openssl pkey -in "$tmp/$k.pem" -pubout -out "$tmp/$k.pub"
done
openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/p256.pem"
printf 'kernel image' >"$tmp/vmlinuz"
printf 'initrd image' >"$tmp/initrd"
img=(--ovmf "$VEC/ovmf_AmdSev_suffix.bin" --vcpus 2 --vcpu-type EPYC-Milan
     --kernel "$tmp/vmlinuz" --initrd "$tmp/initrd" --append "console=ttyS0")
meas=$("$NITRIDE" measure "${img[@]}")
fam=00112233445566778899aabbccddeeff img_id=ffeeddccbbaa99887766554433221100

# --- create from the images (same code as nitride measure), checked independently
"$NITRIDE" idblock create --from-measure "${img[@]}" --id-key "$tmp/id.pem" \
  --author-key "$tmp/author.pem" --policy 0x30000 --family-id $fam --image-id $img_id \
  --guest-svn 7 --json >"$tmp/ib.json"
blk=$(jq -r .id_block "$tmp/ib.json") auth=$(jq -r .id_auth "$tmp/ib.json")
python3 "$VERIFY" "$blk" "$auth" "$tmp/id.pub" "$tmp/author.pub" >"$tmp/py.json" \
  || fail "the independent check rejects the ID block"
[ "$(jq -r .measurement "$tmp/py.json")" = "$meas" ] || fail "ID block LD is not nitride measure's"
[ "$(jq -r .family_id "$tmp/py.json")" = $fam ] || fail "family id"
[ "$(jq -r .image_id "$tmp/py.json")" = $img_id ] || fail "image id"
[ "$(jq -r .guest_svn "$tmp/py.json")" = 7 ] || fail "guest svn"
[ "$(jq -r .policy "$tmp/py.json")" = 0x30000 ] || fail "policy"
idd=$(jq -r .id_key_digest "$tmp/py.json") aud=$(jq -r .author_key_digest "$tmp/py.json")
[ "$(jq -r .id_key_digest "$tmp/ib.json")" = "$idd" ] || fail "printed ID key digest"
[ "$(jq -r .author_key_digest "$tmp/ib.json")" = "$aud" ] || fail "printed author key digest"
[ "$(jq -r .author_key_enabled "$tmp/ib.json")" = true ] || fail "author_key_enabled"

# --measurement HEX gives the same ID block fields; text output names QEMU's properties.
"$NITRIDE" idblock create --measurement "$meas" --id-key "$tmp/id.pem" --policy 0x30000 \
  >"$tmp/ib.txt"
b2=$(sed -n 's/^id-block: //p' "$tmp/ib.txt") a2=$(sed -n 's/^id-auth: //p' "$tmp/ib.txt")
python3 "$VERIFY" "$b2" "$a2" "$tmp/id.pub" >"$tmp/py2.json" || fail "ID block without author key"
[ "$(jq -r .measurement "$tmp/py2.json")" = "$meas" ] || fail "--measurement LD"
[ "$(sed -n 's/^id-key-digest: //p' "$tmp/ib.txt")" = "$idd" ] || fail "same ID key, same digest"
grep -q "^qemu: -object sev-snp-guest,id=sev0,policy=0x30000,id-block=$b2,id-auth=$a2\$" "$tmp/ib.txt" \
  || fail "QEMU command line"
grep -q "^author-key-digest: (none)" "$tmp/ib.txt" || fail "no author key"

# --- refusals of create
expect_exit 3 "$NITRIDE" idblock create --measurement "$meas" --id-key "$tmp/p256.pem" --policy 0x30000
grep -q "not an EC P-384 key" "$tmp/err" || fail "P-256 key not named"
expect_exit 3 "$NITRIDE" idblock create --measurement "$meas" --id-key "$tmp/id.pem" --policy 0x10000
grep -q "bit 17" "$tmp/err" || fail "policy without bit 17"
expect_exit 3 "$NITRIDE" idblock create --measurement abcd --id-key "$tmp/id.pem" --policy 0x30000
expect_exit 3 "$NITRIDE" idblock create --measurement "$meas" --from-measure "${img[@]}" \
  --id-key "$tmp/id.pem" --policy 0x30000
expect_exit 3 "$NITRIDE" idblock create --ovmf "$VEC/ovmf_AmdSev_suffix.bin" --id-key "$tmp/id.pem" \
  --policy 0x30000
expect_exit 4 "$NITRIDE" idblock create --measurement "$meas" --id-key "$tmp/missing.pem" --policy 0x30000
expect_exit 1 "$NITRIDE" idblock create --from-measure --ovmf /dev/null --vcpu-type EPYC \
  --id-key "$tmp/id.pem" --policy 0x30000

# --- the simulated firmware launches from the images with the ID block
chip=$tmp/chip
"$NITRIDE" sim init "$chip" --product genoa >/dev/null
launch=("$NITRIDE" sim launch "$chip" "${img[@]}" --policy 0x30000)
"${launch[@]}" --id-block "$blk" --id-auth "$auth" --author-key-enabled >/dev/null
report() {
  "$NITRIDE" report get --provider sim --sim-dir "$chip" --nonce "$(openssl rand -hex 32)" \
    --out "$tmp/r.bin" >/dev/null
  "$NITRIDE" report show "$tmp/r.bin" --json >"$tmp/r.json"
}
report
[ "$(jq -r .measurement "$tmp/r.json")" = "$meas" ] || fail "report measurement"
[ "$(jq -r .id_key_digest "$tmp/r.json")" = "$idd" ] || fail "report ID key digest"
[ "$(jq -r .author_key_digest "$tmp/r.json")" = "$aud" ] || fail "report author key digest"
[ "$(jq -r .flags.author_key_en "$tmp/r.json")" = true ] || fail "report AUTHOR_KEY_EN"
[ "$(jq -r .family_id "$tmp/r.json")" = $fam ] || fail "report family id"
[ "$(jq -r .image_id "$tmp/r.json")" = $img_id ] || fail "report image id"
[ "$(jq -r .guest_svn "$tmp/r.json")" = 7 ] || fail "report guest svn"
report_id=$(jq -r .report_id "$tmp/r.json")

# A verifier trusting the signer (id_key_digests), not a list of measurements, accepts it.
printf '{"id_key_digests": ["%s"], "author_key_digests": ["%s"]}\n' "$idd" "$aud" >"$tmp/policy.json"
"$NITRIDE" verify "$tmp/r.bin" --cert "$chip/vcek.pem" --cert "$chip/ask.pem" \
  --trust-anchor "$chip/ark.pem" --policy "$tmp/policy.json" >/dev/null || fail "signer policy"
printf '{"id_key_digests": ["%s"]}\n' "$aud" >"$tmp/policy2.json"
expect_exit 2 "$NITRIDE" verify "$tmp/r.bin" --cert "$chip/vcek.pem" --cert "$chip/ask.pem" \
  --trust-anchor "$chip/ark.pem" --policy "$tmp/policy2.json"

# --- refusals at launch, each with the firmware's status, and the chip unchanged after each
refused() { # status message-part, args...
  local st=$1 part=$2; shift 2
  expect_exit 2 "$@"
  grep -q "$st" "$tmp/err" || { cat "$tmp/err" >&2; fail "expected $st"; }
  grep -q "$part" "$tmp/err" || { cat "$tmp/err" >&2; fail "expected '$part'"; }
  report
  [ "$(jq -r .report_id "$tmp/r.json")" = "$report_id" ] || fail "a refused launch changed the chip"
  [ "$(jq -r .id_key_digest "$tmp/r.json")" = "$idd" ] || fail "a refused launch changed the digest"
}
# A tampered ID block (its SVN raised from 7 to 6^1... any byte): the ID key's signature breaks.
refused "0x0a BAD_SIGNATURE" "ID block signature" \
  "${launch[@]}" --id-block "$(flip "$blk" $((0x54)))" --id-auth "$auth"
refused "0x0a BAD_SIGNATURE" "ID block signature" \
  "${launch[@]}" --id-block "$(flip "$blk" 0)" --id-auth "$auth"
# A tampered ID_BLOCK_SIG (r) and a tampered ID key (another key's digest would be reported).
refused "0x0a BAD_SIGNATURE" "ID block signature" \
  "${launch[@]}" --id-block "$blk" --id-auth "$(flip "$auth" $((0x40 + 5)))"
refused "BAD_SIGNATURE\|INVALID_PARAM" "ID key\|ID block signature" \
  "${launch[@]}" --id-block "$blk" --id-auth "$(flip "$auth" $((0x244)))"
# A tampered ID_KEY_SIG: refused when the author key is enabled.
bad_author=$(flip "$auth" $((0x680 + 3)))
refused "0x0a BAD_SIGNATURE" "author key" \
  "${launch[@]}" --id-block "$blk" --id-auth "$bad_author" --author-key-enabled
# A wrong measurement: the same ID block for a launch with another command line / kernel.
refused "0x0b BAD_MEASUREMENT" "launch digest" \
  "$NITRIDE" sim launch "$chip" "${img[@]}" --append "console=ttyS0 init=/bin/sh" --policy 0x30000 \
  --id-block "$blk" --id-auth "$auth"
refused "0x0b BAD_MEASUREMENT" "launch digest" \
  "$NITRIDE" sim launch "$chip" "${img[@]/EPYC-Milan/EPYC-Genoa}" --policy 0x30000 \
  --id-block "$blk" --id-auth "$auth"
# A policy mismatch: the ID block says 0x30000, the launch asks for debug (bit 19).
refused "0x07 POLICY_FAILURE" "policy 0x30000 is not the guest policy 0xb0000" \
  "$NITRIDE" sim launch "$chip" "${img[@]}" --policy 0xb0000 --id-block "$blk" --id-auth "$auth"
# Malformed input is a usage error, not a launch.
expect_exit 3 "${launch[@]}" --id-block "$blk"
expect_exit 3 "${launch[@]}" --id-block "${blk:4}" --id-auth "$auth"

# Without the author key enabled the same ID block launches, and reports no author digest.
"${launch[@]}" --id-block "$blk" --id-auth "$bad_author" >/dev/null
report
[ "$(jq -r .id_key_digest "$tmp/r.json")" = "$idd" ] || fail "ID key digest without author"
[ "$(jq -r .author_key_digest "$tmp/r.json")" = "$(printf '0%.0s' $(seq 96))" ] || fail "author digest"
[ "$(jq -r .flags.author_key_en "$tmp/r.json")" = false ] || fail "AUTHOR_KEY_EN without author"
# Without an ID block: no digests, no ids, SVN 0.
"${launch[@]}" >/dev/null
report
[ "$(jq -r .id_key_digest "$tmp/r.json")" = "$(printf '0%.0s' $(seq 96))" ] || fail "no ID block"
[ "$(jq -r .guest_svn "$tmp/r.json")" = 0 ] || fail "SVN without an ID block"
[ "$(jq -r .measurement "$tmp/r.json")" = "$meas" ] || fail "measurement without ID block"
echo "idblock-cli: ok"
