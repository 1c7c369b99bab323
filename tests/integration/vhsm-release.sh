#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Signed KMS releases and token-bound verdicts through the real vhsmd and vhsm CLI. release-tool
# plays kmsd (signs releases with a key vhsmd pins) and attestd (issues EAR tokens from a
# simulated chip's verdict, cnf.jwk = a vhsmd transfer key). Checks: the happy path (release +
# token: key stored under the release's name, type, version, label, ACL and policy, usable with
# the known bytes, verdict recorded); a release replayed (refused, nothing changed); a release
# signed by a key vhsmd does not pin; a tampered JWE; a release for another transfer key; a token
# whose cnf is another VM's key, an expired token, a token of an unknown key; nobody (root
# included) creates kms/x; an attested key usable after the token, refused after its expiry; a
# newer version added, older refused; raw keys; IMPORT_JWE gone; without --kms-keys/--attestd-jwks
# both operations unsupported; all of it kept across a restart.
. "$(dirname "$0")/vhsm-lib.sh"
[ "$(id -u)" = 0 ] || { echo "SKIP: transfer keys, imports and verdicts are root-only"; exit 77; }
[ -n "$RELTOOL" ] || fail "needs release-tool (\$5)"
start_vhsmd
printf 'message\n' >"$T/msg"
chmod 644 "$T/msg"

expect_exit() { # code cmd...
  local want=$1 got=0; shift
  "$@" >"$T/out" 2>"$T/err" || got=$?
  [ "$got" = "$want" ] || { cat "$T/out" "$T/err" >&2; fail "expected exit $want, got $got: $*"; }
}
# transfer FILE: a transfer key of this vhsmd (public JWK) in FILE
transfer() { V transfer-key create --lifetime 300 >"$1"; }
# token TKFILE OUT [LIFETIME [IAT [KEYDIR]]]: attestd's token for the transfer key
token() {
  "$RELTOOL" token "${5:-$T/attestd}" "$T/attestd/chip" "$1" "${3:-300}" "${4:-$(date +%s)}" >"$2"
}
jti_of() { python3 -c 'import base64,json,sys; p=open(sys.argv[1]).read().strip().split(".")[1]; print(json.loads(base64.urlsafe_b64decode(p+"="*(-len(p)%4)))["jti"])' "$1"; }
# release TKFILE OUT NAME TYPE VERSION HEX [POLICY_JSON_MEMBERS [KEYDIR]]: kmsd's release
release() {
  local tk=$1 out=$2 name=$3 type=$4 ver=$5 hex=$6 extra=${7:-'"policy":"local"'} kd=${8:-$T/kms}
  printf '{"name":"%s","type":"%s","version":%s,%s,"secret_id":"s1","token_jti":"%s"}' \
    "$name" "$type" "$ver" "$extra" "${TOKEN_JTI:-dGVzdA}" >"$T/hdr.json"
  "$RELTOOL" sign "$kd" "$tk" "$T/hdr.json" "$hex" >"$out"
}
info() { V --json key info "$1" | jq -S 'del(.versions[]?.created)'; }

# --- happy path: a release and its token; the key exists as the release says
transfer "$T/tk1"
token "$T/tk1" "$T/tok1"
TOKEN_JTI=$(jti_of "$T/tok1")
K1=$(hex_random 32)
release "$T/tk1" "$T/rel1" kms/db aes256 1 "$K1" \
  '"policy":"attested","max_age":600,"label":"database key","acl":{"use_uid":[0,4242],"admin_uid":[0]}'
V --json import-release "$T/rel1" --token "$T/tok1" >"$T/out"
[ "$(jq -c . "$T/out")" = '{"name":"kms/db","version":1}' ] || fail "import reply: $(cat "$T/out")"
info kms/db >"$T/info1"
jq -e '.type == "aes256" and .label == "database key" and .origin == "imported" and
       .policy.kind == "attested" and .policy.max_age == 600 and .latest_version == 1 and
       .acl.use.uids == [0,4242] and .acl.admin.uids == [0]' "$T/info1" >/dev/null \
  || fail "key attributes differ from the release: $(cat "$T/info1")"
V --json attestation status | jq -e '.verdict_time > 0' >/dev/null || fail "the token's verdict was not recorded"
V encrypt kms/db --in "$T/msg" --out "$T/ct1"
H gcm-open "$K1" <"$T/ct1" 2>/dev/null | cmp -s - "$T/msg" || fail "the imported key is not the released bytes"
grep -q "Key 'kms/db' version 1 (aes256, policy attested) imported from KMS release" "$VHSMD_LOG" \
  || fail "no audit line for the import"
