#!/usr/bin/env bash
# The whole test run behind 'make check':
#   1. build with warnings as errors, run every test (unit, integration, fuzz corpus replay);
#   2. a release build (-Dbuildtype=release: gcc -O3 without debug info; its inlining and flow
#      analysis warn about things the default -O2 build does not see, e.g. -Wmaybe-uninitialized,
#      -Wformat-truncation), warnings as errors, compiled only (not tested);
#   3. the same suite under ASan+UBSan in a second build directory;
#   4. each libFuzzer target for a bounded time (NT_FUZZ_SECONDS, default 10).
# Ends with one summary line "N passed, N failed" over all runs.
set -uo pipefail
cd "$(dirname "$0")/.."

jobs=${NT_JOBS:-$(nproc)}
fail=0

setup() { # dir, extra meson args...
  local dir=$1; shift
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" -Dwerror=true "$@" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log"; return 1; }
  fi
}

summ() { # dir -> "passed failed" from meson's JSON test log
  jq -rs 'def ok: .result=="OK" or .result=="SKIP" or .result=="EXPECTEDFAIL";
          "\(map(select(ok))|length) \(map(select(ok|not))|length)"' "$1/meson-logs/testlog.json"
}

total_p=0; total_f=0
run_suite() { # dir label
  local dir=$1 label=$2
  echo "== $label: build ($dir)"
  if ! ninja -C "$dir" -j "$jobs"; then
    echo "== $label: BUILD FAILED"; fail=1; total_f=$((total_f+1)); return
  fi
  echo "== $label: test"
  meson test -C "$dir" --print-errorlogs --num-processes "$jobs" ${NT_TEST_ARGS:-} || fail=1
  read -r p f < <(summ "$dir")
  total_p=$((total_p+p)); total_f=$((total_f+f))
}

echo "== format (.clang-format)"
if bash scripts/format-check.sh; then total_p=$((total_p+1)); else fail=1; total_f=$((total_f+1)); fi

setup build || exit 1
run_suite build "default build"

echo "== release build: compile only (build-release)"
if setup build-release -Dbuildtype=release && ninja -C build-release -j "$jobs"; then
  total_p=$((total_p+1))
else
  echo "== release build: BUILD FAILED"; fail=1; total_f=$((total_f+1))
fi

if [ "${NT_SKIP_ASAN:-0}" != 1 ]; then
  setup build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug || exit 1
  # the hostile-tenant soak: shorter under the sanitizers, with latency bounds for their slowdown
  NT_SOAK_SECONDS=${NT_SOAK_SECONDS_ASAN:-20} NT_SOAK_P50_MS=60 NT_SOAK_P99_MS=1500 NT_SOAK_MAX_MS=12000 \
    run_suite build-asan "ASan+UBSan build"
fi

if [ "${NT_SKIP_FUZZ:-0}" != 1 ]; then
  if [ ! -f build-fuzz/build.ninja ]; then
    CC=clang meson setup build-fuzz -Dfuzz=true -Dtests=false -Db_sanitize=address,undefined \
      -Db_lundef=false -Dbuildtype=debugoptimized >build-fuzz.setup.log 2>&1 || { cat build-fuzz.setup.log; exit 1; }
  fi
  echo "== fuzz: build"
  if ninja -C build-fuzz -j "$jobs"; then
    secs=${NT_FUZZ_SECONDS:-10}
    for f in build-fuzz/fuzz/fuzz-*; do
      [ -f "$f" ] && [ -x "$f" ] || continue
      name=$(basename "$f"); name=${name#fuzz-}
      corpus=fuzz/corpus/$name
      work=$(mktemp -d)
      echo "== fuzz: $name for ${secs}s"
      if "$f" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
           -artifact_prefix="$work/" "$work" "$corpus" >"$work/log" 2>&1; then
        grep -E 'stat::number_of_executed_runs|Done' "$work/log" | tail -2
        total_p=$((total_p+1))
      else
        tail -40 "$work/log"
        echo "== fuzz: $name FOUND A CRASH (artifacts in $work)"
        fail=1; total_f=$((total_f+1))
      fi
    done
  else
    echo "== fuzz: BUILD FAILED"; fail=1; total_f=$((total_f+1))
  fi
fi

echo
echo "check: ${total_p} passed, ${total_f} failed"
exit $fail
