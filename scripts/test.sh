#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Installs what is missing, then builds and runs every test twice:
#   build/test  RelWithDebInfo (asserts on), IMMU_WERROR=ON
#   build/asan  Debug -O1, IMMU_SANITIZE=ON (ASan + UBSan)
# and finally the banned-API check. Exits non-zero if anything failed.
# The last line is "N passed, M failed", summed over both ctest runs.
#
# Environment: IMMU_JOBS (default 2) for build and ctest parallelism.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

JOBS=${IMMU_JOBS:-2}
TOTAL_PASS=0
TOTAL_FAIL=0
STATUS=0
PROBLEMS=()

note_failure() {
  STATUS=1
  PROBLEMS+=("$1")
  echo "test: FAILED: $1" >&2
}

# run_suite <name> <build dir> <cmake args...>
run_suite() {
  local name=$1 dir=$2
  shift 2
  echo "=== $name: configure $dir"
  if ! cmake -S . -B "$dir" -G Ninja "$@" >"$dir.configure.log" 2>&1; then
    cat "$dir.configure.log"
    note_failure "$name: configure"
    return
  fi
  echo "=== $name: build"
  if ! cmake --build "$dir" -j "$JOBS"; then
    note_failure "$name: build"
    return
  fi
  echo "=== $name: ctest"
  local log=$dir/ctest.log rc
  ctest --test-dir "$dir" --output-on-failure -j "$JOBS" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  # "100% tests passed, 0 tests failed out of 12"
  local line failed total
  line=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1 || true)
  if [[ -n $line ]]; then
    failed=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
    total=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\2/' <<<"$line")
    TOTAL_PASS=$((TOTAL_PASS + total - failed))
    TOTAL_FAIL=$((TOTAL_FAIL + failed))
  elif grep -q 'No tests were found' "$log"; then
    echo "test: $name: no tests registered"
  fi
  if [[ $rc -ne 0 ]]; then
    note_failure "$name: ctest"
  fi
}

mkdir -p build

if ! ./scripts/deps.sh; then
  note_failure "deps"
  echo "0 passed, 0 failed"
  exit 1
fi

run_suite "build/test" build/test \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIMMU_WERROR=ON -DIMMU_SANITIZE=OFF

# Warnings are gated by the build above; -O1 changes gcc's flow analysis, so
# the sanitizer build does not turn warnings into errors.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
run_suite "build/asan" build/asan \
  -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_C_FLAGS_DEBUG=-O1 -g" \
  -DIMMU_SANITIZE=ON -DIMMU_WERROR=OFF
unset ASAN_OPTIONS UBSAN_OPTIONS

echo "=== banned-API check"
if ! ./tools/check-banned.sh; then
  note_failure "banned-API check"
fi

if ((STATUS)); then
  echo "test: failures: ${PROBLEMS[*]}"
fi
echo "$TOTAL_PASS passed, $TOTAL_FAIL failed"
exit "$STATUS"
