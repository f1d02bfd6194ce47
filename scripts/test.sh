#!/usr/bin/env bash
# `make test`: every stage prints its duration; any failure stops the run with a non-zero exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
JOBS=${JOBS:-$(nproc)}
export CTEST_OUTPUT_ON_FAILURE=1

total_start=$(date +%s)
stage() {
  local name=$1
  shift
  local t0=$(date +%s)
  echo "==> ${name}"
  "$@"
  echo "<== ${name}: $(($(date +%s) - t0))s"
}

stage "install dependencies" bash scripts/install-deps.sh
stage "format check" make --no-print-directory format-check
stage "release build" bash -c "cmake --preset release >/dev/null && cmake --build --preset release -j ${JOBS}"
stage "release tests (unit, integration, fuzz corpus, e2e)" \
  ctest --test-dir build -j "${JOBS}" --timeout 300
stage "asan+ubsan build" bash -c "cmake --preset asan >/dev/null && cmake --build --preset asan -j ${JOBS} --target sluice_unit_tests sluice_integration_tests"
stage "asan+ubsan tests (unit, integration)" \
  env ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan -L 'unit|integration' -j "${JOBS}" --timeout 300
echo "make test: all stages passed in $(($(date +%s) - total_start))s"
