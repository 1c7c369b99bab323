#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Real PKCS#11 clients from Debian on libvhsm-pkcs11.so over a vhsmd started here: OpenSC
# pkcs11-tool, GnuTLS p11tool, OpenSSL 3 through libp11's engine, ssh-keygen -D and an ssh
# login to a local sshd on 127.0.0.1 (ssh -I), PyKCS11. Every signature is verified by plain
# OpenSSL with the public key exported through the module.
# Arguments: nitride vhsmd module.so
set -euo pipefail
NITRIDE=$1 VHSMD=$2 M=$3
for tool in pkcs11-tool p11tool ssh-keygen ssh /usr/sbin/sshd openssl /usr/bin/python3; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool missing (scripts/deps.sh installs it)"; exit 77; }
done
ENGINE=$(find /usr/lib -path '*engines-3/pkcs11.so' 2>/dev/null | head -1)
[ -n "$ENGINE" ] || { echo "SKIP: libengine-pkcs11-openssl missing"; exit 77; }
/usr/bin/python3 -c 'import PyKCS11' 2>/dev/null || { echo "SKIP: python3-pykcs11 missing"; exit 77; }

T=$(mktemp -d /tmp/nt-p11-clients.XXXXXX)
chmod 755 "$T"
VHSMD_PID= SSHD_PID=
cleanup() {
  [ -n "$SSHD_PID" ] && kill "$SSHD_PID" 2>/dev/null || true
  [ -n "$VHSMD_PID" ] && kill "$VHSMD_PID" 2>/dev/null && wait "$VHSMD_PID" 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  [ -f "$T/vhsmd.log" ] && { echo "--- vhsmd log (tail)" >&2; tail -15 "$T/vhsmd.log" >&2; }
  exit 1
}
step() { echo "== $*"; }

"$NITRIDE" sim init "$T/sim" --product milan >/dev/null
"$VHSMD" --foreground --socket "$T/vhsm.sock" --keystore "$T/state/keystore" --provider sim \
  --sim-dir "$T/sim" --freshness-anchor "file:$T/anchor" >"$T/vhsmd.log" 2>&1 &
VHSMD_PID=$!
for _ in $(seq 1 200); do [ -S "$T/vhsm.sock" ] && break; sleep 0.05; done
[ -S "$T/vhsm.sock" ] || fail "vhsmd did not come up"
export VHSM_PKCS11_SOCKETS=$T/vhsm.sock
# A sanitizer build's module needs its runtimes loaded first into the (uninstrumented) clients,
# as scripts/demo.sh does for cryptsetup; C runs a client so. Leaks are left to the cmocka test
# (pkcs11.sh runs the module under LeakSanitizer); the clients' own are not ours.
NT_PRELOAD=$(ldd "$M" | awk '$1 ~ /^lib(asan|ubsan)\.so/ {print $3}' | paste -sd: -)
C() {
  if [ -n "$NT_PRELOAD" ]; then
    LD_PRELOAD=$NT_PRELOAD ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 "$@"
  else
    "$@"
  fi
}
[ -n "$NT_PRELOAD" ] && echo "sanitizer build: clients run with LD_PRELOAD=$NT_PRELOAD"
P() { C timeout 120 pkcs11-tool --module "$M" "$@"; }
SO_PIN=so-pin-4711 PIN=user-pin-0815
L() { P --login --pin "$PIN" "$@"; }
cd "$T"
printf 'the data to sign, %s\n' "$(date +%s%N)" >data

step "pkcs11-tool: initialise the token and the user PIN"
P -L >out 2>&1 || fail "pkcs11-tool -L"
grep -q "token state:   uninitialized" out || grep -q "uninitialized" out || fail "a fresh token: $(cat out)"
P --init-token --so-pin "$SO_PIN" --label "clients token" >out 2>&1 || fail "--init-token: $(cat out)"
P --init-pin --so-pin "$SO_PIN" --pin "$PIN" >out 2>&1 || fail "--init-pin: $(cat out)"
P --login --pin wrong-pin-1 -O >out 2>&1 && fail "a wrong PIN was accepted"
grep -q CKR_PIN_INCORRECT out || fail "wrong PIN: $(cat out)"

step "pkcs11-tool: slots, mechanisms"
P -L >out 2>&1 || fail "pkcs11-tool -L"
grep -q "token manufacturer : Nitride" out || fail "no vHSM token listed"
grep -q "token label        : clients token" out || fail "label: $(cat out)"
grep -q "login required" out || fail "flags: $(cat out)"
grep -q "PIN count low" out || fail "the failed PIN is not counted: $(cat out)"
P -M >out 2>&1 || fail "pkcs11-tool -M"
grep -q "ECDSA-SHA256, keySize={256,256}" out || fail "mechanism list: $(cat out)"