grep -q "$(cat "$T/tok1")" "$VHSMD_LOG" && fail "the token was logged"

# --- the same release again: refused, nothing changed
expect_exit 8 V import-release "$T/rel1"
grep -q "already imported" "$T/err" || fail "replay message: $(cat "$T/err")"
info kms/db | cmp -s - "$T/info1" || fail "a replayed release changed the key"

# --- a release signed by a key vhsmd does not pin: refused before the transfer key is spent
transfer "$T/tk2"
K2=$(hex_random 32)
release "$T/tk2" "$T/rel2x" kms/other aes256 1 "$K2" '"policy":"local"' "$T/rogue-kms"
expect_exit 7 V import-release "$T/rel2x"
grep -q "not pinned" "$T/err" || fail "unpinned signer message: $(cat "$T/err")"
expect_exit 4 V key info kms/other
# --- a tampered JWE (one character of the signed payload): refused
release "$T/tk2" "$T/rel2" kms/other aes256 1 "$K2"
python3 - "$T/rel2" "$T/rel2t" <<'PY'
import sys
h, p, s = open(sys.argv[1]).read().strip().split(".")
i = len(p) // 2
p = p[:i] + ("A" if p[i] != "A" else "B") + p[i + 1:]
open(sys.argv[2], "w").write(".".join([h, p, s]))
PY
expect_exit 7 V import-release "$T/rel2t"
expect_exit 4 V key info kms/other
# the untampered release still imports: the refusals spent nothing
V import-release "$T/rel2" >/dev/null
printf 'x' | V encrypt kms/other | H gcm-open "$K2" 2>/dev/null | grep -qx x || fail "kms/other"
# --- a release for a transfer key vhsmd does not hold (another VM's, or used already)
release "$T/tk2" "$T/rel3" kms/third aes256 1 "$(hex_random 32)"
expect_exit 4 V import-release "$T/rel3"
grep -q "does not hold" "$T/err" || fail "foreign transfer key message: $(cat "$T/err")"
mkdir -p "$T/foreign" && "$RELTOOL" seal "$T/foreign"   # a P-384 key made elsewhere
jq 'del(.d)' "$T/foreign/recipient.json" >"$T/foreign.jwk"
release "$T/foreign.jwk" "$T/rel4" kms/third aes256 1 "$(hex_random 32)"
expect_exit 4 V import-release "$T/rel4"
expect_exit 4 V key info kms/third

# --- tokens: another VM's transfer key, expired, unknown signer
token "$T/foreign.jwk" "$T/tokf"
expect_exit 7 V attestation set --token "$T/tokf"
grep -q "not a transfer key of this vault" "$T/err" || fail "foreign cnf message: $(cat "$T/err")"
transfer "$T/tk5"
token "$T/tk5" "$T/tok5old" 300 $(($(date +%s) - 1000))
expect_exit 6 V attestation set --token "$T/tok5old"
grep -q "expired" "$T/err" || fail "expired token message: $(cat "$T/err")"
token "$T/tk5" "$T/tok5rogue" 300 "$(date +%s)" "$T/rogue-attestd"
expect_exit 7 V attestation set --token "$T/tok5rogue"
grep -q "unknown kid" "$T/err" || fail "unknown signer message: $(cat "$T/err")"
"$RELTOOL" token "$T/attestd" "$T/attestd/chip" "$T/tk5" 300 "$(date +%s)" contraindicated >"$T/tok5c"
expect_exit 7 V attestation set --token "$T/tok5c"
grep -q "status contraindicated" "$T/err" || fail "contraindicated token message: $(cat "$T/err")"
# a release with a token for another transfer key than its own: refused, nothing imported
release "$T/tk5" "$T/rel5" kms/fifth aes256 1 "$(hex_random 32)"
transfer "$T/tk6"
token "$T/tk6" "$T/tok6"
expect_exit 7 V import-release "$T/rel5" --token "$T/tok6"
grep -q "the token confirms transfer key" "$T/err" || fail "token/release binding message"
expect_exit 4 V key info kms/fifth

# --- kms/ is import-only: neither a local user nor root creates a key there
expect_exit 12 V key create kms/x --type aes256
H as-user 4242 4242 -- "$VHSM" --socket "$SOCK" key create kms/x --type aes256 >/dev/null 2>&1 \
  && fail "a local user created kms/x" || [ $? = 12 ] || fail "uid 4242: kms/x not refused as not-owner"
