#!/usr/bin/env bash
# `make bench`: every benchmark part, each also runnable alone.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
echo "== body peek and splice (Google Benchmark)"
build/bin/peek_bench --benchmark_min_time=0.5
echo "== overhead against nginx"
bash bench/overhead.sh "${BENCH_SECONDS:-10}" "${BENCH_CONNECTIONS:-32}" "${BENCH_ROUNDS:-3}"
