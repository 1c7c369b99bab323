# SPDX-License-Identifier: Apache-2.0
"""Helpers shared by the Python integration tests: failing with the logs of the processes the
test started, running commands, base64url and JSON files in the test's directory."""
import base64
import json
import os
import subprocess
import sys
import time

PROCS = []  # processes started by the test; each may carry .log (path of its output)


def fail(msg):
    print("FAIL:", msg, file=sys.stderr)
    for p in PROCS:
        if p.poll() is None:
            p.kill()
        log = getattr(p, "log", None)
        if log and os.path.exists(log):
            print("--- %s ---\n%s" % (log, open(log).read()[-4000:]), file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def run(*args, ok=True):
    p = subprocess.run(list(args), capture_output=True, text=True, timeout=120)
    if ok and p.returncode != 0:
        fail("%s -> %d\n%s%s" % (" ".join(args), p.returncode, p.stdout, p.stderr))
    return p


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def write_json(directory, name, obj):
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        json.dump(obj, f)
    return path


def start_vhsmd(vhsmd, directory, sim_dir, kms_keys, attestd_jwks, issuer):
    """Starts vhsmd in directory (socket vhsm.sock, keystore, anchor; log vhsmd.log beside it)
    on the simulated chip sim_dir, pinning kmsd's release keys and attestd's JWKS. Returns the
    process (in PROCS) once its socket exists."""
    sock = os.path.join(directory, "vhsm.sock")
    log = os.path.join(os.path.dirname(directory), "vhsmd.log")
    p = subprocess.Popen([vhsmd, "--foreground", "--socket", sock, "--keystore",
                          os.path.join(directory, "keystore"), "--provider", "sim", "--sim-dir",
                          sim_dir, "--freshness-anchor", "file:" + os.path.join(directory, "anchor"),
                          "--kms-keys", kms_keys, "--attestd-jwks", attestd_jwks,
                          "--attestd-issuer", issuer], stdout=open(log, "w"),
                         stderr=subprocess.STDOUT)
    p.log = log
    PROCS.append(p)
    for _ in range(200):
        if os.path.exists(sock):
            return p
        check(p.poll() is None, "vhsmd exited at start")
        time.sleep(0.05)
    fail("vhsmd did not create its socket")
