#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""libcryptsetup-token-nitride.so with the remote (KMS) flow, driven by the real `cryptsetup` CLI:
nitride-attestd and nitride-kmsd over TLS on 127.0.0.1, a simulated chip, a LUKS2 image enrolled
with `nitride luks enroll --create`. cryptsetup runs in a private mount namespace where the built
plugin is bind-mounted over libcryptsetup's token directory (cryptsetup 2.6 has no other search
path; the machine is not changed). Test mode (--test-passphrase): no device-mapper here.

Covers: luksDump shows the KMS slot through the plugin's dump; open --token-only unlocks through
the attested release (audited by kmsd as luks-unlock); kmsd down -> the plugin steps aside
(-EAGAIN): --token-only fails, plain open falls back to the passphrase; another measurement ->
refused with kmsd's rule named, header byte-for-byte unchanged.

Usage: cryptsetup-plugin-kms-test.py NITRIDE NITRIDE_ATTESTD NITRIDE_KMSD PLUGIN.so
"""
import hashlib
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ntlib  # noqa: E402
from ntlib import b64u, check, run  # noqa: E402

NITRIDE, ATTESTD, KMSD, PLUGIN = sys.argv[1:5]
if not shutil.which("cryptsetup"):
    print("SKIP: cryptsetup not installed (scripts/deps.sh)")
    sys.exit(77)
m = re.search(r"LUKS2 external token plugin path: (\S+)\.\s*$", run("cryptsetup", "--help").stdout,
              re.M)
if not m or not os.path.isdir(m.group(1)):
    print("SKIP: this cryptsetup has no external token directory")
    sys.exit(77)
TOKDIR = m.group(1)
if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
    print("SKIP: cannot make a private mount namespace (unshare -m): needs root")
    sys.exit(77)
TMP = tempfile.mkdtemp(prefix="nt-cplug-kms-")
W = ntlib.Workdir(TMP)
path, write_json, write_secret_file, step = W.path, W.write_json, W.write_secret_file, W.step
os.mkdir(path("plugins"))
shutil.copy(PLUGIN, path("plugins/libcryptsetup-token-nitride.so"))

MEAS, OTHER = "11" * 48, "33" * 48
CHIP = path("chip")
run(NITRIDE, "sim", "init", CHIP, "--product", "milan")
run(NITRIDE, "sim", "set", CHIP, "--measurement", MEAS)
CA = ntlib.make_tls(TMP)
A = ntlib.Daemon(TMP, "attestd", ATTESTD, ntlib.attestd_config(W, "attestd", CHIP, [MEAS, OTHER]))
ADMIN_FILE = write_secret_file("admin.token", b64u(os.urandom(32)).encode())
KCFG = ntlib.kmsd_config(W, "kmsd", A.url, CA, ADMIN_FILE)
K = ntlib.Daemon(TMP, "kmsd", KMSD, KCFG)
KCFG = write_json("kmsd2.json", dict(json.load(open(KCFG)), listen="127.0.0.1:%d" % K.port))

img = path("a.img")
with open(img, "wb") as f:
    f.truncate(32 << 20)
subprocess.run(["cryptsetup", "luksFormat", "--type", "luks2", "--batch-mode", "--pbkdf", "pbkdf2",
                "--pbkdf-force-iterations", "1000", img, "-"], input=b"pw", check=True,
               capture_output=True, timeout=60)
env = dict(os.environ, NITRIDE_LUKS_CONF="")
p = subprocess.run([NITRIDE, "luks", "enroll", img, "--kms", K.url, "--attestd", A.url, "--secret",
                    "vol-a", "--create", "--admin-token-file", ADMIN_FILE, "--provider", "sim",
                    "--sim-dir", CHIP, "--ca", CA, "--timeout", "20"], input="pw\n", text=True,
                   capture_output=True, timeout=120, env=env)
check(p.returncode == 0, "enroll: %d %s %s" % (p.returncode, p.stdout, p.stderr))

# The plugin's configuration: the simulator, and the throwaway CA for kmsd/attestd.
CONF = write_json("luks.conf", {"provider": "sim", "ca_file": CA, "timeout_ms": 20000})
PENV = dict(os.environ, NITRIDE_SIM_DIR=CHIP, NITRIDE_LUKS_CONF=CONF)
# A sanitizer build of the plugin needs its runtimes loaded first in (uninstrumented) cryptsetup;
# cryptsetup's own allocations are not ours to leak-check.
PRELOAD = ":".join(ln.split()[2] for ln in run("ldd", PLUGIN).stdout.splitlines()
                   if re.match(r"\s*lib(asan|ubsan)\.so", ln))
if PRELOAD:
    PENV.update(LD_PRELOAD=PRELOAD, ASAN_OPTIONS="detect_leaks=0:abort_on_error=1")


def cs(*args, stdin=None):
    """cryptsetup with the built plugin in place of the system's token directory."""
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                           'mount --bind "$0" "$1" && shift && exec cryptsetup "$@"',
                           path("plugins"), TOKDIR, *args], capture_output=True, text=True,
                          timeout=120, env=PENV, input=stdin)


