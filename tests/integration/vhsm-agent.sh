#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The agent channel (docs/protocol.md "Agent channel") through the real vhsmd, the vhsm CLI and
# libvhsm (vhsm-agent-test plays the agent; release-tool plays kmsd and attestd). Checks: no agent
# -> immediate not-found; 20 concurrent requests on a missing kms/ key park on one job, the agent
# imports a real release and reports done -> all 20 succeed with the released key, no second
# job, a second AGENT_DONE is not-found; refused -> status refused with the service's message, vhsm
# exit 13; unavailable -> exit 14; the agent disconnects -> the job moves to another agent, which
# refuses; the last agent disconnects -> service-unavailable; an app that disconnects while parked
# (the daemon survives, the job stays); a stale attested key -> reason "stale", the verdict wakes
# the parked request; bounds: the 17th parked request of one uid answered at once, another uid
# still parks; a non-root uid's AGENT_WAIT / AGENT_DONE -> permission denied; --agent-timeout 1
# -> timeout status, vhsm exit 15.
. "$(dirname "$0")/vhsm-lib.sh"
AGT=${6:-}
[ "$(id -u)" = 0 ] || { echo "SKIP: the agent channel is root's; other uids are tested via setuid"; exit 77; }
[ -n "$RELTOOL" ] && [ -n "$AGT" ] || fail "needs release-tool (\$5) and vhsm-agent-test (\$6)"
start_vhsmd --debug
printf 'message\n' >"$T/msg"
chmod 644 "$T/msg"
chmod 755 "$T"

expect_exit() { # code cmd...
  local want=$1 got=0; shift
  "$@" >"$T/out" 2>"$T/err" || got=$?
  [ "$got" = "$want" ] || { cat "$T/out" "$T/err" >&2; fail "expected exit $want, got $got: $*"; }
}
# wait_for CMD...: bounded (10 s) wait until CMD succeeds
try_for() {
  for _ in $(seq 1 200); do "$@" && return 0; sleep 0.05; done
  return 1
}
wait_for() { try_for "$@" || fail "timed out waiting for: $*"; }
parked_count() { grep -c "waits for the agent: key '$1'" "$VHSMD_LOG" || true; }
parked_at_least() { [ "$(parked_count "$1")" -ge "$2" ]; } # KEY N
# agent NAME PATTERN ACTION [ARG]: an agent in the background; its lines in $T/NAME.out
agent() {
  local name=$1; shift
  rm -f "$T/$name.out" "$T/$name.go" "$T/$name.go.stop"
  "$AGT" agent "$SOCK" "$1" "$T/$name.out" "$T/$name.go" "${@:2}" &
  eval "AGENT_$name=\$!"
  wait_for grep -qs '^\(ready\|wait-failed\)' "$T/$name.out"
  grep -q '^ready' "$T/$name.out" || fail "agent $name: $(cat "$T/$name.out")"
}
agent_go() { touch "$T/$1.go"; }
agent_end() { # NAME: wait for it to finish
  local pid; eval "pid=\$AGENT_$1"
  wait_for grep -qs '^end' "$T/$1.out"
  wait "$pid" || fail "agent $1 exit status"
}
transfer() { V transfer-key create --lifetime 300 >"$1"; }
DEFAULT_ATTRS='"policy":"local","acl":{"use_uid":[0,4242,4243]}'
release() { # TKFILE OUT NAME HEX [ATTRIBUTES]
  printf '{"name":"%s","type":"aes256","version":1,%s,"secret_id":"s1","token_jti":"dGVzdA"}' \
    "$3" "${5:-$DEFAULT_ATTRS}" >"$T/hdr.json"
  "$RELTOOL" sign "$T/kms" "$1" "$T/hdr.json" "$4" >"$2"
}

# --- no agent: a missing key is not-found at once
start=$(date +%s%N)
expect_exit 4 V encrypt kms/none --in "$T/msg"
[ $((($(date +%s%N) - start) / 1000000)) -lt 2000 ] || fail "not-found without an agent was not immediate"
grep -q "waits for the agent" "$VHSMD_LOG" && fail "a request parked without an agent"

# --- non-root uids can be neither agents nor complete jobs
H as-user 4242 4242 -- "$VHSM" --socket "$SOCK" agent wait --pattern 'kms/*' --wait-ms 10 >/dev/null 2>&1 \
  && fail "uid 4242 waited as an agent" || [ $? = 5 ] || fail "uid 4242 AGENT_WAIT: not permission denied"
