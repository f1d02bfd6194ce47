#!/usr/bin/env bash
# Scheduling quality: each workload, seeded, through the router in front of a simulated fleet,
# once per scheduler preset, each run on a fresh fleet (cold caches). Reports throughput, TTFT
# p50/p90, end-to-end latency and the fleet's prefix-cache hit rate per preset and workload,
# writes bench/results/scheduling-<workload>.json and, with matplotlib, a PNG per workload.
#
# Usage: bench/scheduling.sh [workload ...]   (default: all of them)
#   kthena-long     Kthena's long shared-prefix run: 4,096-token system prompts, 128 groups
#   kthena-short    the same with 256-token system prompts
#   oversubscribed  after llm-d's B2B case, scaled down: 6,000-token contexts whose active set
#                   needs ~73% of the fleet's KV cache, ~6x one engine's
#   low-sharing     every prompt distinct
#   multi-turn      conversations; every turn resends the history
# Environment: REPLICAS (8), PRESETS (all six; `custom` runs the `scheduler:` block in the YAML
# file CUSTOM_SCHEDULER, for trying a profile of your own), TIME_SCALE (10), SMOKE=1 (tiny
# sizes, for `make test`), SLUICE_BIN_DIR (build/bin), RESULTS (bench/results).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/lib.sh
REPLICAS=${REPLICAS:-8}
SCALE=${TIME_SCALE:-10}
PRESETS=${PRESETS:-"random round-robin kthena-default gie-default sglang-cache-aware sluice-default"}
BIN=${SLUICE_BIN_DIR:-build/bin}
RESULTS=${RESULTS:-bench/results}
SMOKE=${SMOKE:-0}
WORKLOADS=("$@")
((${#WORKLOADS[@]})) || WORKLOADS=(kthena-long kthena-short oversubscribed low-sharing multi-turn)
WORK=$(mktemp -d /tmp/sluice-sched.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
mkdir -p "$RESULTS"

# Sets ARGS (sluice-bench), BLOCKS (KV blocks of 16 tokens per engine), CONC and DESC.
workload() {
  case "$1" in
    kthena-long | kthena-short)
      local sys=4096
      [ "$1" = kthena-short ] && sys=256
      ARGS="--workload shared-prefix --groups 128 --prompts-per-group 8 --system-tokens $sys --question-tokens 128 --output-tokens 128"
      BLOCKS=4096 CONC=256
      DESC="128 groups x 8, ${sys}-token system prompts, 128-token questions and outputs, concurrency 256, 4,096 KV blocks per engine"
      ;;
    oversubscribed)
      ARGS="--workload shared-prefix --groups 48 --prompts-per-group 5 --system-tokens 6000 --question-tokens 1200 --output-tokens 100"
      BLOCKS=3072 CONC=64
      DESC="48 groups x 5, 6,000-token contexts, 1,200-token questions, 100-token outputs, concurrency 64, 3,072 KV blocks per engine (active contexts ~73% of the fleet's KV)"
      ;;
    low-sharing)
      ARGS="--workload random --requests 512 --system-tokens 1024 --question-tokens 128 --output-tokens 128"
      BLOCKS=1024 CONC=64
      DESC="512 distinct 1,152-token prompts, 128-token outputs, concurrency 64, 1,024 KV blocks per engine"
      ;;
    multi-turn)
      ARGS="--workload multi-turn --conversations 96 --turns 6 --system-tokens 1024 --question-tokens 128 --output-tokens 128"
      BLOCKS=2048 CONC=48
      DESC="96 conversations x 6 turns, 1,024-token system prompts, 128-token questions and answers, 48 conversations at a time, 2,048 KV blocks per engine"
      ;;
    *)
      echo "unknown workload: $1" >&2
      exit 2
      ;;
  esac
  if [ "$SMOKE" = 1 ]; then  # a few dozen small requests: checks the plumbing, not the numbers
    ARGS=$(sed -E 's/--groups [0-9]+/--groups 4/; s/--prompts-per-group [0-9]+/--prompts-per-group 2/;
      s/--requests [0-9]+/--requests 8/; s/--conversations [0-9]+/--conversations 3/;
      s/--turns [0-9]+/--turns 2/; s/--system-tokens [0-9]+/--system-tokens 256/;
      s/--question-tokens [0-9]+/--question-tokens 16/; s/--output-tokens [0-9]+/--output-tokens 8/' <<<"$ARGS")
    CONC=4 BLOCKS=1024 DESC="smoke sizes (SMOKE=1), not comparable"
  fi
}