step "pkcs11-tool: generate EC P-256, RSA-2048, Ed25519, AES-256"
L --keypairgen --key-type EC:prime256v1 --label t-ec >out 2>&1 || fail "EC keypairgen: $(cat out)"
L --keypairgen --key-type rsa:2048 --label t-rsa >out 2>&1 || fail "RSA keypairgen: $(cat out)"
L --keygen --key-type AES:32 --label t-aes >out 2>&1 || fail "AES keygen: $(cat out)"
L -O >objs 2>&1 || fail "pkcs11-tool -O"
for l in t-ec t-rsa t-aes; do grep -q "label:      $l" objs || fail "$l not listed"; done
grep -q "Secret Key Object; AES length 32" objs || fail "AES key not shown as such"

# pkcs11-tool selects keys by CKA_ID (--id), not by label, for sign/verify/decrypt
id_of() { awk -v l="$1" '$1=="label:" && $2==l {f=1} f && $1=="ID:" {print $2; exit}' objs; }
EC_ID=$(id_of t-ec) RSA_ID=$(id_of t-rsa)
[ -n "$EC_ID" ] && [ -n "$RSA_ID" ] || fail "no CKA_ID listed: $(cat objs)"

step "pkcs11-tool: sign, verified by OpenSSL"
# OpenSC's pkcs11-tool (0.23) frees the OSSL_PARAMs it then reads when it builds an EC public
# key: under ASan (runtimes preloaded) that aborts pkcs11-tool itself, so a sanitizer build
# exports the EC key with GnuTLS p11tool instead (its comparison with p11tool below is then moot).
if [ -n "$NT_PRELOAD" ]; then
  GNUTLS_PIN=$PIN C timeout 60 p11tool --provider "$M" --login --export-pubkey \
    "pkcs11:object=t-ec;type=public" >ec.p11.pem 2>out || fail "export EC pubkey (p11tool): $(cat out)"
  openssl pkey -pubin -in ec.p11.pem -outform DER -out ec.der
else
  P --read-object --type pubkey --id $EC_ID -o ec.der >out 2>&1 || fail "export EC pubkey: $(cat out)"
fi
P --read-object --type pubkey --id $RSA_ID -o rsa.der >out 2>&1 || fail "export RSA pubkey: $(cat out)"
openssl pkey -pubin -inform DER -in ec.der -out ec.pem
openssl pkey -pubin -inform DER -in rsa.der -out rsa.pem
L --sign -m ECDSA-SHA256 --id $EC_ID -i data -o ec.sig --signature-format openssl >/dev/null 2>&1 ||
  fail "ECDSA sign"
openssl dgst -sha256 -verify ec.pem -signature ec.sig data >/dev/null || fail "ECDSA signature"
L --sign -m SHA256-RSA-PKCS --id $RSA_ID -i data -o rsa.sig >/dev/null 2>&1 || fail "RSA sign"
openssl dgst -sha256 -verify rsa.pem -signature rsa.sig data >/dev/null || fail "RSA signature"
L --sign -m SHA256-RSA-PKCS-PSS --id $RSA_ID -i data -o pss.sig >/dev/null 2>&1 || fail "PSS sign"
openssl dgst -sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32 -verify rsa.pem \
  -signature pss.sig data >/dev/null || fail "PSS signature"
# SHA-512 variants and PSS with chosen parameters (vhsmd applies them)
L --sign -m ECDSA-SHA512 --id $EC_ID -i data -o ec512.sig --signature-format openssl >/dev/null 2>&1 ||
  fail "ECDSA-SHA512 sign"
openssl dgst -sha512 -verify ec.pem -signature ec512.sig data >/dev/null || fail "ECDSA-SHA512 signature"
L --sign -m SHA512-RSA-PKCS --id $RSA_ID -i data -o rsa512.sig >/dev/null 2>&1 || fail "SHA512-RSA sign"
openssl dgst -sha512 -verify rsa.pem -signature rsa512.sig data >/dev/null || fail "SHA512-RSA signature"
L --sign -m SHA512-RSA-PKCS-PSS --mgf MGF1-SHA1 --salt-len 20 --id $RSA_ID -i data -o pss512.sig \
  >out 2>&1 || fail "SHA512-RSA-PKCS-PSS sign: $(cat out)"
