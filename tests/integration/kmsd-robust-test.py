#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""nitride-kmsd and nitride-attestd under abuse, with the real binaries on 127.0.0.1 over TLS:

1. kmsd SIGKILLed during admin writes, repeatedly: client threads create, replace, set policies
   of and delete secrets over the admin API (bearer token) while the test kills kmsd at a random
   moment; each write answered 2xx is recorded. After each kill: `PRAGMA integrity_check` on the
   file, kmsd restarts on it, every acknowledged write is there (the one write in flight per
   thread is resolved as applied or not, nothing else), `nitride kms audit verify` passes and
   extends the head saved the round before, and the audit has a row for every acknowledged write.
   The bookkeeping is shown to catch a removed audit row and a removed secret (in a copy of the
   database). After the last restart `nitride fetch` imports the secrets into a real vhsmd, and
   their values are what the last acknowledged write stored.
2. Both services flooded (malformed HTTP, oversized bodies, junk TLS, half-open connections,
   forged tokens, from several 127.0.0.x addresses, bounded) while `nitride fetch` (challenge,
   report, attest, release, import into vhsmd) succeeds within 10 s with the right value; then
   both answer /healthz and the flood left no release rows in the audit.

Usage: kmsd-robust-test.py NITRIDE NITRIDE_ATTESTD NITRIDE_KMSD VHSMD VHSM VHSM_TEST_HELPER
(as root: vhsmd imports releases for root only)
"""
import json
import os
import random
import shutil
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ntlib  # noqa: E402
from ntlib import b64u, check, run  # noqa: E402

NITRIDE, ATTESTD, KMSD, VHSMD, VHSM, HELPER = sys.argv[1:7]
if os.geteuid() != 0:
    print("skip: vhsmd imports releases for root only")
    sys.exit(77)
TMP = tempfile.mkdtemp(prefix="nt-kmsd-robust-")
T0 = time.monotonic()
ROUNDS = 6
WRITERS = 3
IDS_PER_WRITER = 4
rng = random.Random(int(os.environ.get("NT_SEED", "0")) or None)

W = ntlib.Workdir(TMP)
path, write_json, write_secret_file, step = W.path, W.write_json, W.write_secret_file, W.step


MEAS, OTHER_MEAS = "11" * 48, "33" * 48
CHIP = path("chip")
run(NITRIDE, "sim", "init", CHIP, "--product", "milan")
run(NITRIDE, "sim", "set", CHIP, "--measurement", MEAS)
CA = ntlib.make_tls(TMP)
CTX = ssl.create_default_context(cafile=CA)
ISSUER = ntlib.ISSUER
A = ntlib.Daemon(TMP, "attestd", ATTESTD, ntlib.attestd_config(W, "attestd", CHIP, [MEAS]))
ADMIN_TOKEN = b64u(os.urandom(32))
ADMIN_TOKEN_FILE = write_secret_file("admin.token", ADMIN_TOKEN.encode())
DB = path("kmsd.db")
K_CFG = ntlib.kmsd_config(W, "kmsd", A.url, CA, ADMIN_TOKEN_FILE, database=DB)
K = ntlib.Daemon(TMP, "kmsd", KMSD, K_CFG)


def http(url, body=None, method=None, token=ADMIN_TOKEN, timeout=30):
    """(status, parsed JSON or raw bytes); raises OSError when the connection fails."""
    st, b = ntlib.admin_http(url, token, CTX, body, method, timeout)
    try:
        return st, json.loads(b)
    except ValueError:
        return st, b


def kms(*args, ok=True):
    return run(NITRIDE, "kms", "--url", K.url, "--ca", CA, "--admin-token-file",
               ADMIN_TOKEN_FILE, *args, ok=ok)


def audit_rows():
    rows, after = [], 0
    while True:
        st, j = http(K.url + "/v1/audit?after=%d&limit=1000" % after)
        check(st == 200, "audit %d %s" % (st, j))
        rows += j["rows"]
        if not j["rows"]:
            return rows
        after = j["rows"][-1]["seq"]


# ---- vhsmd, pinning kmsd's release keys (kept in keys_dir across restarts) ----
VT = path("vhsm")
os.makedirs(VT, mode=0o755)
SOCK = os.path.join(VT, "vhsm.sock")
with open(path("kms-keys.json"), "w") as f:
    json.dump(http(K.url + "/v1/release-keys", token=None)[1], f)
with open(path("att-jwks.json"), "w") as f:
    json.dump(http(A.url + "/.well-known/jwks.json", token=None)[1], f)
run(NITRIDE, "sim", "init", path("vchip"), "--product", "milan")
VP = ntlib.start_vhsmd(VHSMD, VT, path("vchip"), path("kms-keys.json"), path("att-jwks.json"),
                       ISSUER)


def fetch_and_check(sid, value, bound=None):
    """nitride fetch SID (the whole flow) into vhsmd as kms/SID; the key vhsmd then uses must be
    value (an envelope of vhsm encrypt opens with OpenSSL under it). Returns the seconds taken."""
    t = time.monotonic()
    p = run(NITRIDE, "fetch", sid, "--as", sid, "--attestd", A.url, "--kms", K.url, "--ca", CA,
            "--socket", SOCK, "--provider", "sim", "--sim", CHIP, "--timeout", "30", ok=False)
    dt = time.monotonic() - t
    check(p.returncode == 0 and p.stdout.startswith("imported kms/%s version" % sid),
          "fetch %s: %d %s %s" % (sid, p.returncode, p.stdout, p.stderr))
    check(bound is None or dt < bound, "fetch %s took %.1f s (bound %s s)" % (sid, dt, bound))
    plain = os.urandom(64)
    with open(path("plain"), "wb") as f:
        f.write(plain)
    run(VHSM, "--socket", SOCK, "encrypt", "kms/" + sid, "--in", path("plain"), "--out", path("ct"))
    p = subprocess.run([HELPER, "gcm-open", value.hex()], stdin=open(path("ct"), "rb"),
                       capture_output=True, timeout=30)
    check(p.returncode == 0 and p.stdout == plain,
          "vhsmd's kms/%s is not the value of the last acknowledged write" % sid)
    p = subprocess.run([HELPER, "gcm-open", os.urandom(32).hex()], stdin=open(path("ct"), "rb"),
                       capture_output=True, timeout=30)
    check(p.returncode != 0 and p.stdout != plain, "the envelope opens under another value")
    return dt


# ================= 1. SIGKILL during admin writes =================
POLICIES = [{"version": 1, "rules": {"measurement_in": [MEAS]}},
            {"version": 1, "rules": {"measurement_in": [MEAS, OTHER_MEAS]}},
            {"version": 1, "rules": {"measurement_in": [MEAS], "debug_allowed": False}}]
# The model: id -> {"present", "version", "value", "policy"}; what the acknowledged writes left.
MODEL = {"w%d-%d" % (t, i): {"present": False, "version": 0, "value": None, "policy": None}
         for t in range(WRITERS) for i in range(IDS_PER_WRITER)}
ACKED = []  # (action, id, version or None) of every write answered 2xx
ACK_LOCK = threading.Lock()


WRITER_FAILED = []


def writer(t, stop, pending):
    try:
        write_loop(t, stop, pending)
    except SystemExit:  # check() failed in this thread: it printed why
        WRITER_FAILED.append(t)


def write_loop(t, stop, pending):
    """Writes its own ids until a request fails (kmsd killed); the failed write is left in
    pending[t] (it may or may not have been committed)."""
    wr = random.Random(rng.random())
    ids = ["w%d-%d" % (t, i) for i in range(IDS_PER_WRITER)]
    while not stop.is_set():
        sid = wr.choice(ids)
        m = MODEL[sid]
        value = os.urandom(32)
        if not m["present"]:
            op = ("create", sid, value, POLICIES[0])
            req = ("/v1/secrets", {"id": sid, "type": "aes256", "value": b64u(value),
                                   "policy": POLICIES[0], "attributes": {"policy": "local"}},
                   "POST")
        else:
            kind = wr.choice(["replace", "replace", "policy-set", "delete"])
            pol = wr.choice(POLICIES)
            op = (kind, sid, value, pol)
            req = {"replace": ("/v1/secrets/%s/value" % sid, {"value": b64u(value)}, "PUT"),
                   "policy-set": ("/v1/secrets/%s/policy" % sid, pol, "PUT"),
                   "delete": ("/v1/secrets/%s" % sid, None, "DELETE")}[kind]
        pending[t] = op
        try:
            st, j = http(K.url + req[0], req[1], req[2], timeout=10)
        except OSError:
            return
        pending[t] = None
        check(200 <= st < 300, "%s %s: %d %s" % (op[0], sid, st, j))
        apply(op, j)


def apply(op, j):
    kind, sid, value, pol = op
    m = MODEL[sid]
    if kind == "create":
        m.update(present=True, version=j["version"], value=value, policy=pol)
    elif kind == "replace":
        check(j["version"] == m["version"] + 1, "replace %s: version %s after %s" %
              (sid, j["version"], m["version"]))
        m.update(version=j["version"], value=value)
    elif kind == "policy-set":
        m["policy"] = pol
    else:
        m["present"] = False
    with ACK_LOCK:
        ACKED.append((kind, sid, m["version"] if kind in ("create", "replace") else None))


def server_state():
    """id -> (version, policy) of the secrets kmsd lists."""
    st, j = http(K.url + "/v1/secrets")
    check(st == 200, "list %d %s" % (st, j))
    items = j["secrets"] if isinstance(j, dict) else j
    out = {}
    for s in items:
        st, d = http(K.url + "/v1/secrets/" + s["id"])
        check(st == 200, "show %s: %d %s" % (s["id"], st, d))
        out[s["id"]] = (d["version"], d["policy"])
    return out


def resolve(op, state):
    """A write in flight at the kill: committed or not, decided from what kmsd holds now; the
    model follows. Anything else than one of the two outcomes is a failure."""
    kind, sid, value, pol = op
    m = MODEL[sid]
    have = state.get(sid)
    if kind == "create":
        if have:
            apply(op, {"version": have[0]})
            ACKED.pop()  # not acknowledged: its audit row is not required
            return "applied"
    elif kind == "replace":
        check(have is not None and have[0] in (m["version"], m["version"] + 1),
              "in-flight replace of %s: %s, model version %d" % (sid, have, m["version"]))
        if have[0] == m["version"] + 1:
            apply(op, {"version": have[0]})
            ACKED.pop()
            return "applied"
    elif kind == "policy-set":
        check(have is not None and have[1] in (m["policy"], pol),
              "in-flight policy set of %s: %s" % (sid, have))
        if have[1] == pol and pol != m["policy"]:
            m["policy"] = pol
            return "applied"
    else:
        if have is None:
            m["present"] = False
            return "applied"
    return "not applied"


def check_state(state, model):
    """Problems: acknowledged secrets missing or at another version or policy, deleted ones
    present."""
    bad = []
    for sid, m in sorted(model.items()):
        have = state.get(sid)
        if m["present"] and have is None:
            bad.append("%s (version %d acknowledged) is missing" % (sid, m["version"]))
        elif m["present"] and have[0] != m["version"]:
            bad.append("%s is at version %d, acknowledged %d" % (sid, have[0], m["version"]))
        elif m["present"] and have[1] != m["policy"]:
            bad.append("%s has policy %s, acknowledged %s" % (sid, have[1], m["policy"]))
        elif not m["present"] and have is not None:
            bad.append("%s was deleted (acknowledged) but is there" % sid)
    return bad


def check_audit(rows, acked):
    """Acknowledged writes without their audit row (counted: (action, id, version) for creates
    and replaces, (action, id) for policy sets and deletes)."""
    have = {}
    for r in rows:
        if r["result"] == "ok" and r["action"] in ("create", "replace", "policy-set", "delete"):
            k = (r["action"], r["secret_id"],
                 r["version"] if r["action"] in ("create", "replace") else None)
            have[k] = have.get(k, 0) + 1
    missing = []
    for k in acked:
        if have.get(k, 0) > 0:
            have[k] -= 1
        else:
            missing.append(k)
    return missing


def db_state_and_audit(db):
    """What the database file holds, read with Python's sqlite3 (the service stopped)."""
    c = sqlite3.connect(db)
    state = {i: (v, json.loads(p)) for i, v, p in
             c.execute("SELECT id, version, policy FROM secrets")}
    rows = [{"action": a, "secret_id": s, "version": v, "result": r} for a, s, v, r in
            c.execute("SELECT action, secret_id, version, result FROM audit ORDER BY seq")]
    c.close()
    return state, rows