for wl in "${WORKLOADS[@]}"; do
  workload "$wl"
  rows="$WORK/$wl.rows"
  : > "$rows"
  for preset in $PRESETS; do
    rm -f "$WORK"/*.ready
    "$BIN/sluice-sim" --replicas "$REPLICAS" --address 127.0.0.11 --port 0 --model m \
      --time-scale "$SCALE" --num-gpu-blocks "$BLOCKS" --ready-file "$WORK/sim.ready" 2>/dev/null &
    SIM=$!
    wait_file "$WORK/sim.ready"
    cat > "$WORK/sluice.yaml" <<YAML
listener: {address: 127.0.0.1, port: 0}
admin: {address: 127.0.0.1, port: 0}
metrics: {address: 127.0.0.1, port: 0}
workers: 1
access_log: {path: "off"}
$(if [ "$preset" = custom ]; then cat "$CUSTOM_SCHEDULER"; else echo "scheduler: {preset: $preset}"; fi)
metrics_fetcher: {interval: 50ms}
models: [{name: m, endpoints: [$(paste -sd, "$WORK/sim.ready")]}]
YAML
    "$BIN/sluice" serve --config "$WORK/sluice.yaml" --ready-file "$WORK/r.ready" 2>/dev/null &
    ROUTER=$!
    wait_file "$WORK/r.ready"
    PORT=$(ready_port "$WORK/r.ready" listener)
    # Every engine scraped once before the load (polled, not slept).
    ADMIN=$(ready_port "$WORK/r.ready" admin)
    for _ in $(seq 300); do
      n=$(curl -sf "http://127.0.0.1:$ADMIN/debug/endpoints" | grep -o '"scraped":true' | wc -l || true)
      [ "$n" -ge "$REPLICAS" ] && break
      sleep 0.01
    done
    # shellcheck disable=SC2086
    SUMMARY=$("$BIN/sluice-bench" --target "127.0.0.1:$PORT" $ARGS --concurrency "$CONC" --seed 7 --progress off 2>/dev/null)
    HITS=0 QUERIES=0
    while read -r ep; do
      m=$(curl -s "http://$ep/metrics")
      HITS=$(awk -v t="$HITS" '/^vllm:prefix_cache_hits_total/ {t += $2} END {print t}' <<<"$m")
      QUERIES=$(awk -v t="$QUERIES" '/^vllm:prefix_cache_queries_total/ {t += $2} END {print t}' <<<"$m")
    done < "$WORK/sim.ready"
    kill "$ROUTER" "$SIM"
    wait "$ROUTER" "$SIM" 2>/dev/null || true
    python3 -c 'import json,sys; s=json.loads(sys.argv[2]); s["preset"]=sys.argv[1]; s["prefix_hit_rate"]=float(sys.argv[3])/max(1.0,float(sys.argv[4])); print(json.dumps(s))' \
      "$preset" "$SUMMARY" "$HITS" "$QUERIES" >> "$rows"
    echo "  $wl / $preset done" >&2
  done
  python3 - "$rows" "$RESULTS/scheduling-$wl.json" "$wl" "$DESC" "$REPLICAS" "$SCALE" <<'PY'
import json, sys, time
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
out, wl, desc, replicas, scale = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), float(sys.argv[6])
print(f"\n{wl}: {replicas} engines at time scale {scale:g}; {desc}; latencies real time (model time / {scale:g})")
print(f"{'preset':20} {'req/s':>7} {'tok/s':>8} {'TTFT p50':>9} {'TTFT p90':>9} {'e2e p50':>8} {'e2e p99':>8} {'hit rate':>9} {'vs random':>9}")
base = next((r["req_per_s"] for r in rows if r["preset"] == "random"), None)
for r in rows:
    vs = f"{r['req_per_s'] / base:8.2f}x" if base else "        -"
    print(f"{r['preset']:20} {r['req_per_s']:7.1f} {r['output_tok_per_s']:8.0f} {r['ttft_p50_s']*1e3:7.1f}ms {r['ttft_p90_s']*1e3:7.1f}ms "
          f"{r['e2e_p50_s']*1e3:6.0f}ms {r['e2e_p99_s']*1e3:6.0f}ms {r['prefix_hit_rate']*100:8.1f}% {vs}")
json.dump({"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "workload": wl, "setup": desc,
           "replicas": replicas, "time_scale": scale, "rows": rows}, open(out, "w"), indent=2)
PY
done
bash bench/plot.sh "$RESULTS" "${WORKLOADS[@]/#/scheduling-}"
