#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""nitride-attestd with AMD KDS (tests/kds-server.c on 127.0.0.1, serving simulated chips):
evidence without certificates makes attestd fetch the VCEK and chain; the on-disk cache serves
them after a restart; a 429 storm is backed off while cached chips keep attesting; 404 and
garbage are not cached; the CRL is checked (a revoked VCEK is refused, no CRL is 503); junk
reports (random CHIP_IDs) cannot make attestd hammer the KDS nor hold its worker threads while a
cached chip attests, and a junk CHIP_ID's 404 is remembered.

Usage: attestd-kds-test.py NITRIDE NITRIDE_ATTESTD KDS_SERVER
"""
import hashlib
import json
import os
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
TMP = tempfile.mkdtemp(prefix="nt-attestd-kds-")


def write_json(name, obj):
    return ntlib.write_json(TMP, name, obj)


def start(argv, name):
    port_file = os.path.join(TMP, name + ".port")
    if os.path.exists(port_file):
        os.unlink(port_file)
    log = os.path.join(TMP, name + ".log")
    p = subprocess.Popen(argv + ["--port-file", port_file], stdout=open(log, "w"),
                         stderr=subprocess.STDOUT)
    p.log = log
    PROCS.append(p)
    for _ in range(200):
        if os.path.exists(port_file) and open(port_file).read().strip():
            return p, int(open(port_file).read().split()[-1])
        if p.poll() is not None:
            fail("%s exited %d: %s" % (name, p.returncode, open(log).read()))
        time.sleep(0.05)
    fail("%s did not start" % name)


def stop(p):
    p.send_signal(signal.SIGTERM)
    p.wait(10)


def http(url, body=None, method=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data else "GET"))
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def chip(name, product):
    d = os.path.join(TMP, name)
    run(NITRIDE, "sim", "init", d, "--product", product)
    return d


TEE = json.loads(jwk.JWK.generate(kty="EC", crv="P-384").export_public())


def attest_request(url, chip_dir):
    """A fresh challenge and the chip's report bound to it: (nonce, runtime_data, report)."""
    st, body, _ = http(url + "/v1/challenge", {})
    check(st == 200, "challenge %d %s" % (st, body))
    nonce = json.loads(body)["nonce"]
    runtime = {"nonce": nonce, "tee-pubkey": TEE}
    rd = hashlib.sha384(json.dumps(runtime, sort_keys=True, separators=(",", ":")).encode())
    out = os.path.join(TMP, "r.bin")
    run(NITRIDE, "report", "get", "--provider", "sim", "--sim-dir", chip_dir, "--report-data",
        (rd.digest() + bytes(16)).hex(), "--out", out)
    return nonce, runtime, open(out, "rb").read()


def attest_send(url, nonce, runtime, report):
    # No certificates in the evidence: attestd must find them (cache or KDS).
    st, body, h = http(url + "/v1/attest", {"nonce": nonce, "runtime_data": runtime,
                                            "evidence": {"report": b64u(report)}})
    return st, json.loads(body), h


def attest(url, chip_dir):
    return attest_send(url, *attest_request(url, chip_dir))


CHIP_ID = 0x1A0  # offset of CHIP_ID (64 bytes) in the report


def junk(report):
    """The genuine report with a random CHIP_ID: the signature no longer matches, but the VCEK
    for that CHIP_ID is asked for before the signature can be checked."""
    return report[:CHIP_ID] + os.urandom(64) + report[CHIP_ID + 64:]


def kds_stats(kds_url):
    return json.loads(http(kds_url + "/stats")[1])


def kds_mode(kds_url, query):
    st, body, _ = http(kds_url + "/control?" + query, method="POST")
    check(st == 200, "kds control %s: %d" % (query, st))


SECRET = os.path.join(TMP, "challenge.key")
fd = os.open(SECRET, os.O_CREAT | os.O_WRONLY, 0o600)
os.write(fd, os.urandom(32))
os.close(fd)
POLICY = write_json("policy.json", {})


