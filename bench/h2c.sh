#!/usr/bin/env bash
# HTTP/1.1 vs HTTP/2 (h2c) to the upstream: the same wrk load through one sluice to two
# InferencePools in front of the same nginx fixed response, one reached over HTTP/1.1, one over
# h2c with prior knowledge (`listen ... http2`). Rounds are interleaved. Prints req/s, p50 and
# p99 per protocol and the upstream connections the router opened; writes
# $RESULTS/h2c-latest.json.
# Usage: bench/h2c.sh [seconds] [connections] [rounds]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/lib.sh
DURATION=${1:-5}
CONNS=${2:-64}
ROUNDS=${3:-3}
BIN=${SLUICE_BIN_DIR:-build/bin}
RESULTS=${RESULTS:-bench/results}
mkdir -p "$RESULTS"
WORK=$(mktemp -d /tmp/sluice-h2c.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null; rm -rf "$WORK"' EXIT

H1=$(free_port); H2=$(free_port); GW=$(free_port)

RESPONSE=$BENCH_RESPONSE
mkdir -p "$WORK/manifests"
{ nginx_head "$WORK"; cat <<NGINX; } > "$WORK/nginx.conf"
  http2_max_requests 1000000;
  server {
    listen 127.0.0.1:$H1;
    client_body_buffer_size 64k;
    location / { default_type application/json; return 200 '$RESPONSE'; }
  }
  server {
    listen 127.0.0.1:$H2 http2;
    client_body_buffer_size 64k;
    location / { default_type application/json; return 200 '$RESPONSE'; }
  }
}
NGINX
nginx -c "$WORK/nginx.conf" -p "$WORK"

pool() {  # name port appProtocol
  cat <<YAML
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: $1, namespace: default}
spec:
  selector: {matchLabels: {app: nginx}}
  targetPorts: [{number: $2}]
  appProtocol: $3
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: $1, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{headers: [{name: X-Gateway-Model-Name, value: $1}]}]
    backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: $1}]
---
YAML
}
{
  cat <<YAML
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: sluice
  listeners: [{name: http, port: $GW, protocol: HTTP}]
---
apiVersion: v1
kind: Pod
metadata: {name: nginx, namespace: default, labels: {app: nginx}}
status: {podIP: 127.0.0.1}
---
YAML
  pool http1 "$H1" http
  pool h2c "$H2" kubernetes.io/h2c
} > "$WORK/manifests/all.yaml"
cat > "$WORK/sluice.yaml" <<YAML
admin: {address: 127.0.0.1, port: 0}
metrics: {address: 127.0.0.1, port: 0}
workers: 1
access_log: {path: off}
metrics_fetcher: {enabled: false}
YAML
"$BIN/sluice" serve --config "$WORK/sluice.yaml" --manifests "$WORK/manifests" \
  --ready-file "$WORK/sluice.ready" 2>"$WORK/sluice.err" &
wait_file "$WORK/sluice.ready"
METRICS=$(ready_port "$WORK/sluice.ready" metrics)

for proto in http1 h2c; do
  python3 - "$WORK/$proto.lua" "$proto" <<'PY'
import json, sys
content = "Summarise the following text. " * 30
body = json.dumps({"model": sys.argv[2], "messages": [{"role": "user", "content": content[:900]}], "max_tokens": 64})
open(sys.argv[1], "w").write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
  'wrk.body = %s\n' % json.dumps(body))
PY
done

opened() { curl -s "http://127.0.0.1:$METRICS/metrics" | awk '/^sluice_upstream_connections_opened_total/ {print $2}'; }
declare -A RPS P50 P99 CONN
for r in $(seq "$ROUNDS"); do
  for proto in http1 h2c; do
    before=$(opened)
    out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$WORK/$proto.lua" "http://127.0.0.1:$GW/v1/chat/completions")
    non2xx=$(awk '/Non-2xx/ {print $4}' <<<"$out")
    if [ -n "$non2xx" ]; then echo "$proto: $non2xx non-2xx responses" >&2; exit 1; fi
    RPS[$proto]+="$(awk '/Requests\/sec/ {print $2}' <<<"$out") "
    P50[$proto]+="$(awk '$1=="50%" {print $2}' <<<"$out") "
    P99[$proto]+="$(awk '$1=="99%" {print $2}' <<<"$out") "
    CONN[$proto]+="$(( $(opened) - before )) "
    echo "round $r  $proto: $(awk '/Requests\/sec/ {print $2}' <<<"$out") req/s"
  done
done

python3 - "$DURATION" "$CONNS" "$ROUNDS" "$RESULTS/h2c-latest.json" \
  "${RPS[http1]}" "${RPS[h2c]}" "${P50[http1]}" "${P50[h2c]}" "${P99[http1]}" "${P99[h2c]}" \
  "${CONN[http1]}" "${CONN[h2c]}" <<'PY'
import json, statistics, sys, time
d, c, rounds, out = sys.argv[1:5]
def ms(v):
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if v.endswith(unit):
            return float(v[:-len(unit)]) * f
    return float(v)
vals = [a.split() for a in sys.argv[5:13]]
rows = []
print(f"\nwrk -t1 -c{c} -d{d}s through sluice (1 worker), 1 KB chat POST, median of {rounds} rounds")
print(f"{'upstream':10} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'conns opened':>13}")
for i, name in enumerate(["http1", "h2c"]):
    row = {"upstream": name,
           "rps": statistics.median(map(float, vals[i])),
           "p50_ms": statistics.median(map(ms, vals[2 + i])),
           "p99_ms": statistics.median(map(ms, vals[4 + i])),
           "connections_opened": int(statistics.median(map(int, vals[6 + i])))}
    rows.append(row)
    print(f"{name:10} {row['rps']:>10.0f} {row['p50_ms']:>8.3f} {row['p99_ms']:>8.3f} {row['connections_opened']:>13}")
print(f"h2c / http1 throughput: {rows[1]['rps'] / rows[0]['rps']:.2f}")
json.dump({"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "duration_s": int(d),
           "connections": int(c), "rows": rows}, open(out, "w"), indent=2)
PY
