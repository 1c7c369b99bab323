#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# nitride idblock create with keys in a real vhsmd (vhsm:NAME): the ID block and the ID key are
# signed inside the daemon; the result is checked by the independent implementation
# (idblock-verify.py) against the public keys vhsmd exports, the simulated firmware launches with
# it, and keys that are not EC P-384, or missing, are refused without output.
. "$(dirname "$0")/vhsm-lib.sh"
VERIFY=$(dirname "$0")/idblock-verify.py
python3 -c 'import cryptography' 2>/dev/null || { echo "python3-cryptography missing: skip"; exit 77; }
start_vhsmd

expect_exit() { # code cmd...
  local want=$1 got=0; shift
  "$@" >"$T/out" 2>"$T/err" || got=$?
  [ "$got" = "$want" ] || { cat "$T/err" >&2; fail "expected exit $want, got $got: $*"; }
}

V key create fleet-id --type p384
V key create fleet-author --type p384
V key create small --type p256
V pubkey fleet-id --out "$T/id.pub"
V pubkey fleet-author --out "$T/author.pub"
VEC=$(cd "$(dirname "$0")/../vectors/measure" && pwd)
img=(--ovmf "$VEC/ovmf_AmdSev_suffix.bin" --vcpu-type EPYC-Milan --kernel /dev/null)
meas=$("$NITRIDE" measure "${img[@]}")

"$NITRIDE" idblock create --measurement "$meas" --id-key vhsm:fleet-id \
  --author-key vhsm:fleet-author --vhsm-socket "$SOCK" --policy 0x30000 --guest-svn 2 \
  --json >"$T/ib.json" || fail "idblock create with vhsm keys"
blk=$(jq -r .id_block "$T/ib.json") auth=$(jq -r .id_auth "$T/ib.json")
python3 "$VERIFY" "$blk" "$auth" "$T/id.pub" "$T/author.pub" >"$T/py.json" \
  || fail "the independent check rejects the vhsmd-signed ID block"
[ "$(jq -r .measurement "$T/py.json")" = "$meas" ] || fail "LD"
[ "$(jq -r .id_key_digest "$T/ib.json")" = "$(jq -r .id_key_digest "$T/py.json")" ] || fail "ID key digest"
[ "$(jq -r .author_key_digest "$T/ib.json")" = "$(jq -r .author_key_digest "$T/py.json")" ] \
  || fail "author key digest"

# $VHSM_SOCKET is honoured like every libvhsm client; a mixed PEM/vhsm pair works.
openssl ecparam -name secp384r1 -genkey -noout -out "$T/author.pem"
openssl pkey -in "$T/author.pem" -pubout -out "$T/author2.pub"
VHSM_SOCKET=$SOCK "$NITRIDE" idblock create --measurement "$meas" --id-key vhsm:fleet-id \
  --author-key "$T/author.pem" --policy 0x30000 --json >"$T/ib2.json"
python3 "$VERIFY" "$(jq -r .id_block "$T/ib2.json")" "$(jq -r .id_auth "$T/ib2.json")" \
  "$T/id.pub" "$T/author2.pub" >/dev/null || fail "vhsm ID key with a PEM author key"

# The simulated firmware accepts it for the launch it names and reports the vhsmd keys' digests.
chip=$T/chip2
"$NITRIDE" sim init "$chip" --product milan >/dev/null
"$NITRIDE" sim launch "$chip" "${img[@]}" --policy 0x30000 --id-block "$blk" --id-auth "$auth" \
  --author-key-enabled >/dev/null || fail "launch with the vhsmd-signed ID block"
"$NITRIDE" report get --provider sim --sim-dir "$chip" --nonce "$(hex_random 32)" \
  --out "$T/r.bin" >/dev/null
"$NITRIDE" report show "$T/r.bin" --json >"$T/r.json"
[ "$(jq -r .id_key_digest "$T/r.json")" = "$(jq -r .id_key_digest "$T/py.json")" ] \
  || fail "report ID key digest"
[ "$(jq -r .author_key_digest "$T/r.json")" = "$(jq -r .author_key_digest "$T/py.json")" ] \
  || fail "report author key digest"
[ "$(jq -r .guest_svn "$T/r.json")" = 2 ] || fail "report guest svn"

# Refusals: a P-256 key, a missing key, no daemon.
expect_exit 3 "$NITRIDE" idblock create --measurement "$meas" --id-key vhsm:small \
  --vhsm-socket "$SOCK" --policy 0x30000
grep -q "not an EC P-384 key" "$T/err" || fail "P-256 vhsmd key not named"
[ ! -s "$T/out" ] || fail "output for a refused key"
expect_exit 3 "$NITRIDE" idblock create --measurement "$meas" --id-key vhsm:nope \
  --vhsm-socket "$SOCK" --policy 0x30000
grep -q "nope" "$T/err" || fail "missing vhsmd key not named"
expect_exit 4 "$NITRIDE" idblock create --measurement "$meas" --id-key vhsm:fleet-id \
  --vhsm-socket "$T/no.sock" --policy 0x30000
expect_exit 3 "$NITRIDE" idblock create --measurement "$meas" --id-key vhsm: \
  --vhsm-socket "$SOCK" --policy 0x30000
stop_vhsmd
echo "vhsm-idblock: ok"
