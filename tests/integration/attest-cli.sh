#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# nitride attest against the real nitride-attestd on 127.0.0.1 (TLS with a certificate made here
# for IP:127.0.0.1), a simulated Milan chip, and a real vhsmd for the transfer key:
#   happy path with --no-vhsm and with vhsmd; --json claims (measurement = the chip's, cnf.jwk =
#   our public key); --token-out (0600, a JWS whose payload names our measurement); a refused launch
#   (measurement not in the policy) exits 2 naming check "measurement" without retrying; attestd
#   down: retries, then exit 4 within the deadline; attestd coming up during the retries: success;
#   429 from the rate limit: retried until the deadline allows; wrong --ca: TLS error, exit 4, not
#   retried; plain http:// to a non-loopback host refused (exit 3); a nonce that expired while
#   vhsmd was slow is replaced by a new challenge.
# Arguments: $1 nitride  $2 nitride-attestd  $3 vhsmd  $4 vhsm
set -euo pipefail

NITRIDE=$1 ATTESTD=$2 VHSMD=$3 VHSM=$4
T=$(mktemp -d /tmp/nt-attest-test.XXXXXX)
chmod 755 "$T"
SIM=$T/sim
ATTESTD_PID= VHSMD_PID= PROXY_PID=
ATTESTD_LOG=$T/attestd.log VHSMD_LOG=$T/vhsmd.log

stop_pid() {
  local pid=$1
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
}
cleanup() {
  stop_pid "$ATTESTD_PID"
  stop_pid "$VHSMD_PID"
  stop_pid "$PROXY_PID"
  rm -rf "$T"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  for f in "$T/out" "$T/err"; do [ -f "$f" ] && { echo "--- $f" >&2; tail -30 "$f" >&2; }; done
  [ -f "$ATTESTD_LOG" ] && { echo "--- attestd log (tail)" >&2; tail -20 "$ATTESTD_LOG" >&2; }
  exit 1
}
# expect CODE CMD...: runs CMD (bounded), stdout in $T/out, stderr in $T/err.
expect() {
  local want=$1 got=0
  shift
  timeout 120 "$@" >"$T/out" 2>"$T/err" || got=$?
  [ "$got" = "$want" ] || fail "exit $got, wanted $want: $*"
}
hex_rep() { printf "$1%.0s" $(seq "$2"); }

# The chip and the launch the policy allows.
M1=$(hex_rep a1 48)
M2=$(hex_rep b2 48)
"$NITRIDE" sim init "$SIM" --product milan >/dev/null
"$NITRIDE" sim set "$SIM" --measurement "$M1" >/dev/null

# TLS: a self-signed certificate for IP:127.0.0.1, and an unrelated CA.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
  -keyout "$T/tls.key" -out "$T/tls.pem" 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=other-ca -keyout "$T/other.key" -out "$T/other.pem" 2>/dev/null
head -c 32 /dev/urandom >"$T/challenge.key"
chmod 600 "$T/challenge.key" "$T/tls.key"

echo "{\"measurements\": [\"$M1\"], \"vmpls\": [0]}" >"$T/policy.json"
write_config() { # write_config FILE [extra top-level JSON members]
  cat >"$1" <<EOF
{
  "listen": "127.0.0.1:0",
  "tls": {"cert": "$T/tls.pem", "key": "$T/tls.key"},
  "challenge": {"secret": "$T/challenge.key", "lifetime": ${CHALLENGE_LIFETIME:-60}},
  "token": {"keys_dir": "$T/keys"},
  "trust_anchors": ["$SIM/ark.pem"],
  "policies": {"prod": {"file": "$T/policy.json"}},
  "default_policy": "prod"${2:+,
  $2}
}
EOF
}
write_config "$T/attestd.json"

