#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Tokens, PINs and logins over the wire (protocol revision 2): vhsm-token-test drives libvhsm as
# uid 4242 (its token) and uid 4343 (another uid); lockout must survive a reconnect, a clean
# restart and a SIGKILL. Needs root to run the clients as other uids.
. "$(dirname "$0")/vhsm-lib.sh"
TT=$6
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root to run clients as other uids"; exit 77; }
as() { local uid=$1; shift; H as-user "$uid" "$uid" -- "$TT" "$@"; }

start_vhsmd --pin-max-tries 3 --pin-kdf-iterations 1000
# data objects, certificates, public keys, session objects (branch obj): a certificate and a
# public key made by OpenSSL, readable by the test's other uids
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/cert.key" \
    -subj /CN=vhsm-token -days 1 -outform DER -out "$T/cert.der" 2>/dev/null || fail "openssl req"
openssl pkey -in "$T/cert.key" -pubout -outform DER -out "$T/spki.der" || fail "openssl pkey"
chmod a+rx "$T" && chmod a+r "$T/cert.der" "$T/spki.der"
export CERT_DER=$T/cert.der SPKI_DER=$T/spki.der
as 4646 nonkey "$SOCK" || fail "nonkey"
as 4343 nonkey-other "$SOCK" || fail "nonkey-other"
as 4242 revision "$SOCK" || fail "revision"
as 4242 setup "$SOCK" || fail "setup"
as 4545 objects "$SOCK" || fail "objects"
# a clean restart keeps the count (2 failures), the third locks
stop_vhsmd || fail "vhsmd did not stop cleanly"
start_vhsmd --pin-max-tries 3 --pin-kdf-iterations 1000
as 4242 lock "$SOCK" || fail "lock"
# SIGKILL: every failure was durable before it was answered
kill_vhsmd
start_vhsmd --pin-max-tries 3 --pin-kdf-iterations 1000
as 4343 other "$SOCK" || fail "another uid"
as 4242 locked "$SOCK" || fail "locked after restart"
as 4545 objects2 "$SOCK" || fail "objects after restart"
as 4646 nonkey2 "$SOCK" || fail "nonkey after restart"
grep -q "Wrong user PIN for the token of uid 4242 (3 of 3 failures)" "$VHSMD_LOG" || fail "log line"
# mechanisms with parameters (branch par)
as 4747 mech "$SOCK" || fail "mechanisms with parameters"
# root's recovery of a locked SO PIN: refused to the token's own uid (library and CLI), done by
# root through the CLI, audited; the PIN never reaches the log
as 4646 so-lock "$SOCK" || fail "so-lock"
rc=0; printf 'so-pin-0002\n' | H as-user 4646 4646 -- "$VHSM" --socket "$SOCK" token reset-so-pin --uid 4646 || rc=$?
[ "$rc" = 5 ] || fail "a non-root reset-so-pin: exit $rc, expected 5 (permission denied)"
rc=0; printf 'so-pin-0002\n' | V token reset-so-pin --uid 4999 2>/dev/null || rc=$?
[ "$rc" != 0 ] || fail "reset-so-pin of an uninitialised token succeeded"
rc=0; printf 'ab\n' | V token reset-so-pin --uid 4646 2>/dev/null || rc=$?
[ "$rc" = 9 ] || fail "a 2-byte SO PIN: exit $rc, expected 9"
rc=0; V token reset-so-pin 2>/dev/null </dev/null || rc=$?
[ "$rc" = 2 ] || fail "reset-so-pin without --uid: exit $rc, expected 2"
printf 'so-pin-0002\n' | V token reset-so-pin --uid 4646 || fail "root's reset-so-pin"
as 4646 so-reset "$SOCK" || fail "so-reset"
grep -q "SO PIN of the token of uid 4646 reset by root" "$VHSMD_LOG" || fail "reset not audited"
! grep -q "so-pin-0002" "$VHSMD_LOG" || fail "the new SO PIN reached the log"
! grep -q "wrong-3\|user-pin-1\|so-pin-0001" "$VHSMD_LOG" || fail "a PIN reached the log"
! grep -aq "user-pin-1" "$KS" || fail "a PIN in clear in the keystore"
stop_vhsmd || fail "stop"

# Objects count against their owner's quota (branch obj).
start_vhsmd --quota-bytes 96K
as 4747 nonkey-quota "$SOCK" || fail "nonkey-quota"
stop_vhsmd || fail "stop"

# The default KDF: one login's cost through the daemon (reported, not judged; load alongside).
start_vhsmd
ms=$(as 4444 kdf-time "$SOCK") || fail "kdf-time"
echo "login with the default PIN KDF (PBKDF2-SHA256, 100000 iterations): ${ms} ms; load: $(cut -d' ' -f1-3 /proc/loadavg)"
stop_vhsmd || fail "stop"
echo "vhsm-token: OK"
