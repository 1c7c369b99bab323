# SPDX-License-Identifier: Apache-2.0
"""Helpers shared by the Python integration tests: failing with the logs of the processes the
test started, running commands, base64url and JSON files in the test's directory."""
import base64
import json
import os
import signal
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


def write_secret_file(directory, name, data):
    """Writes data (bytes) to directory/name, mode 0600 from creation. Returns the path."""
    p = os.path.join(directory, name)
    fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    os.write(fd, data)
    os.close(fd)
    return p


class Workdir:
    """A test's directory: .path(name), .write_json, .write_secret_file within it, and .step(msg)
    printing progress with the seconds since the Workdir was made."""

    def __init__(self, directory):
        self.dir = directory
        self.t0 = time.monotonic()

    def path(self, name):
        return os.path.join(self.dir, name)

    def write_json(self, name, obj):
        return write_json(self.dir, name, obj)

    def write_secret_file(self, name, data):
        return write_secret_file(self.dir, name, data)

    def step(self, msg):
        print("ok: %s (%.1f s)" % (msg, time.monotonic() - self.t0), flush=True)


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


def make_tls(directory):
    """A throwaway CA (ca.pem) and a server certificate for 127.0.0.1 (tls.pem, tls.key) in
    directory. Returns the CA's path."""
    def p(n):
        return os.path.join(directory, n)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", p("ca.key"), "-out", p("ca.pem"), "-days", "2", "-subj", "/CN=ca",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=keyCertSign")
    with open(p("tls.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", p("tls.key"), "-out", p("tls.csr"), "-subj", "/CN=127.0.0.1")
    run("openssl", "x509", "-req", "-in", p("tls.csr"), "-CA", p("ca.pem"), "-CAkey", p("ca.key"),
        "-CAcreateserial", "-days", "2", "-out", p("tls.pem"), "-extfile", p("tls.ext"))
    return p("ca.pem")


class Daemon:
    """A service (attestd, kmsd) started with --config and --port-file in directory, its output
    appended to NAME.log there; waits until the port file is written. .url, .port, .p."""

    def __init__(self, directory, name, exe, cfg):
        self.name = name
        port_file = os.path.join(directory, name + ".port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        log = os.path.join(directory, name + ".log")
        self.p = subprocess.Popen([exe, "--config", cfg, "--port-file", port_file],
                                  stdout=open(log, "a"), stderr=subprocess.STDOUT)
        self.p.log = log
        PROCS.append(self.p)
        for _ in range(400):
            if os.path.exists(port_file) and open(port_file).read().strip():
                break
            if self.p.poll() is not None:
                fail("%s exited %d at start" % (name, self.p.returncode))
            time.sleep(0.05)
        else:
            fail("%s did not start" % name)
        self.port = int(open(port_file).read())
        self.url = "https://127.0.0.1:%d" % self.port

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(15)
        except subprocess.TimeoutExpired:
            fail("%s did not stop on SIGTERM" % self.name)
        check(self.p.returncode == 0, "%s exit %s on SIGTERM" % (self.name, self.p.returncode))

    def kill(self):
        self.p.send_signal(signal.SIGKILL)
        self.p.wait(15)


ISSUER = "https://attestd.test"
AUDIENCE = "nitride-kmsd"


def attestd_config(w, name, chip, measurements, lifetime=300, issuer=ISSUER):
    """Writes NAME.json in Workdir w for an attestd on 127.0.0.1:0 with the TLS pair of
    make_tls, a fresh challenge secret and signing keys (NAME-keys), trusting the simulated
    chip's ARK and appraising with a policy that admits measurements. Returns the path."""
    return w.write_json(name + ".json", {
        "listen": "127.0.0.1:0",
        "tls": {"cert": w.path("tls.pem"), "key": w.path("tls.key")},
        "challenge": {"secret": w.write_secret_file(name + "-challenge.key", os.urandom(32)),
                      "lifetime": 60},
        "token": {"keys_dir": w.path(name + "-keys"), "issuer": issuer, "audience": AUDIENCE,
                  "lifetime": lifetime},
        "trust_anchors": [os.path.join(chip, "ark.pem")],
        "policies": {"default": {"file": w.write_json(name + "-policy.json",
                                                      {"measurements": list(measurements)})}},
        "default_policy": "default",
        "rate_limit": {"per_second": 0, "burst": 1},
    })


def kmsd_config(w, name, attestd_url, ca, admin_token_file, issuer=ISSUER, database=None):
    """Writes NAME.json in Workdir w for a kmsd on 127.0.0.1:0 (database NAME.db unless given,
    a fresh KEK, release keys in release-keys) that fetches attestd's JWKS from attestd_url
    over TLS trusting ca, and admits the bearer token in admin_token_file. Returns the path."""
    return w.write_json(name + ".json", {
        "listen": "127.0.0.1:0",
        "tls": {"cert": w.path("tls.pem"), "key": w.path("tls.key")},
        "database": database or w.path(name + ".db"),
        "kek_file": w.write_secret_file(name + ".kek", os.urandom(32)),
        "release": {"keys_dir": w.path("release-keys")},
        "attestd": {"jwks_url": attestd_url + "/.well-known/jwks.json", "ca_file": ca,
                    "issuer": issuer, "audience": AUDIENCE, "skew": 1},
        "admin": {"bearer_token_file": admin_token_file},
        "rate_limit": {"per_second": 0, "burst": 1},
    })


def admin_http(url, token, ctx, body=None, method=None, timeout=30):
    """One HTTPS request with JSON body (POST when given) and a bearer token (none if token is
    None), TLS context ctx. Returns (status, raw body); raises OSError when the connection
    fails."""
    import urllib.error
    import urllib.request
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data else "GET"))
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# Malformed requests for flood(): PATH is replaced by a path of the target service.
FLOOD_GARBAGE = [
    b"POST PATH HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"A" * 3000 +
    b".B.C\r\nContent-Length: 2\r\n\r\n{}",
    b"POST PATH HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{{{{{",
    b"POST PATH HTTP/1.1\r\nHost: x\r\nContent-Length: 9000000\r\n\r\n{",
    b"GET /v1/secrets/../../etc HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x00",
    b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Junk: " + b"j" * 20000 + b"\r\n\r\n",
]


