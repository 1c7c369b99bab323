#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# nt_kds (src/verify/kds.c) against tests/kds-server on 127.0.0.1: cold fetch and the persistent
# cache after a restart with KDS gone; 404 / garbage / 500 / slow answers (nothing cached, the
# documented errors); 16 threads and two processes asking for one VCEK cause one fetch; a 429
# storm is backed off (shared between processes) while cached chips keep verifying; prefetch
# and the offline bundle; Turin's URL form; a corrupted cache file is not served. What junk
# requests can cost: a VCEK 404 is remembered for the negative TTL; at most
# max_concurrent_fetches requests in flight (the next miss -EAGAIN at once, hits unaffected);
# at most burst + rate * elapsed requests started. A VCEK in the evidence without its ASK verifies
# with the cached chain while KDS refuses the VCEK. A CRL older than max_age is served when its
# refresh fails (KDS down, 500) and is refreshed while junk misses hold every fetch slot; at most
# max_flight_waiters threads wait for a fetch in flight; a VCEK the cached ASK did not sign is refused.
set -euo pipefail
nitride=$1
server=$2
kt=$3
tmp=$(mktemp -d)
srv_pid=
cleanup() {
  [ -n "$srv_pid" ] && kill "$srv_pid" 2>/dev/null && wait "$srv_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
# run NAME ARGS...: runs kds-test, output in $tmp/NAME.out, exit code ignored.
run() {
  local name=$1; shift
  timeout 120 "$kt" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" || true
}
result() { sed -n 's/^result: //p' "$tmp/$1.out"; }
counter() { sed -n "s/^counts: .*\\b$2=\\([0-9]*\\).*/\\1/p" "$tmp/$1.out"; }
field() { sed -n "s/^$2: //p" "$tmp/$1.out"; } # NAME FIELD: "probe_miss", "elapsed_ms", ...
expect_result() {
  local name=$1 want=$2
  [ "$(result "$name")" = "$want" ] || {
    cat "$tmp/$name.out" "$tmp/$name.err" >&2
    fail "$name: result '$(result "$name")', wanted '$want'"
  }
}
start_server() {
  rm -f "$tmp/port"
  "$server" --chip "$tmp/milan" --chip "$tmp/genoa" --chip "$tmp/turin" --crl "$tmp/crl.der" \
    --port-file "$tmp/port" >/dev/null 2>>"$tmp/server.log" &
  srv_pid=$!
  for _ in $(seq 100); do [ -s "$tmp/port" ] && break; sleep 0.05; done
  [ -s "$tmp/port" ] || fail "kds-server did not start"
  url=http://127.0.0.1:$(cat "$tmp/port")
}
stop_server() { kill "$srv_pid"; wait "$srv_pid" 2>/dev/null || true; srv_pid=; }
control() { curl -sf -X POST "$url/control?$1" >/dev/null || fail "control $1"; }
stats() { curl -sf "$url/stats"; }
stat_of() { stats | jq -r ".$1"; }
reset_stats() { curl -sf -X POST "$url/stats/reset" >/dev/null; }
no_entries() { # DIR KIND: the cache holds no entry file of that kind
  [ -z "$(find "$1" -path "*/$2/*" -type f 2>/dev/null)" ] || fail "$1 has a $2 entry: $(find "$1" -path "*/$2/*" -type f)"
}

"$nitride" sim init "$tmp/milan" --product milan --vlek >/dev/null
"$nitride" sim init "$tmp/genoa" --product genoa >/dev/null
"$nitride" sim init "$tmp/turin" --product turin >/dev/null
"$kt" make-crl "$tmp/milan" "$tmp/crl.der"
start_server

# --- Cold fetch: a report without certificates verifies through the KDS source. ---
run cold --url "$url" --cache "$tmp/c1" verify "$tmp/milan"
expect_result cold OK
[ "$(counter cold fetch)" = 2 ] || fail "cold: $(counter cold fetch) fetches, wanted 2 (VCEK, chain)"
[ "$(stat_of vcek)" = 1 ] && [ "$(stat_of chain)" = 1 ] || fail "cold: server saw $(stats)"
[ "$(stat -c %a "$tmp/c1")" = 700 ] || fail "cache dir mode $(stat -c %a "$tmp/c1")"
vcek_file=$(find "$tmp/c1/vcek/Milan" -name '*.der')
[ -n "$vcek_file" ] && [ "$(stat -c %a "$vcek_file")" = 600 ] || fail "VCEK cache file"
[ -f "$tmp/c1/chain/Milan/vcek.pem" ] || fail "chain not cached"
run crl1 --url "$url" --cache "$tmp/c1" crl "$tmp/milan"
expect_result crl1 OK
cmp -s "$tmp/c1/crl/Milan.der" "$tmp/crl.der" || fail "CRL not cached"
run crl_fresh --url "$url" --cache "$tmp/c1" --max-age 3600 crl "$tmp/milan"
expect_result crl_fresh OK
[ "$(counter crl_fresh fetch)" = 0 ] || fail "fresh CRL refetched"
run crl_old --url "$url" --cache "$tmp/c1" --max-age 0 crl "$tmp/milan"
expect_result crl_old OK
[ "$(counter crl_old fetch)" = 1 ] || fail "CRL older than max-age not refetched"
[ "$(stat_of crl)" = 2 ] || fail "server saw $(stat_of crl) CRL requests, wanted 2"
# A fetch time in the future does not make a CRL fresh forever.
echo $(($(date +%s) + 86400)) >"$tmp/c1/crl/Milan.fetched"
run crl_future --url "$url" --cache "$tmp/c1" --max-age 3600 crl "$tmp/milan"
expect_result crl_future OK
[ "$(counter crl_future fetch)" = 1 ] || fail "CRL with a future fetch time served from the cache"

# --- Restart: new process, KDS gone: served from the cache. ---
stop_server
run restart --url "$url" --cache "$tmp/c1" verify "$tmp/milan"
expect_result restart OK
[ "$(counter restart fetch)" = 0 ] || fail "restart fetched"
run restart_crl --url "$url" --cache "$tmp/c1" crl "$tmp/milan"
expect_result restart_crl OK
# Not cached and KDS unreachable.
run unreach --url "$url" --cache "$tmp/c1" vcek "$tmp/genoa"
expect_result unreach EHOSTUNREACH
# max_age is when to refresh, not when to discard: a CRL older than it is served (with its own
# fetch time) when KDS cannot be asked; the verifier's nextUpdate/staleness decide.
crl_at=$(cat "$tmp/c1/crl/Milan.fetched")
sleep 1.5
run stale_crl --url "$url" --cache "$tmp/c1" --max-age 1 crl "$tmp/milan"
expect_result stale_crl OK
[ "$(field stale_crl fetched_at)" = "$crl_at" ] || fail "stale_crl: fetched_at $(field stale_crl fetched_at), wanted $crl_at"
start_server
# ... nor when KDS answers 500 (the refresh is tried: one request).
reset_stats
control "mode=500&count=1"
run stale_crl500 --url "$url" --cache "$tmp/c1" --max-age 1 crl "$tmp/milan"
expect_result stale_crl500 OK
[ "$(field stale_crl500 fetched_at)" = "$crl_at" ] || fail "stale_crl500: fetched_at $(field stale_crl500 fetched_at), wanted $crl_at"
[ "$(stat_of crl)" = 1 ] || fail "stale_crl500: server saw $(stat_of crl) CRL requests, wanted 1"
cmp -s "$tmp/c1/crl/Milan.der" "$tmp/crl.der" || fail "stale_crl500: cached CRL changed"
# A CRL refresh takes no fetch slot: with both slots held by slow junk VCEK misses, the stale
# CRL is still refreshed (a newer fetch time), not refused.
rm -f "$tmp/c1/backoff"
control "mode=slow&delay_ms=1500"
reset_stats
run crl_slots --url "$url" --cache "$tmp/c1" --max-fetching 2 --threads 2 --random-hwid \
  --probe-delay-ms 300 --probe-crl --max-age 1 vcek "$tmp/milan"
read -r pc_r _ pc_at <<<"$(field crl_slots probe_crl)"
[ "$pc_r" = OK ] && [ "$pc_at" -gt "$crl_at" ] || fail "crl_slots: $(field crl_slots probe_crl) (old fetched_at $crl_at)"
[ "$(stat_of crl)" = 1 ] || fail "crl_slots: server saw $(stat_of crl) CRL requests, wanted 1"
control "mode=ok"

# --- A corrupted cache file is ignored (not served) and replaced by the next fetch. ---
echo '<html>oops</html>' >"$vcek_file"
run corrupt_off --cache "$tmp/c1" vcek "$tmp/milan"
expect_result corrupt_off ENOENT
run corrupt --url "$url" --cache "$tmp/c1" vcek "$tmp/milan"
expect_result corrupt OK
[ "$(counter corrupt fetch)" = 1 ] || fail "corrupt entry not refetched"
openssl x509 -inform DER -in "$vcek_file" -noout || fail "corrupt entry not replaced"

# --- 404: -ENOENT, nothing cached, and not remembered by the next process. ---
control "mode=404&count=1"
run nf --url "$url" --cache "$tmp/c2" vcek "$tmp/genoa"
expect_result nf ENOENT
no_entries "$tmp/c2" vcek
run nf2 --url "$url" --cache "$tmp/c2" vcek "$tmp/genoa"
expect_result nf2 OK
[ "$(counter nf2 fetch)" = 1 ] || fail "404 was cached"
# No VLEK chain for Genoa on this server: 404.
run nf3 --url "$url" --cache "$tmp/c2" vlek-chain "$tmp/genoa"
expect_result nf3 ENOENT

# --- Garbage (200 with an HTML page): -EBADMSG, nothing cached. ---
control "mode=garbage"
run garbage --url "$url" --cache "$tmp/c3" vcek "$tmp/turin"
expect_result garbage EBADMSG
run garbage_chain --url "$url" --cache "$tmp/c3" chain "$tmp/turin"
expect_result garbage_chain EBADMSG
run garbage_crl --url "$url" --cache "$tmp/c3" crl "$tmp/turin"
expect_result garbage_crl EBADMSG
no_entries "$tmp/c3" vcek
no_entries "$tmp/c3" chain
no_entries "$tmp/c3" crl
[ "$(counter garbage http_error)" = 1 ] || fail "garbage not counted"
control "mode=ok"
# Another chip's certificate planted under this chip's entry is not served.
run plant0 --url "$url" --cache "$tmp/c3" vcek "$tmp/turin"
expect_result plant0 OK
turin_file=$(find "$tmp/c3/vcek/Turin" -name '*.der')
cp "$(find "$tmp/c2/vcek/Genoa" -name '*.der')" "$turin_file"
run plant --cache "$tmp/c3" vcek "$tmp/turin"
expect_result plant ENOENT

# --- 500: backs off (-EAGAIN), then succeeds once the backoff is over. ---
control "mode=500&count=1"
run e500 --url "$url" --cache "$tmp/c4" --backoff-base 2000 --backoff-max 2500 vcek "$tmp/turin"
expect_result e500 EAGAIN
[ "$(counter e500 http_error)" = 1 ] || fail "500 not counted"
no_entries "$tmp/c4" vcek
[ -s "$tmp/c4/backoff" ] || fail "no shared backoff state"
run e500b --url "$url" --cache "$tmp/c4" --backoff-base 2000 --backoff-max 2500 vcek "$tmp/turin"
expect_result e500b EAGAIN
[ "$(counter e500b fetch)" = 0 ] || fail "fetched while backing off"
sleep 2.6
run e500c --url "$url" --cache "$tmp/c4" --backoff-base 2000 --backoff-max 2500 vcek "$tmp/turin"
expect_result e500c OK

# --- Slow server: the request times out, nothing cached. ---
control "mode=slow&delay_ms=3000&count=1"
t0=$(date +%s%N)
run slow --url "$url" --cache "$tmp/c5" --timeout-ms 400 vcek "$tmp/milan"
t1=$(date +%s%N)
expect_result slow ETIMEDOUT
[ $(((t1 - t0) / 1000000)) -lt 2500 ] || fail "timeout took $(((t1 - t0) / 1000000)) ms"
no_entries "$tmp/c5" vcek

# --- 16 threads, one VCEK: one fetch (with and without a cache dir). ---
control "mode=slow&delay_ms=800"
reset_stats
run threads --url "$url" --cache "$tmp/c6" --threads 16 --max-waiters 15 vcek "$tmp/milan"
expect_result threads OK
[ "$(stat_of vcek)" = 1 ] || fail "16 threads: server saw $(stat_of vcek) VCEK requests"
reset_stats
run threads_nc --url "$url" --threads 16 --max-waiters 15 vcek "$tmp/genoa"
expect_result threads_nc OK
[ "$(stat_of vcek)" = 1 ] || fail "16 threads, no cache: server saw $(stat_of vcek) VCEK requests"
# At most max_flight_waiters (default 2) threads wait for a fetch in the air; the others fail at
# once: 6 threads, one unknown entry, slow KDS -> 1 fetch + 2 waiters OK, 3 EAGAIN in < 100 ms.
reset_stats
run waiters --url "$url" --cache "$tmp/c6w" --threads 6 vcek "$tmp/genoa"
[ "$(grep -c '^thread .*: OK' "$tmp/waiters.out")" = 3 ] || fail "waiters: $(cat "$tmp/waiters.out")"
[ "$(grep -c '^thread .*: EAGAIN' "$tmp/waiters.out")" = 3 ] || fail "waiters: $(cat "$tmp/waiters.out")"
while read -r _ _ r ms; do
  [ "$r" != EAGAIN ] || [ "$ms" -lt 100 ] || fail "waiters: a refused thread took $ms ms"
done < <(grep '^thread ' "$tmp/waiters.out")
[ "$(counter waiters fetch_refused)" = 3 ] || fail "waiters: refusals not counted"
[ "$(stat_of vcek)" = 1 ] || fail "waiters: server saw $(stat_of vcek) VCEK requests"

# --- Two processes at once, one cache: one fetch. ---
reset_stats
run proc1 --url "$url" --cache "$tmp/c7" vcek "$tmp/turin" &
p1=$!
run proc2 --url "$url" --cache "$tmp/c7" vcek "$tmp/turin" &
p2=$!
wait $p1 $p2
expect_result proc1 OK
expect_result proc2 OK
[ "$(stat_of vcek)" = 1 ] || fail "two processes: server saw $(stat_of vcek) VCEK requests"
control "mode=ok"

# --- 429 storm: backoff honoured and shared; cached chips keep verifying. ---
run pre --url "$url" --cache "$tmp/c8" prefetch "$tmp/milan"
expect_result pre OK
reset_stats
control "mode=429&retry_after=30"
for i in $(seq 5); do
  run storm_un$i --url "$url" --cache "$tmp/c8" vcek "$tmp/genoa"
  expect_result storm_un$i EAGAIN
  run storm_ok$i --url "$url" --cache "$tmp/c8" verify "$tmp/milan"
  expect_result storm_ok$i OK
done
[ "$(stat_of total)" = 1 ] || fail "429 storm: server saw $(stat_of total) requests (wanted 1)"
[ "$(counter storm_un1 http_429)" = 1 ] || fail "429 not counted"
[ "$(counter storm_un2 backoff)" = 1 ] || fail "backoff not counted"
read -r until _ <"$tmp/c8/backoff"
now_ms=$(($(date +%s%N) / 1000000))
[ $((until - now_ms)) -gt 5000 ] && [ $((until - now_ms)) -le 30000 ] || fail "Retry-After not honoured: $((until - now_ms)) ms"
# The backoff file is the shared state: when its deadline has passed, KDS is asked again.
control "mode=ok"
echo "$now_ms 1" >"$tmp/c8/backoff"
run storm_after --url "$url" --cache "$tmp/c8" vcek "$tmp/genoa"
expect_result storm_after OK
# Exponential backoff (no Retry-After), at least backoff-base: the next process does not ask.
control "mode=429"
reset_stats
run storm_exp1 --url "$url" --cache "$tmp/c9" --backoff-base 2000 vcek "$tmp/turin"
expect_result storm_exp1 EAGAIN
run storm_exp2 --url "$url" --cache "$tmp/c9" --backoff-base 2000 vcek "$tmp/turin"
expect_result storm_exp2 EAGAIN
[ "$(stat_of total)" = 1 ] || fail "exponential backoff: server saw $(stat_of total) requests"
control "mode=ok"

# --- Prefetch, then offline use (no network). ---
run pf --url "$url" --cache "$tmp/bundle" prefetch "$tmp/turin"
expect_result pf OK
[ -f "$tmp/bundle/crl/Turin.der" ] || fail "prefetch did not fetch the CRL"
stat_of last_uri | grep -q '^/vcek/v1/Turin/crl$' || fail "last_uri: $(stat_of last_uri)"
run off --offline "$tmp/bundle" --cache "$tmp/c10" verify "$tmp/turin"
expect_result off OK
[ "$(counter off fetch)" = 0 ] || fail "offline fetched"
run off_nc --offline "$tmp/bundle" verify "$tmp/turin"
expect_result off_nc OK
rm "$tmp/bundle/crl/Turin.fetched"
run off_crl --offline "$tmp/bundle" crl "$tmp/turin"
expect_result off_crl OK
run off_other --offline "$tmp/bundle" vcek "$tmp/genoa"
expect_result off_other ENOENT

# --- Turin URL form: fmcSPL first, 8-byte hwID (the server refuses other forms with 400). ---
grep -Eq '^kds-server: /vcek/v1/Turin/[0-9a-f]{16}\?fmcSPL=[0-9]{2,3}&blSPL=[0-9]{2,3}&teeSPL=[0-9]{2,3}&snpSPL=[0-9]{2,3}&ucodeSPL=[0-9]{2,3}$' "$tmp/server.log" ||
  fail "no Turin URL of the right form in the server log"
grep -Eq '^kds-server: /vcek/v1/Milan/[0-9a-f]{128}\?blSPL=[0-9]{2,3}&teeSPL=' "$tmp/server.log" ||
  fail "no Milan URL of the right form"
code=$(curl -s -o /dev/null -w '%{http_code}' "$url/vcek/v1/Turin/0011223344556677?blSPL=01&teeSPL=01&snpSPL=01&ucodeSPL=01")
[ "$code" = 400 ] || fail "server accepted a Turin URL without fmcSPL ($code)"

# --- Negative cache: a VCEK 404 is answered from memory for the TTL, then KDS is asked again. ---
control "mode=404"
reset_stats
run neg --url "$url" --negative-ttl 1 --repeat 3 --pause-ms 0,1300 vcek "$tmp/genoa"
[ "$(field neg results)" = "ENOENT ENOENT ENOENT" ] || fail "neg: $(cat "$tmp/neg.out")"
[ "$(stat_of vcek)" = 2 ] || fail "negative TTL 1 s: server saw $(stat_of vcek) VCEK requests, wanted 2"
[ "$(counter neg negative_hit)" = 1 ] || fail "negative hit not counted: $(cat "$tmp/neg.out")"
reset_stats
run neg_default --url "$url" --repeat 5 --pause-ms 200 vcek "$tmp/genoa"
expect_result neg_default ENOENT
[ "$(stat_of vcek)" = 1 ] || fail "default negative TTL: server saw $(stat_of vcek) VCEK requests"
control "mode=ok"

# --- At most max_concurrent_fetches KDS requests in flight: with two slow misses in the air a
# third miss (another chip) fails at once with EAGAIN; a cached chip is served at once. ---
run conc_pre --url "$url" --cache "$tmp/c12" vcek "$tmp/milan"
expect_result conc_pre OK
control "mode=slow&delay_ms=2000"
reset_stats
run conc --url "$url" --cache "$tmp/c12" --max-fetching 2 --threads 2 --random-hwid \
  --probe-delay-ms 400 vcek "$tmp/milan"
expect_result conc ENOENT
read -r miss_r miss_ms <<<"$(field conc probe_miss)"
read -r hit_r hit_ms <<<"$(field conc probe_hit)"
[ "$miss_r" = EAGAIN ] && [ "$miss_ms" -lt 100 ] || fail "third concurrent miss: $miss_r in $miss_ms ms (wanted EAGAIN in < 100 ms)"
[ "$hit_r" = OK ] && [ "$hit_ms" -lt 100 ] || fail "cache hit during slow fetches: $hit_r in $hit_ms ms"
[ "$(stat_of vcek)" = 2 ] || fail "concurrency: server saw $(stat_of vcek) VCEK requests, wanted 2"
[ "$(counter conc fetch_refused)" = 1 ] || fail "refusal not counted: $(cat "$tmp/conc.out")"
control "mode=ok"

# --- Fetch budget (token bucket): 20 misses at once reach KDS at most burst + rate * elapsed
# times, the rest EAGAIN; paced misses are let through as the bucket refills; hits unlimited. ---
reset_stats
run budget --url "$url" --cache "$tmp/c12" --max-fetching 32 --rate 5 --burst 10 --threads 20 \
  --random-hwid --probe-delay-ms 300 vcek "$tmp/milan"
n=$(stat_of vcek)
el=$(field budget elapsed_ms)
[ "$n" -ge 10 ] && [ "$n" -le $((10 + 5 * el / 1000 + 1)) ] || fail "budget: $n requests in $el ms (burst 10, 5/s)"
[ "$(counter budget fetch_refused)" -ge $((20 - n)) ] || fail "budget refusals: $(cat "$tmp/budget.out")"
grep -q '^thread .*: EAGAIN' "$tmp/budget.out" || fail "budget: no miss refused"
read -r hit_r hit_ms <<<"$(field budget probe_hit)"
[ "$hit_r" = OK ] || fail "cache hit refused by the fetch budget: $hit_r"
reset_stats
run budget_paced --url "$url" --rate 5 --burst 10 --repeat 30 --pause-ms 100 --random-hwid \
  vcek "$tmp/milan"
n=$(stat_of vcek)
el=$(field budget_paced elapsed_ms)
[ "$n" -ge 20 ] && [ "$n" -le $((10 + 5 * el / 1000 + 1)) ] || fail "paced budget: $n requests in $el ms"

# --- The VCEK in the evidence without its ASK: the source adds the cached chain, then fails
# for the VCEK (429); the chain it added is used. ---
run wv_pre --url "$url" --cache "$tmp/c13" chain "$tmp/milan"
expect_result wv_pre OK
control "mode=429&retry_after=30"
run wv --url "$url" --cache "$tmp/c13" --with-vcek verify "$tmp/milan"
expect_result wv OK
[ "$(counter wv http_429)" = 1 ] || fail "wv: the VCEK was not asked for: $(cat "$tmp/wv.out")"
run wv_none --url "$url" --cache "$tmp/c14" --with-vcek verify "$tmp/milan"
expect_result wv_none EKEYREJECTED
control "mode=ok"

# --- A VCEK that the cached ASK did not sign is refused (-EBADMSG) and not cached: a second
# server serves chip milan2's chain and chip milan's VCEK under the same product. ---
"$nitride" sim init "$tmp/milan2" --product milan >/dev/null
"$server" --chip "$tmp/milan2" --chip "$tmp/milan" --port-file "$tmp/port2" >/dev/null 2>>"$tmp/server2.log" &
srv2_pid=$!
for _ in $(seq 100); do [ -s "$tmp/port2" ] && break; sleep 0.05; done
[ -s "$tmp/port2" ] || fail "second kds-server did not start"
url2=http://127.0.0.1:$(cat "$tmp/port2")
run mix_chain --url "$url2" --cache "$tmp/c15" chain "$tmp/milan"
expect_result mix_chain OK
run mix_vcek --url "$url2" --cache "$tmp/c15" vcek "$tmp/milan"
kill "$srv2_pid"; wait "$srv2_pid" 2>/dev/null || true
expect_result mix_vcek EBADMSG
no_entries "$tmp/c15" vcek
[ "$(counter mix_vcek http_error)" = 1 ] || fail "mix_vcek: refusal not counted"

# --- VLEK: only the chain is fetched. ---
"$nitride" sim set "$tmp/milan" --signing-key vlek >/dev/null
run vlek --url "$url" --cache "$tmp/c11" source "$tmp/milan"
expect_result vlek OK
grep -q '^cert: ASVK' "$tmp/vlek.out" && ! grep -q '^cert: VCEK' "$tmp/vlek.out" || fail "VLEK source: $(cat "$tmp/vlek.out")"
[ -f "$tmp/c11/chain/Milan/vlek.pem" ] || fail "VLEK chain not cached"

echo "kds: all passed"