# start_attestd CONFIG [extra args]: starts it, waits for the port file and /healthz.
start_attestd() {
  local config=$1
  shift
  rm -f "$T/port"
  "$ATTESTD" --config "$config" --port-file "$T/port" "$@" >>"$ATTESTD_LOG" 2>&1 &
  ATTESTD_PID=$!
  for _ in $(seq 1 200); do
    if [ -s "$T/port" ]; then
      PORT=$(cat "$T/port")
      if curl -sf --cacert "$T/tls.pem" "https://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; then
        URL=https://127.0.0.1:$PORT
        return 0
      fi
    fi
    kill -0 "$ATTESTD_PID" 2>/dev/null || { wait "$ATTESTD_PID" || true; fail "attestd exited at start-up"; }
    sleep 0.05
  done
  fail "attestd did not come up"
}
stop_attestd() { stop_pid "$ATTESTD_PID"; ATTESTD_PID=; }

start_attestd "$T/attestd.json"
A=("$NITRIDE" attest --attestd "$URL" --ca "$T/tls.pem" --sim "$SIM")
ae='.submods.cpu0["ear.veraison.annotated-evidence"]'

# 1. Happy path, ephemeral key: human claims.
expect 0 "${A[@]}" --no-vhsm
grep -q '^status: *affirming$' "$T/out" || fail "human: status"
grep -q "^measurement: *$M1\$" "$T/out" || fail "human: measurement"
grep -q '^policy: *prod$' "$T/out" || fail "human: policy id"
grep -q '^product: *[Mm]ilan' "$T/out" || fail "human: product"
grep -q '^signing key: *[Vv][Cc][Ee][Kk]' "$T/out" || fail "human: signing key"
grep -q '^TCB: .*microcode' "$T/out" || fail "human: TCB"
grep -q '^tee-pubkey: .*thumbprint.*ephemeral agent key' "$T/out" || fail "human: key source"
grep -q 'diagnostics only' "$T/err" || fail "--no-vhsm not labelled as diagnostic"
if grep -q 'eyJ' "$T/out" "$T/err"; then fail "a token or JWS part was printed"; fi

# 2. --json: the claims object.
expect 0 "${A[@]}" --no-vhsm --json
jq -e --arg m "$M1" "$ae.measurement == \$m" "$T/out" >/dev/null || fail "--json: measurement"
jq -e '.submods.cpu0["ear.status"] == "affirming"' "$T/out" >/dev/null || fail "--json: status"
jq -e '.cnf.jwk.crv == "P-384" and (.cnf.jwk | has("d") | not)' "$T/out" >/dev/null \
  || fail "--json: cnf.jwk"
jq -e "$ae.runtime_data_claims[\"tee-pubkey\"] == .cnf.jwk" "$T/out" >/dev/null \
  || fail "--json: runtime data and cnf disagree"

