#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Every vhsmd operation through the real daemon and CLI, checked against OpenSSL (or, for
# symmetric keys, against the known key value imported as a KMS release: vhsm-lib.sh kms_import).
. "$(dirname "$0")/vhsm-lib.sh"
start_vhsmd

printf 'message to sign\n' >"$T/msg"
head -c 3000 /dev/urandom >"$T/bin"
printf 'tampered\n' >"$T/bad"
printf 'associated data' >"$T/aad"

expect_exit() { # code cmd...
  local want=$1 got=0; shift
  "$@" >"$T/out" 2>"$T/err" || got=$?
  [ "$got" = "$want" ] || { cat "$T/err" >&2; fail "expected exit $want, got $got: $*"; }
}

# --- ECDSA P-256 / P-384: raw DER and enveloped, message and pre-hashed
for spec in p256:sha256 p384:sha384; do
  type=${spec%%:*} md=${spec##*:} k=ec-$type
  V key create "$k" --type "$type"
  V pubkey "$k" --out "$T/$k.pem"
  openssl pkey -pubin -in "$T/$k.pem" -noout -text | grep "$( [ $type = p256 ] && echo prime256v1 || echo secp384r1)" >/dev/null \
    || fail "$k: wrong curve in exported key"
  V sign "$k" --raw --in "$T/msg" --out "$T/sig"
  openssl dgst -"$md" -verify "$T/$k.pem" -signature "$T/sig" "$T/msg" >/dev/null || fail "$k: OpenSSL rejects the signature"
  openssl dgst -"$md" -verify "$T/$k.pem" -signature "$T/sig" "$T/bad" >/dev/null 2>&1 && fail "$k: OpenSSL accepts a signature over other data"
  openssl dgst -"$md" -binary "$T/msg" >"$T/dig"
  V sign "$k" --raw --prehashed --in "$T/dig" --out "$T/sig2"
  openssl dgst -"$md" -verify "$T/$k.pem" -signature "$T/sig2" "$T/msg" >/dev/null || fail "$k: pre-hashed signature rejected"
  V sign "$k" --in "$T/msg" --out "$T/env"
  [ "$(head -c 4 "$T/env")" = NTVE ] || fail "$k: enveloped signature lacks the header"
  [ "$(V verify "$k" --signature "$T/env" --in "$T/msg")" = valid ] || fail "$k: verify"
  expect_exit 7 V verify "$k" --signature "$T/env" --in "$T/bad"
  V sign "$k" --raw-rs --in "$T/msg" --out "$T/rs"
  want=$([ $type = p256 ] && echo 64 || echo 96)
  [ "$(stat -c %s "$T/rs")" = "$want" ] || fail "$k: r||s signature has the wrong size"
done

# --- Ed25519
V key create ed --type ed25519
V pubkey ed --out "$T/ed.pem"
V sign ed --raw --in "$T/msg" --out "$T/sig"
openssl pkeyutl -verify -pubin -inkey "$T/ed.pem" -rawin -in "$T/msg" -sigfile "$T/sig" >/dev/null || fail "ed25519: OpenSSL rejects the signature"
openssl pkeyutl -verify -pubin -inkey "$T/ed.pem" -rawin -in "$T/bad" -sigfile "$T/sig" >/dev/null 2>&1 && fail "ed25519: accepted over other data"
expect_exit 9 V sign ed --prehashed --in "$T/msg"

# --- RSA-2048: PSS, PKCS#1 v1.5, OAEP (OpenSSL encrypts, vhsmd decrypts; and the reverse)
V key create rsa --type rsa2048
V pubkey rsa --out "$T/rsa.pem"
V sign rsa --alg rsa-pss-sha256 --raw --in "$T/msg" --out "$T/sig"
openssl dgst -sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32 -verify "$T/rsa.pem" \
  -signature "$T/sig" "$T/msg" >/dev/null || fail "rsa-pss: OpenSSL rejects the signature"
V sign rsa --alg rsa-pkcs1-sha384 --raw --in "$T/msg" --out "$T/sig"
openssl dgst -sha384 -verify "$T/rsa.pem" -signature "$T/sig" "$T/msg" >/dev/null || fail "rsa-pkcs1: OpenSSL rejects the signature"
head -c 100 /dev/urandom >"$T/secret"
openssl pkeyutl -encrypt -pubin -inkey "$T/rsa.pem" -pkeyopt rsa_padding_mode:oaep \
  -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256 -in "$T/secret" -out "$T/oaep"
V decrypt rsa --alg rsa-oaep-sha256 --raw --in "$T/oaep" --out "$T/secret2"
cmp -s "$T/secret" "$T/secret2" || fail "rsa-oaep: vhsmd does not decrypt OpenSSL's ciphertext"
V encrypt rsa --alg rsa-oaep-sha256 --raw --in "$T/secret" --out "$T/oaep2"
V decrypt rsa --alg rsa-oaep-sha256 --raw --in "$T/oaep2" | cmp -s - "$T/secret" || fail "rsa-oaep round trip"
V pubkey rsa --format jwk | jq -e '.kty == "RSA" and (.kid | length > 0) and (has("d") | not)' >/dev/null || fail "rsa: JWK export"

# --- AES-256 imported as a KMS release (key known to the test): GCM checked by OpenSSL
AESHEX=$(hex_random 32)
kms_import aes aes256 "$AESHEX"
V encrypt kms/aes --aad "$T/aad" --in "$T/bin" --out "$T/ct"
H gcm-open "$AESHEX" "$T/aad" <"$T/ct" 2>/dev/null | cmp -s - "$T/bin" || fail "aes: OpenSSL does not open vhsmd's ciphertext"
H gcm-open "$AESHEX" <"$T/ct" >/dev/null 2>&1 && fail "aes: ciphertext opens without its AAD"
V decrypt kms/aes --aad "$T/aad" --in "$T/ct" | cmp -s - "$T/bin" || fail "aes: decrypt round trip"
expect_exit 7 V decrypt kms/aes --in "$T/ct"   # AAD missing: tag check fails
# the CLI import path (transfer-key create, a release signed by the pinned KMS key, vhsm
# import-release); the transfer key is one-shot
V transfer-key create --lifetime 60 >"$T/tk.jwk"
jq -e '.crv == "P-256" and (has("d") | not)' "$T/tk.jwk" >/dev/null || fail "transfer key JWK"
AES2=$(hex_random 32)
printf '{"name":"kms/aes2","type":"aes256","version":1,"policy":"local","secret_id":"aes2","token_jti":"dG9r"}' >"$T/h2.json"
"$RELTOOL" sign "$T/kms" "$T/tk.jwk" "$T/h2.json" "$AES2" >"$T/k.rel"
[ "$(V --json import-release "$T/k.rel" | jq -c .)" = '{"name":"kms/aes2","version":1}' ] || fail "import-release reply"
printf '{"name":"kms/aes3","type":"aes256","version":1,"policy":"local","secret_id":"aes3","token_jti":"dG9r"}' >"$T/h3.json"
"$RELTOOL" sign "$T/kms" "$T/tk.jwk" "$T/h3.json" "$AES2" >"$T/k3.rel"
expect_exit 4 V import-release "$T/k3.rel"
printf 'x' | V encrypt kms/aes2 | H gcm-open "$AES2" 2>/dev/null | grep -x x >/dev/null || fail "aes2 (CLI import)"

# wrap / unwrap (RFC 5649 and RFC 3394), unwrapped independently by OpenSSL
head -c 37 /dev/urandom >"$T/dek"
V wrap kms/aes --alg aes256-kwp --in "$T/dek" | H kw-open "$AESHEX" kwp | cmp -s - "$T/dek" || fail "kwp: OpenSSL does not unwrap"
head -c 32 /dev/urandom >"$T/dek32"
V wrap kms/aes --alg aes256-kw --in "$T/dek32" --out "$T/w"
H kw-open "$AESHEX" kw <"$T/w" | cmp -s - "$T/dek32" || fail "kw: OpenSSL does not unwrap"
V unwrap kms/aes --alg aes256-kw --in "$T/w" | cmp -s - "$T/dek32" || fail "kw: unwrap"
expect_exit 9 V wrap kms/aes --alg aes256-kw --in "$T/dek"   # 37 bytes: not a multiple of 8

# --- HMAC-SHA-256 with a known key, compared with openssl dgst -mac HMAC
HMHEX=$(hex_random 32)
kms_import hm hmac-sha256 "$HMHEX"
V mac kms/hm --in "$T/bin" --out "$T/tag"
tail -c +13 "$T/tag" | cmp -s - <(openssl dgst -sha256 -mac HMAC -macopt "hexkey:$HMHEX" -binary "$T/bin") || fail "hmac differs from OpenSSL"
[ "$(V mac-verify kms/hm --signature "$T/tag" --in "$T/bin")" = valid ] || fail "mac-verify"
expect_exit 7 V mac-verify kms/hm --signature "$T/tag" --in "$T/bad"

# --- ECDH derive: the derived AES key equals HKDF-SHA256 over OpenSSL's own ECDH result
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/peer.key" 2>/dev/null
openssl pkey -in "$T/peer.key" -pubout -out "$T/peer.pem"
V ecdh-derive ec-p256 --peer-key "$T/peer.pem" --new-name derived --info ctx1
openssl pkeyutl -derive -inkey "$T/peer.key" -peerkey "$T/ec-p256.pem" -out "$T/z"
INFOHEX=$(printf 'nitride-vault-ecdhctx1' | od -An -tx1 | tr -d ' \n')
DHEX=$(openssl kdf -keylen 32 -kdfopt digest:SHA256 -kdfopt "hexkey:$(od -An -tx1 "$T/z" | tr -d ' \n')" \
  -kdfopt "hexinfo:$INFOHEX" HKDF | tr -d ':\n' | tr 'A-F' 'a-f')
printf 'derived secret' | V encrypt derived | H gcm-open "$DHEX" 2>/dev/null | grep -x 'derived secret' >/dev/null \
  || fail "ECDH-derived key differs from OpenSSL ECDH + HKDF"

# --- random
[ "$(V random 64 | wc -c)" = 64 ] || fail "random length"
[ "$(V random 32 | od -An -tx1)" != "$(V random 32 | od -An -tx1)" ] || fail "random repeats"
expect_exit 2 V random 0

# --- versions: rotate, old ciphertexts still open, min-version retires them
V key create rot --type aes256
V encrypt rot --in "$T/msg" --out "$T/v1"
[ "$(V key rotate rot)" = 2 ] || fail "rotate"
V encrypt rot --in "$T/msg" --out "$T/v2"
[ "$(od -An -tx1 -j8 -N4 "$T/v2" | tr -d ' ')" = 00000002 ] || fail "new ciphertexts carry version 2"
V decrypt rot --in "$T/v1" | cmp -s - "$T/msg" || fail "v1 ciphertext after rotation"
V key min-version rot 2
expect_exit 10 V decrypt rot --in "$T/v1"
grep -q "retired" "$T/err" || fail "retired message"
V decrypt rot --in "$T/v2" | cmp -s - "$T/msg" || fail "v2 after min-version"
[ "$(V --json key info rot | jq '.min_version')" = 2 ] || fail "info min_version"
# a KMS key gets versions from releases only: rotation refused, even for root
expect_exit 5 V key rotate kms/aes

# --- attested policy: refused until the agent records a verdict (attestd's token, cnf = a
# transfer key of this vhsmd)
V key create att --type aes256 --policy attested --max-age 60
expect_exit 6 V encrypt att --in "$T/msg"
grep -q "attestation required" "$T/err" || fail "attestation-required message"
expect_exit 2 V attestation set
V transfer-key create --lifetime 60 >"$T/att-tk.jwk"
"$RELTOOL" token "$T/attestd" "$T/attestd/chip" "$T/att-tk.jwk" >"$T/att.token"
V attestation set --token "$T/att.token"
V encrypt att --in "$T/msg" >/dev/null
V --json attestation status >"$T/st"
jq -e '.verdict_time > 0 and .verdict_expires > .verdict_time' "$T/st" >/dev/null || fail "attestation status: $(cat "$T/st")"

# --- list / info / delete / errors and exit codes
V --json key list | jq -e 'map(.name) | index("0/ec-p256") != null' >/dev/null || fail "list"
expect_exit 8 V key create ed --type ed25519
expect_exit 9 V key create bad --type des
expect_exit 9 V key create 'bad name' --type aes256
V key delete ed
expect_exit 4 V key info ed
grep -q "'0/ed'" "$T/err" || fail "not-found message names the key"
expect_exit 9 V encrypt ec-p256 --in "$T/msg"
expect_exit 2 V key create
expect_exit 2 V frobnicate
expect_exit 3 "$VHSM" --socket "$T/nonexistent.sock" ping
expect_exit 4 V --json sign nokey --in "$T/msg"
jq -e '.exit == 4 and .key == "nokey"' "$T/out" >/dev/null || fail "--json error object"

stop_vhsmd || fail "vhsmd exit status $?"
echo "vhsm-ops: all operations verified"
