#!/usr/bin/env bash
# Large prompts: ~220 KB chat bodies (55,000 prompt tokens) straight to a simulated engine and
# through the router, streamed; the difference in time to first token is what the router adds
# (body peek, prompt rendering and hashing, scheduling, splice, relay). The engine's prefill is
# made nearly free so the router's share is visible, at each concurrency level.
# Usage: bench/large_prompt.sh [requests per level=64] [concurrency levels="20 100 200"]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/lib.sh
REQUESTS=${1:-64}
CONCURRENCY=${2:-"20 100 200"}
BIN=${SLUICE_BIN_DIR:-build/bin}
WORK=$(mktemp -d /tmp/sluice-large.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
"$BIN/sluice-sim" --replicas 1 --address 127.0.0.1 --port 0 --model m --step-overhead-ms 1 \
  --prefill-ms-per-token 0.00001 --max-model-len 100000 --num-gpu-blocks 1000000 \
  --max-num-batched-tokens 10000000 --ready-file "$WORK/sim.ready" 2>"$WORK/sim.log" &
wait_file "$WORK/sim.ready"
EP=$(head -1 "$WORK/sim.ready")
cat > "$WORK/sluice.yaml" <<YAML
listener: {address: 127.0.0.1, port: 0}
admin: {address: 127.0.0.1, port: 0}
metrics: {address: 127.0.0.1, port: 0}
workers: 2
access_log: {path: "off"}
models:
  - {name: m, endpoints: [$EP]}
YAML
"$BIN/sluice" serve --config "$WORK/sluice.yaml" --ready-file "$WORK/router.ready" 2>"$WORK/router.log" &
wait_file "$WORK/router.ready"
PORT=$(ready_port "$WORK/router.ready" listener)
RESULTS=${RESULTS:-bench/results}
mkdir -p "$RESULTS"
RUNS=()
for conc in $CONCURRENCY; do
  # At least two requests per client, so every level has a steady state.
  n=$((REQUESTS > conc * 2 ? REQUESTS : conc * 2))
  for target in "direct $EP" "sluice 127.0.0.1:$PORT"; do
    set -- $target
    "$BIN/sluice-bench" --target "$2" --model m --workload large-prompt --requests "$n" \
      --prompt-kb 220 --output-tokens 8 --concurrency "$conc" --progress off \
      --json "$WORK/$1-$conc.json" > "$WORK/$1-$conc.txt" 2>/dev/null
    RUNS+=("$conc:$1:$WORK/$1-$conc.json")
  done
done
python3 bench/direct_vs_router.py "$RESULTS/large-prompt.json" ttft "220 KB prompts (55k tokens, engine prefill nearly free): time to first token, direct and through sluice" "${RUNS[@]}"
bash bench/plot.sh "$RESULTS" large-prompt
