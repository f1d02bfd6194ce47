#!/usr/bin/env bash
# Cost of the filters: the same wrk load through sluice with every filter off, and with API-key
# authentication, two rate limits (per identity and per model, never reached) and flow control
# (capacity never reached) on. Runs are interleaved. Usage: bench/filters_overhead.sh [s] [c] [rounds]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/lib.sh
DURATION=${1:-5}
CONNS=${2:-32}
ROUNDS=${3:-3}
BIN=${SLUICE_BIN_DIR:-build/bin}
WORK=$(mktemp -d /tmp/sluice-filters.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null; rm -rf "$WORK"' EXIT
UP=$(free_port)
RESPONSE=$BENCH_RESPONSE
{ nginx_head "$WORK"; cat <<NGINX; } > "$WORK/nginx.conf"
  server {
    listen 127.0.0.1:$UP;
    client_body_buffer_size 64k;
    location / { default_type application/json; return 200 '$RESPONSE'; }
  }
}
NGINX
nginx -c "$WORK/nginx.conf" -p "$WORK"

KEY=sk-bench-key
HASH=$(printf %s "$KEY" | sha256sum | cut -d' ' -f1)
base() {
  cat <<YAML
listener: {address: 127.0.0.1, port: 0}
admin: {address: 127.0.0.1, port: 0}
metrics: {address: 127.0.0.1, port: 0}
workers: 1
access_log: {path: off}
models:
  - name: bench
    upstream_model: llama-3.1-8b
    endpoints: [127.0.0.1:$UP]
YAML
}
base > "$WORK/off.yaml"
{ base; cat <<YAML
auth:
  mode: required
  api_keys:
    - {id: bench, tenant: acme, key_sha256: $HASH, models: [bench]}
rate_limits:
  - {name: per-identity, per: [identity], total_tokens: 1000000000000, unit: minute}
  - {name: per-model, per: [model], requests: 1000000000, unit: second}
flow_control: {max_in_flight_per_endpoint: 100000}
YAML
} > "$WORK/on.yaml"
declare -A PORT
for mode in off on; do
  "$BIN/sluice" serve --config "$WORK/$mode.yaml" --ready-file "$WORK/$mode.ready" 2>"$WORK/$mode.err" &
  wait_file "$WORK/$mode.ready"
  PORT[$mode]=$(ready_port "$WORK/$mode.ready" listener)
done
python3 - "$WORK/post.lua" "$KEY" <<'PY'
import json, sys
content = "Summarise the following text. " * 30
body = json.dumps({"model": "bench", "messages": [{"role": "user", "content": content[:900]}], "max_tokens": 64})
open(sys.argv[1], "w").write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
  'wrk.headers["Authorization"] = "Bearer %s"\nwrk.body = %s\n' % (sys.argv[2], json.dumps(body)))
PY
declare -A RPS
for r in $(seq "$ROUNDS"); do
  for mode in off on; do
    out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$WORK/post.lua" "http://127.0.0.1:${PORT[$mode]}/v1/chat/completions")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $4}' <<<"$out")
    if [ -n "$non2xx" ]; then echo "filters $mode: $non2xx non-2xx responses" >&2; exit 1; fi
    RPS[$mode]+="$rps "
    echo "round $r  filters $mode: $rps req/s  p99 $p99"
  done
done
python3 - "${RPS[off]}" "${RPS[on]}" <<'PY'
import statistics, sys
off = statistics.median(map(float, sys.argv[1].split()))
on = statistics.median(map(float, sys.argv[2].split()))
print(f"median req/s: filters off {off:.0f}, on {on:.0f}: {100 * (off - on) / off:.1f}% fewer with every filter on")
PY