def integrity(db):
    """PRAGMA integrity_check: "ok", or what is wrong."""
    try:
        c = sqlite3.connect(db)
        ic = c.execute("PRAGMA integrity_check").fetchall()
        c.close()
        return "ok" if ic == [("ok",)] else str(ic)[:300]
    except sqlite3.DatabaseError as e:
        return str(e)


HEAD_FILE = path("audit-head")
kms("audit", "verify", "--head-file", HEAD_FILE)
interrupted = applied = 0
for rnd in range(ROUNDS):
    stop, pending = threading.Event(), [None] * WRITERS
    n0 = len(ACKED)
    threads = [threading.Thread(target=writer, args=(t, stop, pending)) for t in range(WRITERS)]
    for th in threads:
        th.start()
    time.sleep(rng.uniform(0.4, 1.6))
    K.kill()  # SIGKILL, whatever kmsd is doing
    stop.set()
    for th in threads:
        th.join(30)
        check(not th.is_alive(), "a writer hangs after the kill")
    if WRITER_FAILED:
        sys.exit(1)
    # integrity_check on a copy (file and WAL as the kill left them): kmsd itself then recovers
    # the original.
    snap = path("after-kill.db")
    for ext in ("", "-wal"):
        if os.path.exists(snap + ext):
            os.unlink(snap + ext)
        if os.path.exists(DB + ext):
            shutil.copy(DB + ext, snap + ext)
    ic = integrity(snap)
    check(ic == "ok", "round %d: integrity_check after SIGKILL: %s" % (rnd, ic))
    K = ntlib.Daemon(TMP, "kmsd", KMSD, K_CFG)  # starts: the database is consistent
    state = server_state()
    for op in pending:
        if op:
            interrupted += 1
            applied += resolve(op, state) == "applied"
    bad = check_state(state, MODEL)
    check(not bad, "round %d: acknowledged writes lost:\n  %s" % (rnd, "\n  ".join(bad)))
    p = kms("audit", "verify", "--head-file", HEAD_FILE, ok=False)
    check(p.returncode == 0 and "audit chain ok" in p.stdout and "signed by" in p.stdout,
          "round %d: audit verify: %s %s" % (rnd, p.stdout, p.stderr))
    missing = check_audit(audit_rows(), ACKED)
    check(not missing, "round %d: acknowledged writes without audit rows: %s" % (rnd, missing))
    check(len(ACKED) > n0, "round %d: no write acknowledged before the kill" % rnd)
    step("round %d: %d writes acknowledged, SIGKILL, restart: all there, audit chain intact" %
         (rnd + 1, len(ACKED) - n0))