openssl dgst -sha512 -sigopt rsa_padding_mode:pss -sigopt rsa_mgf1_md:sha1 -sigopt rsa_pss_saltlen:20 \
  -verify rsa.pem -signature pss512.sig data >/dev/null || fail "PSS (SHA-512, MGF1-SHA1, salt 20) signature"
P --verify -m ECDSA-SHA256 --id $EC_ID -i data --signature-file ec.sig --signature-format openssl \
  >out 2>&1 || fail "pkcs11-tool verify: $(cat out)"
grep -q "Signature is valid" out || fail "verify output: $(cat out)"
echo x >>data.bad; cat data >>data.bad
P --verify -m ECDSA-SHA256 --id $EC_ID -i data.bad --signature-file ec.sig \
  --signature-format openssl >out 2>&1 || true
grep -q "Invalid signature" out || fail "a wrong message verified: $(cat out)"

step "pkcs11-tool: RSA-OAEP decrypt of OpenSSL's ciphertext"
head -c 32 /dev/urandom >secret.bin
openssl pkeyutl -encrypt -pubin -inkey rsa.pem -pkeyopt rsa_padding_mode:oaep \
  -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256 -in secret.bin -out secret.enc
L --decrypt -m RSA-PKCS-OAEP --hash-algorithm SHA256 --mgf MGF1-SHA256 --id $RSA_ID \
  -i secret.enc -o secret.dec >out 2>&1 || fail "OAEP decrypt: $(cat out)"
cmp -s secret.bin secret.dec || fail "OAEP plaintext differs"

P -O >pubobjs 2>&1 || fail "pkcs11-tool -O without login"
grep -q "Private Key Object" pubobjs && fail "private keys visible without login: $(cat pubobjs)"
grep -q "Public Key Object; EC" pubobjs || fail "public keys not visible without login"

step "pkcs11-tool: AES-256-CBC-PAD encrypt and decrypt in the token"
AES_ID=$(id_of t-aes)
IV=000102030405060708090a0b0c0d0e0f
L --encrypt -m AES-CBC-PAD --iv $IV --id "$AES_ID" -i data -o data.enc >out 2>&1 ||
  fail "AES encrypt: $(cat out)"
[ "$(stat -c %s data.enc)" -eq $(( ($(stat -c %s data) / 16 + 1) * 16 )) ] || fail "AES-CBC-PAD length"
L --decrypt -m AES-CBC-PAD --iv $IV --id "$AES_ID" -i data.enc -o data.dec >out 2>&1 ||
  fail "AES decrypt: $(cat out)"
cmp -s data data.dec || fail "AES-CBC-PAD round trip differs"

step "pkcs11-tool --wrap / --unwrap (AES key wrap, RFC 3394 and 5649) and --derive (hard-wrap)"
L --keygen --key-type AES:32 --label w-kek --id 7701 --usage-wrap >out 2>&1 || fail "KEK keygen: $(cat out)"
# a KEK that may encrypt data never wraps (vhsmd: the wrap/decrypt attack); --usage-wrap asks for
# a wrapping key only
grep -q "Usage: *wrap, unwrap$" out || fail "KEK usage: $(cat out)"
L --keygen --key-type AES:16 --label w-tgt --id 7702 --extractable >out 2>&1 ||
  fail "target keygen: $(cat out)"
# the data key t-aes (encrypt/decrypt) cannot wrap: it could decrypt what it wrapped
L --wrap -m AES-KEY-WRAP --id "$AES_ID" --application-id 7702 -o wrapped-x >out 2>&1 &&
  fail "a data-encryption key wrapped a key"
grep -q "CKR_KEY_FUNCTION_NOT_PERMITTED" out || fail "wrap with a data key: $(cat out)"
L --wrap -m AES-KEY-WRAP --id 7701 --application-id 7702 -o wrapped >out 2>&1 ||
  fail "--wrap: $(cat out)"
[ "$(stat -c %s wrapped)" -eq 24 ] || fail "RFC 3394 of a 16-byte key is 24 bytes"
L --unwrap -m AES-KEY-WRAP --id 7701 -i wrapped --key-type AES: --application-id 7703 \
  --application-label w-unw >out 2>&1 || fail "--unwrap: $(cat out)"
grep -q "Key unwrapped" out || fail "--unwrap: $(cat out)"
L --wrap -m 0x210A --id 7701 --application-id 7702 -o wrapped-pad >out 2>&1 ||
  fail "--wrap AES-KEY-WRAP-PAD: $(cat out)"
