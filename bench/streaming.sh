#!/usr/bin/env bash
# Streaming relay: long SSE responses (512 tokens at an engine step of ~10 ms) straight from a
# simulated engine and through the router; the difference in inter-token gaps is what the
# router's relay adds to every token. Usage: bench/streaming.sh [tokens=512] [levels="10 100 400"]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/lib.sh
TOKENS=${1:-512}
CONCURRENCY=${2:-"10 100 400"}
BIN=${SLUICE_BIN_DIR:-build/bin}
RESULTS=${RESULTS:-bench/results}
WORK=$(mktemp -d /tmp/sluice-stream.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
mkdir -p "$RESULTS"
"$BIN/sluice-sim" --replicas 1 --address 127.0.0.1 --port 0 --model m --step-overhead-ms 10 \
  --decode-ms-per-seq 0 --max-num-seqs 4096 --num-gpu-blocks 1000000 \
  --ready-file "$WORK/sim.ready" 2>"$WORK/sim.log" &
wait_file "$WORK/sim.ready"
EP=$(head -1 "$WORK/sim.ready")
cat > "$WORK/sluice.yaml" <<YAML
listener: {address: 127.0.0.1, port: 0}
admin: {address: 127.0.0.1, port: 0}
metrics: {address: 127.0.0.1, port: 0}
workers: 1
access_log: {path: "off"}
models:
  - {name: m, endpoints: [$EP]}
YAML
"$BIN/sluice" serve --config "$WORK/sluice.yaml" --ready-file "$WORK/router.ready" 2>"$WORK/router.log" &
wait_file "$WORK/router.ready"
PORT=$(ready_port "$WORK/router.ready" listener)
RUNS=()
for conc in $CONCURRENCY; do
  for target in "direct $EP" "sluice 127.0.0.1:$PORT"; do
    set -- $target
    "$BIN/sluice-bench" --target "$2" --model m --workload random --requests "$conc" \
      --system-tokens 64 --question-tokens 16 --output-tokens "$TOKENS" --concurrency "$conc" \
      --progress off > "$WORK/$1-$conc.json" 2>/dev/null
    RUNS+=("$conc:$1:$WORK/$1-$conc.json")
  done
done
python3 bench/direct_vs_router.py "$RESULTS/streaming.json" itl "$TOKENS-token streams, one engine stepping every ~10 ms: inter-token latency, direct and through sluice" "${RUNS[@]}"
bash bench/plot.sh "$RESULTS" streaming