check(interrupted > 0, "no write was in flight at any kill")
print("  %d writes acknowledged, %d in flight at a kill (%d of them committed)" %
      (len(ACKED), interrupted, applied))

# The checks catch what they should: in a copy of the database, an acknowledged write's audit row
# removed, a present secret removed, a deleted one back.
K.stop()
state, rows = db_state_and_audit(DB)
check(not check_state(state, MODEL) and not check_audit(rows, ACKED),
      "the database file disagrees with the service")
COPY = path("copy.db")
shutil.copy(DB, COPY)
victim = [a for a in ACKED if a[0] == "create"][-1]
c = sqlite3.connect(COPY)
c.executescript("DROP TRIGGER audit_no_delete;")
c.execute("DELETE FROM audit WHERE seq=(SELECT MAX(seq) FROM audit WHERE action=? AND "
          "secret_id=? AND version=?)", victim)
present = sorted(i for i, m in MODEL.items() if m["present"])
gone = sorted(i for i, m in MODEL.items() if not m["present"])
check(present, "no secret left to check")
c.execute("PRAGMA foreign_keys=ON")
c.execute("DELETE FROM secrets WHERE id=?", (present[0],))
if gone:
    c.execute("INSERT INTO secrets SELECT ?, name, type, version, attributes, policy, created, "
              "updated, mac FROM secrets WHERE id=?", (gone[0], present[-1]))