L --unwrap -m 0x210A --id 7701 -i wrapped-pad --key-type AES: --application-id 7704 \
  --application-label w-unw2 >out 2>&1 || fail "--unwrap AES-KEY-WRAP-PAD: $(cat out)"
# what the original encrypts, both unwrapped copies decrypt
L --encrypt -m AES-CBC-PAD --iv $IV --id 7702 -i data -o w.enc >out 2>&1 || fail "encrypt: $(cat out)"
for id in 7703 7704; do
  L --decrypt -m AES-CBC-PAD --iv $IV --id $id -i w.enc -o w.dec >out 2>&1 ||
    fail "decrypt with the unwrapped key $id: $(cat out)"
  cmp -s data w.dec || fail "the unwrapped key $id decrypts differently"
done
# a corrupted blob is refused
printf '\x01' | dd of=wrapped bs=1 seek=23 conv=notrunc 2>/dev/null
L --unwrap -m AES-KEY-WRAP --id 7701 -i wrapped --key-type AES: --application-id 7705 \
  --application-label w-bad >out 2>&1 && fail "a corrupted blob was unwrapped"
grep -q CKR_WRAPPED_KEY_INVALID out || fail "corrupted blob: $(cat out)"
# pkcs11-tool --derive asks for a non-sensitive session key (CKA_SENSITIVE false) and then reads
# the derived key's CKA_VALUE: vhsmd keeps derived keys sensitive, so the module refuses it at
# once instead of deriving a key nobody can reach.
L --keypairgen --key-type EC:prime256v1 --label w-ec --id 7706 --usage-derive >out 2>&1 ||
  fail "EC keypairgen: $(cat out)"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out peer.pem 2>/dev/null
openssl pkey -in peer.pem -pubout -outform DER -out peer.der
L --derive -m ECDH1-DERIVE --id 7706 -i peer.der -o derived >out 2>&1 &&
  fail "pkcs11-tool --derive got a key value out"
grep -q "C_DeriveKey failed: rv = CKR_ATTRIBUTE_VALUE_INVALID" out || fail "--derive: $(cat out)"

step "pkcs11-tool --test (random, digests, RSA signatures and verification, OAEP decryption)"
C timeout 300 pkcs11-tool --module "$M" --login --pin "$PIN" --test >out 2>&1 || fail "--test: $(tail -20 out)"
grep -q "^No errors" out || fail "--test: $(tail -20 out)"
grep -q "RSA-PKCS: OK" out || fail "--test did not sign with RSA-PKCS: $(cat out)"

step "GnuTLS p11tool: tokens, objects, public key export"
C timeout 60 p11tool --provider "$M" --list-tokens >out 2>&1 || fail "p11tool --list-tokens"
grep -q "Manufacturer: Nitride" out || fail "p11tool sees no vHSM token"
GNUTLS_PIN=$PIN C timeout 60 p11tool --provider "$M" --login --list-all >out 2>&1 || fail "p11tool --list-all"
grep -q "object=t-ec;type=public" out || fail "p11tool: t-ec public key not listed"
grep -q "object=t-ec;type=private" out || fail "p11tool: t-ec private key not listed"
GNUTLS_PIN=$PIN C timeout 60 p11tool --provider "$M" --login --export-pubkey "pkcs11:object=t-ec;type=public" >p11.pem 2>/dev/null ||
  fail "p11tool --export-pubkey"
cmp -s <(openssl pkey -pubin -in p11.pem -outform DER) ec.der || fail "p11tool's public key differs"

step "certificates and data objects: pkcs11-tool --write-object, p11tool without login, --delete-object"
# a certificate for the vHSM key t-ec (its exported public key), signed by a throwaway CA key
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
openssl req -new -key ca.key -subj /CN=t-ec-cert -out t.csr 2>/dev/null || fail "openssl req"
openssl x509 -req -in t.csr -signkey ca.key -force_pubkey ec.pem -days 2 -outform DER \
  -out t-cert.der 2>/dev/null || fail "openssl x509 -force_pubkey"
printf 'application data %s' "$(date +%s%N)" >t-data.bin
L --write-object t-cert.der --type cert --id "$EC_ID" --label t-cert >out 2>&1 ||
  fail "--write-object cert: $(cat out)"
L --write-object t-data.bin --type data --label t-data --application-label app1 >out 2>&1 ||
  fail "--write-object data: $(cat out)"
