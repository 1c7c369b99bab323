#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Real dm-crypt activation in a VM (issue 11, "Real activation, in a VM"; tests/vm/README.md).

Boots Debian's kernel (linux-image-amd64's versioned dependency, fetched with `apt-get download`
and unpacked with `dpkg-deb -x`, never installed on the host) under qemu-system-x86_64 with an
initramfs built here (busybox-static, cryptsetup and its libraries, the nitride binaries, the
kernel modules of the issue with their dependencies). A LUKS2 image holding known data is made
on the host (cryptsetup offline `reencrypt --encrypt`, which encrypts in user space and needs no
device-mapper), sealed with `nitride luks seal` to a simulated SNP chip (`nitride sim`), and the
guest unlocks it as boot would: dm-crypt is programmed for real, the data is read back through
/dev/mapper, and one result line comes back on the serial console:

    NTVM-RESULT case=NAME status=ok|refused|error rc=N sha256=HEX ms=N [msg=...]

The host checks the line (the hash against the data it wrote, the refusal against the case) and
that a refused unlock left the LUKS2 header byte-for-byte unchanged.

Exit: 0 all cases passed, 1 a case failed, 77 qemu cannot start at all (skip).
"""

import argparse
import hashlib
import lzma
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

MODULES = [
    "virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
    "virtio_blk", "dm-mod", "dm-crypt", "ecb", "xts", "net_failover", "virtio_net",
]
GUEST_FWD_IP = "10.0.2.100"
DATA_BYTES = 4 << 20
PASSPHRASE = b"nitride vm test passphrase"
RESULT_RE = re.compile(rb"NTVM-RESULT (.*)")


def log(msg):
    print(f"vm: {msg}", flush=True)


class Skip(Exception):
    pass


class Fail(Exception):
    pass


def run(cmd, **kw):
    kw.setdefault("check", True)
    return subprocess.run(cmd, **kw)


# ---------------------------------------------------------------- kernel

def cache_dir(args):
    if args.cache:
        d = args.cache
    else:
        d = "/var/cache/nitride-test"
        try:
            os.makedirs(d, exist_ok=True)
            if not os.access(d, os.W_OK):
                raise PermissionError(d)
        except OSError:
            d = os.path.join(args.build_dir, "vm-cache")
    os.makedirs(d, exist_ok=True)
    return d


def fetch_kernel(cache):
    """Returns (kernel root dir, kernel version). Downloads and unpacks once per version."""
    out = run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True)
    m = re.search(r"Depends: (linux-image-(\d[^\s]*-amd64))", out.stdout)
    if not m:
        raise Fail("apt-cache: linux-image-amd64 has no versioned linux-image-*-amd64 dependency")
    pkg, kver = m.group(1), m.group(2)
    kdir = os.path.join(cache, "kernel", kver)
    root = os.path.join(kdir, "root")
    done = os.path.join(kdir, ".unpacked")
    if os.path.exists(done):
        return root, kver
    os.makedirs(kdir, exist_ok=True)
    debs = [f for f in os.listdir(kdir) if f.startswith(pkg + "_") and f.endswith(".deb")]
    if not debs:
        log(f"apt-get download {pkg}")
        r = run(["apt-get", "download", "-q", pkg], cwd=kdir, capture_output=True, text=True,
                check=False)
        debs = [f for f in os.listdir(kdir) if f.startswith(pkg + "_") and f.endswith(".deb")]
        if not debs:
            raise Fail(f"apt-get download {pkg} failed: {r.stderr.strip()}")
    shutil.rmtree(root, ignore_errors=True)
    log(f"dpkg-deb -x {debs[0]}")
    run(["dpkg-deb", "-x", os.path.join(kdir, debs[0]), root])
    run(["depmod", "-b", root, kver])
    open(done, "w").close()
    return root, kver


def extract_vmlinux(bzimage, out):
    """The uncompressed ELF vmlinux inside a bzImage (what scripts/extract-vmlinux does: find the
    payload's compression magic and decompress from there). Debian's kernel is XZ-compressed."""
    if os.path.exists(out):
        return out
    data = open(bzimage, "rb").read()
    magic = b"\xfd7zXZ\x00"
    pos = data.find(magic)
    while pos >= 0:
        try:
            d = lzma.LZMADecompressor()
            elf = d.decompress(data[pos:])
            if elf[:4] == b"\x7fELF":
                tmp = out + ".tmp"
                with open(tmp, "wb") as f:
                    f.write(elf)
                os.rename(tmp, out)
                return out
        except lzma.LZMAError:
            pass
        pos = data.find(magic, pos + 1)
    raise Fail(f"no XZ-compressed ELF payload in {bzimage}")


# ---------------------------------------------------------------- initramfs

def ldd_libs(paths):
    libs = set()
    for p in paths:
        out = run(["ldd", p], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            m = re.search(r"=>\s+(/\S+)", line) or re.match(r"\s*(/\S+)\s+\(", line)
            if m:
                libs.add(m.group(1))
    return libs


def copy_into(stage, src, dst=None):
    dst = os.path.join(stage, (dst or src).lstrip("/"))
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copy2(os.path.realpath(src), dst)
    return dst


def token_dir():
    out = run(["cryptsetup", "--help"], capture_output=True, text=True).stdout
    m = re.search(r"^LUKS2 external token plugin path: (\S+?)\.?$", out, re.M)
    return m.group(1) if m else "/lib/x86_64-linux-gnu/cryptsetup"


def module_files(root, kver):
    """insmod order for MODULES and their dependencies (modprobe --show-depends on the tree)."""
    order = []
    for mod in MODULES:
        out = run(["modprobe", "-d", root, "-S", kver, "--show-depends", mod],
                  capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise Fail(f"modprobe --show-depends {mod}: {out.stderr.strip()}")
        for line in out.stdout.splitlines():
            w = line.split()
            if w and w[0] == "insmod" and w[1] not in order:
                order.append(w[1])
    return order


INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /run /tmp /bin /sbin
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox --install -s /bin
export DM_DISABLE_UDEV=1
. /etc/nt-env
for m in $(cat /etc/nt-modules); do insmod "$m" || echo "init: insmod $m failed"; done
. /case/env
result() { sync; echo "NTVM-RESULT case=$NT_CASE $*"; poweroff -f; sleep 5; }
i=0
while [ ! -b /dev/vda ]; do
  i=$((i+1)); [ $i -gt 100 ] && result "status=error rc=-1 msg=no-/dev/vda"; sleep 0.1
done
if [ -n "$NT_NET" ]; then
  ip link set lo up; ip link set eth0 up
  ip addr add 10.0.2.15/24 dev eth0; ip route add default via 10.0.2.2
fi
if [ "$NT_MODE" = relay ]; then
  # Two connections through the guestfwd relay (one relay process per connection), then the
  # same port on the host's gateway address, which restrict=on must not reach. (busybox nc:
  # this busybox-static's wget segfaults in the guest.)
  get() { printf 'GET /%s HTTP/1.0\r\n\r\n' $3 | nc -w $4 $1 $2 | tr -d '\r' | sed '1,/^$/d'; }
  a=$(get ${NT_RELAY%:*} ${NT_RELAY#*:} a 10 | sha256sum | cut -d' ' -f1)
  b=$(get ${NT_RELAY%:*} ${NT_RELAY#*:} b 10 | sha256sum | cut -d' ' -f1)
  [ "$a" = "$b" ] || result "status=error rc=1 msg=second-connection-differs"
  c=$(get 10.0.2.2 ${NT_RELAY#*:} c 3)
  if [ -n "$c" ]; then gw=open; else gw=blocked; fi
  result "status=ok rc=0 sha256=$a gw=$gw"
fi
t0=$(cut -d' ' -f1 /proc/uptime)
eval "$NT_UNLOCK" >/tmp/unlock.out 2>/tmp/unlock.err
rc=$?
t1=$(cut -d' ' -f1 /proc/uptime)
ms=$(awk "BEGIN{printf \"%d\", ($t1-$t0)*1000}")
sed 's/^/unlock: /' /tmp/unlock.out /tmp/unlock.err
if [ $rc -ne 0 ]; then
  [ -e /dev/mapper/$NT_NAME ] &&
    result "status=error rc=$rc msg=refused-but-/dev/mapper/$NT_NAME-exists"
  msg=$(tr -s ' \n' '_|' </tmp/unlock.err | cut -c1-400)
  result "status=refused rc=$rc ms=$ms uptime=$t1 msg=$msg"
fi
[ -b /dev/mapper/$NT_NAME ] || result "status=error rc=$rc msg=no-/dev/mapper/$NT_NAME"
dmsetup table 2>/dev/null |
  sed 's/ [0-9a-f]\{64,\} / KEY /; s/:[0-9]*:logon:[^ ]* / KEY /; s/^/dm: /'
target=$(dmsetup table $NT_NAME 2>/dev/null | cut -d' ' -f3)
sum=$(head -c $NT_BYTES /dev/mapper/$NT_NAME | sha256sum | cut -d' ' -f1)
cryptsetup close $NT_NAME || result "status=error rc=$rc msg=close-failed"
result "status=ok rc=0 sha256=$sum target=$target ms=$ms uptime=$t1"
"""


def hook_functions(cache):
    """initramfs-tools' hook-functions: the installed file, else initramfs-tools-core fetched with
    apt-get download and unpacked into the cache (never installed)."""
    hf = "/usr/share/initramfs-tools/hook-functions"
    if os.path.exists(hf):
        return hf
    d = os.path.join(cache, "initramfs-tools")
    hf = os.path.join(d, "root/usr/share/initramfs-tools/hook-functions")
    if os.path.exists(hf):
        return hf
    os.makedirs(d, exist_ok=True)
    r = run(["apt-get", "download", "-q", "initramfs-tools-core"], cwd=d, capture_output=True,
            text=True, check=False)
    debs = [f for f in os.listdir(d) if f.startswith("initramfs-tools-core_")]
    if not debs:
        raise Fail(f"apt-get download initramfs-tools-core failed: {r.stderr.strip()}")
    run(["dpkg-deb", "-x", os.path.join(d, debs[0]), os.path.join(d, "root")])
    return hf


def run_hook(args, cache, kver, stage):
    """The initramfs-tools hook (initramfs/hooks/nitride) as `update-initramfs` would run it, on
    this build installed with `meson install --destdir`: the installed tree is bind-mounted over
    the system's prefix and libcryptsetup's token directory in a private mount namespace (the
    machine's directories are never written), DESTDIR is the stage, in mkinitramfs's merged-/usr
    layout. Returns the installed unlock script's path in the initramfs."""
    import json
    dest = os.path.join(args.work, "install")
    run(["meson", "install", "-C", args.build_dir, "--destdir", dest, "--no-rebuild", "--quiet"],
        capture_output=True)
    opts = {o["name"]: o["value"] for o in json.loads(run(
        ["meson", "introspect", args.build_dir, "--buildoptions"], capture_output=True,
        text=True).stdout)}
    prefix, irdir, tokdir = opts["prefix"], opts["initramfs_tools_dir"], token_dir()
    for d in ("bin", "sbin", "lib", "lib64"):
        os.makedirs(os.path.join(stage, "usr", d), exist_ok=True)
        os.symlink("usr/" + d, os.path.join(stage, d))
    conf = os.path.join(args.work, "luks.conf")
    with open(conf, "w") as f:
        # The plugin's configuration: the simulated chip, whose directory comes with each case
        # ($NITRIDE_SIM_DIR in /case/env).
        f.write('{"provider":"sim"}\n')
    script = """set -e
mount --bind "$1$2" "$2"
[ -d "$3" ] && mount --bind "$1$3" "$3"
DESTDIR=$4 verbose=n version=$5 MODULESDIR=/nonexistent CONFDIR=/nonexistent \\
  NITRIDE_HOOK_FUNCTIONS=$6 NITRIDE_LUKS_CONF=$7 NITRIDE_CRYPTTAB=/nonexistent \\
  sh "$1$8/hooks/nitride"
"""
    r = run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", dest, tokdir,
             prefix, stage, kver, hook_functions(cache), conf, irdir], capture_output=True,
            text=True, check=False)
    if r.returncode != 0:
        raise Fail(f"the initramfs hook failed: {r.stdout}{r.stderr}")
    unlock = os.path.join(prefix, "lib/nitride/nitride-crypttab-unlock")
    for f in ("usr/sbin/cryptsetup", "usr" + tokdir + "/libcryptsetup-token-nitride.so",
              prefix.lstrip("/") + "/bin/nitride", unlock.lstrip("/"), "etc/nitride/luks.conf"):
        if not os.path.lexists(os.path.join(stage, f)):
            raise Fail(f"the initramfs hook did not put {f} into the initramfs")
    return unlock, [os.path.join(prefix, "bin")]


