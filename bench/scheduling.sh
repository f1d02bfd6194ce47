#!/usr/bin/env bash
# Scheduling quality: the same seeded workload through the router in front of a simulated fleet,
# once per scheduler preset, each on a fresh fleet (cold caches). Reports throughput, TTFT,
# end-to-end latency and the fleet's prefix-cache hit rate per preset.
# Usage: bench/scheduling.sh [replicas=8] [groups=64] [per_group=8] [system_tokens=2048]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPLICAS=${1:-8}
GROUPS_N=${2:-64}
PER_GROUP=${3:-8}
SYSTEM=${4:-2048}
CONC=${CONCURRENCY:-32}
SCALE=${TIME_SCALE:-10}
BLOCKS=${GPU_BLOCKS:-1024}   # per engine: 16k tokens, about 8 system prompts of 2k
PRESETS=${PRESETS:-"random round-robin kthena-default gie-default sglang-cache-aware sluice-default"}
BIN=${SLUICE_BIN_DIR:-build/bin}
OUT=${OUT:-bench/results/scheduling-latest.json}
WORK=$(mktemp -d /tmp/sluice-sched.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

wait_file() { for _ in $(seq 400); do [ -s "$1" ] && return 0; sleep 0.025; done; echo "timeout: $1" >&2; exit 1; }
echo "[" > "$WORK/all.json"
first=1
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
scheduler: {preset: $preset}
metrics_fetcher: {interval: 50ms}
models: [{name: m, endpoints: [$(paste -sd, "$WORK/sim.ready")]}]
YAML
  "$BIN/sluice" serve --config "$WORK/sluice.yaml" --ready-file "$WORK/r.ready" 2>/dev/null &
  ROUTER=$!
  wait_file "$WORK/r.ready"
  PORT=$(python3 -c "import json;print(json.load(open('$WORK/r.ready'))['listener'])")
  sleep 0.2  # one metrics scrape before the load
  SUMMARY=$("$BIN/sluice-bench" --target "127.0.0.1:$PORT" --workload shared-prefix \
    --groups "$GROUPS_N" --prompts-per-group "$PER_GROUP" --system-tokens "$SYSTEM" \
    --question-tokens 64 --output-tokens 64 --concurrency "$CONC" --seed 7)
  HITS=0; QUERIES=0
  while read -r ep; do
    m=$(curl -s "http://$ep/metrics")
    h=$(awk '/^vllm:prefix_cache_hits_total/ {print $2}' <<<"$m"); q=$(awk '/^vllm:prefix_cache_queries_total/ {print $2}' <<<"$m")
    HITS=$(python3 -c "print($HITS + $h)"); QUERIES=$(python3 -c "print($QUERIES + $q)")
  done < "$WORK/sim.ready"
  kill "$ROUTER" "$SIM"; wait "$ROUTER" "$SIM" 2>/dev/null || true
  [ $first = 1 ] || echo "," >> "$WORK/all.json"
  first=0
  python3 - "$preset" "$SUMMARY" "$HITS" "$QUERIES" >> "$WORK/all.json" <<'PY'
import json, sys
s = json.loads(sys.argv[2]); s["preset"] = sys.argv[1]
s["prefix_hit_rate"] = float(sys.argv[3]) / max(1.0, float(sys.argv[4]))
print(json.dumps(s))
PY
  echo "done: $preset" >&2
done
echo "]" >> "$WORK/all.json"
mkdir -p bench/results
python3 - "$WORK/all.json" "$OUT" "$REPLICAS" "$GROUPS_N" "$PER_GROUP" "$SYSTEM" "$CONC" "$SCALE" "$BLOCKS" <<'PY'
import json, sys, time
rows = json.load(open(sys.argv[1]))
meta = dict(zip(["replicas", "groups", "per_group", "system_tokens", "concurrency", "time_scale", "gpu_blocks"], map(float, sys.argv[3:])))
print(f"\n{int(meta['replicas'])} engines (time scale {meta['time_scale']:g}, {int(meta['gpu_blocks'])} KV blocks each), "
      f"{int(meta['groups'])} groups x {int(meta['per_group'])} requests, {int(meta['system_tokens'])}-token system prompts, "
      f"64-token questions and outputs, concurrency {int(meta['concurrency'])}; times in model seconds x 1/{meta['time_scale']:g}")
print(f"{'preset':20} {'req/s':>7} {'tok/s':>8} {'TTFT p50':>9} {'TTFT p90':>9} {'e2e p50':>8} {'hit rate':>9}")
for r in rows:
    print(f"{r['preset']:20} {r['req_per_s']:7.1f} {r['output_tok_per_s']:8.0f} {r['ttft_p50_s']*1e3:8.1f}ms {r['ttft_p90_s']*1e3:8.1f}ms "
          f"{r['e2e_p50_s']*1e3:7.0f}ms {r['prefix_hit_rate']*100:8.1f}%")
json.dump({"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "setup": meta, "rows": rows}, open(sys.argv[2], "w"), indent=2)
PY
