#!/usr/bin/env bash
# Instructions per request of the router, untraced and with every request traced: each runs
# under `valgrind --tool=callgrind` behind a fixed wrk load against an nginx upstream (the
# overhead benchmark's fixed OpenAI response), its counters zeroed after a warm-up, and the
# requests of the measured window counted from its /metrics. Instruction counts repeat within
# about 1% where requests per second drift by 30%: the tool for cost work on the request path.
# Usage: bench/callgrind_request.sh [seconds=10]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/lib.sh
SECONDS_MEASURED=${1:-10}
BIN=${SLUICE_BIN_DIR:-build/bin}
WORK=$(mktemp -d /tmp/sluice-callgrind.XXXXXX)
trap '[ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null; rm -rf "$WORK"' EXIT
UP=$(free_port); OTLP=$(free_port)
RESPONSE=$BENCH_RESPONSE
{ nginx_head "$WORK"; cat <<NGINX; } > "$WORK/nginx.conf"
  server { listen 127.0.0.1:$UP; location / { default_type application/json; return 200 '$RESPONSE'; } }
  server { listen 127.0.0.1:$OTLP; location / { client_max_body_size 0; return 200; } }
}
NGINX
nginx -c "$WORK/nginx.conf" -p "$WORK"
python3 - "$WORK/post.lua" <<'PY'
import json, sys
content = "Summarise the following text. " * 30
body = json.dumps({"model": "bench", "messages": [{"role": "user", "content": content[:900]}], "max_tokens": 64})
open(sys.argv[1], "w").write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
  'wrk.body = %s\n' % json.dumps(body))
PY

requests() { curl -s "127.0.0.1:$1/metrics" | awk '/^sluice_requests_total\{model="bench"/ {s+=$2} END {print s+0}'; }

measure() {  # measure <name> [extra config line]
  local name=$1 extra=${2:-} port metrics
  port=$(free_port); metrics=$(free_port)
  cat > "$WORK/$name.yaml" <<YAML
listener: {address: 127.0.0.1, port: $port}
admin: {address: 127.0.0.1, port: 0}
metrics: {address: 127.0.0.1, port: $metrics}
workers: 1
access_log: {path: $WORK/$name.log}
models:
  - {name: bench, upstream_model: llama-3.1-8b, endpoints: ["127.0.0.1:$UP"]}
$extra
YAML
  valgrind --tool=callgrind --callgrind-out-file="$WORK/$name.out" \
    "$BIN/sluice" serve --config "$WORK/$name.yaml" --ready-file "$WORK/$name.ready" \
    >"$WORK/$name.err" 2>&1 &
  local pid=$!
  for _ in $(seq 600); do [ -s "$WORK/$name.ready" ] && break; sleep 0.1; done  # valgrind starts slowly
  [ -s "$WORK/$name.ready" ] || { echo "$name did not start: $(cat "$WORK/$name.err")" >&2; exit 1; }
  wrk -t1 -c4 -d3s -s "$WORK/post.lua" "http://127.0.0.1:$port/v1/chat/completions" >/dev/null
  local before after
  before=$(requests "$metrics")
  callgrind_control -z "$pid" >/dev/null 2>&1
  wrk -t1 -c4 -d"${SECONDS_MEASURED}s" -s "$WORK/post.lua" \
    "http://127.0.0.1:$port/v1/chat/completions" >/dev/null
  sleep 1.5  # the exporter's flush interval: this window's spans are sent inside it
  callgrind_control -d "$pid" >/dev/null 2>&1
  after=$(requests "$metrics")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local ir
  ir=$(callgrind_annotate "$(ls -t "$WORK/$name.out".* | head -1)" 2>/dev/null |
       awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  echo "$name: $((after - before)) requests, $((ir / (after - before))) instructions per request"
}

measure untraced
measure traced "tracing: {endpoint: \"http://127.0.0.1:$OTLP\", sampling: 1.0}"