def hdr():
    with open(img, "rb") as f:
        return hashlib.sha256(f.read(16 << 20)).hexdigest()


p = cs("luksDump", img)
check(p.returncode == 0 and re.search(r"flow: +kms", p.stdout) and K.url in p.stdout and
      "vol-a" in p.stdout, "luksDump through the plugin: %s %s" % (p.stdout, p.stderr))
step("luksDump shows the KMS slot through the plugin")

s1 = hdr()
p = cs("open", "--token-only", "--test-passphrase", img)
check(p.returncode == 0, "open --token-only (remote): %d %s" % (p.returncode, p.stderr))
req = urllib.request.Request(K.url + "/v1/audit?after=0&limit=1000")
req.add_header("Authorization", "Bearer " + open(ADMIN_FILE).read().strip())
with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=CA), timeout=30) as r:
    rows = json.loads(r.read())["rows"]
check(any(r.get("action") == "release" and r.get("result") == "ok" and
          "purpose luks-unlock" in (r.get("detail") or "") for r in rows),
      "kmsd did not audit a luks-unlock release: %s" % rows)
check(hdr() == s1, "a remote unlock changed the header")
step("open --token-only through the plugin: attested release from kmsd")

K.stop()
t = time.monotonic()
p = cs("open", "--token-only", "--test-passphrase", img)
dt = time.monotonic() - t
check(p.returncode != 0, "kmsd down: --token-only succeeded")
# kmsd's port refuses connections: the plugin says so and steps aside at once, not at the
# configured 20 s timeout.
check("kmsd is down" in p.stderr and K.url in p.stderr and dt < 8,
      "kmsd down: %.1f s, %s" % (dt, p.stderr))
p = cs("open", "--test-passphrase", "-v", img, stdin="pw\n")
check(p.returncode == 0 and "not available here" in p.stdout + p.stderr,
      "kmsd down: no fallback to the passphrase: %d %s %s" % (p.returncode, p.stdout, p.stderr))
check(hdr() == s1, "kmsd down: header changed")
step("kmsd down: the plugin names it and steps aside (-EAGAIN) in %.2f s of its 20 s timeout, "
     "cryptsetup falls back to the passphrase" % dt)

K = ntlib.Daemon(TMP, "kmsd", KMSD, KCFG)
run(NITRIDE, "sim", "set", CHIP, "--measurement", OTHER)
p = cs("open", "--token-only", "--test-passphrase", img)
check(p.returncode != 0 and "nitride: token 0 refused" in p.stderr and
      "measurement_in" in p.stderr, "another measurement: %d %s" % (p.returncode, p.stderr))
check(hdr() == s1, "refused unlock changed the header")
run(NITRIDE, "sim", "set", CHIP, "--measurement", MEAS)
p = cs("open", "--token-only", "--test-passphrase", img)
check(p.returncode == 0, "open again: %d %s" % (p.returncode, p.stderr))
step("another measurement: refused by kmsd's policy, named; header unchanged")

K.stop()
A.stop()
shutil.rmtree(TMP)
print("OK: cryptsetup CLI with the plugin, remote flow (host test mode)")
