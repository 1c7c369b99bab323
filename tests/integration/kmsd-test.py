#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""nitride-kmsd end to end on 127.0.0.1: the real nitride-attestd and nitride-kmsd over TLS with
throwaway certificates, tokens from attestd for simulated chips (`nitride sim`), the admin API
over a bearer token and over TLS client certificates (`nitride kms` and raw HTTP), releases
checked with an independent JOSE implementation (python3-jwcrypto: the JWS signature against
kmsd's release keys, the JWE decrypted with the transfer key this test generated), refusals
naming the rule, the audit chain verified and tampered with (sqlite3 on the stopped service's
database).

Usage: kmsd-test.py NITRIDE NITRIDE_ATTESTD NITRIDE_KMSD [VHSMD VHSM]
(with vhsmd and vhsm, as root: a release imported by the real vhsmd, which pins kmsd's keys)
"""
import hashlib
import http.server as httpserver
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ntlib  # noqa: E402
from ntlib import PROCS, b64u, check, fail, run  # noqa: E402

from cryptography.hazmat.primitives.serialization import load_der_private_key
from jwcrypto import jwe, jwk, jws, jwt
from jwcrypto.common import base64url_decode

NITRIDE, ATTESTD, KMSD = sys.argv[1], sys.argv[2], sys.argv[3]
VHSMD, VHSM = (sys.argv[4], sys.argv[5]) if len(sys.argv) > 5 else (None, None)
TMP = tempfile.mkdtemp(prefix="nt-kmsd-")
T0 = time.monotonic()


def jcs(obj):
    # RFC 8785 for the ASCII strings and objects used here equals sorted compact JSON.
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def path(name):
    return os.path.join(TMP, name)


def write_json(name, obj):
    return ntlib.write_json(TMP, name, obj)


def write_secret_file(name, data, mode=0o600):
    p = path(name)
    fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode)
    os.write(fd, data)
    os.close(fd)
    os.chmod(p, mode)
    return p


# ---- chips ----
def sim(name, product="milan"):
    d = path(name)
    run(NITRIDE, "sim", "init", d, "--product", product)
    return d


MEAS, BAD_MEAS = "11" * 48, "22" * 48
GOOD = sim("good")
run(NITRIDE, "sim", "set", GOOD, "--measurement", MEAS)
GENOA = sim("genoa", "genoa")
run(NITRIDE, "sim", "set", GENOA, "--measurement", MEAS)
BAD = sim("bad")
run(NITRIDE, "sim", "set", BAD, "--measurement", BAD_MEAS)
DEBUG = sim("debug")
run(NITRIDE, "sim", "set", DEBUG, "--measurement", MEAS, "--policy", "0xb0000")

# ---- TLS: one CA for the services, one for admins, a rogue CA ----
def openssl(*args):
    run("openssl", *args)


def make_ca(name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", path(name + ".key"), "-out", path(name + ".pem"), "-days", "2",
            "-subj", "/CN=" + name, "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=keyCertSign")


def make_cert(name, ca, subj, ext):
    with open(path(name + ".ext"), "w") as f:
        f.write(ext)
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", path(name + ".key"), "-out", path(name + ".csr"), "-subj", subj)
    openssl("x509", "-req", "-in", path(name + ".csr"), "-CA", path(ca + ".pem"),
            "-CAkey", path(ca + ".key"), "-CAcreateserial", "-days", "2",
            "-out", path(name + ".pem"), "-extfile", path(name + ".ext"))


make_ca("ca")
make_ca("adminca")
make_ca("rogueca")
make_cert("tls", "ca", "/CN=127.0.0.1",
          "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
CLIENT_EXT = "extendedKeyUsage=clientAuth\n"
make_cert("admin", "adminca", "/O=Nitride/CN=admin", CLIENT_EXT)
make_cert("intern", "adminca", "/O=Nitride/CN=intern", CLIENT_EXT)
make_cert("rogue", "rogueca", "/O=Nitride/CN=admin", CLIENT_EXT)
CA = path("ca.pem")
ADMIN_SUBJECT = "CN=admin,O=Nitride"

# ---- daemons ----
class Daemon:
    def __init__(self, name, exe, cfg, expect_fail=False):
        self.name, self.exe, self.cfg = name, exe, cfg
        self.port_file = path(name + ".port")
        if os.path.exists(self.port_file):
            os.unlink(self.port_file)
        log = path(name + ".log")
        self.logf = open(log, "a")
        self.p = subprocess.Popen([exe, "--config", cfg, "--port-file", self.port_file],
                                  stdout=self.logf, stderr=subprocess.STDOUT)
        self.p.log = log
        PROCS.append(self.p)
        if expect_fail:
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                fail("%s started although it should not have" % name)
            return
        for _ in range(400):
            if os.path.exists(self.port_file) and open(self.port_file).read().strip():
                break
            if self.p.poll() is not None:
                fail("%s exited %d at start: %s" % (name, self.p.returncode, open(log).read()))
            time.sleep(0.05)
        else:
            fail("%s did not start" % name)
        self.port = int(open(self.port_file).read())
        self.url = "https://127.0.0.1:%d" % self.port

    def log(self):
        self.logf.flush()
        return open(self.p.log).read()

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(15)
        except subprocess.TimeoutExpired:
            fail("%s did not stop on SIGTERM" % self.name)
        check(self.p.returncode == 0, "%s exit %d on SIGTERM" % (self.name, self.p.returncode))


CHALLENGE_SECRET = write_secret_file("challenge.key", os.urandom(32))
ATT_POLICY = write_json("attestd-policy.json", {"measurements": [MEAS, BAD_MEAS]})
ATT_DEV = write_json("attestd-dev.json", {"allow_debug": True})
ISSUER = "https://attestd.test"


def attestd_config(name, keys_dir, lifetime=300):
    return write_json(name + ".json", {
        "listen": "127.0.0.1:0",
        "tls": {"cert": path("tls.pem"), "key": path("tls.key")},
        "challenge": {"secret": CHALLENGE_SECRET, "lifetime": 60},
        "token": {"keys_dir": path(keys_dir), "issuer": ISSUER, "audience": "nitride-kmsd",
                  "lifetime": lifetime},
        "trust_anchors": [os.path.join(d, "ark.pem") for d in (GOOD, GENOA, BAD, DEBUG)],
        "policies": {"default": {"file": ATT_POLICY}, "dev": {"file": ATT_DEV}},
        "default_policy": "default",
        "client_policy_ids": ["dev"],
        "rate_limit": {"per_second": 0, "burst": 1},
    })


A = Daemon("attestd", ATTESTD, attestd_config("attestd", "att-keys"))
# Same keys (shared keys_dir), tokens valid 10 s: for the expiry test.
A_SHORT = Daemon("attestd-short", ATTESTD, attestd_config("attestd-short", "att-keys", 10))
# Another attestd with its own keys: kmsd does not trust it.
A_OTHER = Daemon("attestd-other", ATTESTD, attestd_config("attestd-other", "att-other-keys"))

KEK = write_secret_file("kek", os.urandom(32))
ADMIN_TOKEN = b64u(os.urandom(32))
ADMIN_TOKEN_FILE = write_secret_file("admin.token", (ADMIN_TOKEN + "\n").encode())


def kmsd_config(name, file=None, **over):
    cfg = {
        "listen": "127.0.0.1:0",
        "tls": {"cert": path("tls.pem"), "key": path("tls.key")},
        "database": path(name + ".db"),
        "kek_file": KEK,
        "release": {"keys_dir": path(name + "-release-keys")},
        "attestd": {"jwks_url": A.url + "/.well-known/jwks.json", "ca_file": CA,
                    "issuer": ISSUER, "audience": "nitride-kmsd", "skew": 1,
                    "refresh_min_interval": 2},
        "admin": {"bearer_token_file": ADMIN_TOKEN_FILE, "client_ca": path("adminca.pem"),
                  "allowed_subjects": [ADMIN_SUBJECT]},
        "rate_limit": {"per_second": 0, "burst": 1},
    }
    cfg.update(over)
    return write_json((file or name) + ".json", cfg)


K_CFG = kmsd_config("kmsd")
K = Daemon("kmsd", KMSD, K_CFG)


# ---- HTTP ----
def ctx(cert=None):
    c = ssl.create_default_context(cafile=CA)
    if cert:
        c.load_cert_chain(path(cert + ".pem"), path(cert + ".key"))
    return c


def http(url, body=None, method=None, raw=None, headers=None, cert=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data,
                                 method=method or ("POST" if data is not None else "GET"))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, context=ctx(cert), timeout=30) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def jhttp(url, body=None, method=None, raw=None, headers=None, cert=None):
    st, b, h = http(url, body, method, raw, headers, cert)
    try:
        return st, json.loads(b) if b else None
    except ValueError:
        fail("%s: non-JSON reply %d %r" % (url, st, b[:200]))


BEARER = {"Authorization": "Bearer " + ADMIN_TOKEN}


def admin(method, p, body=None, cert=None, headers=None):
    return jhttp(K.url + p, body, method, headers=BEARER if headers is None and not cert
                 else headers, cert=cert)


def kms(*args, ok=True, cert=None, token=True):
    base = [NITRIDE, "kms", "--url", K.url, "--ca", CA]
    if cert:
        base += ["--cert", path(cert + ".pem"), "--key", path(cert + ".key")]
    elif token:
        base += ["--admin-token-file", ADMIN_TOKEN_FILE]
    return run(*(base + list(args)), ok=ok)


# ---- tokens from attestd ----
TEE_KEY = jwk.JWK.generate(kty="EC", crv="P-384")
TEE_PUB = json.loads(TEE_KEY.export_public())


def token_for(chip, att=None, key=None, policy_id=None, pub=None):
    att = att or A
    pub = pub or (json.loads(key.export_public()) if key else TEE_PUB)
    st, j = jhttp(att.url + "/v1/challenge", {})
    check(st == 200, "challenge %d %s" % (st, j))
    runtime = {"nonce": j["nonce"], "tee-pubkey": pub}
    rd = hashlib.sha384(jcs(runtime)).digest() + bytes(16)
    out, certs = path("r.bin"), path("c.bin")
    run(NITRIDE, "report", "get", "--provider", "sim", "--sim-dir", chip, "--report-data",
        rd.hex(), "--out", out, "--certs-out", certs)
    body = {"nonce": j["nonce"], "runtime_data": runtime,
            "evidence": {"report": b64u(open(out, "rb").read()),
                         "cert_table": b64u(open(certs, "rb").read())}}
    if policy_id:
        body["policy_id"] = policy_id
    st, j = jhttp(att.url + "/v1/attest", body)
    check(st == 200, "attest (%s): %d %s" % (chip, st, j))
    return j["token"]


def release(sid, token, body=None, kmsd=None):
    kmsd = kmsd or K
    headers = {"Authorization": "Bearer " + token} if token else {}
    return jhttp(kmsd.url + "/v1/secrets/%s/release" % sid, body if body is not None else {},
                 "POST", headers=headers)


RELEASE_KEYS = None


def open_release(rel, key=None, kmsd=None):
    """Verifies the JWS with jwcrypto against kmsd's release keys, decrypts the JWE with the
    transfer key; returns (plaintext, JWE protected header)."""
    kmsd = kmsd or K
    st, body, _ = http(kmsd.url + "/v1/release-keys")
    check(st == 200, "release-keys %d" % st)
    keys = jwk.JWKSet.from_json(body)
    outer = jws.JWS()
    outer.deserialize(rel)
    hdr = outer.jose_header
    check(hdr.get("typ") == "nitride-release+jws", "release typ %s" % hdr.get("typ"))
    check(hdr.get("alg") == "ES256", "release alg %s (ES256 is the default)" % hdr.get("alg"))
    k = keys.get_key(hdr["kid"])
    check(k is not None, "release kid %s not in /v1/release-keys" % hdr.get("kid"))
    outer.verify(k)  # raises on a bad signature
    inner = jwe.JWE()
    inner.deserialize(outer.payload.decode())
    inner.decrypt(key or TEE_KEY)  # raises if not for this key
    ph = json.loads(inner.objects["protected"])
    check(ph["alg"] == "ECDH-ES+A256KW" and ph["enc"] == "A256GCM", "JWE algs %s" % ph)
    check(ph.get("cty") == "nitride-key", "JWE cty %s" % ph.get("cty"))
    return inner.payload, ph


def expect(reply, status, what, **members):
    st, j = reply
    check(st == status, "%s: HTTP %d, wanted %d: %s" % (what, st, status, j))
    for k, v in members.items():
        check(j.get(k) == v, "%s: %s=%r, wanted %r: %s" % (what, k, j.get(k), v, j))
    return j


def step(msg):
    print("ok: %s (%.1f s)" % (msg, time.monotonic() - T0), flush=True)


POLICY_GOOD = {"version": 1, "rules": {"measurement_in": [MEAS]}}
POLICY_GOOD_FILE = write_json("policy-good.json", POLICY_GOOD)

# ================= admin API =================
# Create over the bearer token, with a given value (raw HTTP).
AES_VALUE = os.urandom(32)
j = expect(admin("POST", "/v1/secrets", {"id": "db-key", "name": "db", "type": "aes256",
                                         "value": b64u(AES_VALUE), "policy": POLICY_GOOD,
                                         "attributes": {"policy": "attested", "max_age": 600,
                                                        "label": "database key",
                                                        "acl": {"use_uid": [1000]}}}),
           201, "create over bearer")
check(j["vhsm_name"] == "kms/db" and j["version"] == 1 and j["type"] == "aes256", "meta %s" % j)
check("value" not in j, "the value came back in the reply")
# Create over mTLS, generated inside kmsd (`nitride kms` with the client certificate).
p = kms("secret", "create", "signer", "--type", "ec-p384", "--generate", "--policy-file",
        POLICY_GOOD_FILE, cert="admin")
check("created secret signer" in p.stdout, "kms secret create: %s" % p.stdout)
# A raw value from a file (a LUKS passphrase), over the CLI with the bearer token.
RAW_VALUE = b"correct horse battery staple\n"
raw_file = write_secret_file("raw.bin", RAW_VALUE)
kms("secret", "create", "luks-root", "--type", "raw", "--value-file", raw_file,
    "--policy-file", write_json("policy-luks.json", {
        "version": 1, "rules": {"measurement_in": [MEAS],
                                "volume_uuid_eq": "8b6e3c1a-54a1-4a9e-9d0e-2c7f4f6a1b2c"}}))
# An EC key given as a PEM file becomes PKCS#8 on the way.
openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out",
        path("given.pem"))
kms("secret", "create", "given-ec", "--type", "ec-p256", "--value-file", path("given.pem"),
    "--policy-file", POLICY_GOOD_FILE, "--vhsm-policy", "attested", "--max-age", "120")
# Duplicates, bad ids, types, values, attributes: 4xx, nothing stored.
expect(admin("POST", "/v1/secrets", {"id": "db-key", "type": "aes256", "generate": True,
                                     "policy": POLICY_GOOD}), 409, "duplicate id")
for body, what in [({"id": "Bad", "type": "aes256", "generate": True, "policy": POLICY_GOOD},
                    "uppercase id"),
                   ({"id": "x", "type": "aes128", "generate": True, "policy": POLICY_GOOD},
                    "unknown type"),
                   ({"id": "x", "type": "aes256", "value": b64u(os.urandom(16)),
                     "policy": POLICY_GOOD}, "short aes value"),
                   ({"id": "x", "type": "ec-p384", "value": b64u(os.urandom(100)),
                     "policy": POLICY_GOOD}, "junk PKCS#8"),
                   ({"id": "x", "type": "aes256", "generate": True, "policy": POLICY_GOOD,
                     "attributes": {"policy": "local", "max_age": 5}}, "max_age on local"),
                   ({"id": "x", "type": "aes256", "generate": True, "policy": POLICY_GOOD,
                     "extra": 1}, "unknown member"),
                   ({"id": "x", "type": "aes256", "generate": True}, "no policy"),
                   ({"id": "x", "name": "-x", "type": "aes256", "generate": True,
                     "policy": POLICY_GOOD}, "bad vhsm name")]:
    expect(admin("POST", "/v1/secrets", body), 400, what)
# A policy with an unknown claim is refused at write time, naming it (create and set).
j = expect(admin("POST", "/v1/secrets", {
    "id": "x", "type": "aes256", "generate": True,
    "policy": {"version": 1, "rules": {"measurment_in": [MEAS]}}}), 400, "unknown claim")
check("measurment_in" in j["error"], "unknown claim not named: %s" % j)
p = kms("policy", "set", "db-key", write_json("typo.json", {
    "version": 1, "rules": {"measurement_in": [MEAS], "debug_alowed": True}}), ok=False)
check(p.returncode == 4 and "debug_alowed" in p.stderr, "policy set typo: %d %s" %
      (p.returncode, p.stderr))
expect(admin("GET", "/v1/secrets/x"), 404, "nothing stored by refused creates")
# List and show, over both kinds of credentials.
p = kms("secret", "list")
check(all(s in p.stdout for s in ("db-key", "signer", "luks-root", "given-ec")),
      "list: %s" % p.stdout)
j = expect(admin("GET", "/v1/secrets", cert="admin"), 200, "list over mTLS")
check(sorted(s["id"] for s in j["secrets"]) == ["db-key", "given-ec", "luks-root", "signer"],
      "list: %s" % j)
p = kms("--json", "secret", "show", "given-ec", cert="admin")
meta = json.loads(p.stdout)
check(meta["attributes"] == {"policy": "attested", "max_age": 120}, "attributes %s" % meta)
step("admin create/list/show over bearer and mTLS; bad input refused, unknown claim named")

# Refused admin credentials: none, a wrong token, a rogue CA's certificate with the admin
# subject, an allowed CA's certificate with another subject. All 401 and audited.
for what, kw in [("no credentials", {"headers": {}}),
                 ("wrong bearer", {"headers": {"Authorization": "Bearer " + "x" * 43}}),
                 ("rogue CA", {"cert": "rogue", "headers": {}}),
                 ("other subject", {"cert": "intern", "headers": {}})]:
    j = expect(admin("GET", "/v1/secrets", **kw), 401, what, check="admin")
    j = expect(admin("DELETE", "/v1/secrets/db-key", **kw), 401, what + " (delete)")
p = kms("secret", "list", ok=False, token=False)
check(p.returncode == 4 and "401" in p.stderr, "kms without credentials: %s" % p.stderr)
expect(admin("GET", "/v1/secrets/db-key"), 200, "db-key survived refused deletes")
step("admin refused without or with wrong credentials")

# ================= releases =================
TOKEN = token_for(GOOD)
j = expect(release("db-key", TOKEN), 200, "release db-key")
plain, ph = open_release(j["release"])
check(plain == AES_VALUE, "released value differs")
h = ph["nitride"]
check(h["name"] == "kms/db" and h["type"] == "aes256" and h["version"] == 1, "header %s" % h)
check(h["policy"] == "attested" and h["max_age"] == 600 and h["label"] == "database key",
      "attributes in the header %s" % h)
check(h["acl"] == {"use_uid": [1000]}, "acl %s" % h.get("acl"))
claims = json.loads(jwt.JWT(jwt=TOKEN).token.objects["payload"])
check(h["token_jti"] == claims["jti"] and h["secret_id"] == "db-key", "jti/secret %s" % h)
check(0 < h["exp"] - h["iat"] <= 300, "release lifetime %s" % h)
check(ph["kid"] == TEE_KEY.thumbprint(), "JWE kid %s is not the transfer key's thumbprint" %
      ph["kid"])
# Generated keys are real keys (PKCS#8 of the type), and each release is fresh.
j = expect(release("signer", TOKEN), 200, "release signer")
plain, ph = open_release(j["release"])
k = jwk.JWK.from_pyca(load_der_private_key(plain, None))  # raises if not a PKCS#8 key
check(k["kty"] == "EC" and k["crv"] == "P-384" and k.has_private, "generated key %s" % k["kty"])
j2 = expect(release("signer", TOKEN), 200, "release signer again")
check(j2["jti"] != j["jti"] and j2["release"] != j["release"], "two releases are identical")
step("release verified (JWS) and decrypted (JWE) with jwcrypto; header carries the attributes")

# Another product (Genoa), another transfer key.
key2 = jwk.JWK.generate(kty="EC", crv="P-384")
j = expect(release("db-key", token_for(GENOA, key=key2)), 200, "genoa release")
check(open_release(j["release"], key=key2)[0] == AES_VALUE, "genoa value")
try:
    open_release(j["release"])  # our other key cannot open it
    fail("a release opened with another transfer key")
except Exception as e:  # noqa: BLE001 (jwcrypto raises several kinds)
    if "FAIL" in str(e):
        raise

# Wrong measurement: refused naming the rule, with expected and found; audited.
BAD_TOKEN = token_for(BAD)
j = expect(release("db-key", BAD_TOKEN), 403, "wrong measurement", error="policy",
           rule="measurement_in")
check(MEAS in j["expected"] and BAD_MEAS in j["found"], "expected/found %s" % j)
# Debug: attestd's dev policy lets a debug VM attest; kmsd's policy refuses it by default.
DEBUG_TOKEN = token_for(DEBUG, policy_id="dev")
j = expect(release("db-key", DEBUG_TOKEN), 403, "debug VM", error="policy")
check(j["rule"] in ("debug_allowed", "min_status"), "debug refusal rule %s" % j)
kms("secret", "create", "dev-key", "--type", "aes256", "--generate", "--policy-file",
    write_json("policy-dev.json", {"version": 1, "rules": {
        "measurement_in": [MEAS], "debug_allowed": False, "min_status": "warning"}}))
j = expect(release("dev-key", DEBUG_TOKEN), 403, "debug bit", error="policy",
           rule="debug_allowed")
kms("policy", "set", "dev-key", write_json("policy-dev2.json", {"version": 1, "rules": {
    "measurement_in": [MEAS], "debug_allowed": True, "min_status": "warning"}}))
j = expect(release("dev-key", DEBUG_TOKEN), 200, "debug allowed by policy")
open_release(j["release"])
# Volume identity for LUKS keys.
j = expect(release("luks-root", TOKEN, {"volume_uuid": "8b6e3c1a-54a1-4a9e-9d0e-2c7f4f6a1b2c"}),
           200, "luks release")
check(open_release(j["release"])[0] == RAW_VALUE, "raw value")
j = expect(release("luks-root", TOKEN, {"volume_uuid": "00000000-0000-0000-0000-000000000000"}),
           403, "wrong volume", rule="volume_uuid_eq")
j = expect(release("luks-root", TOKEN), 403, "no volume declared", rule="volume_uuid_eq")
step("refusals name the rule: measurement, debug bit, volume")

# Token errors: 401 naming the check.
expect(release("db-key", None), 401, "no token", check="token")
expect(release("db-key", "not.a.token"), 401, "junk token", check="format")
OTHER_TOKEN = token_for(GOOD, att=A_OTHER)
expect(release("db-key", OTHER_TOKEN), 401, "token of an unknown key", check="kid")
parts = TOKEN.split(".")
hdr = json.loads(base64url_decode(parts[0]))
# Same header (kid, alg), signed by another key on the alg's curve.
forger = jwk.JWK.generate(kty="EC", crv={"ES256": "P-256", "ES384": "P-384"}[hdr["alg"]])
forged = jws.JWS(base64url_decode(parts[1]))
forged.add_signature(forger, alg=hdr["alg"], protected=json.dumps(hdr))
expect(release("db-key", forged.serialize(compact=True)), 401, "forged signature",
       check="signature")
SHORT_TOKEN = token_for(GOOD, att=A_SHORT)
expect(release("db-key", SHORT_TOKEN), 200, "short token while valid")
time.sleep(12.5)
j = expect(release("db-key", SHORT_TOKEN), 401, "expired token", check="exp")
check("expired" in j["error"], "expired: %s" % j)
# Another attestd instance shares the keys but not necessarily the policy: the audience and
# issuer are what kmsd checks.
step("token errors: missing, junk, unknown key, forged, expired")

# Deleted secrets and replaced values.
p = kms("secret", "replace", "db-key", "--generate")
check("version 2" in p.stdout, "replace: %s" % p.stdout)
j = expect(release("db-key", TOKEN), 200, "release v2")
v2, ph = open_release(j["release"])
check(v2 != AES_VALUE and len(v2) == 32 and ph["nitride"]["version"] == 2, "v2 %s" % ph)
NEW_VALUE = os.urandom(32)
j = expect(admin("PUT", "/v1/secrets/db-key/value", {"value": b64u(NEW_VALUE)}, cert="admin"),
           200, "replace over mTLS")
check(j["version"] == 3, "version %s" % j)
j = expect(release("db-key", TOKEN), 200, "release v3")
check(open_release(j["release"])[0] == NEW_VALUE, "v3 value")
kms("secret", "delete", "given-ec")
expect(release("given-ec", TOKEN), 404, "release of a deleted secret")
expect(admin("DELETE", "/v1/secrets/dev-key", cert="admin"), 200, "delete over mTLS")
expect(admin("GET", "/v1/secrets/dev-key", cert="admin"), 404, "deleted over mTLS")
expect(admin("DELETE", "/v1/secrets/dev-key"), 404, "delete twice")
step("replace (new versions) and delete")

# policy test: evaluates without releasing.
tok_file = write_secret_file("token.jwt", TOKEN.encode())
bad_tok_file = write_secret_file("bad-token.jwt", BAD_TOKEN.encode())
p = kms("policy", "test", "db-key", "--token", tok_file)
check(p.returncode == 0 and "allowed" in p.stdout, "policy test allowed: %s" % p.stdout)
p = kms("policy", "test", "db-key", "--token", bad_tok_file, ok=False)
check(p.returncode == 2 and "measurement_in" in p.stdout, "policy test refused: %d %s" %
      (p.returncode, p.stdout))
step("policy test")

# ================= into the real vhsmd =================
# vhsmd pins kmsd's release keys and attestd's token keys; its own transfer key receives the
# release; the key appears as kms/db with the attributes kmsd signed.
if VHSMD and os.geteuid() == 0:
    vt = path("vhsm")
    os.makedirs(vt, mode=0o755)
    vsim = sim("vhsm-chip")
    sock = os.path.join(vt, "vhsm.sock")
    kms_keys = path("kms-release-keys.json")
    with open(kms_keys, "wb") as f:
        f.write(http(K.url + "/v1/release-keys")[1])
    att_keys = path("attestd-jwks.json")
    with open(att_keys, "wb") as f:
        f.write(http(A.url + "/.well-known/jwks.json")[1])
    vp = ntlib.start_vhsmd(VHSMD, vt, vsim, kms_keys, att_keys, ISSUER)
    V = [VHSM, "--socket", sock]
    tk = json.loads(run(*V, "transfer-key", "create", "--lifetime", "300").stdout)
    vtoken = token_for(GOOD, pub=tk)
    j = expect(release("db-key", vtoken), 200, "release to vhsmd's transfer key")
    rel_file = write_secret_file("db.release", j["release"].encode())
    tok_file2 = write_secret_file("db.token", vtoken.encode())
    p = run(*V, "--json", "import-release", rel_file, "--token", tok_file2)
    check(json.loads(p.stdout) == {"name": "kms/db", "version": 3}, "import: %s" % p.stdout)
    info = json.loads(run(*V, "--json", "key", "info", "kms/db").stdout)
    check(info["type"] == "aes256" and info.get("label") == "database key" and
          info["policy"] == {"kind": "attested", "max_age": 600} and
          info["acl"]["use"]["uids"] == [1000] and info["latest_version"] == 3,
          "vhsmd's kms/db differs from what kmsd released: %s" % info)
    # The same release again is refused; a release for another transfer key is refused.
    p = run(*V, "import-release", rel_file, ok=False)
    check(p.returncode != 0 and "already imported" in p.stderr, "replayed: %s" % p.stderr)
    j = expect(release("db-key", TOKEN), 200, "release to this test's key")
    other_rel = write_secret_file("other.release", j["release"].encode())
    p = run(*V, "import-release", other_rel, ok=False)
    check(p.returncode != 0, "vhsmd imported a release for a key it does not hold")
    vp.send_signal(signal.SIGTERM)
    check(vp.wait(30) == 0, "vhsmd exit %s" % vp.returncode)
    step("a kmsd release imported by the real vhsmd (pinned keys, attributes as signed)")
else:
    print("skip: vhsmd import (needs root and the vhsmd/vhsm binaries)")

# ================= restart: nothing lost =================
st, body, _ = http(K.url + "/v1/release-keys")
kids_before = {k["kid"] for k in json.loads(body)["keys"]}
K.stop()
K = Daemon("kmsd", KMSD, K_CFG)
j = expect(release("db-key", TOKEN), 200, "release after restart")
check(open_release(j["release"])[0] == NEW_VALUE, "value after restart")
st, body, _ = http(K.url + "/v1/release-keys")
check({k["kid"] for k in json.loads(body)["keys"]} == kids_before, "release keys changed")
# A wrong KEK is refused at start with a clear error.
wrong_kek = write_secret_file("wrong.kek", os.urandom(32))
K.stop()
bad = Daemon("kmsd-badkek", KMSD, kmsd_config("kmsd", "kmsd-wrongkek", kek_file=wrong_kek), expect_fail=True)
check(bad.p.returncode == 4 and "key-encryption key" in bad.log(),
      "wrong KEK: exit %d\n%s" % (bad.p.returncode, bad.log()))
os.chmod(KEK, 0o644)
bad = Daemon("kmsd-kekmode", KMSD, K_CFG, expect_fail=True)
check(bad.p.returncode == 4 and "0600" in bad.log(), "KEK mode not refused:\n" + bad.log())
os.chmod(KEK, 0o600)
K = Daemon("kmsd", KMSD, K_CFG)
step("restart keeps secrets and keys; wrong KEK and KEK mode refused at start")

# ================= JWKS refresh on an unknown kid =================
# kmsd K2 gets attestd's keys from a server this test controls: first A's set only, then A's
# and A_OTHER's. A token of A_OTHER is refused until kmsd refetches (unknown kid, rate-limited).
JWKS_STATE = {"body": http(A.url + "/.well-known/jwks.json")[1], "hits": 0}


class JwksHandler(httpserver.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        JWKS_STATE["hits"] += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(JWKS_STATE["body"])

    def log_message(self, *a):
        pass


jsrv = httpserver.ThreadingHTTPServer(("127.0.0.1", 0), JwksHandler)
sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
sctx.load_cert_chain(path("tls.pem"), path("tls.key"))
jsrv.socket = sctx.wrap_socket(jsrv.socket, server_side=True)
threading.Thread(target=jsrv.serve_forever, daemon=True).start()
K2 = Daemon("kmsd2", KMSD, kmsd_config("kmsd2", attestd={
    "jwks_url": "https://127.0.0.1:%d/jwks.json" % jsrv.server_address[1], "ca_file": CA,
    "issuer": ISSUER, "audience": "nitride-kmsd", "cache_ttl": 3600,
    "refresh_min_interval": 3}))
st, j = jhttp(K2.url + "/v1/secrets", {"id": "k2", "type": "aes256", "generate": True,
                                       "policy": POLICY_GOOD}, "POST", headers=BEARER)
check(st == 201, "k2 create %d %s" % (st, j))
expect(release("k2", TOKEN, kmsd=K2), 200, "K2 release with A's token")
hits = JWKS_STATE["hits"]
time.sleep(3.2)  # the fetch at start counts against refresh_min_interval too
expect(release("k2", OTHER_TOKEN, kmsd=K2), 401, "K2: unknown kid", check="kid")
check(JWKS_STATE["hits"] == hits + 1, "unknown kid did not refetch (%d)" % JWKS_STATE["hits"])
for _ in range(5):  # within refresh_min_interval: no more fetches
    expect(release("k2", OTHER_TOKEN, kmsd=K2), 401, "K2: unknown kid again", check="kid")
check(JWKS_STATE["hits"] == hits + 1, "refetch not rate-limited (%d)" % JWKS_STATE["hits"])
both = json.loads(JWKS_STATE["body"])
both["keys"] += json.loads(http(A_OTHER.url + "/.well-known/jwks.json")[1])["keys"]
JWKS_STATE["body"] = json.dumps(both).encode()
time.sleep(3.2)
expect(release("k2", OTHER_TOKEN, kmsd=K2), 200, "K2: kid known after refetch")
st, body, _ = http(K2.url + "/metrics")
check(b'nitride_kmsd_jwks_events_total{event="refresh_rate_limited"}' in body,
      "rate-limited refreshes not counted")
K2.stop()
jsrv.shutdown()
step("JWKS refetched on an unknown kid, rate-limited")

# ================= flood =================
# Malformed requests from other loopback addresses, then a valid release still works.
audit_rows_before = len(json.loads(kms("--json", "audit", "show").stdout))
stop_flood = threading.Event()
flood_count = [0]


threads = [threading.Thread(target=ntlib.flood, args=(
    K.port, "127.0.0.%d" % (10 + n), b"/v1/secrets/db-key/release", stop_flood, flood_count,
    ctx())) for n in range(6)]
for t in threads:
    t.start()
# Forged tokens too (well-formed, signed by an unknown key): counted, never audited.
for _ in range(30):
    expect(release("db-key", forged.serialize(compact=True)), 401, "forged in flood")
t0 = time.monotonic()
j = expect(release("db-key", TOKEN), 200, "release under flood")
dt = time.monotonic() - t0
stop_flood.set()
for t in threads:
    t.join()
check(open_release(j["release"])[0] == NEW_VALUE, "value under flood")
check(dt < 5, "release took %.1f s under the flood" % dt)
rows = json.loads(kms("--json", "audit", "show").stdout)
check(len(rows) == audit_rows_before + 1, "the flood wrote audit rows: %d -> %d" %
      (audit_rows_before, len(rows)))
step("valid release in %.2f s during a flood of %d malformed connections" % (dt,
                                                                              flood_count[0]))

# ================= audit =================
rows = json.loads(kms("--json", "audit", "show").stdout)
actions = [(r["action"], r["result"], r["rule"]) for r in rows]
check(("create", "ok", None) in actions and ("delete", "ok", None) in actions, "admin rows")
check(("release", "refused", "measurement_in") in actions, "refusal row")
check(("release", "refused", "exp") in actions, "expired-token row")
# The expired token is authentic: its row names it (jti, measurement) from the claims kmsd's one
# verification decoded.
exp_rows = [r for r in rows if r["action"] == "release" and r["rule"] == "exp"]
check(exp_rows and all(r["token_jti"] and r["measurement"] == MEAS for r in exp_rows),
      "expired-token row without the token's jti and measurement: %s" % exp_rows)
check(sum(1 for a in actions if a[0] == "admin-denied") >= 8, "denied admin rows: %s" % actions)
ok_rows = [r for r in rows if r["action"] == "release" and r["result"] == "ok"]
check(all(r["token_jti"] and r["measurement"] == MEAS for r in ok_rows[:1]), "release row")
check(any(r["actor"] == "admin:cert:" + ADMIN_SUBJECT for r in rows), "mTLS actor")
check(any(r["actor"] == "admin:bearer" for r in rows), "bearer actor")
check(not any(ADMIN_TOKEN in json.dumps(r) for r in rows), "admin token in the audit")
p = kms("audit", "show")
check("admin-denied" in p.stdout and "measurement_in" in p.stdout, "audit show text")
head_file = path("head.json")
p = kms("audit", "verify", "--head-file", head_file)
check("audit chain ok" in p.stdout, "audit verify: %s" % p.stdout)
# Pinned release keys (what vhsmd pins) verify the head too.
keys_file = path("release-keys.json")
with open(keys_file, "wb") as f:
    f.write(http(K.url + "/v1/release-keys")[1])
kms("audit", "verify", "--release-keys", keys_file)
# A head signed by another key is refused.
other_keys = write_json("other-keys.json", {"keys": [json.loads(
    jwk.JWK.generate(kty="EC", crv="P-384", kid="x").export_public())]})
p = kms("audit", "verify", "--release-keys", other_keys, ok=False)
check(p.returncode == 1 and "not among the release keys" in p.stderr, "foreign keys: %s" %
      p.stderr)
st, j = jhttp(K.url + "/v1/audit/head")
check(st == 200 and j["seq"] == len(rows) and j["jws"], "head %s" % j)
step("audit show, verify (signed head, chain, pinned keys)")

# Tamper with the stopped service's database: edit one row, then delete one.
DB = path("kmsd.db")
K.stop()
shutil.copy(DB, path("pristine.db"))
for ext in ("-wal", "-shm"):
    check(not os.path.exists(DB + ext) or os.path.getsize(DB + ext) == 0 or ext == "-shm",
          "WAL not checkpointed at stop")


def sql(db, stmt):
    run("sqlite3", db, stmt)


TRIGGERS = ("CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, "
            "'audit rows are append-only'); END; CREATE TRIGGER audit_no_delete BEFORE DELETE ON "
            "audit BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END;")
# An attacker with the file drops the triggers, edits, and puts them back.
sql(DB, "DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete; UPDATE audit SET result='ok', rule=NULL WHERE seq=(SELECT "
        "MIN(seq) FROM audit WHERE rule='measurement_in'); " + TRIGGERS)
edited_seq = [r["seq"] for r in rows if r["rule"] == "measurement_in"][0]
K = Daemon("kmsd", KMSD, K_CFG)
p = kms("audit", "verify", ok=False)
check(p.returncode == 1 and ("seq %d" % edited_seq) in p.stderr, "edited row not found: %s" %
      p.stderr)
K.stop()
shutil.copy(path("pristine.db"), DB)
sql(DB, "DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE "
        "seq=5; " + TRIGGERS)
K = Daemon("kmsd", KMSD, K_CFG)
p = kms("audit", "verify", ok=False)
check(p.returncode == 1 and "FAILED" in p.stderr, "deleted row not found: %s" % p.stderr)
K.stop()
# Deleting the newest rows leaves a consistent chain: the head saved earlier catches it.
shutil.copy(path("pristine.db"), DB)
sql(DB, "DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq>=(SELECT MAX(seq)-1 FROM "
        "audit); " + TRIGGERS)
K = Daemon("kmsd", KMSD, K_CFG)
kms("audit", "verify")  # consistent by itself
p = kms("audit", "verify", "--head-file", head_file, ok=False)
check(p.returncode == 1 and "rows were removed" in p.stderr, "truncation: %s" % p.stderr)
K.stop()
shutil.copy(path("pristine.db"), DB)
K = Daemon("kmsd", KMSD, K_CFG)
kms("audit", "verify", "--head-file", head_file)
step("edited, deleted and truncated audit rows detected")

# ================= health, metrics, config =================
expect(release("db-key", TOKEN), 200, "release for the metrics")
expect(release("db-key", BAD_TOKEN), 403, "refusal for the metrics")
st, j = jhttp(K.url + "/healthz")
check(st == 200 and j["status"] == "ok" and j["jwks_age"] >= 0, "healthz %s" % j)
st, body, _ = http(K.url + "/metrics")
text = body.decode()
check('nitride_kmsd_releases_total{result="ok"}' in text, "release metric")
check('nitride_kmsd_release_refusals_total{rule="measurement_in"}' in text, "refusal metric")
check('nitride_kmsd_http_requests_total{endpoint="secret"' in text, "http metric")
st, j = jhttp(K.url + "/v1/secrets/db-key/nope", {}, "POST")
check(st == 404, "unknown path %d" % st)
st, j = jhttp(K.url + "/v1/audit", {}, "POST")
check(st == 405, "POST audit %d" % st)
cfgx = json.load(open(K_CFG))
cfgx["attestd"]["jwks_ur"] = "x"
p = run(KMSD, "check-config", "--config", write_json("x.json", cfgx), ok=False)
check(p.returncode == 4 and "jwks_ur" in p.stderr, "unknown config key: %s" % p.stderr)
p = run(KMSD, "check-config", "--config", K_CFG)
check(": ok" in p.stdout, "check-config: %s" % p.stdout)
os.chmod(ADMIN_TOKEN_FILE, 0o640)
p = run(KMSD, "check-config", "--config", K_CFG, ok=False)
check(p.returncode == 4 and "0600" in p.stderr, "token file mode: %s" % p.stderr)
os.chmod(ADMIN_TOKEN_FILE, 0o600)
step("healthz, metrics, strict configuration")

for d in (K, A, A_SHORT, A_OTHER):
    d.stop()
shutil.rmtree(TMP)
print("PASS (%.1f s)" % (time.monotonic() - T0))