c.commit()
c.close()
state, rows = db_state_and_audit(COPY)
check(check_audit(rows, ACKED) == [victim], "a removed audit row not caught: %s" %
      check_audit(rows, ACKED))
bad = check_state(state, MODEL)
check(any(present[0] + " " in b and "missing" in b for b in bad), "removed secret not caught")
check(not gone or any(gone[0] + " was deleted" in b for b in bad), "deleted secret not caught")
# A damaged file fails the integrity check (pages past the header overwritten).
shutil.copy(DB, path("damaged.db"))
with open(path("damaged.db"), "r+b") as f:
    f.seek(2 * 4096)
    f.write(os.urandom(3 * 4096))
check(integrity(path("damaged.db")) != "ok", "a damaged database passes integrity_check")
step("the bookkeeping catches a removed audit row, a removed and a resurrected secret, a "
     "damaged file (copies)")

# A release works after the last restart: every secret that is there, into the real vhsmd.
K = ntlib.Daemon(TMP, "kmsd", KMSD, K_CFG)
for sid in present:
    fetch_and_check(sid, MODEL[sid]["value"])
step("nitride fetch after the last restart: %d secrets imported with the acknowledged values" %
     len(present))

# ================= 2. flood of both services =================
FLOOD_VALUE = os.urandom(32)
st, j = http(K.url + "/v1/secrets", {"id": "flood-key", "type": "aes256",
                                     "value": b64u(FLOOD_VALUE), "policy": POLICIES[0],
                                     "attributes": {"policy": "local"}})