def config(name, chips, kds_port, **kds_extra):
    kds = {"url": "http://127.0.0.1:%d" % kds_port, "cache_dir": os.path.join(TMP, name + "-cache"),
           "timeout": 2, "backoff_max": 30}
    kds.update(kds_extra)
    cfg = {
        "listen": "127.0.0.1:0", "plain_http": True,
        "challenge": {"secret": SECRET},
        "token": {"keys_dir": os.path.join(TMP, name + "-keys")},
        "trust_anchors": [os.path.join(c, "ark.pem") for c in chips],
        "policies": {"p": {"file": POLICY}},
        "kds": kds,
        "revocation": {"mode": "off"},
    }
    return cfg


# ---- certificates from the KDS, cache, back-off ----
# One chip per product: AMD has one ASK per product, and the cache keeps one chain per product
# (each simulated chip has a chain of its own).
A, B, C = chip("milan-a", "milan"), chip("genoa-b", "genoa"), chip("turin-c", "turin")
kds, kport = start([KDS, "--chip", A, "--chip", B, "--chip", C], "kds")
KURL = "http://127.0.0.1:%d" % kport
cfg_path = write_json("k.json", config("k", [A, B, C], kport))
att, aport = start([ATTESTD, "--config", cfg_path], "attestd")
AURL = "http://127.0.0.1:%d" % aport

st, j, _ = attest(AURL, A)
check(st == 200, "cold fetch: %d %s" % (st, j))
s = kds_stats(KURL)
check(s["vcek"] == 1 and s["chain"] == 1, "cold fetch requests: %s" % s)
st, j, _ = attest(AURL, A)
check(st == 200 and kds_stats(KURL)["total"] == s["total"], "second attest went to the KDS")
print("ok: cold fetch (1 VCEK + 1 chain request), then cached")

stop(att)
att, aport = start([ATTESTD, "--config", cfg_path], "attestd2")
AURL = "http://127.0.0.1:%d" % aport
st, j, _ = attest(AURL, A)
check(st == 200, "after restart: %d %s" % (st, j))
check(kds_stats(KURL)["total"] == s["total"], "restart went to the KDS: %s" % kds_stats(KURL))
print("ok: cache hit after restart, no KDS request")

# Turin: the URL form with fmcSPL and an 8-byte hwID.
st, j, _ = attest(AURL, C)
check(st == 200, "turin via KDS: %d %s" % (st, j))
check("fmcSPL=" in kds_stats(KURL)["last_uri"] or kds_stats(KURL)["vcek"] == 2,
      "turin URL: %s" % kds_stats(KURL))

# 429 storm: the uncached chip gets 503 quickly, the cached one keeps attesting, and the KDS
# sees few requests.
kds_mode(KURL, "mode=429&retry_after=3")
before = kds_stats(KURL)["total"]
st, j, h = attest(AURL, B)
check(st == 503 and j.get("check") == "certificates", "uncached during 429: %d %s" % (st, j))
check("Retry-After" in h or "retry-after" in {k.lower() for k in h}, "503 without Retry-After")
t0 = time.monotonic()
for _ in range(10):
    st, j, _ = attest(AURL, A)
    check(st == 200, "cached chip refused during a 429 storm: %d %s" % (st, j))
    st, j, _ = attest(AURL, B)
    check(st == 503, "uncached chip during storm: %d %s" % (st, j))
storm = kds_stats(KURL)["total"] - before
check(storm <= 2, "KDS hammered during back-off: %d requests" % storm)
st, body, _ = http(AURL + "/metrics")
check(b'event="http_429"' in body, "429 not counted in metrics")
kds_mode(KURL, "mode=ok")
time.sleep(3.5)
st, j, _ = attest(AURL, B)
check(st == 200, "after the storm: %d %s" % (st, j))
print("ok: 429 storm: %d KDS requests in %.1f s, cached chip kept attesting" %
      (storm, time.monotonic() - t0))

