# SPDX-License-Identifier: Apache-2.0
"""Helpers shared by the Python integration tests: failing with the logs of the processes the
test started, running commands, base64url and JSON files in the test's directory."""
import base64
import json
import os
import subprocess
import sys

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
