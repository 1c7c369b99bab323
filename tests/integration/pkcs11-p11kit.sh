#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# p11-kit finds the module through the module file `meson install` installs: the project is
# installed into a temporary destdir, and in a private mount namespace (unshare -m) the destdir's
# p11-kit module directory is bind-mounted over the system's (p11-kit's compiled-in
# /usr/share/p11-kit/modules) and the installed library directory over the prefix's, so that the
# installed vhsm.module is read unchanged and names the installed library. Then `p11-kit
# list-modules` lists the module and its token, and OpenSC pkcs11-tool drives the module through
# p11-kit-proxy.so (init token and PIN, generate, sign; the signature verified by plain OpenSSL).
# Arguments: nitride vhsmd module.so (the build's, to find the sanitizer runtimes); needs
# $NT_BUILD_ROOT (set by meson test) and root for the mount namespace.
set -euo pipefail
NITRIDE=$1 VHSMD=$2 M=$3
for tool in p11-kit pkcs11-tool p11tool openssl meson unshare; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool missing (scripts/deps.sh installs it)"; exit 77; }
done
PROXY=$(find /usr/lib -name p11-kit-proxy.so 2>/dev/null | head -1)
[ -n "$PROXY" ] || { echo "SKIP: p11-kit-proxy.so missing (p11-kit-modules)"; exit 77; }
[ "$(id -u)" = 0 ] && unshare -m true 2>/dev/null ||
  { echo "SKIP: needs root for a private mount namespace (unshare -m)"; exit 77; }
[ -n "${NT_BUILD_ROOT:-}" ] || { echo "SKIP: NT_BUILD_ROOT not set (run through meson test)"; exit 77; }

T=$(mktemp -d /tmp/nt-p11kit.XXXXXX)
chmod 755 "$T"
VHSMD_PID=
cleanup() {
  [ -n "$VHSMD_PID" ] && kill "$VHSMD_PID" 2>/dev/null && wait "$VHSMD_PID" 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  [ -f "$T/vhsmd.log" ] && { echo "--- vhsmd log (tail)" >&2; tail -15 "$T/vhsmd.log" >&2; }
  exit 1
}
step() { echo "== $*"; }

step "meson install --destdir"
D=$T/dest
meson install -C "$NT_BUILD_ROOT" --destdir "$D" --no-rebuild --quiet >"$T/install.log" 2>&1 ||
  fail "meson install: $(tail -5 "$T/install.log")"