def builtin_tree(args, stage):
    """Without the hook: the same pieces copied here. Returns (unlock script, extra PATH)."""
    bins = {}
    cryptsetup = shutil.which("cryptsetup") or "/sbin/cryptsetup"
    bins["/sbin/cryptsetup"] = cryptsetup
    blkid = shutil.which("blkid")
    if blkid:
        bins["/sbin/blkid"] = blkid
    bins["/bin/nitride"] = os.path.join(args.build_dir, "src/agent/nitride")
    plugin = os.path.join(args.build_dir, "src/luks/plugin/libcryptsetup-token-nitride.so")
    # Where the guest's (the same Debian) libcryptsetup loads token plugins from.
    bins[os.path.join(token_dir(), os.path.basename(plugin))] = plugin
    for dst, src in bins.items():
        copy_into(stage, src, dst)
    for lib in ldd_libs(bins.values()):
        copy_into(stage, lib)
    script = os.path.join(args.build_dir, "initramfs/nitride-crypttab-unlock")
    os.chmod(copy_into(stage, script, "/lib/nitride/nitride-crypttab-unlock"), 0o755)
    with open(_mkparent(stage, "etc/nitride/luks.conf"), "w") as f:
        f.write('{"provider":"sim"}\n')
    return "/lib/nitride/nitride-crypttab-unlock", []


