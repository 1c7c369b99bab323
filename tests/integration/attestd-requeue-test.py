#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""nitride-attestd answers on its HTTP event threads (inline routes) and hands a request to a
worker only when verification needs AMD KDS (tests/kds-server.c on 127.0.0.1):
- a cold KDS cache: the attestation is requeued once and succeeds; its nonce was not spent by the
  inline run (else the worker's run would be refused) and is spent by the worker's (a replay is
  refused); the nonce is counted once;
- a warm cache (certificates from the cache or from the evidence, CRL fresh): never requeued,
  no KDS request;
- a CRL due for a refresh: requeued, refreshed from the KDS, then inline again;
- with one thread of each kind, a request waiting on a slow KDS holds the worker, and a cached
  chip and /v1/challenge are answered meanwhile (an event thread answers inline only while it
  serves no other connection that is not waiting for a worker).

Usage: attestd-requeue-test.py NITRIDE NITRIDE_ATTESTD KDS_SERVER
"""
import hashlib
import json
import os
import re
import shutil
import signal
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

from jwcrypto import jwk

NITRIDE, ATTESTD, KDS = sys.argv[1], sys.argv[2], sys.argv[3]
TMP = tempfile.mkdtemp(prefix="nt-attestd-requeue-")


def write_json(name, obj):
    return ntlib.write_json(TMP, name, obj)


def start(argv, name):
    port_file = os.path.join(TMP, name + ".port")
    log = os.path.join(TMP, name + ".log")
    p = subprocess.Popen(argv + ["--port-file", port_file], stdout=open(log, "w"),
                         stderr=subprocess.STDOUT)
    p.log = log
    PROCS.append(p)
    for _ in range(200):
        if os.path.exists(port_file) and open(port_file).read().strip():
            return p, "http://127.0.0.1:%d" % int(open(port_file).read().split()[-1])
        if p.poll() is not None:
            fail("%s exited %d: %s" % (name, p.returncode, open(log).read()))
        time.sleep(0.05)
    fail("%s did not start" % name)


def stop(p):
    p.send_signal(signal.SIGTERM)
    p.wait(10)


def http(url, body=None, method=None, timeout=30):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data else "GET"))
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def metric(url, name, labels):
    """The value of one sample of attestd's /metrics (0 when absent)."""
    st, body = http(url + "/metrics")
    check(st == 200, "metrics: %d" % st)
    m = re.search(r"^%s\{%s\} (\S+)$" % (re.escape(name), re.escape(labels)), body.decode(),
                  re.M)
    return float(m.group(1)) if m else 0


def requeued(url):
    return metric(url, "nitride_attestd_http_requeued_total", 'endpoint="attest"')


def kds_stats(kds_url):
    return json.loads(http(kds_url + "/stats")[1])


def kds_mode(kds_url, query):
    st, _ = http(kds_url + "/control?" + query, method="POST")
    check(st == 200, "kds control %s: %d" % (query, st))


TEE = json.loads(jwk.JWK.generate(kty="EC", crv="P-384").export_public())


def prepare(url, chip_dir, with_certs=False):
    """A fresh challenge and a request for it: the report bound to runtime_data, with the chip's
    certificate table or without certificates (attestd must find them)."""
    st, body = http(url + "/v1/challenge", {})
    check(st == 200, "challenge %d %s" % (st, body))
    nonce = json.loads(body)["nonce"]
    runtime = {"nonce": nonce, "tee-pubkey": TEE}
    rd = hashlib.sha384(json.dumps(runtime, sort_keys=True, separators=(",", ":")).encode())
    out, certs = os.path.join(TMP, "r.bin"), os.path.join(TMP, "c.bin")
    run(NITRIDE, "report", "get", "--provider", "sim", "--sim-dir", chip_dir, "--report-data",
        (rd.digest() + bytes(16)).hex(), "--out", out, "--certs-out", certs)
    evidence = {"report": b64u(open(out, "rb").read())}
    if with_certs:
        evidence["cert_table"] = b64u(open(certs, "rb").read())
    return {"nonce": nonce, "runtime_data": runtime, "evidence": evidence}


def attest(url, request, timeout=30):
    st, body = http(url + "/v1/attest", request, timeout=timeout)
    return st, json.loads(body)


def chip(name, product):
    d = os.path.join(TMP, name)
    run(NITRIDE, "sim", "init", d, "--product", product)
    return d


SECRET = os.path.join(TMP, "challenge.key")
fd = os.open(SECRET, os.O_CREAT | os.O_WRONLY, 0o600)
os.write(fd, os.urandom(32))
os.close(fd)
POLICY = write_json("policy.json", {})


def config(name, chips, kds_url, revocation, threads=None):
    cfg = {
        "listen": "127.0.0.1:0", "plain_http": True,
        "challenge": {"secret": SECRET},
        "token": {"keys_dir": os.path.join(TMP, name + "-keys")},
        "trust_anchors": [os.path.join(c, "ark.pem") for c in chips],
        "policies": {"p": {"file": POLICY}},
        "kds": {"url": kds_url, "cache_dir": os.path.join(TMP, name + "-cache"), "timeout": 10},
        "revocation": {"mode": revocation},
    }
    if threads:
        cfg["threads"] = threads
    return write_json(name + ".json", cfg)


# ---- a cold cache is requeued once; the nonce is spent exactly once ----
A = chip("milan-a", "milan")
CRL = os.path.join(TMP, "a.crl")
run(NITRIDE, "sim", "crl", A, "--out", CRL)
kds, KURL = start([KDS, "--chip", A, "--crl", CRL], "kds")
cfg_a = config("a", [A], KURL, "require")
att, AURL = start([ATTESTD, "--config", cfg_a], "attestd-a")

check(requeued(AURL) == 0, "requeued before any attestation")
cold = prepare(AURL, A)
st, j = attest(AURL, cold)
check(st == 200 and "token" in j, "cold cache: %d %s" % (st, j))
check(requeued(AURL) == 1, "cold cache: requeued %g times, not once" % requeued(AURL))
s = kds_stats(KURL)
check(s["vcek"] == 1 and s["chain"] == 1 and s["crl"] == 1, "cold cache KDS requests: %s" % s)
check(metric(AURL, "nitride_attestd_nonces_total", 'result="ok"') == 1,
      "the requeued request's nonce was not counted once")
st, j = attest(AURL, cold)
check(st == 401 and j.get("check") == "nonce" and "already used" in j.get("error", ""),
      "replay after a requeued attestation: %d %s" % (st, j))
check(requeued(AURL) == 1, "the replay was requeued")
check(metric(AURL, "nitride_attestd_nonces_total", 'result="replayed"') == 1,
      "replay not counted")
print("ok: cold KDS cache: requeued once, attested; the nonce spent once (replay refused)")

# Warm: from the KDS cache, and with the certificates in the evidence: never requeued.
for with_certs in (False, True, False, True):
    st, j = attest(AURL, prepare(AURL, A, with_certs))
    check(st == 200, "warm cache (certs in evidence: %s): %d %s" % (with_certs, st, j))
check(requeued(AURL) == 1, "a warm-cache attestation was requeued (%g)" % requeued(AURL))
check(kds_stats(KURL)["total"] == s["total"], "warm cache went to the KDS: %s" % kds_stats(KURL))
print("ok: warm cache (KDS cache or certificates in the evidence): answered inline, no KDS")

# A CRL due for a refresh (fetched two hours ago; max_age is an hour): the event thread does not
# serve the old one, the worker refreshes it, and then requests are inline again.
stop(att)
with open(os.path.join(TMP, "a-cache", "crl", "Milan.fetched"), "w") as f:
    f.write("%d\n" % (int(time.time()) - 7200))
att, AURL = start([ATTESTD, "--config", cfg_a], "attestd-a2")
st, j = attest(AURL, prepare(AURL, A, True))
check(st == 200, "stale CRL: %d %s" % (st, j))
check(requeued(AURL) == 1, "stale CRL: requeued %g times, not once" % requeued(AURL))
check(kds_stats(KURL)["crl"] == s["crl"] + 1, "CRL not refreshed: %s" % kds_stats(KURL))
st, j = attest(AURL, prepare(AURL, A, True))
check(st == 200 and requeued(AURL) == 1, "after the refresh: %d %s, requeued %g" %
      (st, j, requeued(AURL)))
print("ok: CRL due for a refresh: requeued once, refreshed, then inline again")
stop(att)
stop(kds)

# ---- one event thread, one worker: a slow KDS holds the worker only ----
B = chip("genoa-b", "genoa")
kds, KURL = start([KDS, "--chip", A, "--chip", B], "kds2")
att, AURL = start([ATTESTD, "--config", config("ab", [A, B], KURL, "off", threads=1)],
                  "attestd-ab")
st, j = attest(AURL, prepare(AURL, A))  # A's certificates into the cache
check(st == 200 and requeued(AURL) == 1, "first A: %d %s" % (st, j))
cold_b, warm_a = prepare(AURL, B), prepare(AURL, A)
kds_mode(KURL, "mode=slow&delay_ms=2500")
res = {}


def send_b():
    res["b"] = attest(AURL, cold_b, timeout=60)


t = threading.Thread(target=send_b)
kds_before = kds_stats(KURL)["total"]
t0 = time.monotonic()
t.start()
# B's request is on the worker once the KDS has been asked (it was requeued from the event
# thread, or went to the worker directly if the event thread was serving another connection).
while kds_stats(KURL)["total"] == kds_before and time.monotonic() - t0 < 10:
    time.sleep(0.02)
check(kds_stats(KURL)["total"] > kds_before, "B's request did not reach the KDS")
t1 = time.monotonic()
st, j = attest(AURL, warm_a)
warm_s = time.monotonic() - t1
check(st == 200, "A while the worker waits for the KDS: %d %s" % (st, j))
st, _ = http(AURL + "/v1/challenge", {})
check(st == 200, "challenge while the worker waits: %d" % st)
busy_s = time.monotonic() - t1
t.join(60)
check(res.get("b", (0,))[0] == 200, "B after the slow KDS: %s" % (res.get("b"),))
check(time.monotonic() - t0 >= 2.0, "B did not wait for the slow KDS")
check(warm_s < 1.0 and busy_s < 1.5,
      "cached chip took %.2f s (challenge too: %.2f s) while the worker waited for the KDS" %
      (warm_s, busy_s))
print("ok: 1 thread: a cached chip attested in %.0f ms while the worker waited 2.5 s for the KDS"
      % (warm_s * 1000))
stop(att)
stop(kds)

shutil.rmtree(TMP)
print("PASS")