check(st == 201, "create flood-key %d %s" % (st, j))
releases_before = [r for r in audit_rows() if r["action"] == "release"]
stop = threading.Event()
counts = {"attestd": [0], "kmsd": [0], "forged": [0]}
half_open = []
FLOOD_LIMIT = 1500  # connections per thread; the flood also stops when the fetch is done
threads = []
for n in range(3):
    for name, port, p in (("attestd", A.port, b"/v1/attest"),
                          ("kmsd", K.port, b"/v1/secrets/flood-key/release")):
        threads.append(threading.Thread(target=ntlib.flood, args=(
            port, "127.0.0.%d" % (10 + n), p, stop, counts[name], CTX, FLOOD_LIMIT, half_open)))


def forged():
    """Well-formed tokens signed by nobody kmsd trusts, and attestations with forged nonces."""
    hdr = b64u(json.dumps({"alg": "ES384", "kid": "forged", "typ": "JWT"}).encode())
    i = 0
    while not stop.is_set() and i < 400:
        i += 1
        claims = {"iss": ISSUER, "aud": "nitride-kmsd", "exp": int(time.time()) + 300,
                  "iat": int(time.time()), "jti": b64u(os.urandom(8)),
                  "ear.status": "affirming"}
        tok = "%s.%s.%s" % (hdr, b64u(json.dumps(claims).encode()), b64u(os.urandom(96)))
        try:
            st, _ = http(K.url + "/v1/secrets/flood-key/release", {}, token=tok, timeout=10)
            check(st == 401, "forged token: %d" % st)
            st, _ = http(A.url + "/v1/attest", {"nonce": b64u(os.urandom(32)),
                         "runtime_data": {}, "evidence": {"report": b64u(os.urandom(1184))}},
                         token=None, timeout=10)
            check(400 <= st < 500, "forged attestation: %d" % st)
        except OSError:
            pass
        counts["forged"][0] += 2


threads.append(threading.Thread(target=forged))
for th in threads:
    th.start()
time.sleep(1.5)  # the flood is under way
dt = fetch_and_check("flood-key", FLOOD_VALUE, bound=10)
stop.set()
for th in threads:
    th.join(30)
    check(not th.is_alive(), "a flood thread hangs")
for s in half_open:
    s.close()
for d in (A, K):
    st, j = http(d.url + "/healthz", token=None)
    check(st == 200 and j["status"] == "ok", "%s healthz after the flood: %d %s" % (d.name, st, j))
releases = [r for r in audit_rows() if r["action"] == "release"]
new = releases[len(releases_before):]
check(len(new) == 1 and new[0]["result"] == "ok" and new[0]["secret_id"] == "flood-key",
      "the flood left release rows in the audit: %s" % new)
kms("audit", "verify", "--head-file", HEAD_FILE)
step("fetch in %.2f s while attestd and kmsd were flooded (%d + %d malformed connections, %d "
     "forged requests, %d half-open); both healthy, no release rows from the flood" %
     (dt, counts["attestd"][0], counts["kmsd"][0], counts["forged"][0], len(half_open)))

VP.send_signal(15)
check(VP.wait(30) == 0, "vhsmd exit %s" % VP.returncode)
K.stop()
A.stop()
shutil.rmtree(TMP)
print("PASS (%.1f s)" % (time.monotonic() - T0))