expect_exit 4 V key info kms/x
expect_exit 5 V key rotate kms/db
# the released ACL is in force: uid 4242 uses kms/db
H as-user 4242 4242 -- "$VHSM" --socket "$SOCK" encrypt kms/db --in "$T/msg" >/dev/null \
  || fail "uid 4242 (in the release's ACL) cannot use kms/db"

# --- an attested key: usable after its token, refused after the token's expiry
transfer "$T/tk7"
token "$T/tk7" "$T/tok7" 4
TOKEN_JTI=$(jti_of "$T/tok7")
release "$T/tk7" "$T/rel7" kms/short aes256 1 "$(hex_random 32)" '"policy":"attested","max_age":3600'
V import-release "$T/rel7" --token "$T/tok7" >/dev/null
V encrypt kms/short --in "$T/msg" >/dev/null || fail "attested key refused right after its token"
exp=$(V --json attestation status | jq .verdict_expires)
while [ "$(date +%s)" -lt "$exp" ]; do sleep 0.2; done
expect_exit 6 V encrypt kms/short --in "$T/msg"
grep -q "attestation required" "$T/err" || fail "expired verdict message"
# a fresh token (cnf: the transfer key the last import spent) makes it usable again
token "$T/tk7" "$T/tok7b" 300
V attestation set --token "$T/tok7b"
V encrypt kms/short --in "$T/msg" >/dev/null

# --- a newer version: added (old ciphertexts still open); an older one: refused
transfer "$T/tk8"
K3=$(hex_random 32)
release "$T/tk8" "$T/rel8" kms/db aes256 3 "$K3" '"policy":"local","label":"v3"'
V import-release "$T/rel8" >/dev/null
info kms/db >"$T/info3"
jq -e '.latest_version == 3 and .label == "v3" and .policy.kind == "local" and
       ([.versions[].version] == [1,3])' "$T/info3" >/dev/null || fail "version 3: $(cat "$T/info3")"
V decrypt kms/db --in "$T/ct1" | cmp -s - "$T/msg" || fail "version 1 ciphertext after version 3"
V encrypt kms/db --in "$T/msg" | H gcm-open "$K3" 2>/dev/null | cmp -s - "$T/msg" || fail "version 3 is not the released bytes"
transfer "$T/tk9"
release "$T/tk9" "$T/rel9" kms/db aes256 2 "$(hex_random 32)"
expect_exit 8 V import-release "$T/rel9"
grep -q "older than the version imported" "$T/err" || fail "older release message"
release "$T/tk9" "$T/rel9b" kms/db hmac-sha256 4 "$(hex_random 32)"
expect_exit 9 V import-release "$T/rel9b"
info kms/db | cmp -s - "$T/info3" || fail "refused releases changed the key"

# --- raw keys: opaque bytes, no operation
transfer "$T/tk10"
release "$T/tk10" "$T/rel10" kms/luks-vol raw 1 "$(hex_random 64)"
V import-release "$T/rel10" >/dev/null
[ "$(V --json key info kms/luks-vol | jq -r .type)" = raw ] || fail "raw type"
expect_exit 9 V encrypt kms/luks-vol --in "$T/msg"
expect_exit 9 V key create mine --type raw

# --- IMPORT_JWE (0x0031) is gone; IMPORT_RELEASE without a release is a bad request
python3 - "$SOCK" <<'PY' || fail "raw opcodes"
import socket, struct, sys
def call(op, body=b""):
    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
    s.sendall(struct.pack(">IBBHII", 0x5648534D, 1, 1, op, 9, len(body)) + body)
    hdr = b""
    while len(hdr) < 16:
        hdr += s.recv(16 - len(hdr))
    return struct.unpack(">IBBHII", hdr)[3]
assert call(0x0031) == 3, "0x0031 not unknown-opcode"
assert call(0x0032) == 1, "IMPORT_RELEASE without RELEASE not bad-request"
PY

# --- kept across a restart; without pinned keys both operations are unsupported
info kms/db >"$T/before"
stop_vhsmd || fail "vhsmd exit status"
TRUST_ARGS=()
start_vhsmd
info kms/db | cmp -s - "$T/before" || fail "kms/db changed across the restart"
expect_exit 9 V import-release "$T/rel2"
grep -q -- "--kms-keys" "$T/err" || fail "no hint at --kms-keys: $(cat "$T/err")"
expect_exit 9 V attestation set --token "$T/tok7b"
grep -q -- "--attestd-jwks" "$T/err" || fail "no hint at --attestd-jwks: $(cat "$T/err")"
stop_vhsmd || fail "vhsmd exit status"
echo "vhsm-release: ok"
