#!/usr/bin/env bash
# Runs every benchmark on a release build (build-bench: -Dbuildtype=release -Dtests=false).
# Each benchmark prints its rate next to a reference measured in the same run and exits non-zero
# when it misses its target. Add a benchmark: an executable bench-<name> in bench/meson.build
# (picked up below), or a line at the end of this file for one that needs arguments.
# NT_BENCH_SECONDS tunes the measuring time.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ ! -f build-bench/build.ninja ]; then
  meson setup build-bench -Dbuildtype=release -Dtests=false >build-bench.setup.log 2>&1 ||
    { cat build-bench.setup.log; exit 1; }
fi
ninja -C build-bench || exit 1

fail=0
for b in build-bench/bench/bench-*; do
  [ -x "$b" ] && [ -f "$b" ] || continue
  echo "== $(basename "$b")"
  "$b" || { echo "== $(basename "$b"): missed its target or failed"; fail=1; }
done
exit $fail
