#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# nitride luks seal|list|unlock|remove on real LUKS2 image files (cryptsetup luksFormat) with the
# simulated SNP chip. This host has no device-mapper: unlock runs with --test, which checks the
# key against the token's keyslot through libcryptsetup without activating anything.
# Covers: seal, list, cryptsetup luksDump showing the token, unlock --test; a changed
# measurement, the debug policy bit, a lower TCB, a blob copied to another volume and an edited
# token are refused with the volume header left byte-for-byte unchanged; remove (never the last
# keyslot without --force); wrong passphrase and a failed seal leave no keyslot or token.
set -euo pipefail

NITRIDE=${1:?usage: luks-sealed.sh NITRIDE}
command -v cryptsetup >/dev/null || { echo "SKIP: cryptsetup not installed (scripts/deps.sh)"; exit 77; }
tmp=$(mktemp -d /tmp/nt-luks-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
expect_exit() { # code, command...
  local want=$1; shift
  set +e; "$@" >"$tmp/out" 2>"$tmp/err"; local got=$?; set -e
  [ "$got" -eq "$want" ] || { cat "$tmp/out" "$tmp/err" >&2; fail "'$*' exited $got, expected $want"; }
}
mkimg() { # path passphrase
  truncate -s 32M "$1"
  printf '%s' "$2" | cryptsetup luksFormat --type luks2 --batch-mode --pbkdf pbkdf2 \
    --pbkdf-force-iterations 1000 "$1" -
}
hdr_sum() { head -c 16M "$1" | sha256sum | cut -d' ' -f1; }
slots() { cryptsetup luksDump "$1" | sed -n '/^Keyslots:/,/^Tokens:/p' | grep -cE '^  [0-9]+: luks2' || true; }
tokens() { cryptsetup luksDump "$1" | sed -n '/^Tokens:/,/^Digests:/p' | grep -cE '^  [0-9]+: ' || true; }

chip=$tmp/chip
"$NITRIDE" sim init "$chip" --product genoa >/dev/null
img=$tmp/a.img
mkimg "$img" 'correct horse'

# Usage errors change nothing.
expect_exit 3 "$NITRIDE" luks seal "$img" --sim-dir "$chip"
expect_exit 3 "$NITRIDE" luks seal "$img" --bind measurement,bogus --sim-dir "$chip"
expect_exit 3 "$NITRIDE" luks seal "$img" --bind measurement,measurement --sim-dir "$chip"
truncate -s 1M "$tmp/plain"
expect_exit 3 "$NITRIDE" luks list "$tmp/plain"

# A wrong passphrase: refused, no keyslot, no token.
before=$(hdr_sum "$img")
echo 'wrong' >"$tmp/pw"
expect_exit 2 "$NITRIDE" luks seal "$img" --bind measurement --sim-dir "$chip" <"$tmp/pw"
grep -q 'No keyslot' "$tmp/err" || fail "wrong passphrase: message"
[ "$(slots "$img")" = 1 ] && [ "$(tokens "$img")" = 0 ] || fail "wrong passphrase left something"
[ "$(hdr_sum "$img")" = "$before" ] || fail "wrong passphrase changed the header"

# Seal (passphrase on stdin), list, luksDump, unlock --test.
echo 'correct horse' >"$tmp/pw"
expect_exit 0 "$NITRIDE" luks seal "$img" --bind measurement,policy --sim-dir "$chip" <"$tmp/pw"
grep -q 'sealed: token 0, keyslot 1' "$tmp/out" || fail "seal output: $(cat "$tmp/out")"
[ "$(slots "$img")" = 2 ] && [ "$(tokens "$img")" = 1 ] || fail "seal: keyslot/token count"
cryptsetup luksDump "$img" >"$tmp/dump"
grep -qE '^  0: nitride' "$tmp/dump" || fail "luksDump does not show the nitride token"
sed -n '/^  1: luks2/,/AF hash/p' "$tmp/dump" | grep -q 'PBKDF:      pbkdf2' || fail "keyslot 1 not PBKDF2"
sed -n '/^  1: luks2/,/AF hash/p' "$tmp/dump" | grep -q 'Iterations: 1000' || fail "keyslot 1 iterations"
expect_exit 0 "$NITRIDE" luks list "$img"
grep -q 'token 0: nitride sealed, keyslot 1' "$tmp/out" || fail "list: $(cat "$tmp/out")"
grep -q 'debug refused' "$tmp/out" || fail "list: policy"
expect_exit 0 "$NITRIDE" luks list "$img" --json
jq -e '.type == "nitride" and .flow == "sealed" and .keyslots == ["1"] and
       (.sealed.bind | sort) == ["measurement","policy"] and .sealed.policy.allow_debug == false' \
  "$tmp/out" >/dev/null || fail "list --json: $(cat "$tmp/out")"
expect_exit 0 "$NITRIDE" luks unlock "$img" data --test --sim-dir "$chip"
grep -q 'opens keyslot 1' "$tmp/out" || fail "unlock --test output"
# The token's key really is keyslot 1's key: cryptsetup agrees when told only that slot... and
# the unlock did not touch the header.
sealed_sum=$(hdr_sum "$img")

# Another measurement: refused, the key stays sealed, header unchanged.
cp -a "$chip" "$tmp/chip-orig"
"$NITRIDE" sim set "$chip" --measurement "$(printf 'ab%.0s' $(seq 48))" >/dev/null
expect_exit 2 "$NITRIDE" luks unlock "$img" data --test --sim-dir "$chip"
grep -q 'stays sealed' "$tmp/err" || fail "measurement: message $(cat "$tmp/err")"
grep -q 'opens keyslot' "$tmp/out" && fail "measurement: opened"
[ "$(hdr_sum "$img")" = "$sealed_sum" ] || fail "refused unlock changed the header"
rm -rf "$chip"; cp -a "$tmp/chip-orig" "$chip"
expect_exit 0 "$NITRIDE" luks unlock "$img" data --test --sim-dir "$chip"

# A reported TCB below the seal-time floor: refused by the local policy.
"$NITRIDE" sim set "$chip" --reported-tcb bl=0 >/dev/null
expect_exit 2 "$NITRIDE" luks unlock "$img" data --test --sim-dir "$chip"
grep -q "check 'tcb' failed" "$tmp/err" || fail "tcb: message $(cat "$tmp/err")"
[ "$(hdr_sum "$img")" = "$sealed_sum" ] || fail "tcb refusal changed the header"
rm -rf "$chip"; cp -a "$tmp/chip-orig" "$chip"

# The debug policy bit: refused by the local policy before any key is derived.
img2=$tmp/b.img
mkimg "$img2" 'pw2'
printf 'pw2' >"$tmp/kf"
expect_exit 0 "$NITRIDE" luks seal "$img2" --bind measurement --key-file "$tmp/kf" --sim-dir "$chip"
expect_exit 0 "$NITRIDE" luks unlock "$img2" data --test --sim-dir "$chip"
pol=$("$NITRIDE" sim show "$chip" --json | jq -r '.launch.policy // .policy')
case "$pol" in 0x*|[0-9]*) ;; *) fail "cannot read the chip's policy: $pol" ;; esac
"$NITRIDE" sim set "$chip" --policy "$(printf '0x%x' $(( pol | (1 << 19) )))" >/dev/null
sum2=$(hdr_sum "$img2")
expect_exit 2 "$NITRIDE" luks unlock "$img2" data --test --sim-dir "$chip"
grep -q "check 'debug' failed" "$tmp/err" || fail "debug: message $(cat "$tmp/err")"
[ "$(hdr_sum "$img2")" = "$sum2" ] || fail "debug refusal changed the header"
# and sealing in a debug VM is refused too, leaving nothing behind
img3=$tmp/c.img
mkimg "$img3" 'pw3'
printf 'pw3' >"$tmp/kf3"
expect_exit 2 "$NITRIDE" luks seal "$img3" --bind measurement --key-file "$tmp/kf3" --sim-dir "$chip"
grep -q "check 'debug' failed" "$tmp/err" || fail "seal in debug VM: message"
[ "$(slots "$img3")" = 1 ] && [ "$(tokens "$img3")" = 0 ] || fail "failed seal left a keyslot or token"
rm -rf "$chip"; cp -a "$tmp/chip-orig" "$chip"