# Junk: 20 reports with random CHIP_IDs at once while the KDS is slow (2 s). At most
# kds.max_concurrent_fetches (2) of them wait for the KDS, the others get 503 at once, so the
# HTTP worker threads stay free: a cached chip attests quickly meanwhile, and the KDS sees few
# requests (also bounded by kds.max_fetches_per_s: burst 10).
kds_mode(KURL, "mode=slow&delay_ms=2000")
before = kds_stats(KURL)["total"]
n, rt, rep = attest_request(AURL, A)
valid = attest_request(AURL, A)
junk_st = []


def send_junk():
    st, j, _ = attest_send(AURL, n, rt, junk(rep))
    junk_st.append((st, j.get("check")))


t0 = time.monotonic()
junkers = [threading.Thread(target=send_junk) for _ in range(20)]
for t in junkers:
    t.start()
time.sleep(0.3)
t1 = time.monotonic()
st, j, _ = attest_send(AURL, *valid)
valid_s = time.monotonic() - t1
for t in junkers:
    t.join(60)
junk_s = time.monotonic() - t0
check(st == 200, "cached chip during junk: %d %s" % (st, j))
check(valid_s < 1.0, "cached chip waited %.2f s behind junk requests" % valid_s)
check(len(junk_st) == 20 and all(s in (401, 503) for s, _ in junk_st), "junk: %s" % junk_st)
check(any(s == 503 for s, _ in junk_st), "no junk request refused: %s" % junk_st)
junk_kds = kds_stats(KURL)["total"] - before
check(junk_kds <= 10, "20 junk requests caused %d KDS requests" % junk_kds)
st, body, _ = http(AURL + "/metrics")
check(b'event="fetch_refused"' in body, "fetch_refused not counted in metrics")
print("ok: 20 junk attests: %d KDS requests, %d refused (503), all in %.1f s; cached chip "
      "attested in %.0f ms meanwhile" % (junk_kds, sum(s == 503 for s, _ in junk_st), junk_s,
                                         valid_s * 1000))
# A junk CHIP_ID's 404 is remembered (kds.negative_ttl): asking again costs no KDS request.
kds_mode(KURL, "mode=ok")
time.sleep(2.5)  # the fetch budget refills (5/s)
bad = junk(rep)
st, j, _ = attest_send(AURL, n, rt, bad)
check(st == 401 and j.get("check") == "certificates", "junk CHIP_ID: %d %s" % (st, j))
before = kds_stats(KURL)["total"]
for _ in range(3):
    st, j, _ = attest_send(AURL, n, rt, bad)
    check(st == 401 and j.get("check") == "certificates", "junk CHIP_ID again: %d %s" % (st, j))
check(kds_stats(KURL)["total"] == before, "a 404 was asked again: %s" % kds_stats(KURL))
st, body, _ = http(AURL + "/metrics")
check(b'event="negative_hit"' in body, "negative_hit not counted in metrics")
print("ok: a junk CHIP_ID's 404 is remembered")

# 404 and garbage are not cached: once the KDS behaves, the chip attests.
D = chip("milan-d", "milan")
stop(kds)
kds, kport2 = start([KDS, "--chip", D], "kds2")
KURL = "http://127.0.0.1:%d" % kport2
cfg2 = config("k2", [D], kport2)
cfg2["kds"]["backoff_max"] = 1
cfg2_path = write_json("k2.json", cfg2)
stop(att)
att, aport = start([ATTESTD, "--config", cfg2_path], "attestd3")
AURL = "http://127.0.0.1:%d" % aport
kds_mode(KURL, "mode=garbage&count=2")
st, j, _ = attest(AURL, D)
check(st != 200, "garbage from the KDS accepted: %d %s" % (st, j))
cache_files = [os.path.join(r, f) for r, _, fs in os.walk(cfg2["kds"]["cache_dir"]) for f in fs]
for f in cache_files:
    data = open(f, "rb").read()
    check(b"<html" not in data.lower(), "error page cached in %s" % f)
time.sleep(1.5)
kds_mode(KURL, "mode=404&count=1")
st, j, _ = attest(AURL, D)
check(st in (401, 503) and j.get("check") in ("certificates", "cert_chain"),
      "404: %d %s" % (st, j))
