#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# An independent JOSE implementation (python3-jwcrypto) verifies EAR tokens issued by libnt_token
# against the published JWKS (ES384 and ES256; Turin VLEK and Milan VCEK), and checks the claims;
# a token with a changed payload and one with "alg": "none" are refused by it as well.
set -euo pipefail
tool=$1
py=/usr/bin/python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if ! "$py" -c 'import jwcrypto' 2>/dev/null; then
  echo "python3-jwcrypto not installed" >&2
  exit 77
fi

check() {
  local dir=$1 product=$2 key=$3 alg=$4
  mkdir -p "$dir"
  "$tool" "$dir" "$product" "$key" "$alg"
  "$py" - "$dir" "$product" "$key" "${alg^^}" <<'PY'
import json, sys
from jwcrypto import jwk, jws, jwt
d, product, key, alg = sys.argv[1:]
ks = jwk.JWKSet.from_json(open(d + "/jwks.json").read())
tok = open(d + "/token").read().strip()
rd = json.load(open(d + "/runtime-data.json"))

t = jwt.JWT(jwt=tok, key=ks, algs=[alg], check_claims={"iss": "https://attestd.test", "aud": "kmsd"})
hdr = json.loads(t.header)
assert hdr["alg"] == alg and hdr["typ"] == "JWT", hdr
assert any(k.key_id == hdr["kid"] for k in ks), "kid not in JWKS"
c = json.loads(t.claims)
assert c["eat_profile"] == "tag:github.com,2023:veraison/ear", c
assert c["exp"] - c["iat"] == 300
assert c["ear.verifier-id"]["developer"] == "nitride"
sub = c["submods"]["cpu0"]
assert sub["ear.status"] == "affirming", sub
tv = sub["ear.trustworthiness-vector"]
assert tv["instance-identity"] == 2 and tv["hardware"] == 2, tv
ae = sub["ear.veraison.annotated-evidence"]
assert ae["product"].lower() == product, ae["product"]
assert ae["signing_key"] == key.upper()
assert ae["runtime_data_claims"] == rd
assert c["cnf"]["jwk"] == rd["tee-pubkey"]
assert "d" not in c["cnf"]["jwk"]
assert len(tok) < 4096, len(tok)

# A changed payload with the original signature is refused.
h, p, s = tok.split(".")
c2 = dict(c, iss="https://evil")
p2 = jws.base64url_encode(json.dumps(c2, separators=(",", ":")))
for bad in (h + "." + p2 + "." + s,
            jws.base64url_encode(json.dumps({"alg": "none", "kid": hdr["kid"]})) + "." + p + "."):
    try:
        jwt.JWT(jwt=bad, key=ks, algs=[alg])
    except Exception:
        continue
    raise SystemExit("jwcrypto accepted a forged token")
print("ok", product, key, alg, len(tok), "bytes")
PY
}

check "$tmp/turin" turin vlek es384
check "$tmp/milan" milan vcek es256