H as-user 4242 4242 -- "$VHSM" --socket "$SOCK" agent done 1 >/dev/null 2>&1 \
  && fail "uid 4242 completed a job" || [ $? = 5 ] || fail "uid 4242 AGENT_DONE: not permission denied"
# an idle wait: {}
[ "$(V agent wait --pattern 'kms/*' --wait-ms 200)" = "{}" ] || fail "idle wait did not print {}"
expect_exit 4 V agent done 12345
grep -q "no such job" "$T/err" || fail "unknown job message: $(cat "$T/err")"
expect_exit 9 V agent wait --pattern 'kms/*x' --wait-ms 10

# --- 20 concurrent requests on a missing key: one job; the agent imports it; all succeed
transfer "$T/tk1"
K1=$(hex_random 32)
release "$T/tk1" "$T/rel1" kms/app "$K1"
agent a1 'kms/*' import "$T/rel1"
"$AGT" apps "$SOCK" kms/app 20 "$T/apps1" &
APPS=$!
wait_for grep -qs '^job' "$T/a1.out"
wait_for parked_at_least kms/app 20
agent_go a1
wait "$APPS" || fail "apps exit status"
agent_end a1
[ "$(grep -c '^0 ok$' "$T/apps1")" = 20 ] || fail "not all 20 requests succeeded: $(sort "$T/apps1" | uniq -c)"
[ "$(grep -c '^job' "$T/a1.out")" = 1 ] || fail "more than one job: $(cat "$T/a1.out")"
grep -q '^job {"id":[0-9]*,"key":"kms/app","reason":"missing"' "$T/a1.out" || fail "job: $(cat "$T/a1.out")"
grep -q '^import 0' "$T/a1.out" || fail "import: $(cat "$T/a1.out")"
grep -q '^idle$' "$T/a1.out" || fail "a second job after done: $(cat "$T/a1.out")"
grep -q "^done-again $(printf '%d' 126)" "$T/a1.out" || fail "AGENT_DONE twice not not-found: $(cat "$T/a1.out")"
# one job for the 20 parked requests (the import woke them: none waited any more at done)
[ "$(grep -c "Agent job [0-9]* for key 'kms/app' (missing, 0 waiting): done" "$VHSMD_LOG")" = 1 ] \
  || fail "not exactly one job for kms/app: $(grep 'Agent job' "$VHSMD_LOG")"
V encrypt kms/app --in "$T/msg" | H gcm-open "$K1" 2>/dev/null | cmp -s - "$T/msg" \
  || fail "kms/app is not the released key"

# --- refused: the service's reason, status refused, vhsm exit 13 (also for another uid)
agent a2 'kms/ref*' refused "policy: measurement_in: not allowed"
V encrypt kms/refused --in "$T/msg" >"$T/r-root.out" 2>"$T/r-root.err" &
P1=$!
H as-user 4242 4242 -- "$VHSM" --socket "$SOCK" encrypt kms/refused --in "$T/msg" >"$T/r-user.out" 2>"$T/r-user.err" &
P2=$!
wait_for grep -qs '^job' "$T/a2.out"
wait_for parked_at_least kms/refused 2
agent_go a2
rc=0; wait $P1 || rc=$?; [ $rc = 13 ] || fail "refused: exit $rc (want 13): $(cat "$T/r-root.err")"
rc=0; wait $P2 || rc=$?; [ $rc = 13 ] || fail "refused (uid 4242): exit $rc: $(cat "$T/r-user.err")"
grep -q "measurement_in: not allowed" "$T/r-root.err" || fail "refusal message: $(cat "$T/r-root.err")"
grep -q "measurement_in: not allowed" "$T/r-user.err" || fail "refusal message (uid 4242)"
agent_end a2

# --- unavailable: exit 14
agent a3 'kms/unav' unavailable "kmsd: connection refused"
expect_exit 14 V encrypt kms/unav --in "$T/msg" &
P1=$!
wait_for grep -qs '^job' "$T/a3.out"
agent_go a3
wait $P1 || fail "unavailable: $(cat "$T/err")"
grep -q "kmsd: connection refused" "$T/err" || fail "unavailable message: $(cat "$T/err")"
agent_end a3

