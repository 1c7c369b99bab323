#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""`nitride luks enroll` and the remote unlock end to end on 127.0.0.1: the real nitride-attestd
and nitride-kmsd over TLS with throwaway certificates, a simulated chip (`nitride sim`), LUKS2
image files made with `cryptsetup luksFormat`. This host has no device-mapper: unlock runs with
--test (libcryptsetup's activation without a name checks the key against the token's keyslot).

Covers: enroll --create (kmsd generates the secret, its policy binds this image's measurement and
the volume's UUID) and with an existing secret; remote unlock; kmsd's audit naming each release's
purpose (luks-enroll, luks-unlock, luks-reseal); refusals with the header byte-for-byte unchanged
(another measurement, the debug bit, kmsd's policy refusing, a tampered token, a token copied to
another volume, a truncated image, a wrong passphrase: nothing created in kmsd either, an enroll
that kmsd refuses: the secret it created is deleted); one token with a sealed and a remote slot:
sealed unlock with kmsd down, then a new measurement: the sealed slot fails, the KMS releases,
the token is re-sealed (audited as luks-reseal) and the next unlock is sealed again with kmsd
down; `seal --expect-measurement`.

Usage: luks-kms-test.py NITRIDE NITRIDE_ATTESTD NITRIDE_KMSD
"""
import hashlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ntlib  # noqa: E402
from ntlib import b64u, check, run  # noqa: E402

NITRIDE, ATTESTD, KMSD = sys.argv[1:4]
if not shutil.which("cryptsetup"):
    print("SKIP: cryptsetup not installed (scripts/deps.sh)")
    sys.exit(77)
TMP = tempfile.mkdtemp(prefix="nt-luks-kms-")
T0 = time.monotonic()
W = ntlib.Workdir(TMP)
path, write_json, write_secret_file, step = W.path, W.write_json, W.write_secret_file, W.step

MEAS, MEAS2, OTHER = "11" * 48, "22" * 48, "33" * 48
CHIP = path("chip")
run(NITRIDE, "sim", "init", CHIP, "--product", "milan")
run(NITRIDE, "sim", "set", CHIP, "--measurement", MEAS)
POLICY0 = json.loads(run(NITRIDE, "sim", "show", CHIP, "--json").stdout)
POLICY0 = POLICY0.get("launch", {}).get("policy", POLICY0.get("policy"))
check(POLICY0 is not None, "cannot read the chip's policy")
POLICY0 = int(POLICY0, 0) if isinstance(POLICY0, str) else int(POLICY0)

CA = ntlib.make_tls(TMP)
# attestd vouches for the fleet's images (debug off); kmsd's policy picks among them.
A = ntlib.Daemon(TMP, "attestd", ATTESTD,
                 ntlib.attestd_config(W, "attestd", CHIP, [MEAS, MEAS2, OTHER]))
ADMIN_TOKEN = b64u(os.urandom(32))
ADMIN_FILE = write_secret_file("admin.token", ADMIN_TOKEN.encode())
KCFG = ntlib.kmsd_config(W, "kmsd", A.url, CA, ADMIN_FILE)
K = ntlib.Daemon(TMP, "kmsd", KMSD, KCFG)
# Restarts keep the port: the tokens name kmsd's URL.
KCFG = write_json("kmsd2.json", dict(json.load(open(KCFG)), listen="127.0.0.1:%d" % K.port))


def http(url, body=None, method=None):
    return ntlib.admin_http(url, ADMIN_TOKEN, ssl.create_default_context(cafile=CA), body, method)


def audit_details():
    st, b = http(K.url + "/v1/audit?after=0&limit=1000")
    check(st == 200, "audit: %d %s" % (st, b))
    return [(r.get("action"), r.get("secret_id"), r.get("result"), r.get("detail") or "")
            for r in json.loads(b)["rows"]]


def mkimg(name, pw):
    p = path(name)
    with open(p, "wb") as f:
        f.truncate(32 << 20)
    subprocess.run(["cryptsetup", "luksFormat", "--type", "luks2", "--batch-mode", "--pbkdf",
                    "pbkdf2", "--pbkdf-force-iterations", "1000", p, "-"], input=pw.encode(),
                   check=True, capture_output=True, timeout=60)
    return p


def uuid_of(img):
    return run("cryptsetup", "luksUUID", img).stdout.strip()


def hdr(img):
    with open(img, "rb") as f:
        return hashlib.sha256(f.read(16 << 20)).hexdigest()


def counts(img):
    d = run("cryptsetup", "luksDump", img).stdout
    ks = d.split("Keyslots:")[1].split("Tokens:")[0]
    tk = d.split("Tokens:")[1].split("Digests:")[0]
    return (sum(1 for line in ks.splitlines() if line.startswith("  ") and ": luks2" in line),
            sum(1 for line in tk.splitlines() if line[:2] == "  " and line[2:3].isdigit()))


def token_json(img):
    p = run(NITRIDE, "luks", "list", img, "--json")
    return json.loads(p.stdout.strip().splitlines()[0])


def luks(*args, ok=True, pw=None, kms_env=True):
    env = dict(os.environ)
    env["NITRIDE_LUKS_CONF"] = ""
    p = subprocess.run([NITRIDE, "luks", *args], capture_output=True, text=True, timeout=120,
                       input=pw, env=env)
    if ok and p.returncode != 0:
        ntlib.fail("nitride luks %s -> %d\n%s%s" % (" ".join(args), p.returncode, p.stdout,
                                                      p.stderr))
    return p


SIM = ["--provider", "sim", "--sim-dir", CHIP, "--ca", CA]


def enroll(img, secret, *extra, ok=True, pw="pw\n"):
    return luks("enroll", img, "--kms", K.url, "--attestd", A.url, "--secret", secret, *SIM,
                "--timeout", "20", *extra, ok=ok, pw=pw)


def unlock(img, *extra, ok=True):
    return luks("unlock", img, "data", "--test", *SIM, "--timeout", "10", *extra, ok=ok)


def set_meas(m):
    run(NITRIDE, "sim", "set", CHIP, "--measurement", m)


# ---- enroll --create, remote unlock ----
img = mkimg("a.img", "pw")
u = uuid_of(img)
p = enroll(img, "vol-a", "--create", "--admin-token-file", ADMIN_FILE)
check("enrolled: token 0, keyslot 1" in p.stdout, "enroll output: %s" % p.stdout)
check(counts(img) == (2, 1), "enroll: counts %s" % (counts(img),))
t = token_json(img)
check(t["flow"] == "kms" and t["kms"] == {"url": K.url, "attestd": A.url, "secret": "vol-a"} and
      t["volume"] == u and t["keyslots"] == ["1"], "token: %s" % t)
st, b = http(K.url + "/v1/secrets/vol-a")
meta = json.loads(b)
check(st == 200 and meta["type"] == "raw" and
      meta["policy"]["rules"] == {"measurement_in": [MEAS], "volume_uuid_eq": u},
      "kmsd's secret: %d %s" % (st, b))
dump = run("cryptsetup", "luksDump", img).stdout
check("nitride" in dump.split("Tokens:")[1], "luksDump does not show the token")
s1 = hdr(img)
p = unlock(img)
check("opens keyslot 1" in p.stdout, "unlock: %s %s" % (p.stdout, p.stderr))
check(hdr(img) == s1, "a remote unlock of a kms-only token changed the header")
rows = audit_details()
check(any(r[0] == "release" and r[1] == "vol-a" and r[2] == "ok" and "purpose luks-enroll" in r[3]
          and u in r[3] for r in rows), "audit: no luks-enroll release: %s" % rows)
check(any(r[0] == "release" and r[2] == "ok" and "purpose luks-unlock" in r[3] for r in rows),
      "audit: no luks-unlock release: %s" % rows)
step("enroll --create (kmsd generates the key, policy: measurement + volume UUID), remote unlock")

# ---- refusals, header unchanged ----
# another measurement
set_meas(OTHER)
p = unlock(img, ok=False)
check(p.returncode == 2 and "measurement_in" in p.stderr and OTHER in p.stderr and MEAS in p.stderr,
      "other measurement: %d %s" % (p.returncode, p.stderr))
check(hdr(img) == s1, "refused unlock changed the header")
set_meas(MEAS)
# the debug bit (kmsd's debug_allowed defaults to false)
run(NITRIDE, "sim", "set", CHIP, "--policy", hex(POLICY0 | (1 << 19)))
p = unlock(img, ok=False)
check(p.returncode == 2 and "debug" in p.stderr, "debug: %d %s" % (p.returncode, p.stderr))
check(hdr(img) == s1, "debug refusal changed the header")
run(NITRIDE, "sim", "set", CHIP, "--policy", hex(POLICY0))
# kmsd's policy refusing (the admin changed it)
st, b = http(K.url + "/v1/secrets/vol-a/policy",
             {"version": 1, "rules": {"measurement_in": [MEAS2], "volume_uuid_eq": u}}, "PUT")
check(st == 200, "policy set: %d %s" % (st, b))
p = unlock(img, ok=False)
check(p.returncode == 2 and "measurement_in" in p.stderr and "kmsd" in p.stderr,
      "kmsd refusing: %d %s" % (p.returncode, p.stderr))
check(hdr(img) == s1, "kmsd refusal changed the header")
st, b = http(K.url + "/v1/secrets/vol-a/policy",
             {"version": 1, "rules": {"measurement_in": [MEAS], "volume_uuid_eq": u}}, "PUT")
unlock(img)
# a tampered token: another secret of kmsd (released, but its key does not open the keyslot)
st, b = http(K.url + "/v1/secrets", {"id": "decoy", "type": "raw", "generate": True, "length": 32,
                                     "policy": {"version": 1,
                                                "rules": {"measurement_in": [MEAS]}}})
check(st == 201, "decoy: %d %s" % (st, b))
tam = path("tampered.img")
shutil.copy(img, tam)
tt = dict(t, kms=dict(t["kms"], secret="decoy"))
write_json("tampered.json", tt)
run("cryptsetup", "token", "remove", tam, "--token-id", "0")
run("cryptsetup", "token", "import", tam, "--token-id", "0", "--json-file", path("tampered.json"))
s2 = hdr(tam)
p = unlock(tam, ok=False)
check(p.returncode == 2 and "keyslot" in p.stderr, "tampered token: %d %s" % (p.returncode,
                                                                         p.stderr))
check(hdr(tam) == s2, "tampered token refusal changed the header")
# the token copied to another volume (the token names its volume; kmsd binds the UUID too)
img_b = mkimg("b.img", "pwb")
write_secret_file("pwb", b"pwb")
write_secret_file("other-key", os.urandom(32))
run("cryptsetup", "luksAddKey", img_b, path("other-key"), "--key-file", path("pwb"), "--key-slot",
    "1", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--batch-mode")
write_json("copied.json", t)
subprocess.run(["cryptsetup", "token", "import", img_b, "--token-id", "0", "--json-file",
                path("copied.json")], check=True, capture_output=True)
s3 = hdr(img_b)
p = unlock(img_b, ok=False)
check(p.returncode == 2 and "volume" in p.stderr, "copied token: %d %s" % (p.returncode, p.stderr))
check(hdr(img_b) == s3, "copied token refusal changed the header")
# ... and with the volume edited to match, kmsd's volume_uuid_eq refuses
write_json("copied2.json", dict(t, volume=uuid_of(img_b)))
run("cryptsetup", "token", "remove", img_b, "--token-id", "0")
run("cryptsetup", "token", "import", img_b, "--token-id", "0", "--json-file", path("copied2.json"))
s3 = hdr(img_b)
p = unlock(img_b, ok=False)
check(p.returncode == 2 and "volume_uuid_eq" in p.stderr, "copied token, edited volume: %d %s" %
      (p.returncode, p.stderr))
check(hdr(img_b) == s3, "copied token (edited) refusal changed the header")
# a truncated image
with open(img, "rb") as f, open(path("trunc.img"), "wb") as g:
    g.write(f.read(8192))
p = unlock(path("trunc.img"), ok=False)
check(p.returncode == 4 and "Cannot open the LUKS2 header" in p.stderr, "truncated: %d %s" %
      (p.returncode, p.stderr))
step("refused with the header unchanged: measurement, debug, kmsd policy, tampered token, "
     "copied token, truncated image")

# ---- enroll refusals: nothing left behind, here or in kmsd ----
img_c = mkimg("c.img", "pwc")
sc = hdr(img_c)
p = enroll(img_c, "vol-c", "--create", "--admin-token-file", ADMIN_FILE, ok=False, pw="wrong\n")
check(p.returncode == 2 and "No keyslot" in p.stderr, "wrong passphrase: %d %s" %
      (p.returncode, p.stderr))
check(http(K.url + "/v1/secrets/vol-c")[0] == 404, "a refused enroll created the secret")
check(hdr(img_c) == sc and counts(img_c) == (1, 0), "wrong passphrase changed the header")
write_json("other-policy.json", {"version": 1, "rules": {"measurement_in": [OTHER]}})
p = enroll(img_c, "vol-c", "--create", "--admin-token-file", ADMIN_FILE, "--policy-file",
           path("other-policy.json"), ok=False, pw="pwc\n")
check(p.returncode == 2 and "measurement_in" in p.stderr, "kmsd refusing enroll: %d %s" %
      (p.returncode, p.stderr))
check(http(K.url + "/v1/secrets/vol-c")[0] == 404, "the refused enroll left its secret in kmsd")
check(hdr(img_c) == sc and counts(img_c) == (1, 0), "refused enroll changed the header")
step("enroll refused (wrong passphrase, kmsd's policy): header unchanged, no secret left in kmsd")

# ---- an existing secret, and one token with both slots: self-healing ----
uc = uuid_of(img_c)
VOL_C = os.urandom(32)
st, b = http(K.url + "/v1/secrets", {"id": "vol-c", "type": "raw", "value": b64u(VOL_C),
                                     "policy": {"version": 1, "rules": {
                                         "measurement_in": [MEAS, MEAS2],
                                         "volume_uuid_eq": uc}}})
check(st == 201, "vol-c: %d %s" % (st, b))
p = enroll(img_c, "vol-c", "--bind", "measurement,policy", pw="pwc\n")
# The keyslot's key is kmsd's value (cryptsetup agrees), and it is in no output.
write_secret_file("vol-c.key", VOL_C)
run("cryptsetup", "open", "--test-passphrase", "--key-slot", "1", "--key-file", path("vol-c.key"),
    img_c)
for out in (p.stdout, p.stderr):
    check(VOL_C.hex() not in out.lower() and b64u(VOL_C) not in out, "the key in the output")
t = token_json(img_c)
check(t["flow"] == "sealed+kms" and sorted(t["sealed"]["bind"]) == ["measurement", "policy"],
      "combined token: %s" % t)
K.stop()  # no network needed for the sealed slot
p = unlock(img_c)
check("opens keyslot 1" in p.stdout, "sealed unlock with kmsd down: %s %s" % (p.stdout, p.stderr))
blob0 = token_json(img_c)["sealed"]["blob"]
K = ntlib.Daemon(TMP, "kmsd", KMSD, KCFG)
# A new image (kmsd's policy already names it): sealed fails, KMS releases, the token re-seals.
set_meas(MEAS2)
p = luks("unlock", img_c, "data", "--test", "--provider", "sim", "--sim-dir", CHIP, "--ca", CA,
         "--timeout", "10")
check("opens keyslot 1" in p.stdout and "re-sealed" in p.stderr, "self-healing: %s %s" %
      (p.stdout, p.stderr))
t2 = token_json(img_c)
check(t2["flow"] == "sealed+kms" and t2["sealed"]["blob"] != blob0 and t2["kms"] == t["kms"],
      "re-sealed token: %s" % t2)
check(counts(img_c) == (2, 1), "re-seal changed the keyslots: %s" % (counts(img_c),))
check(any(r[0] == "release" and r[1] == "vol-c" and r[2] == "ok" and "purpose luks-reseal" in r[3]
          for r in audit_details()), "the re-seal's release is not in kmsd's audit")
K.stop()
p = unlock(img_c)
check("opens keyslot 1" in p.stdout and "KMS" not in p.stderr, "sealed again: %s %s" %
      (p.stdout, p.stderr))
# The old image no longer opens locally (the token follows the new state) and kmsd is down.
# A service that is down (its port refuses connections) fails the unlock fast, naming it, not
# at the 20 s deadline.
set_meas(MEAS)
t = time.monotonic()
p = luks("unlock", img_c, "data", "--test", *SIM, "--timeout", "20", ok=False)
dt = time.monotonic() - t
check(p.returncode == 14 and "kmsd is down" in p.stderr and K.url in p.stderr and
      "refused the connection" in p.stderr,
      "old image with kmsd down: %d %s" % (p.returncode, p.stderr))
check(dt < 8, "the unlock with kmsd down took %.1f s of its 20 s timeout" % dt)
step("one token, two slots: sealed with kmsd down; new measurement -> KMS -> re-sealed "
     "(audited as luks-reseal); sealed again; kmsd down: refused in %.2f s, not at the 20 s "
     "deadline" % dt)

A.stop()
t = time.monotonic()
p = luks("unlock", img_c, "data", "--test", *SIM, "--timeout", "20", ok=False)
dt = time.monotonic() - t
check(p.returncode == 14 and "attestd is down" in p.stderr and A.url in p.stderr,
      "unlock with attestd down: %d %s" % (p.returncode, p.stderr))
check(dt < 8, "the unlock with attestd down took %.1f s of its 20 s timeout" % dt)
step("attestd down: refused in %.2f s" % dt)
print("PASS (%.1f s)" % (time.monotonic() - T0))