L --write-object t-data.bin --type data --label t-pdata --private >out 2>&1 ||
  fail "--write-object private data: $(cat out)"
# without a login: the certificate and the public data object, not the private one
C timeout 60 p11tool --provider "$M" --list-all-certs >out 2>&1 || fail "p11tool --list-all-certs: $(cat out)"
grep -q "object=t-cert;type=cert" out || fail "p11tool: certificate not listed without login: $(cat out)"
P -O >pubobjs 2>&1 || fail "pkcs11-tool -O without login"
grep -q "Certificate Object; type = X.509 cert" pubobjs || fail "cert not listed: $(cat pubobjs)"
grep -q "t-data" pubobjs || fail "public data object not listed: $(cat pubobjs)"
grep -q "t-pdata" pubobjs && fail "a private data object listed without login: $(cat pubobjs)"
P --read-object --type cert --label t-cert -o back.der >out 2>&1 || fail "--read-object cert: $(cat out)"
cmp -s back.der t-cert.der || fail "certificate read back differs"
P --read-object --type data --label t-data -o back.bin >out 2>&1 || fail "--read-object data: $(cat out)"
cmp -s back.bin t-data.bin || fail "data object read back differs"
L -O >objs2 2>&1 || fail "pkcs11-tool -O"
grep -q "t-pdata" objs2 || fail "private data object not listed after login: $(cat objs2)"
# and deletes them
L --delete-object --type cert --label t-cert >out 2>&1 || fail "--delete-object cert: $(cat out)"
L --delete-object --type data --label t-data >out 2>&1 || fail "--delete-object data: $(cat out)"
L --delete-object --type data --label t-pdata >out 2>&1 || fail "--delete-object data: $(cat out)"
L -O >objs2 2>&1 || fail "pkcs11-tool -O"
grep -q "t-cert\|t-data\|t-pdata" objs2 && fail "deleted objects still listed: $(cat objs2)"

step "OpenSSL 3 + libp11 engine: sign, verified by plain OpenSSL"
cat >ossl.cnf <<EOC
openssl_conf = init
[init]
engines = engines
[engines]
pkcs11 = pkcs11_section
[pkcs11_section]
engine_id = pkcs11
dynamic_path = $ENGINE
MODULE_PATH = $M
init = 0
EOC
for k in t-ec t-rsa; do
  OPENSSL_CONF=$T/ossl.cnf C timeout 60 openssl dgst -engine pkcs11 -keyform engine -sha256 \
    -sign "pkcs11:object=$k;type=private;pin-value=$PIN" -out "$k.eng.sig" data >out 2>&1 || fail "engine sign $k: $(cat out)"
done
openssl dgst -sha256 -verify ec.pem -signature t-ec.eng.sig data >/dev/null || fail "engine ECDSA signature"
openssl dgst -sha256 -verify rsa.pem -signature t-rsa.eng.sig data >/dev/null || fail "engine RSA signature"

step "OpenSSH: ssh-keygen -D, ssh -I to a local sshd"
C timeout 60 ssh-keygen -D "$M" >ak 2>out || fail "ssh-keygen -D: $(cat out)"
grep -q "^ecdsa-sha2-nistp256 .* t-ec$" ak || fail "ssh-keygen -D: no EC key: $(cat ak)"
grep -q "^ssh-rsa .* t-rsa$" ak || fail "ssh-keygen -D: no RSA key: $(cat ak)"
cmp -s <(grep t-ec ak | cut -d' ' -f2) <(ssh-keygen -i -m PKCS8 -f ec.pem | cut -d' ' -f2) ||
  fail "ssh-keygen -D: EC key differs from the exported one"
ssh-keygen -q -t ed25519 -N '' -f hostkey >/dev/null
mkdir -p /run/sshd
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
grep t-ec ak >ak.ec
cat >sshd_config <<EOC
Port $PORT
ListenAddress 127.0.0.1
HostKey $T/hostkey
AuthorizedKeysFile $T/ak.ec
PermitRootLogin prohibit-password
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PidFile $T/sshd.pid
EOC
/usr/sbin/sshd -D -f "$T/sshd_config" -E "$T/sshd.log" &
SSHD_PID=$!
for _ in $(seq 1 100); do grep -q "Server listening" sshd.log 2>/dev/null && break; sleep 0.05; done
ME=$(id -un)
printf '#!/bin/sh\necho %s\n' "$PIN" >askpass
chmod 700 askpass
SSH_ASKPASS=$T/askpass SSH_ASKPASS_REQUIRE=force DISPLAY=none C timeout 60 ssh -F /dev/null -I "$M" -o KbdInteractiveAuthentication=no -o StrictHostKeyChecking=no \
  -o UserKnownHostsFile=/dev/null -o IdentityAgent=none -o PasswordAuthentication=no \
  -p "$PORT" "$ME@127.0.0.1" echo vhsm-login-ok </dev/null >out 2>err || fail "ssh -I: $(cat err)"