# --- the agent holding the job disconnects: the job moves to another agent (which refuses);
# --- then the only agent disconnects: service-unavailable
agent a4 'kms/move' refused "moved and refused"
V agent wait --pattern 'kms/move' --wait-ms 20000 >"$T/cli-job" 2>&1 &
CLI=$!
sleep 0.3
V encrypt kms/move --in "$T/msg" >/dev/null 2>"$T/move.err" &
P1=$!
wait "$CLI" || fail "CLI agent wait: $(cat "$T/cli-job")"
jq -e '.key == "kms/move" and .reason == "missing"' "$T/cli-job" >/dev/null || fail "CLI job: $(cat "$T/cli-job")"
# the CLI took the job and exited: a4 (also serving kms/move) gets it
wait_for grep -qs '^job' "$T/a4.out"
agent_go a4
rc=0; wait $P1 || rc=$?; [ $rc = 13 ] || fail "moved job: exit $rc: $(cat "$T/move.err")"
grep -q "moved and refused" "$T/move.err" || fail "moved job message: $(cat "$T/move.err")"
agent_end a4
agent a5 'kms/gone' disconnect
V encrypt kms/gone --in "$T/msg" >/dev/null 2>"$T/gone.err" &
P1=$!
wait_for grep -qs '^job' "$T/a5.out"
agent_go a5
rc=0; wait $P1 || rc=$?; [ $rc = 14 ] || fail "agent gone: exit $rc (want 14): $(cat "$T/gone.err")"
grep -q "disconnected" "$T/gone.err" || fail "agent gone message: $(cat "$T/gone.err")"
agent_end a5

# --- an app that disconnects while parked: dropped, the daemon lives on, the job stays
agent a6 'kms/drop' refused "late"
"$VHSM" --socket "$SOCK" encrypt kms/drop --in "$T/msg" >/dev/null 2>&1 &
P1=$!
wait_for grep -qs '^job' "$T/a6.out"
wait_for parked_at_least kms/drop 1
kill -KILL $P1; wait $P1 2>/dev/null || true
sleep 1.5 # the housekeeping tick notices the hang-up
V ping || fail "vhsmd after a parked client went away"
grep -q "Parked request of uid 0 pid [0-9]* dropped: the client went away" "$VHSMD_LOG" \
  || fail "the parked request of the killed client was not dropped"
agent_go a6
agent_end a6
grep -q '^done 0' "$T/a6.out" || fail "the job did not stay after its only app left: $(cat "$T/a6.out")"

# --- an app that half-closes (shutdown(SHUT_WR)) after its request while parked is still an
# --- app waiting for its answer (as for requests that are not parked: vhsm-frames.sh)
agent a6h 'kms/half' refused "half-closed but answered"
python3 - "$SOCK" >"$T/half.out" 2>&1 <<'PY' &
import socket, struct, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(30)
def tlv(tag, v): return struct.pack(">HI", tag, len(v)) + v
body = tlv(0x0001, b"kms/half") + tlv(0x0004, b"data")
s.sendall(struct.pack(">IBBHII", 0x5648534D, 1, 1, 0x0020, 9, len(body)) + body)
s.shutdown(socket.SHUT_WR)
hdr = b""
while len(hdr) < 16:
    d = s.recv(16 - len(hdr))
    assert d, "connection closed without an answer"
    hdr += d
magic, ver, kind, status, rid, blen = struct.unpack(">IBBHII", hdr)
assert kind == 2 and rid == 9 and status == 19, (kind, rid, status)  # refused
print("answered")
PY
P1=$!
wait_for grep -qs '^job' "$T/a6h.out"
wait_for parked_at_least kms/half 1
sleep 1.5 # a housekeeping tick passes: a half-close is not a hang-up
agent_go a6h
wait $P1 || fail "half-closed parked client: $(cat "$T/half.out")"
agent_end a6h

# --- bounds: 16 parked per uid; the 17th is answered at once; another uid still parks
agent a7 'kms/bound' refused "bounded"
for i in $(seq 1 16); do
  H as-user 4242 4242 -- "$VHSM" --socket "$SOCK" encrypt kms/bound --in "$T/msg" >/dev/null 2>"$T/b$i.err" &
  eval "B$i=\$!"