# A blob copied to another volume does not open there (bound to the LUKS UUID).
expect_exit 0 "$NITRIDE" luks list "$img" --json
cp "$tmp/out" "$tmp/token.json"
# img3 needs a keyslot 1 for the token to refer to (its key is another one).
printf 'other' >"$tmp/kf-other"
cryptsetup luksAddKey "$img3" --key-file "$tmp/kf3" --key-slot 1 --pbkdf pbkdf2 \
  --pbkdf-force-iterations 1000 --batch-mode "$tmp/kf-other"
cryptsetup token import "$img3" --token-id 0 --json-file "$tmp/token.json"
sum3=$(hdr_sum "$img3")
expect_exit 2 "$NITRIDE" luks unlock "$img3" data --test --sim-dir "$chip"
grep -q 'stays sealed' "$tmp/err" || fail "copied blob: message $(cat "$tmp/err")"
[ "$(hdr_sum "$img3")" = "$sum3" ] || fail "copied blob refusal changed the header"

# An edited token (local policy weakened) does not open: the policy is authenticated.
jq -c '.sealed.policy.allow_debug = true' "$tmp/token.json" >"$tmp/edited.json"
cp "$img" "$tmp/d.img"
cryptsetup token remove "$tmp/d.img" --token-id 0
cryptsetup token import "$tmp/d.img" --token-id 0 --json-file "$tmp/edited.json"
expect_exit 2 "$NITRIDE" luks unlock "$tmp/d.img" data --test --sim-dir "$chip"
grep -q 'stays sealed' "$tmp/err" || fail "edited token: message $(cat "$tmp/err")"
# A malformed token is ignored with a message.
jq -c '.extra = 1' "$tmp/token.json" >"$tmp/bad.json"
cryptsetup token remove "$tmp/d.img" --token-id 0
cryptsetup token import "$tmp/d.img" --token-id 0 --json-file "$tmp/bad.json"
expect_exit 2 "$NITRIDE" luks unlock "$tmp/d.img" data --test --sim-dir "$chip"
grep -q 'malformed' "$tmp/err" || fail "malformed token: message"