def flood(port, src, path, stop, counter, tls_ctx, limit=100000, half_open=None):
    """Connects to 127.0.0.1:port from src until stop is set or limit connections were made,
    sending FLOOD_GARBAGE (with path), random bytes and junk TLS records, a third of them inside
    TLS (tls_ctx). half_open: a list to which some connections are added, left open after a
    partial request (the caller closes them)."""
    import socket
    i = 0
    while not stop.is_set() and i < limit:
        i += 1
        counter[0] += 1
        try:
            s = socket.create_connection(("127.0.0.1", port), source_address=(src, 0), timeout=2)
            kind = i % (len(FLOOD_GARBAGE) + 3)
            if kind < len(FLOOD_GARBAGE):
                g = FLOOD_GARBAGE[kind].replace(b"PATH", path)
            elif kind == len(FLOOD_GARBAGE):
                g = os.urandom(300)
            elif kind == len(FLOOD_GARBAGE) + 1:  # a TLS record header announcing 16 KiB of junk
                g = b"\x16\x03\x01\x40\x00" + os.urandom(2000)
            else:
                g = None
            if g is None:  # half-open: TLS, then the start of a request, never finished
                s = tls_ctx.wrap_socket(s, server_hostname="127.0.0.1")
                s.sendall(b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n")
                if half_open is not None and len(half_open) < 16:
                    half_open.append(s)
                    continue
            elif i % 3 == 0 and not g.startswith(b"\x16"):
                s = tls_ctx.wrap_socket(s, server_hostname="127.0.0.1")
                s.sendall(g)
            else:
                s.sendall(g)
            s.close()
        except (OSError, ValueError):
            pass