time.sleep(1.5)
st, j, _ = attest(AURL, D)
check(st == 200, "after 404 and garbage: %d %s" % (st, j))
print("ok: garbage and 404 not cached")
stop(att)
stop(kds)

# ---- kds prefetch, then attest with the KDS gone; the cache as an offline bundle ----
E = chip("genoa-e", "genoa")
crl_e = os.path.join(TMP, "e.crl")
run(NITRIDE, "sim", "crl", E, "--out", crl_e)
kds, kp = start([KDS, "--chip", E, "--crl", crl_e], "kds-prefetch")
cfg = config("pf", [E], kp)
pf_path = write_json("pf.json", cfg)
rep = os.path.join(TMP, "e-report.bin")
run(NITRIDE, "report", "get", "--provider", "sim", "--sim-dir", E, "--report-data", "00" * 64,
    "--out", rep)
p = run(ATTESTD, "kds", "prefetch", "--config", pf_path, "--report", rep)
check(kds_stats("http://127.0.0.1:%d" % kp)["vcek"] == 1, "prefetch did not fetch the VCEK")
stop(kds)  # the KDS is gone from now on
att, aport = start([ATTESTD, "--config", pf_path], "attestd-pf")
st, j, _ = attest("http://127.0.0.1:%d" % aport, E)
check(st == 200, "prefetched chip with the KDS down: %d %s" % (st, j))
stop(att)
offline = os.path.join(TMP, "offline")
shutil.copytree(cfg["kds"]["cache_dir"], offline)
cfg_off = config("off", [E], kp)
cfg_off["kds"] = {"offline_dir": offline}
att, aport = start([ATTESTD, "--config", write_json("off.json", cfg_off)], "attestd-off")
st, j, _ = attest("http://127.0.0.1:%d" % aport, E)
check(st == 200, "offline bundle: %d %s" % (st, j))
stop(att)
print("ok: kds prefetch, then attestation with the KDS down; offline bundle")

# ---- revocation: AMD's CRL from the KDS ----
R = chip("milan-r", "milan")
crl_ok, crl_rev = os.path.join(TMP, "ok.crl"), os.path.join(TMP, "rev.crl")
run(NITRIDE, "sim", "crl", R, "--out", crl_ok)
run(NITRIDE, "sim", "crl", R, "--revoke", "vcek", "--out", crl_rev)

kds, kp = start([KDS, "--chip", R, "--crl", crl_ok], "kds-crl-ok")
cfg = config("r1", [R], kp)
cfg["revocation"] = {"mode": "require"}
att, aport = start([ATTESTD, "--config", write_json("r1.json", cfg)], "attestd-r1")
st, j, _ = attest("http://127.0.0.1:%d" % aport, R)
check(st == 200, "CRL without the VCEK: %d %s" % (st, j))
check(kds_stats("http://127.0.0.1:%d" % kp)["crl"] >= 1, "CRL never fetched")
stop(att)
stop(kds)

kds, kp = start([KDS, "--chip", R, "--crl", crl_rev], "kds-crl-rev")
cfg = config("r2", [R], kp)
cfg["revocation"] = {"mode": "require"}
att, aport = start([ATTESTD, "--config", write_json("r2.json", cfg)], "attestd-r2")
st, j, _ = attest("http://127.0.0.1:%d" % aport, R)
check(st == 401 and j.get("check") == "revocation", "revoked VCEK: %d %s" % (st, j))
print("ok: CRL checked; revoked VCEK refused: %s" % j["error"])
stop(att)

# No CRL obtainable and none cached: 503 in require mode.
kds_mode("http://127.0.0.1:%d" % kp, "mode=500")
cfg = config("r3", [R], kp)
cfg["revocation"] = {"mode": "require"}
att, aport = start([ATTESTD, "--config", write_json("r3.json", cfg)], "attestd-r3")
st, j, _ = attest("http://127.0.0.1:%d" % aport, R)
check(st == 503, "no CRL, require: %d %s" % (st, j))
stop(att)
stop(kds)

shutil.rmtree(TMP)
print("PASS")