# 3. --token-out: 0600, atomic (no temporary left), a JWS naming our measurement.
expect 0 "${A[@]}" --no-vhsm --quiet --token-out "$T/token.jwt"
[ ! -s "$T/out" ] || fail "--quiet printed claims"
[ "$(stat -c %a "$T/token.jwt")" = 600 ] || fail "token file mode $(stat -c %a "$T/token.jwt")"
[ "$(ls "$T" | grep -c 'token.jwt')" = 1 ] || fail "temporary token file left behind"
[ "$(tr -cd . <"$T/token.jwt" | wc -c)" = 2 ] || fail "token is not a compact JWS"
payload=$(cut -d. -f2 <"$T/token.jwt" | tr '_-' '/+')
while [ $((${#payload} % 4)) -ne 0 ]; do payload="$payload="; done
echo "$payload" | base64 -d | jq -e --arg m "$M1" "$ae.measurement == \$m" >/dev/null \
  || fail "token payload: measurement"

# 4. vhsmd's transfer key.
SOCK=$T/vhsm.sock
start_vhsmd() {
  "$VHSMD" --foreground --socket "$SOCK" --keystore "$T/state/keystore" --provider sim \
    --sim-dir "$SIM" --freshness-anchor "file:$T/run/keystore.anchor" "$@" >>"$VHSMD_LOG" 2>&1 &
  VHSMD_PID=$!
  for _ in $(seq 1 200); do
    if [ -S "$SOCK" ] && "$VHSM" --socket "$SOCK" ping >/dev/null 2>&1; then return 0; fi
    kill -0 "$VHSMD_PID" 2>/dev/null || fail "vhsmd exited at start-up"
    sleep 0.05
  done
  fail "vhsmd did not come up"
}
start_vhsmd
expect 0 "${A[@]}" --vhsm-socket "$SOCK" --json
jq -e --arg m "$M1" "$ae.measurement == \$m" "$T/out" >/dev/null || fail "vhsm: measurement"
jq -e '.cnf.jwk.kty == "EC" and .cnf.jwk.crv == "P-256" and (.cnf.jwk.kid | length > 0)
  and (.cnf.jwk | has("d") | not)' "$T/out" >/dev/null || fail "vhsm: cnf.jwk"
if grep -q 'diagnostics only' "$T/err"; then fail "vhsmd key labelled as diagnostic"; fi
VHSM_SOCKET=$SOCK expect 0 "${A[@]}"
grep -q '^tee-pubkey: .*vhsmd transfer key' "$T/out" || fail "vhsm (\$VHSM_SOCKET): key source"
grep -q 'did not record the verdict.*--attestd-jwks' "$T/err" || fail "vhsmd without --attestd-jwks: no notice"
stop_pid "$VHSMD_PID"
VHSMD_PID=
# 4b. A vhsmd pinning attestd's keys takes the token as its attestation verdict.
curl -sf --cacert "$T/tls.pem" "$URL/.well-known/jwks.json" >"$T/attestd-jwks.json"
start_vhsmd --attestd-jwks "$T/attestd-jwks.json"
[ "$("$VHSM" --socket "$SOCK" --json attestation status | jq .verdict_time)" = null ] || fail "verdict before attest"
expect 0 "${A[@]}" --vhsm-socket "$SOCK"
"$VHSM" --socket "$SOCK" --json attestation status | jq -e '.verdict_time > 0 and .verdict_expires > .now' >/dev/null \
  || fail "nitride attest did not record the verdict in vhsmd"
stop_pid "$VHSMD_PID"
VHSMD_PID=
expect 4 "${A[@]}" --vhsm-socket "$SOCK"
grep -q 'vhsmd' "$T/err" || fail "vhsmd down: no clear message"

# 5. A launch the policy does not allow: exit 2, the service's check, no retry.
"$NITRIDE" sim set "$SIM" --measurement "$M2" >/dev/null
expect 2 "${A[@]}" --no-vhsm
grep -q 'check: *measurement' "$T/err" || fail "refusal: check not printed"
grep -q "expected: .*$M1" "$T/err" || fail "refusal: expected not printed"
grep -q "found: .*$M2" "$T/err" || fail "refusal: found not printed"
if grep -q 'retrying' "$T/err"; then fail "a policy refusal was retried"; fi
"$NITRIDE" sim set "$SIM" --measurement "$M1" >/dev/null

# 6. Wrong CA: a TLS error, exit 4 at once (not retried), saying what to fix.
start=$(date +%s%N)
expect 4 "$NITRIDE" attest --attestd "$URL" --ca "$T/other.pem" --sim "$SIM" --no-vhsm --timeout 20
elapsed=$((($(date +%s%N) - start) / 1000000))
grep -q 'TLS' "$T/err" || fail "wrong CA: no TLS message"
grep -q -- '--ca' "$T/err" || fail "wrong CA: message does not name --ca"
if grep -q 'retrying' "$T/err"; then fail "a TLS failure was retried"; fi
[ "$elapsed" -lt 5000 ] || fail "wrong CA took $elapsed ms"
# The system store does not know our self-signed certificate either.
expect 4 "$NITRIDE" attest --attestd "$URL" --sim "$SIM" --no-vhsm --timeout 20
grep -q 'TLS' "$T/err" || fail "system store: no TLS message"

# 7. Plain http:// only on loopback.
expect 3 "$NITRIDE" attest --attestd http://192.0.2.1:8443 --sim "$SIM" --no-vhsm
grep -q 'Refusing plain http' "$T/err" || fail "non-loopback http: message"
expect 3 "$NITRIDE" attest --attestd http://localhost.example:80/ --sim "$SIM" --no-vhsm
expect 3 "$NITRIDE" attest --attestd ftp://127.0.0.1/ --sim "$SIM" --no-vhsm
expect 3 "$NITRIDE" attest --attestd "$URL" --sim "$SIM" --no-vhsm --timeout 0

# 8. attestd down: retries with backoff, exit 4 within the deadline.
OLD_PORT=$PORT
stop_attestd
start=$(date +%s%N)
expect 4 "${A[@]}" --no-vhsm --timeout 3
elapsed=$((($(date +%s%N) - start) / 1000000))
[ "$(grep -c 'retrying' "$T/err")" -ge 2 ] || fail "attestd down: fewer than 2 retries"
grep -q 'Giving up' "$T/err" || fail "attestd down: no final message"
[ "$elapsed" -ge 2000 ] && [ "$elapsed" -le 5000 ] || fail "attestd down: gave up after $elapsed ms"

# 9. attestd comes up while the agent retries: success.
(sleep 1.5 && exec "$ATTESTD" --config "$T/attestd.json" --listen "127.0.0.1:$OLD_PORT" \
  --port-file "$T/port" >>"$ATTESTD_LOG" 2>&1) &
ATTESTD_PID=$!
expect 0 "${A[@]}" --no-vhsm --json --timeout 20
grep -q 'retrying' "$T/err" || fail "late attestd: no retry seen"
jq -e --arg m "$M1" "$ae.measurement == \$m" "$T/out" >/dev/null || fail "late attestd: claims"
stop_attestd

# 10. Rate limited (429 with Retry-After): retried, success within the deadline.
write_config "$T/attestd-rl.json" '"rate_limit": {"per_second": 1, "burst": 1}'
start_attestd "$T/attestd-rl.json"
A=("$NITRIDE" attest --attestd "$URL" --ca "$T/tls.pem" --sim "$SIM")
expect 0 "${A[@]}" --no-vhsm --json --timeout 30
grep -q 'HTTP 429' "$T/err" || fail "rate limit: no 429 seen"
jq -e --arg m "$M1" "$ae.measurement == \$m" "$T/out" >/dev/null || fail "rate limit: claims"
stop_attestd

# 11. The nonce expires before the evidence is sent (1 s challenges; vhsmd reached through a
# proxy that holds each connection 1.5 s): a new challenge, then success with the same key.
start_vhsmd
python3 - "$T/slow.sock" "$SOCK" >>"$T/proxy.log" 2>&1 <<'PY' &
import socket, sys, threading, time
lst = socket.socket(socket.AF_UNIX)
lst.bind(sys.argv[1])
lst.listen(8)
def pipe(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    finally:
        try:
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass
def serve(c):
    time.sleep(1.5)
    u = socket.socket(socket.AF_UNIX)
    u.connect(sys.argv[2])
    threading.Thread(target=pipe, args=(c, u), daemon=True).start()
    pipe(u, c)
while True:
    c, _ = lst.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
PROXY_PID=$!
for _ in $(seq 1 100); do [ -S "$T/slow.sock" ] && break; sleep 0.05; done
CHALLENGE_LIFETIME=1 write_config "$T/attestd-short.json"
start_attestd "$T/attestd-short.json"
A=("$NITRIDE" attest --attestd "$URL" --ca "$T/tls.pem" --sim "$SIM")
expect 0 "${A[@]}" --vhsm-socket "$T/slow.sock" --json --timeout 30
grep -q 'nonce expired; requesting a new challenge' "$T/err" || fail "expired nonce: not renewed"
jq -e --arg m "$M1" "$ae.measurement == \$m" "$T/out" >/dev/null || fail "expired nonce: claims"
stop_pid "$PROXY_PID"
stop_attestd

echo "attest-cli: all checks passed"
