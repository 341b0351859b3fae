# Helpers for end-to-end tests of the binary. Each test script sources this and calls
# `pass NAME` / `fail NAME WHY`; the runner counts the lines.
set -u
: "${LUMEN:?set LUMEN to the lumen binary}"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SHARED=${LUMEN_SHARED:-$ROOT/../shared}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

pass() { echo "ok   $1"; }
fail() { echo "FAIL $1: $2"; }

# The test model, fetched once per machine into the cache.
test_model() { "$ROOT/tools/fetch-model" smollm2-135m-instruct; }

# expect_error NAME PATTERN CMD...: CMD must exit 1 with one stderr line "lumen: error: ..." matching PATTERN.
expect_error() {
  local name=$1 pat=$2; shift 2
  local err rc
  err=$("$@" 2>&1 >/dev/null); rc=$?
  if [ $rc -ne 1 ]; then fail "$name" "exit code $rc, want 1 (stderr: $err)"; return; fi
  if [ "$(printf '%s\n' "$err" | wc -l)" -ne 1 ]; then fail "$name" "want one line, got: $err"; return; fi
  if ! printf '%s' "$err" | grep -qE "^lumen: error: .*$pat"; then fail "$name" "stderr '$err' does not match '$pat'"; return; fi
  pass "$name"
}
