#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# libcryptsetup-token-nitride.so driven by the real `cryptsetup` CLI (docs/luks.md "Plugin").
# cryptsetup 2.6 (Debian 12) loads token plugins only from its compiled-in directory (no
# --external-tokens-path before 2.7): the test runs cryptsetup in a private mount namespace
# (unshare -m) where a temporary directory holding the freshly built plugin is bind-mounted over
# that directory. The machine's directory is never written, nothing outlives the test, and runs
# in parallel do not see each other. This host has no device-mapper: `open --test-passphrase`
# checks the key the plugin returns against the token's keyslot without activating.
# Covers: luksDump shows the token through the plugin's dump (no sealed blob); open --token-only
# unlocks with the plugin and fails without it; no evidence provider -> the plugin steps aside
# (-EAGAIN) and cryptsetup falls back to the passphrase; another measurement -> refused with a
# message, header byte-for-byte unchanged; a malformed token is refused by validate.
set -euo pipefail

NITRIDE=${1:?usage: cryptsetup-plugin.sh NITRIDE PLUGIN.so}
PLUGIN=${2:?usage: cryptsetup-plugin.sh NITRIDE PLUGIN.so}
command -v cryptsetup >/dev/null || { echo "SKIP: cryptsetup not installed (scripts/deps.sh)"; exit 77; }
tokdir=$(cryptsetup --help | sed -n 's/^LUKS2 external token plugin path: \(.*\)\.$/\1/p')
[ -n "$tokdir" ] && [ -d "$tokdir" ] || { echo "SKIP: this cryptsetup has no external token directory"; exit 77; }
unshare -m true 2>/dev/null || { echo "SKIP: cannot make a private mount namespace (unshare -m): needs root/CAP_SYS_ADMIN"; exit 77; }