# A truncated image: a clear error.
head -c 8K "$img" >"$tmp/trunc.img"
expect_exit 4 "$NITRIDE" luks unlock "$tmp/trunc.img" data --test --sim-dir "$chip"
grep -q "Cannot open the LUKS2 header" "$tmp/err" || fail "truncated: message"

# remove: the sealed keyslot and token go, the passphrase slot stays; then with only the
# token's keyslot left, remove refuses without --force.
expect_exit 0 "$NITRIDE" luks remove "$img"
[ "$(slots "$img")" = 1 ] && [ "$(tokens "$img")" = 0 ] || fail "remove: counts"
printf 'correct horse' | cryptsetup open --test-passphrase "$img" --key-file - || fail "passphrase slot gone"
expect_exit 3 "$NITRIDE" luks remove "$img"
expect_exit 0 "$NITRIDE" luks seal "$img" --bind measurement --sim-dir "$chip" <"$tmp/pw"
cryptsetup luksKillSlot --batch-mode "$img" 0 </dev/null 2>/dev/null
[ "$(slots "$img")" = 1 ] || fail "setup: passphrase slot not killed"
expect_exit 2 "$NITRIDE" luks remove "$img"
grep -q 'last keyslot' "$tmp/err" || fail "remove last: message"
[ "$(slots "$img")" = 1 ] && [ "$(tokens "$img")" = 1 ] || fail "refused remove changed something"
expect_exit 0 "$NITRIDE" luks unlock "$img" data --test --sim-dir "$chip"
expect_exit 0 "$NITRIDE" luks remove "$img" --force
[ "$(slots "$img")" = 0 ] && [ "$(tokens "$img")" = 0 ] || fail "remove --force: counts"
# Unlock tries the token's keyslot only: with a slow argon2id passphrase slot (about 2 s per
# try) in slot 0, unlock --test stays far below one passphrase try.
slow=$tmp/slow.img
truncate -s 32M "$slow"
printf 'slowpw' | cryptsetup luksFormat --type luks2 --batch-mode --pbkdf argon2id \
  --pbkdf-force-iterations 8 --pbkdf-memory 65536 --pbkdf-parallel 1 "$slow" -
