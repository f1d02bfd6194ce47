#!/usr/bin/env bash
# `make bench`: every benchmark part, each also runnable alone (see docs/BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
echo "== body peek and splice (Google Benchmark)"
build/bin/peek_bench --benchmark_min_time=0.5
echo "== scheduler decisions, prefix hashing, prefix index bound"
build/bin/scheduler_bench --benchmark_min_time=0.5
echo "== route configuration: 10k HTTPRoutes, 1k pools, 20k Pods (parse, rebuild, match)"
build/bin/route_table_bench
echo "== metrics fetcher: 500 endpoints at 50 ms"
build/bin/fetcher_bench 500 50 "${BENCH_SECONDS:-10}"
echo "== simulator capacity: 16 engines"
bash bench/sim_capacity.sh 16 64 "${BENCH_SECONDS:-10}"
echo "== scheduling quality: every preset on every workload, simulated fleet of 8"
bash bench/scheduling.sh
echo "== filters: every filter on against every filter off"
bash bench/filters_overhead.sh "${BENCH_SECONDS:-10}" "${BENCH_CONNECTIONS:-32}" "${BENCH_ROUNDS:-3}"
echo "== large prompts: 220 KB bodies at concurrency 20 to 200, direct and through the router"
bash bench/large_prompt.sh 64
echo "== streaming relay: inter-token latency, direct and through the router"
bash bench/streaming.sh
echo "== memory: idle, 10k keep-alive connections, 1k streams"
bash bench/memory.sh 10000 0
bash bench/memory.sh 0 1000
echo "== upstream protocol: HTTP/1.1 against h2c through the router"
bash bench/h2c.sh "${BENCH_SECONDS:-10}" 64 "${BENCH_ROUNDS:-3}"
echo "== overhead against nginx"
bash bench/overhead.sh "${BENCH_SECONDS:-10}" "${BENCH_CONNECTIONS:-32}" "${BENCH_ROUNDS:-3}"
