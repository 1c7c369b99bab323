#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""`nitride agent` end to end on 127.0.0.1: the real nitride-attestd and nitride-kmsd over TLS
(throwaway CA), a real vhsmd (agent channel: AGENT_WAIT / AGENT_DONE, parked requests), and a
simulated chip. Applications are `vhsm encrypt` runs as other uids.

- strict configuration (unknown member, duplicate key, key outside kms/): exit 3 naming it;
- --once: prefetch then exit 0; a refusal among the keys -> 13; kmsd down -> 14; a CA that
  does not verify the services -> 4 at once;
- Case B through the daemon: an application's call on a missing kms/ key parks, the agent
  fetches, the call succeeds; the next call is local (no new token from attestd, one release);
- 20 concurrent applications on one missing key: all succeed, exactly one release;
- a policy refusal: the application gets exit 13 with kmsd's rule; not retried;
- a token kmsd does not accept (signed by another attestd: kmsd's 401): exit 13, not retried;
- kmsd unreachable: retried with backoff, then exit 14 (unavailable) within the deadline;
- volume_uuid: released with the right uuid; the wrong one refused naming volume_uuid_eq;
- prefetch at start; refresh of an attested key before its verdict ends (short token lifetime);
  a stale attestation: the agent attests again without a release;
- the agent's memory holds none of the secrets (the scanner finds a known marker first);
- 50 agents (one key each) in parallel on one vhsmd: all correct, in bounded time;
- vhsmd restarted: the agent reconnects; SIGTERM: exit 0.

Usage: agent-test.py NITRIDE NITRIDE_ATTESTD NITRIDE_KMSD VHSMD VHSM (as root)
"""
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ntlib  # noqa: E402
from ntlib import PROCS, b64u, check, fail, run  # noqa: E402

NITRIDE, ATTESTD, KMSD, VHSMD, VHSM = sys.argv[1:6]
if os.geteuid() != 0:
    print("skip: the agent channel and imports are root only; applications run as other uids")
    sys.exit(77)
TMP = tempfile.mkdtemp(prefix="nt-agent-")
os.chmod(TMP, 0o755)
T0 = time.monotonic()
APP_UIDS = list(range(2300, 2310))

W = ntlib.Workdir(TMP)
path, write_json, write_secret_file, step = W.path, W.write_json, W.write_secret_file, W.step


# ---- the chip, TLS ----
MEAS, OTHER_MEAS = "11" * 48, "33" * 48
CHIP = path("chip")
run(NITRIDE, "sim", "init", CHIP, "--product", "milan")
run(NITRIDE, "sim", "set", CHIP, "--measurement", MEAS)


def openssl(*args):
    run("openssl", *args)


CA = ntlib.make_tls(TMP)


def Daemon(name, exe, cfg):
    return ntlib.Daemon(TMP, name, exe, cfg)


ISSUER = ntlib.ISSUER
TOKEN_LIFETIME = 10  # short: the attested key must be refreshed during the test


def attestd(name, lifetime):
    return Daemon(name, ATTESTD, ntlib.attestd_config(W, name, CHIP, [MEAS], lifetime))


A = attestd("attestd", TOKEN_LIFETIME)
# Another attestd with its own signing keys: kmsd does not know them (401 unknown key).
A2 = attestd("attestd2", 300)
ADMIN_TOKEN = b64u(os.urandom(32))
K = Daemon("kmsd", KMSD, ntlib.kmsd_config(
    W, "kmsd", A.url, CA, write_secret_file("admin.token", ADMIN_TOKEN.encode())))
CTX = ssl.create_default_context(cafile=CA)


def http(url, body=None):
    return ntlib.admin_http(url, ADMIN_TOKEN, CTX, body)


VOL_UUID, WRONG_UUID = "0f8fad5b-d9cb-469f-a165-70867728950e", "7c9e6679-7425-40de-944b-e07fc1f90ae7"
ACL = {"use_uid": [0] + APP_UIDS}
VALUES = {}


def secret(sid, name, rules=None, attributes=None):
    VALUES[sid] = os.urandom(32)
    st, b = http(K.url + "/v1/secrets", {
        "id": sid, "name": name, "type": "aes256", "value": b64u(VALUES[sid]),
        "policy": {"version": 1, "rules": rules or {"measurement_in": [MEAS]}},
        "attributes": attributes or {"policy": "local", "acl": ACL}})
    check(st == 201, "create %s: %d %s" % (sid, st, b))


secret("app-key", "app")
secret("crowd-key", "crowd")
secret("other-key", "other", {"measurement_in": [OTHER_MEAS]})
secret("tok-key", "tok")
secret("down-key", "down")
secret("pre-key", "pre")
secret("att-key", "att", attributes={"policy": "attested", "max_age": 600, "acl": ACL})
secret("vol-key", "vol", {"measurement_in": [MEAS], "volume_uuid_eq": VOL_UUID})
secret("volbad-key", "volbad", {"measurement_in": [MEAS], "volume_uuid_eq": VOL_UUID})
secret("once1-key", "once1")
secret("once2-key", "once2")
secret("late-key", "late")
N_PAR = 50
for i in range(N_PAR):
    secret("par%d-key" % i, "par%d" % i)
step("attestd x2, kmsd, %d secrets" % len(VALUES))

# ---- vhsmd, pinning kmsd's release keys and attestd's token keys ----
VT = path("vhsm")
os.makedirs(VT, mode=0o755)
SOCK = os.path.join(VT, "vhsm.sock")
with open(path("kms-keys.json"), "wb") as f:
    f.write(http(K.url + "/v1/release-keys")[1])
with open(path("att-jwks.json"), "wb") as f:
    f.write(http(A.url + "/.well-known/jwks.json")[1])
vp = ntlib.start_vhsmd(VHSMD, VT, CHIP, path("kms-keys.json"), path("att-jwks.json"),
                       ISSUER)
V = [VHSM, "--socket", SOCK]


def has_key(name):
    # KEY_LIST, not KEY_INFO: an operation on a missing key an agent serves would be parked.
    p = run(*V, "--json", "key", "list")
    return any(k.get("name") == name for k in json.loads(p.stdout))


def releases(sid):
    rows = json.loads(run(NITRIDE, "kms", "--url", K.url, "--ca", CA, "--admin-token-file",
                          path("admin.token"), "--json", "audit", "show").stdout)
    return [r for r in rows if r.get("action") == "release" and r.get("secret_id") == sid]


def tokens_issued(a):
    st, body = http(a.url + "/metrics")
    check(st == 200, "attestd metrics: %d" % st)
    return sum(float(m.group(1)) for m in
               re.finditer(r"^nitride_attestd_tokens_total\{[^}]*\} (\S+)$", body.decode(), re.M))


def jwks_served(a):
    """GET /.well-known/jwks.json requests attestd a answered."""
    st, body = http(a.url + "/metrics")
    check(st == 200, "attestd metrics: %d" % st)
    return sum(float(m.group(1)) for m in re.finditer(
        r'^nitride_attestd_http_requests_total\{endpoint="[^"]*jwks[^"]*"[^}]*\} (\S+)$',
        body.decode(), re.M))


def app(key, uid=APP_UIDS[0], data=b"agent test data\n"):
    """Starts `vhsm encrypt key` as uid (an application); returns the process."""
    p = subprocess.Popen(V + ["encrypt", key], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, user=uid, group=uid, extra_groups=[])
    p.stdin.write(data)
    p.stdin.close()
    return p


def app_wait(p, timeout=60):
    try:
        out = p.stdout.read()
        err = p.stderr.read().decode(errors="replace")
        rc = p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        fail("an application's call did not end within %d s" % timeout)
    return rc, out, err


def app_run(key, uid=APP_UIDS[0]):
    return app_wait(app(key, uid))


def service(url):
    return {"url": url, "ca": CA}


def agent_config(name, secrets, deadline=10, refresh_before=4, **kw):
    cfg = {"attestd": service(A.url), "kms": service(K.url), "vhsm_socket": SOCK,
           "retry": {"deadline_s": deadline, "initial_ms": 100, "max_ms": 1000},
           "refresh_before_s": refresh_before, "secrets": secrets}
    cfg.update(kw)
    return write_json(name + ".json", cfg)


def agent_once(cfg):
    return run(NITRIDE, "agent", "--once", "--config", cfg, "--provider", "sim", "--sim", CHIP,
               ok=False)


class Agent:
    def __init__(self, name, cfg):
        self.log = path(name + ".log")
        self.p = subprocess.Popen([NITRIDE, "agent", "--config", cfg, "--provider", "sim",
                                   "--sim", CHIP], stdout=open(self.log, "w"),
                                  stderr=subprocess.STDOUT)
        self.p.log = self.log
        PROCS.append(self.p)

    def text(self):
        return open(self.log).read()

    def wait_serving(self, timeout=30):
        end = time.monotonic() + timeout
        while "Serving" not in self.text():
            check(self.p.poll() is None, "the agent exited %s at start" % self.p.returncode)
            check(time.monotonic() < end, "the agent did not connect to vhsmd")
            time.sleep(0.05)

    def stop(self):
        t = time.monotonic()
        self.p.send_signal(signal.SIGTERM)
        rc = self.p.wait(15)
        check(rc == 0, "agent exit %s on SIGTERM" % rc)
        check(time.monotonic() - t < 6, "agent took %.1f s to stop" % (time.monotonic() - t))


def wait_for(cond, what, timeout=30):
    end = time.monotonic() + timeout
    while not cond():
        check(time.monotonic() < end, "timed out waiting for " + what)
        time.sleep(0.1)


# ================= configuration: strict =================
for cfg, needle in (
        ({"attestd": service(A.url), "kms": service(K.url), "secrets": [
            {"key": "kms/x", "secret_id": "x"}], "bogus": 1}, '"bogus"'),
        ({"attestd": service(A.url), "kms": service(K.url), "secrets": [
            {"key": "kms/x", "secret_id": "x", "prefech": True}], }, '"prefech"'),
        ({"attestd": service(A.url), "kms": service(K.url), "secrets": [
            {"key": "kms/x", "secret_id": "x"}, {"key": "kms/x", "secret_id": "y"}]},
         "configured twice"),
        ({"attestd": service(A.url), "kms": service(K.url), "secrets": [
            {"key": "1000/x", "secret_id": "x"}]}, "not a key name in kms/"),
        ({"kms": service(K.url), "secrets": [{"key": "kms/x", "secret_id": "x"}]}, '"attestd"'),
        ({"attestd": service(A.url), "kms": service(K.url), "retry": {"deadline_s": "5"},
          "secrets": [{"key": "kms/x", "secret_id": "x"}]}, '"deadline_s"'),
        ({"attestd": service(A.url), "kms": service(K.url), "secrets": [
            {"key": "kms/x", "secret_id": "x", "volume_uuid": "nope"}]}, "not a UUID"),
        ({"attestd": service("http://attestd.example:80"), "kms": service(K.url), "secrets": [
            {"key": "kms/x", "secret_id": "x"}]}, "plain http")):
    p = run(NITRIDE, "agent", "--config", write_json("bad.json", cfg), ok=False)
    check(p.returncode == 3 and needle in p.stderr, "bad config %s: %d %s" % (needle, p.returncode,
                                                                             p.stderr))
p = run(NITRIDE, "agent", "--check", "--config", agent_config("good", [
    {"key": "kms/x", "secret_id": "x"}]))
check("1 secret" in p.stdout, "--check: %s" % p.stdout)
step("strict configuration: unknown members, duplicates, bad names and URLs refused (exit 3)")

# ================= --once =================
closed_sock = socket.socket()
closed_sock.bind(("127.0.0.1", 0))
CLOSED = "https://127.0.0.1:%d" % closed_sock.getsockname()[1]  # bound, not listening: refused
p = agent_once(agent_config("once1", [{"key": "kms/once1", "secret_id": "once1-key",
                                       "prefetch": True}]))
check(p.returncode == 0, "--once: %d %s" % (p.returncode, p.stderr))
check(has_key("kms/once1"), "--once did not import kms/once1")
p = agent_once(agent_config("once2", [
    {"key": "kms/other", "secret_id": "other-key", "prefetch": True},
    {"key": "kms/once2", "secret_id": "once2-key", "prefetch": True}]))
check(p.returncode == 13 and "measurement_in" in p.stderr,
      "--once with a refusal: %d %s" % (p.returncode, p.stderr))
check(has_key("kms/once2") and not has_key("kms/other"), "--once: once2 and not other")
t = time.monotonic()
p = agent_once(agent_config("once3", [{"key": "kms/down", "secret_id": "down-key",
                                       "prefetch": True, "kms": service(CLOSED)}], deadline=2))
check(p.returncode == 14 and "retrying" in p.stderr, "--once kmsd down: %d %s" %
      (p.returncode, p.stderr))
check(time.monotonic() - t < 8, "--once kmsd down took %.1f s" % (time.monotonic() - t))
# A CA that did not sign the services' certificates: TLS refused at once, not retried.
openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", path("other-ca.key"), "-out", path("other-ca.pem"), "-days", "2", "-subj",
        "/CN=other-ca", "-addext", "basicConstraints=critical,CA:TRUE")
t = time.monotonic()
p = agent_once(agent_config("once4", [{"key": "kms/once3", "secret_id": "once2-key",
                                       "prefetch": True}],
                            attestd={"url": A.url, "ca": path("other-ca.pem")}))
check(p.returncode == 4 and "TLS" in p.stderr and "retrying" not in p.stderr,
      "--once with the wrong CA: %d %s" % (p.returncode, p.stderr))
check(time.monotonic() - t < 8, "--once with the wrong CA took %.1f s" % (time.monotonic() - t))
step("--once: 0 when fetched, 13 with a refusal among the keys, 14 when kmsd is down, "
     "4 when TLS does not verify against the configured CA")

# ================= the daemon =================
MARKER = "marker-" + os.urandom(12).hex()
main_cfg = agent_config("agent", [
    {"key": "kms/app", "secret_id": "app-key"},
    {"key": "kms/crowd", "secret_id": "crowd-key"},
    {"key": "kms/other", "secret_id": "other-key"},
    {"key": "kms/tok", "secret_id": "tok-key", "attestd": service(A2.url)},
    {"key": "kms/pre", "secret_id": "pre-key", "prefetch": True},
    {"key": "kms/att", "secret_id": "att-key", "prefetch": True},
    {"key": "kms/vol", "secret_id": "vol-key", "volume_uuid": VOL_UUID},
    {"key": "kms/volbad", "secret_id": "volbad-key", "volume_uuid": WRONG_UUID},
    {"key": "kms/late", "secret_id": "late-key"},
    {"key": "kms/marker", "secret_id": MARKER}])
AG = Agent("agent", main_cfg)
AG.wait_serving()
t_att = time.monotonic()

# ---- prefetch ----
wait_for(lambda: has_key("kms/pre") and has_key("kms/att"), "the prefetch of kms/pre, kms/att")
check(len(releases("pre-key")) == 1, "pre-key releases: %s" % releases("pre-key"))
step("prefetch at start: kms/pre and kms/att imported without any application request")

# ---- Case B, then Case A ----
check(not has_key("kms/app"), "kms/app exists before the test")
tokens0 = tokens_issued(A)
jwks0 = jwks_served(A)
check(jwks0 >= 1, "attestd served its JWKS %s times before Case B" % jwks0)
rc, ct, err = app_run("kms/app")
check(rc == 0 and len(ct) > 16, "Case B: exit %d: %s" % (rc, err))
check(has_key("kms/app") and len(releases("app-key")) == 1, "Case B: one release of app-key")
tokens1 = tokens_issued(A)
check(tokens1 == tokens0 + 1, "Case B: %s tokens" % (tokens1 - tokens0))
# The agent keeps attestd's JWKS from the prefetch: the token is checked without a download.
check(jwks_served(A) == jwks0, "Case B downloaded the JWKS again (%s -> %s)" %
      (jwks0, jwks_served(A)))
rc, ct, err = app_run("kms/app", APP_UIDS[1])
check(rc == 0, "Case A: exit %d: %s" % (rc, err))
check(tokens_issued(A) == tokens1, "Case A attested again")
check(len(releases("app-key")) == 1, "Case A released again")
step("Case B: the call parked, the agent fetched kms/app, the call succeeded; "
     "Case A: the next call local (no token, no release)")

# ---- 20 concurrent requests for one missing key: one flow ----
ps = [app("kms/crowd", APP_UIDS[i % len(APP_UIDS)]) for i in range(20)]
res = [app_wait(p) for p in ps]
check(all(r[0] == 0 for r in res), "crowd: %s" % [(r[0], r[2]) for r in res if r[0] != 0])
rel = releases("crowd-key")
check(len(rel) == 1, "20 concurrent requests -> %d releases" % len(rel))
step("20 concurrent applications on a missing key: all served, exactly one release")

# ---- policy refusal: exit 13 with kmsd's rule, not retried ----
other0 = len(releases("other-key"))  # --once tried it already
t = time.monotonic()
rc, _, err = app_run("kms/other")
check(rc == 13 and "measurement_in" in err, "refusal: exit %d: %s" % (rc, err))
check(time.monotonic() - t < 10, "the refusal took %.1f s" % (time.monotonic() - t))
check(len(releases("other-key")) == other0 + 1, "other-key attempts: %s" % releases("other-key"))
check(not has_key("kms/other"), "kms/other imported despite the refusal")
step("a policy refusal: the application gets exit 13 with the rule; one attempt, no import")

# ---- a local user looping on the refused key: answered from the last attempt, no new release
# request within the hold-down (the services are not hit without bound)
for i in range(6):
    rc, _, err = app_run("kms/other", APP_UIDS[i % len(APP_UIDS)])
    check(rc == 13 and "measurement_in" in err, "refusal loop: exit %d: %s" % (rc, err))
check(len(releases("other-key")) == other0 + 1,
      "a loop on a refused key hit kmsd %d times" % (len(releases("other-key")) - other0))
time.sleep(5.2)
rc, _, err = app_run("kms/other")
check(rc == 13 and len(releases("other-key")) == other0 + 2, "after the hold-down: exit %d, %d "
      "attempts" % (rc, len(releases("other-key")) - other0))
step("a loop on a refused key: answered from the agent's last attempt for 5 s, then asked again")

# ---- kmsd's 401 (a token signed by a key kmsd does not know): refused, not retried ----
t = time.monotonic()
rc, _, err = app_run("kms/tok")
check(rc == 13 and "401" in err, "401 path: exit %d: %s" % (rc, err))
check(time.monotonic() - t < 10, "the 401 took %.1f s" % (time.monotonic() - t))
tok_lines = [ln for ln in AG.text().splitlines() if "[kms/tok]" in ln]
check(not any("retrying" in ln for ln in tok_lines), "the 401 was retried: %s" % tok_lines)
check(not has_key("kms/tok"), "kms/tok imported")
step("a token kmsd refuses (401, unknown signing key): exit 13, not retried")

# ---- volume_uuid ----
rc, _, err = app_run("kms/vol")
check(rc == 0, "volume_uuid: exit %d: %s" % (rc, err))
rc, _, err = app_run("kms/volbad")
check(rc == 13 and "volume_uuid_eq" in err, "wrong volume_uuid: exit %d: %s" % (rc, err))
check(not has_key("kms/volbad"), "kms/volbad imported")
step("volume_uuid sent with the release: the right one released, a wrong one refused")
t_last_verdict = time.monotonic()  # the last flow that gave vhsmd a verdict (besides kms/att's)

# ---- kmsd unreachable: another agent (short deadline) serving kms/down ----
AG2 = Agent("agent2", agent_config("agent2", [
    {"key": "kms/down", "secret_id": "down-key", "kms": service(CLOSED)}], deadline=3))
AG2.wait_serving()
t = time.monotonic()
rc, _, err = app_run("kms/down")
el = time.monotonic() - t
check(rc == 14, "kmsd down: exit %d: %s" % (rc, err))
check(2.0 < el < 10, "kmsd down: %.1f s for a 3 s deadline" % el)
check(AG2.text().count("retrying") >= 2 and "Giving up" in AG2.text(),
      "kmsd down: no retries: %s" % AG2.text())
AG2.stop()
step("kmsd unreachable: retried with backoff, the application gets exit 14 within the deadline")

# ---- memory: none of the secrets in the agent's memory ----


def scan(pid, needles):
    """The needles found in the readable mappings of pid (those up to 1 GiB: ASan's shadow and
    allocator reservations are terabytes of untouched address space)."""
    found = set()
    with open("/proc/%d/maps" % pid) as maps, open("/proc/%d/mem" % pid, "rb", 0) as mem:
        for line in maps:
            f = line.split()
            if "r" not in f[1] or (len(f) > 5 and f[5] in ("[vvar]", "[vsyscall]")):
                continue
            lo, hi = (int(x, 16) for x in f[0].split("-"))
            if hi - lo > 1 << 30:
                continue
            try:
                mem.seek(lo)
                chunk = mem.read(hi - lo)
            except OSError:
                continue
            for n in needles:
                if n in chunk:
                    found.add(n)
    return found


fetched = ["app-key", "crowd-key", "pre-key", "att-key", "vol-key"]
needles = {}
for sid in fetched:
    needles[VALUES[sid]] = sid
    needles[b64u(VALUES[sid]).encode()] = sid + " (base64url)"
needles[MARKER.encode()] = "marker"
found = scan(AG.p.pid, list(needles))
leaked = [needles[n] for n in found if n != MARKER.encode()]
check(not leaked, "secrets in the agent's memory: %s" % leaked)
if MARKER.encode() in found:
    step("the agent's memory (%d secrets fetched) holds none of them; the scanner finds the "
         "marker" % len(fetched))
elif "libasan" in open("/proc/%d/maps" % AG.p.pid).read():
    print("note: ASan build: its heap lies in reservations too large to scan; scan incomplete")
else:
    fail("the scanner did not find the marker in the agent's memory")

# ---- refresh of the attested key before its verdict ends ----
wait_for(lambda: "[kms/att] flow started (refresh)" in AG.text(), "a refresh of kms/att",
         timeout=max(5, TOKEN_LIFETIME + 5 - (time.monotonic() - t_att)))
# Past the exp of every token other flows gave vhsmd: only a refreshed verdict keeps kms/att
# usable without a stale job.
left = TOKEN_LIFETIME + 2 - (time.monotonic() - t_last_verdict)
if left > 0:
    time.sleep(left)
rc, _, err = app_run("kms/att")
check(rc == 0, "kms/att after the first token expired: exit %d: %s" % (rc, err))
att_lines = [ln for ln in AG.text().splitlines() if "[kms/att]" in ln]
check(any("flow started (refresh)" in ln for ln in att_lines), "no refresh: %s" % att_lines)
check(not re.search(r"kms/att stale", AG.text()), "kms/att went stale: %s" % att_lines)
check(len(releases("att-key")) == 1, "the refresh released again: %s" % releases("att-key"))
step("kms/att attested again before its %d s verdict ended (no stale job, no new release)"
     % TOKEN_LIFETIME)

# ---- vhsmd restarted: the agent reconnects and serves again ----
vp.send_signal(signal.SIGTERM)
check(vp.wait(30) == 0, "vhsmd exit %s" % vp.returncode)
vp = ntlib.start_vhsmd(VHSMD, VT, CHIP, path("kms-keys.json"), path("att-jwks.json"), ISSUER)
wait_for(lambda: AG.text().count("Serving") >= 2, "the agent to reconnect to vhsmd")
rc, _, err = app_run("kms/late")
check(rc == 0, "after vhsmd's restart: exit %d: %s" % (rc, err))
check(has_key("kms/app"), "kms/app lost across vhsmd's restart")
step("vhsmd restarted: the agent reconnected and served a new key")

AG.stop()
step("SIGTERM: the agent exits 0")

# ---- a stale attestation: the job says "stale", the agent attests again (no release) ----


def verdict_current():
    st = json.loads(run(*V, "attestation", "status").stdout)
    return st["verdict_expires"] is not None and st["verdict_expires"] > st["now"]


wait_for(lambda: not verdict_current(), "the verdict to end", timeout=TOKEN_LIFETIME + 5)
AG3 = Agent("agent3", agent_config("agent3", [{"key": "kms/att", "secret_id": "att-key"}]))
AG3.wait_serving()
rc, _, err = app_run("kms/att")
check(rc == 0, "stale kms/att: exit %d: %s" % (rc, err))
check(re.search(r"job \d+: kms/att stale", AG3.text()) and
      "flow started (stale)" in AG3.text(), "no stale job: %s" % AG3.text())
check(len(releases("att-key")) == 1, "a stale attestation released again")
AG3.stop()
step("a stale attestation: the call parked, the agent attested again, no new release")

# ---- 50 agents in parallel, one key each ----
t = time.monotonic()
agents = [Agent("par%d" % i, agent_config("par%d" % i, [
    {"key": "kms/par%d" % i, "secret_id": "par%d-key" % i}])) for i in range(N_PAR)]
for a in agents:
    a.wait_serving(60)
ps = [app("kms/par%d" % i, APP_UIDS[i % len(APP_UIDS)]) for i in range(N_PAR)]
res = [app_wait(p, 90) for p in ps]
el = time.monotonic() - t
check(all(r[0] == 0 for r in res), "50 agents: %s" % [(i, r[0], r[2]) for i, r in
                                                     enumerate(res) if r[0] != 0][:5])
for i in range(N_PAR):
    check(len(releases("par%d-key" % i)) == 1, "par%d: not exactly one release" % i)
    check("[kms/par%d] " % i in agents[i].text(), "par%d served by another agent" % i)
check(el < 60, "50 agents took %.1f s" % el)
for a in agents:
    a.stop()
step("50 agents in parallel: %d keys fetched, one release each, %.1f s" % (N_PAR, el))

closed_sock.close()
vp.send_signal(signal.SIGTERM)
check(vp.wait(30) == 0, "vhsmd exit %s" % vp.returncode)
K.stop()
A.stop()
A2.stop()
print("PASS (%.1f s)" % (time.monotonic() - T0))
