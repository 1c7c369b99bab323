#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# vhsmd's memory budgets for partial frames (review finding A). Clients announcing 1 MiB frames
# and trickling them in over many connections: one non-root uid cannot make the daemon hold more
# than its 8 MiB budget, many uids together not more than the 64 MiB server budget; the excess
# connections are refused with status busy, the daemon's VmLck/VmRSS (/proc/PID/status) stays
# bounded, and a well-behaved client is served meanwhile. Idle connections that streamed, and
# connections that never read their replies, pin none of a uid's budget.
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root to run clients as other uids"; exit 77; }
. "$(dirname "$0")/vhsm-lib.sh"
# Under ASan, freed buffers would stay resident in its quarantine and blur the RSS measure
# (ignored by non-ASan builds).
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=0
start_vhsmd --stall-timeout 60000

OUT=$T/out # the helpers run as other uids and write their results here
mkdir -m 1777 "$OUT"
kb() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$VHSMD_PID/status"; }

# flood NAME UID_FIRST UIDS CONNS: UIDS helpers (uids UID_FIRST...) in parallel, each with CONNS
# connections; waits until every helper reports, then records VmLck/VmRSS and checks the good
# client while the partial frames are held.
flood() {
  local name=$1 first=$2 uids=$3 conns=$4 pids=() u
  for ((u = first; u < first + uids; u++)); do
    H as-user "$u" "$u" -- "$HELPER" trickle "$SOCK" "$conns" 4000 "$OUT/$name.$u" 2>>"$T/$name.log" &
    pids+=($!)
  done
  for _ in $(seq 1 1200); do
    local done=0
    for ((u = first; u < first + uids; u++)); do [ -s "$OUT/$name.$u" ] && done=$((done + 1)); done
    [ "$done" = "$uids" ] && break
    sleep 0.05
  done
  [ "$done" = "$uids" ] || fail "$name: helpers did not report within 60 s"
  LCK=$(kb VmLck) RSS=$(kb VmRSS)
  V ping >/dev/null || fail "$name: good client not served during the flood"
  [ "$(V random 32 | wc -c)" -ge 32 ] || fail "$name: RANDOM not served during the flood"
  # Root (the agent) keeps a reserve: a large request goes through while the floods hold theirs.
  V encrypt k --in "$T/big" >"$T/big.enc" || fail "$name: root's large request refused"
  V decrypt k --in "$T/big.enc" | cmp -s - "$T/big" || fail "$name: root's large round trip"
  for p in "${pids[@]}"; do wait "$p" || { cat "$T/$name.log" >&2; fail "$name: helper failed"; }; done
  HELD=0 BUSY=0
  for ((u = first; u < first + uids; u++)); do
    local h b
    h=$(sed -n 's/.*held=\([0-9]*\).*/\1/p' "$OUT/$name.$u")
    b=$(sed -n 's/.*busy=\([0-9]*\).*/\1/p' "$OUT/$name.$u")
    [ "$h" -le 8 ] || fail "$name: uid $u holds $h MiB frames, over its 8 MiB budget"
    HELD=$((HELD + h)) BUSY=$((BUSY + b))
  done
  echo "$name: $uids uid(s) x $conns connections: held=$HELD busy=$BUSY;" \
    "VmLck $BASE_LCK -> $LCK kB, VmRSS $BASE_RSS -> $RSS kB"
}

head -c 900000 /dev/urandom >"$T/big"
V key create k --type aes256
BASE_LCK=$(kb VmLck) BASE_RSS=$(kb VmRSS) FIRST_LCK=$(kb VmLck)

# One non-root uid, 100 connections (the review measured +158 MB VmLck before the budgets).
flood one 5001 1 100
[ "$HELD" -ge 1 ] || fail "one: no partial frame held at all (budget too strict?)"
[ "$BUSY" -ge 50 ] || fail "one: only $BUSY of 100 connections refused as busy"
# 8 MiB budget + 100 base buffers of 16 KiB + allocator slack.
[ $((RSS - BASE_RSS)) -lt 24576 ] || fail "one: VmRSS grew by $((RSS - BASE_RSS)) kB"