MODFILE=$(find "$D" -path '*/p11-kit/modules/vhsm.module' | head -1)
[ -n "$MODFILE" ] || fail "no vhsm.module installed"
MODDIR=$(dirname "${MODFILE#"$D"}")
LIB=$(awk '$1 == "module:" {print $2}' "$MODFILE")
case $LIB in /*) ;; *) fail "the module file names a relative path: $LIB" ;; esac
[ -f "$D$LIB" ] || fail "the module file names $LIB, which meson install did not install"
[ -d "$MODDIR" ] || fail "p11-kit's module directory $MODDIR does not exist on this system"
# the deepest existing ancestor of the library's directory is replaced by the destdir's
LIBTOP=$(dirname "$LIB")
while [ ! -d "$LIBTOP" ]; do LIBTOP=$(dirname "$LIBTOP"); done
[ "$LIBTOP" != / ] || fail "no directory of $LIB exists on this system"
echo "module file $MODDIR/vhsm.module -> $LIB (bind mounts: $MODDIR, $LIBTOP)"

"$NITRIDE" sim init "$T/sim" --product milan >/dev/null
"$VHSMD" --foreground --socket "$T/vhsm.sock" --keystore "$T/state/keystore" --provider sim \
  --sim-dir "$T/sim" --freshness-anchor "file:$T/anchor" >"$T/vhsmd.log" 2>&1 &
VHSMD_PID=$!
for _ in $(seq 1 200); do [ -S "$T/vhsm.sock" ] && break; sleep 0.05; done
[ -S "$T/vhsm.sock" ] || fail "vhsmd did not come up"
export VHSM_PKCS11_SOCKETS=$T/vhsm.sock
# A sanitizer build's module needs its runtimes loaded first into the uninstrumented clients.
NT_PRELOAD=$(ldd "$M" | awk '$1 ~ /^lib(asan|ubsan)\.so/ {print $3}' | paste -sd: -)
export NT_PRELOAD

# NS CMD...: CMD in a private mount namespace with the installed files in place.
NS() {
  unshare -m --propagation private bash -c '
    set -e
    mount --bind "$D$MODDIR" "$MODDIR"
    mount --bind "$D$LIBTOP" "$LIBTOP"
    if [ -n "$NT_PRELOAD" ]; then
      export LD_PRELOAD=$NT_PRELOAD ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
    fi
    exec timeout 120 "$@"' ns "$@"
}
export D MODDIR LIBTOP
cd "$T"

step "p11-kit list-modules"
NS p11-kit list-modules >out 2>&1 || fail "p11-kit list-modules: $(cat out)"
cat out
grep -q "^vhsm: $LIB" out || fail "p11-kit does not list the vhsm module: $(cat out)"
grep -q "library-manufacturer: Nitride" out || fail "not our library: $(cat out)"
grep -q "token: " out || fail "no token listed: $(cat out)"
grep -q "manufacturer: Nitride" out || fail "no vHSM token: $(cat out)"
# without the installed module file p11-kit does not know the module (the test is not vacuous)
timeout 60 p11-kit list-modules >out.sys 2>&1 || true
! grep -q "^vhsm: $LIB" out.sys || fail "the module is installed on the system itself; the test proves nothing"

step "GnuTLS p11tool (p11-kit's registered modules, no --provider)"
NS p11tool --list-tokens >out 2>&1 || fail "p11tool --list-tokens: $(cat out)"
grep -q "Manufacturer: Nitride" out || fail "p11tool does not find the vHSM token: $(cat out)"

step "pkcs11-tool through p11-kit-proxy.so"
SO_PIN=so-pin-proxy PIN=user-pin-proxy
P() { NS pkcs11-tool --module "$PROXY" --token-label "proxy token" "$@"; }
NS pkcs11-tool --module "$PROXY" -L >out 2>&1 || fail "proxy -L: $(cat out)"
grep -q "vhsmd at $T/vhsm.sock" out || fail "the proxy shows no vHSM slot: $(cat out)"
grep -q "uninitialized" out || fail "the proxy's slot is not the fresh token: $(cat out)"
NS pkcs11-tool --module "$PROXY" --slot-index 0 --init-token --so-pin "$SO_PIN" --label "proxy token" \
  >out 2>&1 || fail "--init-token through the proxy: $(cat out)"
P --init-pin --so-pin "$SO_PIN" --pin "$PIN" >out 2>&1 || fail "--init-pin: $(cat out)"
NS pkcs11-tool --module "$PROXY" -L >out 2>&1 || fail "proxy -L: $(cat out)"
grep -q "token manufacturer : Nitride" out || fail "the proxy shows no vHSM token: $(cat out)"
grep -q "token label        : proxy token" out || fail "label through the proxy: $(cat out)"
P --login --pin "$PIN" --keypairgen --key-type EC:prime256v1 --label px-ec >out 2>&1 ||
  fail "keypairgen through the proxy: $(cat out)"
P -O >objs 2>&1 || fail "-O: $(cat objs)"
ID=$(awk '$1=="label:" && $2=="px-ec" {f=1} f && $1=="ID:" {print $2; exit}' objs)
[ -n "$ID" ] || fail "no CKA_ID: $(cat objs)"
# OpenSC's pkcs11-tool (0.23) frees the OSSL_PARAMs it then reads when it builds an EC public
# key: under ASan (runtimes preloaded) that aborts pkcs11-tool itself, so a sanitizer build
# exports the key with GnuTLS p11tool (which loads the p11-kit modules itself) instead.
if [ -n "$NT_PRELOAD" ]; then
  GNUTLS_PIN=$PIN NS p11tool --login --export-pubkey "pkcs11:token=proxy%20token;object=px-ec;type=public" \
    >ec.pem 2>out || fail "export the public key (p11tool): $(cat out)"
else
  P --read-object --type pubkey --id "$ID" -o ec.der >out 2>&1 || fail "export the public key: $(cat out)"
  openssl pkey -pubin -inform DER -in ec.der -out ec.pem
fi
printf 'through the proxy %s\n' "$(date +%s%N)" >data
P --login --pin "$PIN" --sign -m ECDSA-SHA256 --id "$ID" -i data -o ec.sig --signature-format openssl \
  >out 2>&1 || fail "sign through the proxy: $(cat out)"
openssl dgst -sha256 -verify ec.pem -signature ec.sig data >/dev/null || fail "the proxy's signature"
P --login --pin wrong-pin-9 -O >out 2>&1 && fail "a wrong PIN was accepted through the proxy"
grep -q CKR_PIN_INCORRECT out || fail "wrong PIN through the proxy: $(cat out)"
echo "pkcs11-p11kit: all passed"
