#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Signed releases (token/release.h) against an independent JOSE implementation (python3-jwcrypto):
#  1. a release sealed by libnt_token: jwcrypto verifies the JWS (ES384, typ nitride-release+jws)
#     against the pinned JWKS, decrypts the inner JWE (ECDH-ES+A256KW, A256GCM) with the
#     recipient's private key to the sealed value, and finds H in the JWE's protected header
#     (kid = the recipient's RFC 7638 thumbprint); a changed JWE under the original signature is
#     refused by jwcrypto too;
#  2. a release made by jwcrypto (its own JWE and JWS code): nt_release_verify accepts it, libjose
#     decrypts it to the value, and the same release with one changed JWE byte is refused.
set -euo pipefail
tool=$1
py=/usr/bin/python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if ! "$py" -c 'import jwcrypto' 2>/dev/null; then
  echo "python3-jwcrypto not installed" >&2
  exit 77
fi

mkdir -p "$tmp/c"
"$tool" seal "$tmp/c"
"$py" - "$tmp/c" <<'PY'
import json, sys
from jwcrypto import jwk, jws, jwe
from jwcrypto.common import base64url_decode, base64url_encode
d = sys.argv[1]
ks = jwk.JWKSet.from_json(open(d + "/jwks.json").read())
rel = open(d + "/release").read().strip()
rcpt = jwk.JWK.from_json(open(d + "/recipient.json").read())
value = bytes.fromhex(open(d + "/value.hex").read().strip())

s = jws.JWS()
s.deserialize(rel)
hdr = json.loads(base64url_decode(rel.split(".")[0]))
assert hdr["typ"] == "nitride-release+jws" and hdr["alg"] == "ES384", hdr
key = ks.get_key(hdr["kid"])
assert key is not None, "kid not in the JWKS"
s.allowed_algs = ["ES384"]
s.verify(key)
inner = s.payload.decode()

e = jwe.JWE()
e.deserialize(inner, key=rcpt)
assert e.payload == value, "decrypted value differs"
ph = json.loads(e.objects["protected"])
assert set(ph) == {"alg", "enc", "kid", "epk", "cty", "nitride"}, ph
assert ph["alg"] == "ECDH-ES+A256KW" and ph["enc"] == "A256GCM" and ph["cty"] == "nitride-key"
assert ph["kid"] == rcpt.thumbprint(), (ph["kid"], rcpt.thumbprint())
h = ph["nitride"]
assert h["name"] == "kms/interop" and h["type"] == "aes256" and h["version"] == 2, h
assert h["policy"] == "attested" and h["max_age"] == 600 and h["v"] == 1, h
assert h["acl"] == {"use_uid": [0, 1000], "use_cgroup": ["/system.slice/app.service"],
                    "admin_uid": [0]}, h["acl"]
assert h["exp"] - h["iat"] == 300 and len(h["jti"]) == 22, h

# A changed ciphertext under the original signature: jwcrypto refuses the JWS.
parts = inner.split(".")
ct = bytearray(base64url_decode(parts[3])); ct[0] ^= 1
parts[3] = base64url_encode(bytes(ct))
h64, _, sig = rel.split(".")
forged = h64 + "." + base64url_encode(".".join(parts).encode()) + "." + sig
try:
    f = jws.JWS(); f.deserialize(forged); f.verify(key)
except Exception:
    pass
else:
    raise SystemExit("jwcrypto accepted a release whose JWE changed")
print("ok: jwcrypto verified and decrypted a release sealed by libnt_token")
PY

# 2. jwcrypto makes the release; the C side verifies and decrypts.
mkdir -p "$tmp/py"
"$py" - "$tmp/py" <<'PY'
import json, os, sys, time
from jwcrypto import jwk, jws, jwe
from jwcrypto.common import base64url_encode
d = sys.argv[1]
signer = jwk.JWK.generate(kty="EC", crv="P-384")
rcpt = jwk.JWK.generate(kty="EC", crv="P-384")
value = os.urandom(48)
now = int(time.time())
h = {"v": 1, "name": "kms/from-python", "type": "hmac-sha384", "version": 7, "policy": "local",
     "secret_id": "py.secret", "jti": base64url_encode(os.urandom(16)), "iat": now,
     "exp": now + 120, "token_jti": "cHl0aG9u", "label": "made by jwcrypto"}
prot = {"alg": "ECDH-ES+A256KW", "enc": "A256GCM", "kid": rcpt.thumbprint(),
        "cty": "nitride-key", "nitride": h}
e = jwe.JWE(value, protected=json.dumps(prot))
e.add_recipient(rcpt.public())  # compact: jwcrypto puts the epk into the protected header
inner = e.serialize(compact=True)
pub = json.loads(signer.export_public())
pub["kid"] = signer.thumbprint()
s = jws.JWS(inner.encode())
s.add_signature(signer, alg="ES384",
                protected=json.dumps({"alg": "ES384", "kid": pub["kid"],
                                      "typ": "nitride-release+jws"}))
rel = s.serialize(compact=True)
open(d + "/release", "w").write(rel)
open(d + "/jwks.json", "w").write(json.dumps({"keys": [pub]}))
open(d + "/recipient.json", "w").write(rcpt.export_private())
open(d + "/value.hex", "w").write(value.hex())
# the same release with one changed byte in the inner JWE's tag (a new JWS payload, old signature)
parts = inner.split(".")
parts[4] = ("B" if parts[4][0] == "A" else "A") + parts[4][1:]
h64, _, sig = rel.split(".")
open(d + "/forged", "w").write(h64 + "." + base64url_encode(".".join(parts).encode()) + "." + sig)
PY
out=$("$tool" verify "$tmp/py/jwks.json" "$tmp/py/release" "$tmp/py/recipient.json")
"$py" - "$out" "$(cat "$tmp/py/value.hex")" <<'PY'
import json, sys
o = json.loads(sys.argv[1])
i = o["info"]
assert i["name"] == "kms/from-python" and i["type"] == "hmac-sha384" and i["version"] == 7, i
assert i["policy"] == "local" and i["max_age"] == 0 and i["label"] == "made by jwcrypto", i
assert o["value"] == sys.argv[2], "libjose decrypted another value"
print("ok: libnt_token verified, libjose decrypted a release made by jwcrypto")
PY
if "$tool" verify "$tmp/py/jwks.json" "$tmp/py/forged" 2>"$tmp/err"; then
  echo "FAIL: a changed JWE under the original signature was accepted" >&2
  exit 1
fi
grep -q "does not verify" "$tmp/err" || { cat "$tmp/err" >&2; exit 1; }
echo "ok: a changed JWE is refused"