def build_base_initramfs(args, cache, root, kver, out):
    stage = tempfile.mkdtemp(prefix="ntvm-base-", dir=args.work)
    try:
        for rel in ("src/agent/nitride", "src/vhsm/vhsmd", "src/vhsm/vhsm",
                    "src/luks/plugin/libcryptsetup-token-nitride.so",
                    "initramfs/nitride-crypttab-unlock"):
            if not os.path.exists(os.path.join(args.build_dir, rel)):
                raise Fail(f"{os.path.join(args.build_dir, rel)} not built")
        if args.initramfs == "hook" and subprocess.run(
                ["unshare", "-m", "true"], capture_output=True).returncode != 0:
            log("note: no private mount namespace (unshare -m needs root): the initramfs is "
                "built without the hook (--initramfs builtin)")
            args.initramfs = "builtin"
        if args.initramfs == "hook":
            unlock, path = run_hook(args, cache, kver, stage)
        else:
            unlock, path = builtin_tree(args, stage)
        # What the test adds to the hook's part: busybox (the shell and tools of /init),
        # dmsetup (logs the dm table), vhsmd and vhsm, the modules, /init.
        extra = {"/bin/busybox": shutil.which("busybox") or "/bin/busybox",
                 "/bin/vhsmd": os.path.join(args.build_dir, "src/vhsm/vhsmd"),
                 "/bin/vhsm": os.path.join(args.build_dir, "src/vhsm/vhsm")}
        if shutil.which("dmsetup"):
            extra["/sbin/dmsetup"] = shutil.which("dmsetup")
        # libgcc_s: glibc dlopens it for pthread_cancel (libcryptsetup), ldd does not show it.
        libs = ldd_libs(extra.values()) | {"/lib/x86_64-linux-gnu/libgcc_s.so.1"}
        for dst, src in extra.items():
            if not os.path.lexists(os.path.join(stage, dst.lstrip("/"))):
                copy_into(stage, src, dst)
        for lib in libs:
            if not os.path.lexists(os.path.join(stage, lib.lstrip("/"))):
                copy_into(stage, lib)
        env = f"export NT_UNLOCK_SCRIPT={unlock}\nexport PATH=/bin:/sbin" + \
            "".join(":" + p for p in path) + "\n"
        for lib in ldd_libs([os.path.join(args.build_dir, "src/agent/nitride")]):
            if os.path.basename(lib).startswith("libasan.so"):
                # A sanitizer build: the plugin needs the ASan runtime loaded first in the
                # (uninstrumented) cryptsetup.
                env += f"export NT_ASAN_PRELOAD={lib}\n"
                env += "export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1\n"
        with open(_mkparent(stage, "etc/nt-env"), "w") as f:
            f.write(env)
        mods = []
        for m in module_files(root, kver):
            rel = os.path.relpath(m, root)
            copy_into(stage, m, "/" + rel)
            mods.append("/" + rel)
        with open(_mkparent(stage, "etc/nt-modules"), "w") as f:
            f.write("\n".join(mods) + "\n")
        init = os.path.join(stage, "init")
        with open(init, "w") as f:
            f.write(INIT)
        os.chmod(init, 0o755)
        cpio(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _mkparent(stage, rel):
    p = os.path.join(stage, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    return p


def cpio(stage, out):
    files = run(["find", ".", "-mindepth", "1"], cwd=stage, capture_output=True).stdout
    with open(out, "wb") as f:
        run(["cpio", "-o", "-H", "newc", "--quiet", "-R", "0:0"], cwd=stage, input=files,
            stdout=f)


# ---------------------------------------------------------------- disk images and cases

def hdr_sum(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read(8 << 20)).hexdigest()


def make_volume(args, work, nitride, chip, svc=None, heal=False):
    """A LUKS2 image whose first DATA_BYTES of plaintext are known: written in clear, then
    encrypted in place by cryptsetup's offline reencryption (user-space crypto, no
    device-mapper), then sealed. Returns (image, sha256 of the data)."""
    img = os.path.join(work, "disk.img")
    data = os.urandom(DATA_BYTES)
    with open(img, "wb") as f:
        f.write(data)
        f.truncate(DATA_BYTES + (24 << 20))
    pw = os.path.join(work, "pw")
    with open(pw, "wb") as f:
        f.write(PASSPHRASE)
    run(["cryptsetup", "reencrypt", "--encrypt", "--type", "luks2", "--reduce-device-size",
         "16M", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--batch-mode",
         "--key-file", pw, img], capture_output=True)
    with open(img, "rb") as f:
        f.seek(8 << 20)
        if data[:4096] in f.read(DATA_BYTES):
            raise Fail("the image holds the data in clear after reencrypt")
    if svc:
        enroll(nitride, svc, img, chip, pw, heal)
        return img, hashlib.sha256(data).hexdigest()
    r = run([nitride, "luks", "seal", img, "--bind", "measurement,policy", "--sim-dir", chip,
             "--key-file", pw], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise Fail(f"nitride luks seal: {r.stderr.strip()}")
    # The passphrase keyslot goes (the guest can only use the token's keyslot) ... kept: it is
    # argon-free PBKDF2 and the guest is never given the passphrase.
    return img, hashlib.sha256(data).hexdigest()


def case_cpio(args, work, name, unlock, chip_dir, uuid, extra="", svc=None):
    stage = os.path.join(work, "case-stage")
    shutil.rmtree(stage, ignore_errors=True)
    os.makedirs(os.path.join(stage, "case"))
    # What Debian's cryptroot hook would write (/cryptroot/crypttab has the same fields).
    with open(_mkparent(stage, "etc/nitride/crypttab"), "w") as f:
        f.write(f"data UUID={uuid} none luks\n")
    if svc:
        # The services by name at the relay address; the plugin's configuration with the CA.
        shutil.copy(svc.hosts_file(GUEST_FWD_IP), os.path.join(stage, "etc/hosts"))
        with open(os.path.join(stage, "etc/nsswitch.conf"), "w") as f:
            f.write("hosts: files\n")
        shutil.copy(svc.ca, os.path.join(stage, "etc/nitride/luks-ca.pem"))
        with open(os.path.join(stage, "etc/nitride/luks.conf"), "w") as f:
            f.write('{"provider":"sim","ca_file":"/etc/nitride/luks-ca.pem"}\n')
    shutil.copytree(chip_dir, os.path.join(stage, "case", "chip"), symlinks=True)
    with open(os.path.join(stage, "case", "env"), "w") as f:
        f.write(f"NT_CASE={name}\nNT_NAME=data\nNT_BYTES={DATA_BYTES}\n"
                f"NT_UNLOCK='{unlock}'\nexport NITRIDE_SIM_DIR=/case/chip\n{extra}")
    out = os.path.join(work, "case.cpio")
    cpio(stage, out)
    return out


# ---------------------------------------------------------------- the remote flow's services

class Services:
    """nitride-attestd and nitride-kmsd on 127.0.0.1 with TLS (a throwaway CA; the server
    certificate names kms.nitride.test, attestd.nitride.test and 127.0.0.1), configured as
    tests/integration/luks-kms-test.py does, trusting the simulated chip."""

    def __init__(self, args, work, chip, measurements):
        self.dir = os.path.join(work, "svc")
        os.makedirs(self.dir)
        self.procs = []
        p = self.path
        ssl_run = lambda *a: run(["openssl", *a], capture_output=True)  # noqa: E731
        ssl_run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", p("ca.key"), "-out", p("ca.pem"), "-days", "2", "-subj", "/CN=ntvm-ca",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=keyCertSign")
        with open(p("tls.ext"), "w") as f:
            f.write(f"subjectAltName=DNS:{KMS_NAME},DNS:{ATTESTD_NAME},IP:127.0.0.1\n"
                    "extendedKeyUsage=serverAuth\n")
        ssl_run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", p("tls.key"), "-out", p("tls.csr"), "-subj", f"/CN={KMS_NAME}")
        ssl_run("x509", "-req", "-in", p("tls.csr"), "-CA", p("ca.pem"), "-CAkey", p("ca.key"),
                "-CAcreateserial", "-days", "2", "-out", p("tls.pem"), "-extfile", p("tls.ext"))
        self.ca = p("ca.pem")
        tls = {"cert": p("tls.pem"), "key": p("tls.key")}
        issuer = "https://attestd.test"
        self.attestd_port = self.start(os.path.join(args.build_dir, "src/attestd/nitride-attestd"),
                                       "attestd", {
            "listen": "127.0.0.1:0", "tls": tls,
            "challenge": {"secret": self.secret("challenge.key", os.urandom(32)), "lifetime": 60},
            "token": {"keys_dir": p("att-keys"), "issuer": issuer, "audience": "nitride-kmsd",
                      "lifetime": 300},
            "trust_anchors": [os.path.join(chip, "ark.pem")],
            "policies": {"default": {"file": self.json("att-policy.json",
                                                       {"measurements": measurements})}},
            "default_policy": "default",
            "rate_limit": {"per_second": 0, "burst": 1},
        })
        self.admin = self.secret("admin.token", os.urandom(32).hex().encode())
        self.kms_port = self.start(os.path.join(args.build_dir, "src/kmsd/nitride-kmsd"), "kmsd", {
            "listen": "127.0.0.1:0", "tls": tls, "database": p("kmsd.db"),
            "kek_file": self.secret("kek", os.urandom(32)),
            "release": {"keys_dir": p("release-keys")},
            "attestd": {"jwks_url": f"https://127.0.0.1:{self.attestd_port}/.well-known/jwks.json",
                        "ca_file": self.ca, "issuer": issuer, "audience": "nitride-kmsd",
                        "skew": 1},
            "admin": {"bearer_token_file": self.admin},
            "rate_limit": {"per_second": 0, "burst": 1},
        })
        self.kms_url = f"https://{KMS_NAME}:{self.kms_port}"
        self.attestd_url = f"https://{ATTESTD_NAME}:{self.attestd_port}"

    def path(self, name):
        return os.path.join(self.dir, name)

    def json(self, name, obj):
        import json
        with open(self.path(name), "w") as f:
            json.dump(obj, f)
        return self.path(name)

    def secret(self, name, data):
        fd = os.open(self.path(name), os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        os.write(fd, data)
        os.close(fd)
        return self.path(name)

    def start(self, exe, name, cfg):
        port_file = self.path(name + ".port")
        log = open(self.path(name + ".log"), "a")
        proc = subprocess.Popen([exe, "--config", self.json(name + ".json", cfg), "--port-file",
                                 port_file], stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        for _ in range(600):
            if os.path.exists(port_file) and open(port_file).read().strip():
                return int(open(port_file).read())
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        raise Fail(f"{name} did not start: {self.logs()}")

    def logs(self):
        out = ""
        for name in ("attestd", "kmsd"):
            if os.path.exists(self.path(name + ".log")):
                out += f"--- {name}.log ---\n" + open(self.path(name + ".log")).read()[-2000:]
        return out

    def audit(self):
        """kmsd's audit rows as (action, result, detail)."""
        import json
        import ssl
        import urllib.request
        req = urllib.request.Request(
            f"https://127.0.0.1:{self.kms_port}/v1/audit?after=0&limit=1000")
        req.add_header("Authorization", "Bearer " + open(self.admin).read().strip())
        with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=self.ca),
                                    timeout=30) as r:
            rows = json.loads(r.read())["rows"]
        return [(r.get("action"), r.get("result"), r.get("detail") or "") for r in rows]

    def hosts_file(self, addr):
        return self.write(f"hosts-{addr}", f"{addr} {KMS_NAME} {ATTESTD_NAME}\n"
                          "127.0.0.1 localhost\n")

    def write(self, name, text):
        with open(self.path(name), "w") as f:
            f.write(text)
        return self.path(name)

    def close(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def enroll(nitride, svc, img, chip, pw, heal=False):
    """`nitride luks enroll --create` on the host. The token names the services by name (as a
    real deployment would), so the host resolves them to 127.0.0.1 and the guest to the relay
    address: enroll runs in a private mount namespace with its own /etc/hosts bind-mounted (the
    machine's file is never touched)."""
    cmd = [nitride, "luks", "enroll", img, "--kms", svc.kms_url, "--attestd", svc.attestd_url,
           "--secret", "vm-volume", "--create", "--admin-token-file", svc.admin,
           "--provider", "sim", "--sim-dir", chip, "--ca", svc.ca, "--key-file", pw,
           "--timeout", "30"]
    if heal:
        # Both slots in one token; kmsd's policy already names the next image.
        cmd += ["--bind", "measurement,policy", "--policy-file",
                svc.json("release-policy.json",
                         {"version": 1, "rules": {"measurement_in": [MEAS, NEXT]}})]
    r = run(["unshare", "-m", "--propagation", "private", "sh", "-c",
             'mount --bind "$0" /etc/hosts && exec "$@"', svc.hosts_file("127.0.0.1"), *cmd],
            capture_output=True, text=True, check=False, timeout=120)
    if r.returncode != 0:
        raise Fail(f"nitride luks enroll: exit {r.returncode}: {r.stderr.strip()}\n{svc.logs()}")


# ---------------------------------------------------------------- qemu

class HttpOnce:
    """A small HTTP server on 127.0.0.1 (a random body, counts requests), in a thread."""

    def __init__(self):
        import http.server

        outer = self
        self.body = os.urandom(16).hex().encode()
        self.hits = 0

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        self.t = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.t.start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def accel():
    try:
        mods = open("/proc/modules").read()
    except OSError:
        mods = ""
    if re.search(r"^kvm_(intel|amd) ", mods, re.M) and os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "kvm"
    return "tcg"


def qemu_bin():
    q = shutil.which("qemu-system-x86_64")
    if not q:
        raise Skip("qemu-system-x86_64 not installed (scripts/deps.sh installs qemu-system-x86)")
    return q


def boot(args, kernel, initrd, disk, relays, timeout):
    """Boots, returns (result dict or None, console text, seconds)."""
    netdev = "user,id=n0,restrict=on"
    for port in relays:
        netdev += (f",guestfwd=tcp:{GUEST_FWD_IP}:{port}-cmd:"
                   f"socat STDIO TCP:127.0.0.1:{port}")
    cmd = [qemu_bin(), "-machine", "pc", "-accel", accel(),
           "-cpu", "max" if accel() == "tcg" else "host",
           "-m", "256", "-smp", "1", "-nographic", "-no-reboot", "-nodefaults",
           "-serial", "stdio", "-monitor", "none",
           "-kernel", kernel, "-initrd", initrd,
           "-append", "console=ttyS0 panic=-1 quiet loglevel=3 rdinit=/init",
           "-drive", f"file={disk},format=raw,if=virtio,cache=unsafe",
           "-netdev", netdev, "-device", "virtio-net-pci,netdev=n0,romfile="]
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        return None, out.decode(errors="replace"), time.monotonic() - t0
    except BaseException:  # SIGTERM from meson's timeout, ^C: no qemu left behind
        p.kill()
        p.wait()
        raise
    dt = time.monotonic() - t0
    text = out.decode(errors="replace")
    if p.returncode != 0 and b"NTVM-RESULT" not in out:
        text += f"\n(qemu exited {p.returncode})"
    m = None
    for line in out.splitlines():
        mm = RESULT_RE.search(line)
        if mm:
            m = mm
    if not m:
        return None, text, dt
    res = {}
    line, _, msg = m.group(1).decode(errors="replace").partition(" msg=")
    if msg:
        res["msg"] = msg.strip()
    for kv in line.split():
        k, _, v = kv.partition("=")
        res[k] = v
    return res, text, dt


def check_qemu_starts():
    """qemu is installed and can start a machine with the accelerator used (an empty machine,
    told to quit on its monitor). Only this is a skip: every later failure is a failure."""
    q = qemu_bin()
    try:
        r = subprocess.run([q, "-M", "none", "-accel", accel(), "-display", "none", "-nodefaults",
                            "-monitor", "stdio"], input="quit\n", capture_output=True, text=True,
                           timeout=60)
    except subprocess.TimeoutExpired:
        raise Skip("qemu-system-x86_64 did not start an empty machine within 60 s")
    if r.returncode != 0:
        raise Skip(f"qemu-system-x86_64 cannot start a machine: {r.stderr.strip()[-400:]}")


# ---------------------------------------------------------------- main

# How the guest unlocks: as boot does (libcryptsetup with the token plugin), or the CLI.
PLUGIN_UNLOCK = ("${NT_ASAN_PRELOAD:+env LD_PRELOAD=$NT_ASAN_PRELOAD} "
                 "$NT_UNLOCK_SCRIPT /etc/nitride/crypttab")
CLI_UNLOCK = "nitride luks unlock /dev/vda data --provider sim --sim-dir /case/chip"
# expect: the guest's status; refusal: (exit code or None = any non-zero, message fragment with
# the console's spaces as underscores).
CASES = {
    "sealed": {"unlock": PLUGIN_UNLOCK, "expect": "ok"},
    "sealed-measurement": {"unlock": PLUGIN_UNLOCK, "expect": "refused", "other": True,
                           "refusal": (1, "nitride:_token_0_refused")},
    # The debug policy bit (0x30000 is the simulated chip's default policy): refused by the
    # local policy before any key is derived.
    "sealed-debug": {"unlock": PLUGIN_UNLOCK, "expect": "refused",
                     "guest_chip": ["--policy", hex(0x30000 | 1 << 19)],
                     "refusal": (1, "check_'debug'_failed")},
    "sealed-cli": {"unlock": CLI_UNLOCK, "expect": "ok"},
    "sealed-measurement-cli": {"unlock": CLI_UNLOCK, "expect": "refused", "other": True,
                               "refusal": (2, "stays_sealed")},
    # The path the remote flow's services take: user-mode net with restrict=on, a guestfwd
    # relay per connection to 127.0.0.1.
    "relay": {"unlock": "true", "expect": "ok", "relay": True},
    # The remote flow: attestd and kmsd on the host's 127.0.0.1 over TLS, reached by name
    # through the guestfwd relays; `nitride luks enroll --create` on the host.
    "remote": {"unlock": PLUGIN_UNLOCK, "expect": "ok", "remote": True},
    "remote-measurement": {"unlock": PLUGIN_UNLOCK, "expect": "refused", "remote": True,
                           "other": True, "refusal": (1, "measurement_in")},
    # Self-healing: a token with a sealed and a KMS slot; the guest runs the next image (another
    # measurement, which kmsd's policy names): sealed fails, kmsd releases, the guest re-seals;
    # a second boot with kmsd down opens it sealed.
    "heal": {"unlock": PLUGIN_UNLOCK, "expect": "ok", "remote": True, "heal": True},
}
KMS_NAME, ATTESTD_NAME = "kms.nitride.test", "attestd.nitride.test"
MEAS, OTHER, NEXT = "11" * 48, "ab" * 48, "cd" * 48


def token_blob(nitride, img):
    import json
    r = run([nitride, "luks", "list", img, "--json"], capture_output=True, text=True)
    return json.loads(r.stdout.strip().splitlines()[0]).get("sealed", {}).get("blob")


def run_case(args, name, kernel, base, nitride, chip0):
    work = tempfile.mkdtemp(prefix=f"ntvm-{name}-", dir=args.work)
    svc = server = None
    try:
        chip = os.path.join(work, "chip")
        shutil.copytree(chip0, chip, symlinks=True)
        case = CASES[name]
        if case.get("remote"):
            run([nitride, "sim", "set", chip, "--measurement", MEAS], capture_output=True)
            svc = Services(args, work, chip, [MEAS, OTHER, NEXT])
        img, want = make_volume(args, work, nitride, chip, svc, case.get("heal"))
        guest_chip = chip
        change = case.get("guest_chip")
        if case.get("other"):
            # The same chip launching another VM (another measurement): refused, stays sealed.
            change = ["--measurement", OTHER]
        if case.get("heal"):
            # The next image, which kmsd's policy already accepts.
            change = ["--measurement", NEXT]
        if change:
            guest_chip = os.path.join(work, "chip-other")
            shutil.copytree(chip, guest_chip, symlinks=True)
            run([nitride, "sim", "set", guest_chip, *change], capture_output=True)
        extra, relays = "", []
        if case.get("relay"):
            server = HttpOnce()
            relays = [server.port]
            extra = f"NT_NET=1\nNT_MODE=relay\nNT_RELAY={GUEST_FWD_IP}:{server.port}\n"
            want = hashlib.sha256(server.body).hexdigest()
        if svc:
            relays = [svc.kms_port, svc.attestd_port]
            extra = "NT_NET=1\n"
        blob0 = token_blob(nitride, img) if case.get("heal") else None
        res, dt = boot_check(args, name, case, kernel, base, work, img, guest_chip, extra, svc,
                             relays, want, server)
        if case.get("heal"):
            # Self-healing: the sealed slot failed, kmsd released, the guest re-sealed the token
            # to its new state (written to the disk); the next boot opens it with kmsd down.
            if not any(a[0] == "release" and a[1] == "ok" and "purpose luks-reseal" in a[2]
                       for a in svc.audit()):
                raise Fail(f"{name}: no luks-reseal release in kmsd's audit: {svc.audit()}")
            if token_blob(nitride, img) == blob0:
                raise Fail(f"{name}: the guest did not re-seal the token")
            svc.close()
            svc = None
            res2, dt2 = boot_check(args, name + "-again", dict(case, remote=False), kernel, base,
                                   work, img, guest_chip, "NT_NET=1\n", None, relays, want, None)
            dt += dt2
        return dt
    finally:
        if server:
            server.close()
        if svc:
            svc.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def boot_check(args, name, case, kernel, base, work, img, guest_chip, extra, svc, relays, want,
               server):
    """One boot of case with the checks every case has. Returns (result, seconds)."""
    expect = case["expect"]
    before = hdr_sum(img)
    uuid = run(["cryptsetup", "luksUUID", img], capture_output=True, text=True).stdout.strip()
    cc = case_cpio(args, work, name, case["unlock"], guest_chip, uuid, extra, svc)
    initrd = os.path.join(work, "initrd")
    with open(initrd, "wb") as f:
        for part in (base, cc):
            with open(part, "rb") as src:
                shutil.copyfileobj(src, f)
    res, console, dt = boot(args, kernel, initrd, img, relays, args.timeout)
    # The guest's release really went to this kmsd (through the relay).
    audit = svc.audit() if svc and res else []
    if args.verbose or res is None or res.get("status") != expect:
        sys.stdout.write("".join(f"  | {line}\n" for line in console.splitlines()[-60:]))
        if svc:
            sys.stdout.write(svc.logs())
    if res is None:
        raise Fail(f"{name}: no result line on the serial console within {dt:.1f} s")
    if res.get("status") != expect:
        raise Fail(f"{name}: status {res.get('status')} (rc {res.get('rc')}), "
                   f"expected {expect}: {res.get('msg', '')}")
    if expect == "ok" and not case.get("relay") and res.get("target") != "crypt":
        raise Fail(f"{name}: /dev/mapper/data is not a dm-crypt mapping: {res.get('target')}")
    if expect == "ok" and res.get("sha256") != want:
        raise Fail(f"{name}: data read through dm-crypt has sha256 {res.get('sha256')}, "
                   f"wrote {want}")
    if svc:
        unlocks = [a for a in audit if a[0] == "release" and
                   ("purpose luks-unlock" in a[2] or "purpose luks-reseal" in a[2])]
        if not unlocks or (expect == "ok") != (unlocks[-1][1] == "ok"):
            raise Fail(f"{name}: kmsd's audit has no matching luks-unlock release: {audit}")
    if server and (res.get("gw") != "blocked" or server.hits < 2):
        raise Fail(f"{name}: host gateway {res.get('gw')} (restrict=on must block it), "
                   f"{server.hits} connection(s) through the relay (want 2)")
    if expect == "refused":
        rc, frag = case["refusal"]
        if (rc is not None and res.get("rc") != str(rc)) or frag not in res.get("msg", ""):
            raise Fail(f"{name}: refusal rc {res.get('rc')} message {res.get('msg')}")
        if hdr_sum(img) != before:
            raise Fail(f"{name}: the refused unlock changed the LUKS2 header")
    log(f"{name}: {res['status']} (boot-to-result {dt:.2f} s wall, guest uptime at result "
        f"{res.get('uptime', '?')} s, unlock {res.get('ms', '?')} ms; {load()})")
    return res, dt


def load():
    try:
        return "load " + " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "load ?"


def main():
    # meson's timeout sends SIGTERM: unwind (the finally blocks stop qemu and the services and
    # remove the work directory).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", default=os.environ.get("NT_BUILD_ROOT", "build"))
    ap.add_argument("--cache", help="kernel cache (default /var/cache/nitride-test)")
    ap.add_argument("--case", action="append", choices=list(CASES) + ["all"])
    ap.add_argument("--timeout", type=float, default=120, help="per boot, seconds")
    ap.add_argument("--kernel-format", choices=["vmlinux", "bzImage", "both"], default="vmlinux")
    ap.add_argument("--initramfs", choices=["hook", "builtin"], default="hook",
                    help="initramfs/hooks/nitride (default) or the test's own copy of its pieces")
    ap.add_argument("--repeat", type=int, default=1, help="run the cases this many times")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    args.build_dir = os.path.abspath(args.build_dir)
    cases = args.case or ["sealed"]
    if "all" in cases:
        cases = list(CASES)
    nitride = os.path.join(args.build_dir, "src/agent/nitride")
    try:
        check_qemu_starts()
        cache = cache_dir(args)
        args.work = tempfile.mkdtemp(prefix="ntvm-", dir=os.path.join(args.build_dir))
        t = time.monotonic()
        root, kver = fetch_kernel(cache)
        bz = os.path.join(root, "boot", f"vmlinuz-{kver}")
        kernels = []
        if args.kernel_format in ("vmlinux", "both"):
            kernels.append(("vmlinux",
                            extract_vmlinux(bz, os.path.join(cache, "kernel", kver, "vmlinux"))))
        if args.kernel_format in ("bzImage", "both"):
            kernels.append(("bzImage", bz))
        log(f"kernel {kver} ({args.kernel_format}) ready in {time.monotonic() - t:.1f} s")
        t = time.monotonic()
        base = os.path.join(args.work, "base.cpio")
        build_base_initramfs(args, cache, root, kver, base)
        chip = os.path.join(args.work, "chip")
        run([nitride, "sim", "init", chip, "--product", "genoa"], capture_output=True)
        log(f"initramfs ({args.initramfs}) {os.path.getsize(base) >> 10} KiB and simulated chip "
            f"ready in {time.monotonic() - t:.1f} s; accel {accel()}")
        times = {}
        for i in range(args.repeat):
            for kname, kernel in kernels:
                for c in cases:
                    log(f"case {c}, {kname}, run {i + 1}/{args.repeat}")
                    times.setdefault((c, kname), []).append(
                        run_case(args, c, kernel, base, nitride, chip))
        for (c, kname), ts in sorted(times.items()):
            log(f"boot-to-result {c} {kname}: min {min(ts):.2f} s, max {max(ts):.2f} s over "
                f"{len(ts)} run(s)")
    except Skip as e:
        print(f"SKIP: {e}", flush=True)
        return 77
    except (Fail, subprocess.CalledProcessError) as e:
        print(f"FAIL: {e}", flush=True)
        if isinstance(e, subprocess.CalledProcessError) and e.stderr:
            print(e.stderr if isinstance(e.stderr, str) else e.stderr.decode(errors="replace"))
        return 1
    finally:
        if getattr(args, "work", None) and not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