done
try_for parked_at_least kms/bound 16 || fail "16 requests of uid 4242 did not park: $(cat "$T"/b*.err)"
start=$(date +%s%N)
rc=0; H as-user 4242 4242 -- "$VHSM" --socket "$SOCK" encrypt kms/bound --in "$T/msg" >/dev/null 2>"$T/b17.err" || rc=$?
# (uid 4242 is told permission denied for an absent kms/ key, as for one it may not use)
[ $rc = 5 ] || fail "17th request of uid 4242: exit $rc (want 5, at once): $(cat "$T/b17.err")"
grep -q "agent queue is full" "$T/b17.err" || fail "17th request message: $(cat "$T/b17.err")"
[ $((($(date +%s%N) - start) / 1000000)) -lt 3000 ] || fail "the 17th request was not answered at once"
H as-user 4243 4243 -- "$VHSM" --socket "$SOCK" encrypt kms/bound --in "$T/msg" >/dev/null 2>"$T/b-other.err" &
BO=$!
try_for parked_at_least kms/bound 17 || fail "uid 4243 did not park: $(cat "$T/b-other.err")"
agent_go a7
for i in $(seq 1 16); do
  eval "p=\$B$i"; rc=0; wait "$p" || rc=$?; [ $rc = 13 ] || fail "bound request $i: exit $rc"
done
rc=0; wait $BO || rc=$?; [ $rc = 13 ] || fail "uid 4243 did not park beside uid 4242's 16: exit $rc"
agent_end a7

# --- stale attestation: reason "stale"; the verdict (ATTESTATION_SET) completes the request
transfer "$T/tk7"
"$RELTOOL" token "$T/attestd" "$T/attestd/chip" "$T/tk7" 3 "$(date +%s)" >"$T/tok7"
release "$T/tk7" "$T/rel7" kms/att "$(hex_random 32)" '"policy":"attested","max_age":3600'
V import-release "$T/rel7" --token "$T/tok7" >/dev/null
exp=$(V --json attestation status | jq .verdict_expires)
while [ "$(date +%s)" -lt "$exp" ]; do sleep 0.2; done
expect_exit 6 V encrypt kms/att --in "$T/msg" # no agent: attestation required, as before
"$RELTOOL" token "$T/attestd" "$T/attestd/chip" "$T/tk7" 300 "$(date +%s)" >"$T/tok7b"
agent a8 'kms/*' attest "$T/tok7b"
V encrypt kms/att --in "$T/msg" >/dev/null 2>"$T/att.err" &
P1=$!
wait_for grep -qs '^job' "$T/a8.out"
grep -q '"key":"kms/att","reason":"stale"' "$T/a8.out" || fail "stale job: $(cat "$T/a8.out")"
agent_go a8
wait $P1 || fail "stale key after the verdict: $(cat "$T/att.err")"
agent_end a8
grep -q '^attest 0' "$T/a8.out" || fail "attest: $(cat "$T/a8.out")"

stop_vhsmd || fail "vhsmd exit status"

# --- --agent-timeout 1: the parked request gets the timeout status, vhsm exit 15
start_vhsmd --debug --agent-timeout 1
agent a9 'kms/*' hold
start=$(date +%s%N)
expect_exit 15 V encrypt kms/slow --in "$T/msg"
ms=$((($(date +%s%N) - start) / 1000000))
[ "$ms" -ge 900 ] && [ "$ms" -lt 5000 ] || fail "timeout after $ms ms (want about 1000)"
grep -q "within 1 s" "$T/err" || fail "timeout message: $(cat "$T/err")"
agent_go a9
touch "$T/a9.go.stop"
agent_end a9
grep -q "^done-again 126" "$T/a9.out" || fail "AGENT_DONE after the timeout: $(cat "$T/a9.out")"
stop_vhsmd || fail "vhsmd exit status"

# --- stress (agent timeout 1 s): apps hanging up while parked, agents completing, completing
# twice, never, or hanging up holding their job, a root connection completing others' jobs;
# vhsmd (ASan in that build) must survive and answer, with nothing left parked.
start_vhsmd --debug --agent-timeout 1
"$AGT" stress "$SOCK" 8 >"$T/stress.out" || fail "stress: $(cat "$T/stress.out")"
cat "$T/stress.out"
kill -0 "$VHSMD_PID" || fail "vhsmd died under the stress"
grep -q "AddressSanitizer\|runtime error" "$VHSMD_LOG" && fail "sanitizer report under the stress"
grep -q "jobs=[1-9]" "$T/stress.out" || fail "stress made no jobs: $(cat "$T/stress.out")"
# after at most the timeout and a tick, a new request on a served key parks again (slots freed)
agent a10 'kms/*' refused "after stress"
agent_go a10
expect_exit 13 V encrypt kms/stress0 --in "$T/msg"
agent_end a10
stop_vhsmd || fail "vhsmd exit status"
echo "vhsm-agent: ok"
