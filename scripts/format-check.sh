#!/usr/bin/env bash
# Fails if any tracked C source or header differs from .clang-format (clang-format 14).
set -uo pipefail
cd "$(dirname "$0")/.."
bad=0
while IFS= read -r f; do
  if ! clang-format --dry-run -Werror "$f" >/dev/null 2>&1; then
    echo "format: $f differs from .clang-format (run: clang-format -i $f)"
    bad=1
  fi
done < <(git ls-files '*.c' '*.h' 2>/dev/null || find src tests fuzz bench -name '*.[ch]')
[ $bad -eq 0 ] && echo "format: all C files match .clang-format"
exit $bad