grep -q vhsm-login-ok out || fail "ssh -I: no command output"
grep -q "Accepted publickey for $ME .* ECDSA" sshd.log || fail "sshd did not accept the vHSM key"

step "PyKCS11: ECDSA P-256 sign verified by OpenSSL, AES-256-GCM known answer (imported key)"
C /usr/bin/python3 - "$M" "$PIN" <<'EOPY' || fail "PyKCS11"
import sys, subprocess, PyKCS11
from PyKCS11 import LowLevel
lib = PyKCS11.PyKCS11Lib()
lib.load(sys.argv[1])
slot = lib.getSlotList(tokenPresent=True)[0]
s = lib.openSession(slot, PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION)
try:
    s.login("not-the-pin")
    raise SystemExit("a wrong PIN was accepted")
except PyKCS11.PyKCS11Error as e:
    assert e.value == PyKCS11.CKR_PIN_INCORRECT, e
s.login(sys.argv[2])
key = s.findObjects([(PyKCS11.CKA_LABEL, "t-ec"), (PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY)])[0]
data = open("data", "rb").read()
sig = bytes(s.sign(key, data, PyKCS11.Mechanism(PyKCS11.CKM_ECDSA_SHA256, None)))
assert len(sig) == 64, len(sig)
# r||s to DER for OpenSSL
def der_int(b):
    b = b.lstrip(b"\0") or b"\0"
    if b[0] & 0x80: b = b"\0" + b
    return b"\x02" + bytes([len(b)]) + b
body = der_int(sig[:32]) + der_int(sig[32:])
open("py.sig", "wb").write(b"\x30" + bytes([len(body)]) + body)
r = subprocess.run(["openssl", "dgst", "-sha256", "-verify", "ec.pem", "-signature", "py.sig", "data"],
                   capture_output=True)
assert r.returncode == 0, r.stdout + r.stderr
# wrong mechanism for the key
try:
    s.sign(key, data, PyKCS11.Mechanism(PyKCS11.CKM_SHA256_RSA_PKCS, None))
    raise SystemExit("RSA mechanism on an EC key was accepted")
except PyKCS11.PyKCS11Error as e:
    assert e.value == PyKCS11.CKR_KEY_TYPE_INCONSISTENT, e
# AES-256-GCM with a published known answer: the key of the GCM spec's test case 16 (McGrew and
# Viega, AES-256, 96-bit IV) imported with C_CreateObject gives the published ciphertext and tag;
# decryption gives the plaintext back, a forged tag is refused.
K = bytes.fromhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
aes = s.createObject([(PyKCS11.CKA_CLASS, PyKCS11.CKO_SECRET_KEY), (PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_AES),
                      (PyKCS11.CKA_VALUE, K), (PyKCS11.CKA_TOKEN, True), (PyKCS11.CKA_ENCRYPT, True),
                      (PyKCS11.CKA_DECRYPT, True), (PyKCS11.CKA_LABEL, "py-aes")])
assert s.getAttributeValue(aes, [PyKCS11.CKA_LOCAL])[0] in (False, 0), "an imported key is not local"
iv = bytes.fromhex("cafebabefacedbaddecaf888")
aad = bytes.fromhex("feedfacedeadbeeffeedfacedeadbeefabaddad2")
pt = bytes.fromhex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
                   "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39")
want = bytes.fromhex("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
                     "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
                     "76fc6ece0f4e1768cddf8853bb2d551b")
gcm = PyKCS11.AES_GCM_Mechanism(iv, aad, 128)
ct = bytes(s.encrypt(aes, pt, gcm))
assert ct == want, ct.hex()
assert bytes(s.decrypt(aes, ct, gcm)) == pt
try:
    s.decrypt(aes, ct[:-1] + bytes([ct[-1] ^ 1]), gcm)
    raise SystemExit("a forged GCM tag was accepted")
except PyKCS11.PyKCS11Error as e:
    assert e.value == PyKCS11.CKR_ENCRYPTED_DATA_INVALID, e
print("pykcs11 ok")
EOPY
echo "pkcs11-clients: all passed"
