#!/usr/bin/env bash
# How much CPU sluice-sim needs for 16 engines under load: 16 replicas behind the router, wrk
# streaming chat requests through it; reports the simulator's CPU use and the tokens it served.
# Usage: bench/sim_capacity.sh [replicas=16] [connections=64] [seconds=10]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/lib.sh
REPLICAS=${1:-16}
CONNS=${2:-64}
SECONDS_RUN=${3:-10}
BIN=${SLUICE_BIN_DIR:-build/bin}
WORK=$(mktemp -d /tmp/sluice-simcap.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

"$BIN/sluice-sim" --replicas "$REPLICAS" --address 127.0.0.11 --port 0 --model llama \
  --ready-file "$WORK/sim.ready" 2>/dev/null &
SIM_PID=$!
wait_file "$WORK/sim.ready"
cat > "$WORK/sluice.yaml" <<YAML
listener: {address: 127.0.0.1, port: 0}
admin: {address: 127.0.0.1, port: 0}
metrics: {address: 127.0.0.1, port: 0}
workers: 1
access_log: {path: "off"}
models: [{name: llama, endpoints: [$(paste -sd, "$WORK/sim.ready")]}]
YAML
"$BIN/sluice" serve --config "$WORK/sluice.yaml" --ready-file "$WORK/r.ready" 2>/dev/null &
wait_file "$WORK/r.ready"
PORT=$(ready_port "$WORK/r.ready" listener)
cat > "$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"llama","messages":[{"role":"user","content":"Write a short story about a river."}],"max_tokens":64,"stream":true}'
LUA
ticks() { awk '{print $14 + $15}' "/proc/$SIM_PID/stat"; }
HZ=$(getconf CLK_TCK)
t0=$(ticks)
OUT=$(wrk -t1 -c"$CONNS" -d"${SECONDS_RUN}s" -s "$WORK/post.lua" "http://127.0.0.1:$PORT/v1/chat/completions")
t1=$(ticks)
RPS=$(awk '/Requests\/sec/ {print $2}' <<<"$OUT")
python3 - "$REPLICAS" "$CONNS" "$SECONDS_RUN" "$RPS" "$t0" "$t1" "$HZ" <<'PY'
import sys
replicas, conns, secs, rps, t0, t1, hz = sys.argv[1:]
cpu = (int(t1) - int(t0)) / int(hz) / int(secs)
print(f"{replicas} engines, {conns} streaming connections: {float(rps):.0f} req/s, "
      f"{float(rps) * 64:.0f} streamed tokens/s, simulator CPU {100 * cpu:.0f}% of one core")
PY
