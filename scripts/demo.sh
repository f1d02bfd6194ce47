#!/usr/bin/env bash
# `make demo`: three simulated engines on their own loopback addresses, the router in front of
# them on free ports, and real requests through it (non-streamed, streamed, a model listing, an
# unknown model, the metrics). Everything is stopped on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=build/bin
WORK=$(mktemp -d /tmp/sluice-demo.XXXXXX)
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

wait_file() {
  for _ in $(seq 500); do [ -s "$1" ] && return 0; sleep 0.02; done
  echo "demo: timed out waiting for $1" >&2
  exit 1
}
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

PORT=$(free_port)
"$BIN/sluice-sim" --replicas 3 --address 127.0.0.11 --port "$PORT" --model sim-llama \
  --ready-file "$WORK/sim.ready" 2>"$WORK/sim.log" &
wait_file "$WORK/sim.ready"
ENDPOINTS=$(paste -sd, "$WORK/sim.ready" | sed 's/,/, /g')
echo "simulated engines: $ENDPOINTS"

cat > "$WORK/sluice.yaml" <<YAML
listener: {address: 127.0.0.1, port: 0}
admin: {address: 127.0.0.1, port: 0}
metrics: {address: 127.0.0.1, port: 0}
access_log: {path: $WORK/access.log}
scheduler: {preset: sluice-default, decisions: 16}
models:
  - name: llama
    upstream_model: sim-llama
    endpoints: [$ENDPOINTS]
YAML
"$BIN/sluice" serve --config "$WORK/sluice.yaml" --ready-file "$WORK/router.ready" 2>"$WORK/router.log" &
wait_file "$WORK/router.ready"
read -r LISTEN ADMIN METRICS < <(python3 -c "import json;d=json.load(open('$WORK/router.ready'));print(d['listener'],d['admin'],d['metrics'])")
URL="http://127.0.0.1:$LISTEN"
echo "router: $URL (admin 127.0.0.1:$ADMIN, metrics 127.0.0.1:$METRICS)"

show() { echo; echo "\$ $*"; "$@"; echo; }
show curl -sS "$URL/v1/models"
show curl -sS -i "$URL/v1/chat/completions" -H 'Content-Type: application/json' \
  -d '{"model":"llama","messages":[{"role":"user","content":"Say hello"}],"max_tokens":5}'
show curl -sS -N "$URL/v1/chat/completions" -H 'Content-Type: application/json' \
  -d '{"model":"llama","messages":[{"role":"user","content":"Stream it"}],"max_tokens":5,"stream":true}'
show curl -sS "$URL/v1/chat/completions" -H 'Content-Type: application/json' \
  -d '{"model":"gpt-unknown","messages":[]}'
echo "\$ curl -s 127.0.0.1:$ADMIN/debug/endpoints   # what the metrics fetcher reads from each engine"
curl -sS "127.0.0.1:$ADMIN/debug/endpoints" > "$WORK/endpoints.json"
python3 - "$WORK/endpoints.json" <<'PY'
import json, sys
for e in json.load(open(sys.argv[1]))["endpoints"]:
    print(f"  {e['address']}: healthy={e['healthy']} waiting={e['waiting']} running={e['running']} "
          f"kv={e['kv_usage']} ttft={e['ttft_seconds']} itl={e['itl_seconds']} age={e['age_seconds']}")
PY
echo
echo "\$ curl -s 127.0.0.1:$ADMIN/debug/decisions   # why each request went where it went"
curl -sS "127.0.0.1:$ADMIN/debug/decisions" > "$WORK/decisions.json"
python3 - "$WORK/decisions.json" <<'PY'
import json, sys
for d in json.load(open(sys.argv[1]))["decisions"][-2:]:
    dec = d["decision"]
    print(f"  {d['request_id'][:8]}.. {dec['profile']}: {dec['summary']}; first choice "
          f"{dec['candidates'][0]['endpoint']} total {dec['candidates'][0]['total']}")
PY
echo
echo "\$ curl -s 127.0.0.1:$METRICS/metrics | grep ^sluice_requests_total"
curl -sS "127.0.0.1:$METRICS/metrics" | grep '^sluice_requests_total'
sleep 0.2
echo; echo "access log:"; cat "$WORK/access.log"
echo; echo "demo: ok"