tmp=$(mktemp -d /tmp/nt-cplug-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
mkdir "$tmp/plugins"
cp "$PLUGIN" "$tmp/plugins/libcryptsetup-token-nitride.so"
# A sanitizer build of the plugin needs its runtimes loaded first in (uninstrumented) cryptsetup;
# cryptsetup's own allocations are not ours to leak-check.
export NT_PRELOAD
NT_PRELOAD=$(ldd "$PLUGIN" | awk '$1 ~ /^lib(asan|ubsan)\.so/ {print $3}' | paste -sd: -)
# cryptsetup with our plugin directory in place of the system's, in a throw-away namespace.
cs() {
  unshare -m --propagation private sh -c 'mount --bind "$0" "$1" && shift &&
    if [ -n "$NT_PRELOAD" ]; then export LD_PRELOAD=$NT_PRELOAD ASAN_OPTIONS=detect_leaks=0:abort_on_error=1; fi &&
    exec cryptsetup "$@"' "$tmp/plugins" "$tokdir" "$@"
}
expect_exit() { # code, command...
  local want=$1; shift
  set +e; "$@" >"$tmp/out" 2>"$tmp/err"; local got=$?; set -e
  [ "$got" -eq "$want" ] || { cat "$tmp/out" "$tmp/err" >&2; fail "'$*' exited $got, expected $want"; }
}
expect_fail() { # command... (any non-zero exit)
  set +e; "$@" >"$tmp/out" 2>"$tmp/err"; local got=$?; set -e
  [ "$got" -ne 0 ] || { cat "$tmp/out" "$tmp/err" >&2; fail "'$*' succeeded"; }
}
hdr_sum() { head -c 16M "$1" | sha256sum | cut -d' ' -f1; }

chip=$tmp/chip
"$NITRIDE" sim init "$chip" --product genoa >/dev/null
img=$tmp/a.img
truncate -s 32M "$img"
printf 'correct horse' | cryptsetup luksFormat --type luks2 --batch-mode --pbkdf pbkdf2 \
  --pbkdf-force-iterations 1000 "$img" -
printf 'correct horse' >"$tmp/kf"
"$NITRIDE" luks seal "$img" --bind measurement,policy --key-file "$tmp/kf" --sim-dir "$chip" >/dev/null
blob=$("$NITRIDE" luks list "$img" --json | jq -r .sealed.blob)
[ ${#blob} -gt 40 ] || fail "no sealed blob in the token"

# The plugin's configuration: the simulated chip ($NITRIDE_SIM_DIR) as evidence provider.
echo '{"provider":"sim"}' >"$tmp/luks-sim.conf"
export NITRIDE_SIM_DIR=$chip
export NITRIDE_LUKS_CONF=$tmp/luks-sim.conf

# luksDump through the plugin's dump: readable, and no sealed blob.
expect_exit 0 cs luksDump "$img"
grep -qE '^  0: nitride' "$tmp/out" || fail "luksDump: no nitride token"
grep -qE 'flow: +sealed' "$tmp/out" || fail "luksDump: the plugin's dump is missing: $(cat "$tmp/out")"
grep -qE 'bound to: +policy,measurement' "$tmp/out" || fail "luksDump: bind"
grep -qE 'policy: +debug refused' "$tmp/out" || fail "luksDump: policy"
grep -qF "$blob" "$tmp/out" && fail "luksDump printed the sealed blob"
expect_exit 0 cryptsetup luksDump "$img"
grep -qE 'flow: +sealed' "$tmp/out" && fail "the system's cryptsetup already has a nitride plugin: the test would not test this build"

# open --token-only with the plugin: unlocks (test mode); without it: no usable token.
sum=$(hdr_sum "$img")
expect_exit 0 cs open --token-only --test-passphrase "$img"
expect_exit 0 cs open --token-only --token-type nitride --test-passphrase "$img"
expect_exit 0 cs open --token-only --token-id 0 --test-passphrase "$img"
expect_fail cryptsetup open --token-only --test-passphrase "$img"
expect_fail cs open --token-only --disable-external-tokens --test-passphrase "$img"
[ "$(hdr_sum "$img")" = "$sum" ] || fail "unlock changed the header"

# No evidence provider: the plugin returns -EAGAIN; --token-only fails, and without it
# cryptsetup falls back to the passphrase.
echo '{"provider":"auto"}' >"$tmp/luks-auto.conf"
NITRIDE_SEV_GUEST_DEV=$tmp/no-sev-guest NITRIDE_TSM_ROOT=$tmp/no-tsm NITRIDE_LUKS_CONF=$tmp/luks-auto.conf \
  expect_fail cs open --token-only --test-passphrase "$img"
printf 'correct horse\n' >"$tmp/pw"
NITRIDE_SEV_GUEST_DEV=$tmp/no-sev-guest NITRIDE_TSM_ROOT=$tmp/no-tsm NITRIDE_LUKS_CONF=$tmp/luks-auto.conf \
  expect_exit 0 cs open --test-passphrase -v "$img" <"$tmp/pw"
grep -q 'not available here' "$tmp/out" "$tmp/err" || fail "fallback: no message from the plugin: $(cat "$tmp/out" "$tmp/err")"
# A malformed configuration: the token steps aside with a message, it does not crash.
echo '{"provider":' >"$tmp/luks-bad.conf"
NITRIDE_LUKS_CONF=$tmp/luks-bad.conf expect_fail cs open --token-only --test-passphrase "$img"
grep -q 'configuration' "$tmp/err" || fail "bad conf: message $(cat "$tmp/err")"

# Another measurement: refused, the key stays sealed, header unchanged.
cp -a "$chip" "$tmp/chip-orig"
"$NITRIDE" sim set "$chip" --measurement "$(printf 'ab%.0s' $(seq 48))" >/dev/null
expect_fail cs open --token-only --test-passphrase "$img"
grep -q 'nitride: token 0 refused' "$tmp/err" || fail "measurement: message $(cat "$tmp/err")"
[ "$(hdr_sum "$img")" = "$sum" ] || fail "refused unlock changed the header"
rm -rf "$chip"; cp -a "$tmp/chip-orig" "$chip"
# The debug policy bit: refused by the local policy, the check named.
pol=$("$NITRIDE" sim show "$chip" --json | jq -r '.launch.policy // .policy')
"$NITRIDE" sim set "$chip" --policy "$(printf '0x%x' $(( pol | (1 << 19) )))" >/dev/null
expect_fail cs open --token-only --test-passphrase "$img"
grep -q "check 'debug' failed" "$tmp/err" || fail "debug: message $(cat "$tmp/err")"
rm -rf "$chip"; cp -a "$tmp/chip-orig" "$chip"
expect_exit 0 cs open --token-only --test-passphrase "$img"

# A malformed nitride token (an unknown member): validate refuses it, nothing is opened.
"$NITRIDE" luks list "$img" --json | jq -c '.extra = 1' >"$tmp/bad.json"
cp "$img" "$tmp/b.img"
cryptsetup token remove "$tmp/b.img" --token-id 0
cryptsetup token import "$tmp/b.img" --token-id 0 --json-file "$tmp/bad.json"
sumb=$(hdr_sum "$tmp/b.img")
expect_fail cs open --token-only --test-passphrase "$tmp/b.img"
expect_exit 0 cs luksDump "$tmp/b.img"
grep -qE 'flow: +sealed' "$tmp/out" && fail "dump of a malformed token shown as valid"
[ "$(hdr_sum "$tmp/b.img")" = "$sumb" ] || fail "malformed token: header changed"

echo "OK: cryptsetup CLI with libcryptsetup-token-nitride.so (host test mode, no device-mapper)"
