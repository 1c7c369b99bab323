#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""`nitride fetch` end to end on 127.0.0.1: the real nitride-attestd and nitride-kmsd over TLS
with throwaway certificates, a real vhsmd pinning kmsd's release keys and attestd's JWKS, and a
simulated chip (`nitride sim`). Happy path (the key then works in vhsmd), a policy refusal (exit
13, kmsd's rule printed, nothing imported), --as naming another key, the release replayed to
vhsmd (refused: the transfer key is one-shot), and kmsd or attestd down (retries, then exit 14
within the deadline).

Usage: fetch-test.py NITRIDE NITRIDE_ATTESTD NITRIDE_KMSD VHSMD VHSM VHSM_TEST_HELPER
(as root: IMPORT_RELEASE is root only)
"""
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ntlib  # noqa: E402
from ntlib import b64u, check, run  # noqa: E402

NITRIDE, ATTESTD, KMSD, VHSMD, VHSM, HELPER = sys.argv[1:7]
if os.geteuid() != 0:
    print("skip: vhsmd imports releases for root only")
    sys.exit(77)
TMP = tempfile.mkdtemp(prefix="nt-fetch-")
T0 = time.monotonic()

W = ntlib.Workdir(TMP)
path, write_json, write_secret_file, step = W.path, W.write_json, W.write_secret_file, W.step


# ---- the chip, TLS ----
MEAS, OTHER_MEAS = "11" * 48, "33" * 48
CHIP = path("chip")
run(NITRIDE, "sim", "init", CHIP, "--product", "milan")
run(NITRIDE, "sim", "set", CHIP, "--measurement", MEAS)

CA = ntlib.make_tls(TMP)
ISSUER = ntlib.ISSUER
A = ntlib.Daemon(TMP, "attestd", ATTESTD, ntlib.attestd_config(W, "attestd", CHIP, [MEAS]))
ADMIN_TOKEN = b64u(os.urandom(32))
K = ntlib.Daemon(TMP, "kmsd", KMSD, ntlib.kmsd_config(
    W, "kmsd", A.url, CA, write_secret_file("admin.token", ADMIN_TOKEN.encode())))
CTX = ssl.create_default_context(cafile=CA)


def http(url, body=None):
    return ntlib.admin_http(url, ADMIN_TOKEN, CTX, body)


APP_VALUE = os.urandom(32)
for sid, name, meas, value in (("app-key", "app", MEAS, APP_VALUE),
                               ("other-key", "other", OTHER_MEAS, os.urandom(32))):
    st, b = http(K.url + "/v1/secrets", {
        "id": sid, "name": name, "type": "aes256", "value": b64u(value),
        "policy": {"version": 1, "rules": {"measurement_in": [meas]}},
        "attributes": {"policy": "local"}})
    check(st == 201, "create %s: %d %s" % (sid, st, b))

# ---- vhsmd, pinning kmsd's release keys and attestd's token keys ----
VT = path("vhsm")
os.makedirs(VT, mode=0o755)
SOCK = os.path.join(VT, "vhsm.sock")
with open(path("kms-keys.json"), "wb") as f:
    f.write(http(K.url + "/v1/release-keys")[1])
with open(path("att-jwks.json"), "wb") as f:
    f.write(http(A.url + "/.well-known/jwks.json")[1])
run(NITRIDE, "sim", "init", path("vchip"), "--product", "milan")
vp = ntlib.start_vhsmd(VHSMD, VT, path("vchip"), path("kms-keys.json"), path("att-jwks.json"),
                       ISSUER)
V = [VHSM, "--socket", SOCK]


def fetch(sid, *extra, kms=None, attestd=None, ok=True):
    return run(NITRIDE, "fetch", sid, "--attestd", attestd or A.url, "--kms", kms or K.url,
               "--ca", CA, "--socket", SOCK, "--provider", "sim", "--sim", CHIP, *extra, ok=ok)


def has_key(name):
    return run(*V, "key", "info", name, ok=False).returncode == 0


# ---- happy path ----
rel_file, tok_file = path("app.release"), path("app.token")
p = fetch("app-key", "--as", "app", "--release-out", rel_file, "--token-out", tok_file)
check(p.stdout.strip() == "imported kms/app version 1", "fetch stdout: %r" % p.stdout)
for f in (rel_file, tok_file):
    check(os.stat(f).st_mode & 0o777 == 0o600, "%s mode %o" % (f, os.stat(f).st_mode))
rel = open(rel_file, "rb").read()
for blob in (p.stdout.encode(), p.stderr.encode(), rel):
    check(APP_VALUE not in blob and b64u(APP_VALUE).encode() not in blob,
          "the secret in the clear in the agent's output or the release")
with open(path("plain"), "wb") as f:
    f.write(b"attested secret release\n" * 10)
run(*V, "encrypt", "kms/app", "--in", path("plain"), "--out", path("ct"))
run(*V, "decrypt", "kms/app", "--in", path("ct"), "--out", path("back"))
check(open(path("back"), "rb").read() == open(path("plain"), "rb").read(), "round trip")
# The key vhsmd uses is the value kmsd stored: its envelope opens with OpenSSL under that value.
p = subprocess.run([HELPER, "gcm-open", APP_VALUE.hex()], stdin=open(path("ct"), "rb"),
                   capture_output=True, timeout=30)
check(p.returncode == 0 and p.stdout == open(path("plain"), "rb").read(),
      "vhsmd's kms/app is not kmsd's value: %d %s" % (p.returncode, p.stderr))
step("nitride fetch: attested, released, imported as kms/app; vhsm encrypt/decrypt work")

# ---- the release replayed to vhsmd: refused ----
p = run(*V, "import-release", rel_file, "--token", tok_file, ok=False)
check(p.returncode != 0 and "already imported" in p.stderr, "replayed: %d %s" %
      (p.returncode, p.stderr))
step("the release replayed to vhsmd is refused")

# ---- a policy for another measurement: refused, not retried, nothing imported ----
t = time.monotonic()
p = fetch("other-key", "--as", "other", ok=False)
check(p.returncode == 13, "refusal exit %d: %s" % (p.returncode, p.stderr))
check("measurement_in" in p.stderr and OTHER_MEAS in p.stderr and MEAS in p.stderr,
      "the refusal does not name rule, expected and found: %s" % p.stderr)
check("retrying" not in p.stderr, "a policy refusal was retried: %s" % p.stderr)
check(time.monotonic() - t < 10, "the refusal took %.1f s" % (time.monotonic() - t))
check(not has_key("kms/other"), "kms/other imported despite the refusal")
step("a policy for another measurement: exit 13, rule/expected/found printed, nothing imported")

# ---- --as naming another key: refused before import ----
p = fetch("app-key", "--as", "not-app", ok=False)
check(p.returncode == 1 and "not imported" in p.stderr, "--as mismatch: %d %s" %
      (p.returncode, p.stderr))
check(not has_key("kms/not-app"), "kms/not-app exists")
step("--as naming another key is refused before import")

# ---- a usage error ----
p = run(NITRIDE, "fetch", "app-key", "--attestd", A.url, ok=False)
check(p.returncode == 3 and "--kms" in p.stderr, "missing --kms: %d %s" % (p.returncode, p.stderr))

# ---- services down: retries with backoff, then exit 14 within the deadline ----
s = socket.socket()
s.bind(("127.0.0.1", 0))
closed = "https://127.0.0.1:%d" % s.getsockname()[1]  # bound, not listening: refused
t = time.monotonic()
p = fetch("app-key", "--timeout", "3", attestd=closed, ok=False)
el = time.monotonic() - t
check(p.returncode == 14 and "retrying" in p.stderr and "Giving up" in p.stderr,
      "attestd down: %d %s" % (p.returncode, p.stderr))
check(2.0 < el < 8, "attestd down: %.1f s for a 3 s deadline" % el)
K.stop()
t = time.monotonic()
p = fetch("app-key", "--timeout", "4", ok=False)
el = time.monotonic() - t
check(p.returncode == 14, "kmsd down: exit %d: %s" % (p.returncode, p.stderr))
check(p.stderr.count("retrying") >= 2 and "Release" in p.stderr and "Giving up" in p.stderr,
      "kmsd down: no retries of the release: %s" % p.stderr)
check(3.0 < el < 9, "kmsd down: %.1f s for a 4 s deadline" % el)
s.close()
step("attestd or kmsd down: retried with backoff, exit 14 within the deadline")

vp.send_signal(signal.SIGTERM)
check(vp.wait(30) == 0, "vhsmd exit %s" % vp.returncode)
A.stop()
print("PASS (%.1f s)" % (time.monotonic() - T0))
