#!/usr/bin/env bash
# Runs every tests/e2e/test_*.sh and prints a closing "N passed, N failed" line.
set -u
dir=$(cd "$(dirname "$0")" && pwd)
: "${LUMEN:?set LUMEN to the lumen binary}"
export LUMEN=$(cd "$(dirname "$LUMEN")" && pwd)/$(basename "$LUMEN")
log=$(mktemp)
for t in "$dir"/test_*.sh; do
  echo "== $(basename "$t")"
  bash "$t" 2>&1 | tee -a "$log"
done
passed=$(grep -c '^ok ' "$log")
failed=$(grep -c '^FAIL ' "$log")
rm -f "$log"
echo "e2e: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