# Ten uids at once: 10 x 8 MiB exceeds the 56 MiB the server budget leaves to non-root peers.
BASE_LCK=$(kb VmLck) BASE_RSS=$(kb VmRSS)
flood many 6001 10 60
# A held frame is charged 1 MiB + 16 - 16 KiB (the base buffer is not charged): 56 fit in 56 MiB.
[ "$HELD" -le 56 ] || fail "many: $HELD MiB frames held, over the 56 MiB non-root share"
[ "$HELD" -ge 40 ] || fail "many: only $HELD MiB frames held: the budget is not used"
[ "$BUSY" -ge 400 ] || fail "many: only $BUSY of 600 connections refused as busy"
# 64 MiB budget + 600 base buffers of 16 KiB + allocator slack.
[ $((RSS - BASE_RSS)) -lt 110000 ] || fail "many: VmRSS grew by $((RSS - BASE_RSS)) kB"
# VmLck counts whole locked mappings (mlockall MCL_ONFAULT), resident or not, including the
# malloc arenas the workers create on their first large buffers: bound it by those reservations
# (64 MiB per worker arena) plus the budget, far below the ~600 MiB the floods would take without.
arenas=$((64 * 1024 * ($(nproc) + 2)))
[ $((LCK - FIRST_LCK)) -lt $((arenas + 110000)) ] || fail "VmLck grew by $((LCK - FIRST_LCK)) kB"

# The budgets are released: a large frame goes through afterwards, from root and from a uid.
H as-user 5001 5001 -- "$HELPER" trickle "$SOCK" 1 0 "$OUT/after" 2>>"$T/after.log" \
  || fail "a uid's frame refused after the floods"
grep -q "held=1 " "$OUT/after" || fail "a uid's frame not held after the floods: $(cat "$OUT/after")"
V encrypt k --in "$T/big" >"$T/big.enc" || fail "large request refused after the floods"
V decrypt k --in "$T/big.enc" | cmp -s - "$T/big" || fail "large round trip"
# Connections that streamed (a 40 KiB burst: the daemon gave them 64 KiB buffers) and went idle
# pin nothing: the same uid can still hold 7 partial 1 MiB frames (7 MiB of its 8 MiB).
quiet() { # quiet NAME UID MODE CONNS: helpers whose connections stay open quietly; waits for them
  H as-user "$2" "$2" -- "$HELPER" pin "$SOCK" "$3" "$4" 8000 "$OUT/$1" 2>>"$T/$1.log" &
  QUIET=$!
  for _ in $(seq 1 2400); do [ -s "$OUT/$1" ] && break; sleep 0.05; done
  [ -s "$OUT/$1" ] || { cat "$T/$1.log" >&2; fail "$1: helper not ready"; }
}
quiet burst 5002 burst 120
H as-user 5002 5002 -- "$HELPER" trickle "$SOCK" 7 0 "$OUT/burst-after" 2>>"$T/after.log" \
  || fail "trickle after the bursts"
grep -q "held=7 " "$OUT/burst-after" ||
  fail "idle connections that streamed pin the uid's budget: $(cat "$OUT/burst-after")"
wait "$QUIET" || fail "burst helper failed"
# Connections that fill their socket with requests and never read their replies keep the backlog
# in the kernel, not in charged daemon memory: the same uid's large frame is still held.
quiet backlog 5003 backlog 40
H as-user 5003 5003 -- "$HELPER" trickle "$SOCK" 1 0 "$OUT/backlog-after" 2>>"$T/after.log" \
  || fail "trickle after the backlogs"
grep -q "held=1 " "$OUT/backlog-after" ||
  fail "unread replies make the daemon buffer input: $(cat "$OUT/backlog-after")"
kill "$QUIET" 2>/dev/null || true
wait "$QUIET" 2>/dev/null || true

stop_vhsmd || fail "vhsmd exit status"
echo "vhsm-limits: ok"