t0=$(date +%s%N)
printf 'slowpw' | cryptsetup open --test-passphrase "$slow" --key-file -
pass_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
printf 'slowpw' >"$tmp/kfs"
expect_exit 0 "$NITRIDE" luks seal "$slow" --bind measurement --key-file "$tmp/kfs" --sim-dir "$chip"
t0=$(date +%s%N)
expect_exit 0 "$NITRIDE" luks unlock "$slow" data --test --sim-dir "$chip"
unlock_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "passphrase slot try: ${pass_ms} ms, sealed unlock --test: ${unlock_ms} ms"
[ "$pass_ms" -gt 300 ] || echo "note: the argon2id slot was fast here (${pass_ms} ms)"
[ "$unlock_ms" -lt "$pass_ms" ] || fail "unlock (${unlock_ms} ms) not faster than one passphrase try (${pass_ms} ms): did it try the passphrase slot?"

# --expect-measurement: pre-authorise the next image; in it the unlock re-seals, elsewhere not.
rm -rf "$chip"; cp -a "$tmp/chip-orig" "$chip"
nx=$tmp/next.img
mkimg "$nx" 'pwn'
printf 'pwn' >"$tmp/kfn"
expect_exit 0 "$NITRIDE" luks seal "$nx" --bind measurement,policy --key-file "$tmp/kfn" --sim-dir "$chip"
next_m=$(printf '5a%.0s' $(seq 48))
expect_exit 3 "$NITRIDE" luks seal "$nx" --expect-measurement abcd --sim-dir "$chip"
expect_exit 0 "$NITRIDE" luks seal "$nx" --expect-measurement "$next_m" --sim-dir "$chip"
grep -q 'pre-authorised measurement 5a5a' "$tmp/out" || fail "expect: output $(cat "$tmp/out")"
"$NITRIDE" luks list "$nx" --json | jq -e --arg m "$next_m" '.sealed.expect.measurement == $m and
  .sealed.expect.bind == ["policy"]' >/dev/null || fail "expect: token"
"$NITRIDE" sim set "$chip" --measurement "$(printf 'cd%.0s' $(seq 48))" >/dev/null
sumn=$(hdr_sum "$nx")
expect_exit 2 "$NITRIDE" luks unlock "$nx" data --test --sim-dir "$chip"
[ "$(hdr_sum "$nx")" = "$sumn" ] || fail "expect: a refused unlock changed the header"
"$NITRIDE" sim set "$chip" --measurement "$next_m" >/dev/null
expect_exit 0 "$NITRIDE" luks unlock "$nx" data --test --sim-dir "$chip"
grep -q 'pre-authorised; re-sealed' "$tmp/err" || fail "expect: no re-seal $(cat "$tmp/err")"
"$NITRIDE" luks list "$nx" --json | jq -e '.sealed.expect == null' >/dev/null || fail "expect slot kept"
expect_exit 0 "$NITRIDE" luks unlock "$nx" data --test --sim-dir "$chip"
grep -q 'pre-authorised' "$tmp/err" && fail "expect: second unlock not by the sealed slot"
rm -rf "$chip"; cp -a "$tmp/chip-orig" "$chip"
expect_exit 2 "$NITRIDE" luks unlock "$nx" data --test --sim-dir "$chip"

echo "OK: luks sealed flow (host test mode: keys checked with libcryptsetup, no device-mapper)"
