#!/usr/bin/env bash
# Router overhead: the same wrk load against a fast upstream (nginx returning a fixed OpenAI
# response) directly, through nginx proxy_pass, through HAProxy, and through sluice with
# authentication, rate limits, scheduling, metrics and the access log on. Runs are interleaved
# so machine noise hits every target alike. Writes $RESULTS/overhead-latest.json and a plot.
# Usage: bench/overhead.sh [seconds] [connections] [rounds]
# COMPARE_BIN_DIR=<dir of another build's sluice> adds that build as a fifth target in the same
# interleaved rounds (before/after comparisons of a change). COMPARE_TRACING=1 makes the fifth
# target this build (or COMPARE_BIN_DIR's) with tracing on, every request sampled, exporting
# OTLP to an nginx sink: the cost of tracing (TRACING_SAMPLING=0.1 samples a tenth).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/lib.sh
DURATION=${1:-5}
CONNS=${2:-32}
ROUNDS=${3:-3}
BIN=${SLUICE_BIN_DIR:-build/bin}
RESULTS=${RESULTS:-bench/results}
mkdir -p "$RESULTS"
WORK=$(mktemp -d /tmp/sluice-overhead.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; for p in nginx haproxy; do [ -f "$WORK/$p.pid" ] && kill "$(cat "$WORK/$p.pid")" 2>/dev/null; done; rm -rf "$WORK"' EXIT

UP=$(free_port); NGX=$(free_port); HAP=$(free_port); OTLP=$(free_port)

RESPONSE=$BENCH_RESPONSE
{ nginx_head "$WORK"; cat <<NGINX; } > "$WORK/nginx.conf"
  upstream llm { server 127.0.0.1:$UP; keepalive 64; }
  server {
    listen 127.0.0.1:$UP;
    client_body_buffer_size 64k;
    location / { default_type application/json; return 200 '$RESPONSE'; }
  }
  server {
    listen 127.0.0.1:$OTLP;
    location / { client_max_body_size 0; return 200; }
  }
  server {
    listen 127.0.0.1:$NGX;
    client_body_buffer_size 64k;
    location / { proxy_pass http://llm; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGINX
nginx -c "$WORK/nginx.conf" -p "$WORK"

cat > "$WORK/haproxy.cfg" <<HAPROXY
global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend bench
  bind 127.0.0.1:$HAP
  default_backend llm
backend llm
  server up 127.0.0.1:$UP
HAPROXY
haproxy -f "$WORK/haproxy.cfg" -D -p "$WORK/haproxy.pid"

cat > "$WORK/sluice.yaml" <<YAML
listener: {address: 127.0.0.1, port: 0}
admin: {address: 127.0.0.1, port: 0}
metrics: {address: 127.0.0.1, port: 0}
workers: 1
access_log: {path: $WORK/access.log}
models:
  - name: bench
    upstream_model: llama-3.1-8b
    endpoints: [127.0.0.1:$UP]
# Everything a production route has on: API-key authentication, token and request limits,
# the default scheduler (prefix scoring), metrics and the access log.
auth:
  mode: required
  api_keys:
    - {id: bench, tenant: acme, key_sha256: $(printf %s sk-bench-key | sha256sum | cut -d' ' -f1), models: [bench]}
rate_limits:
  - {name: per-identity, per: [identity], total_tokens: 1000000000000, unit: minute}
  - {name: per-model, per: [model], requests: 1000000000, unit: second}
YAML
"$BIN/sluice" serve --config "$WORK/sluice.yaml" --ready-file "$WORK/sluice.ready" 2>"$WORK/sluice.err" &
declare -A PID
PID[sluice]=$!
wait_file "$WORK/sluice.ready"
SLUICE=$(ready_port "$WORK/sluice.ready" listener)
COMPARE_CONFIG="$WORK/sluice.yaml"
if [ "${COMPARE_TRACING:-0}" = 1 ]; then
  COMPARE_BIN_DIR=${COMPARE_BIN_DIR:-$BIN}
  COMPARE_CONFIG="$WORK/traced.yaml"
  cp "$WORK/sluice.yaml" "$COMPARE_CONFIG"
  echo "tracing: {endpoint: \"http://127.0.0.1:$OTLP\", sampling: ${TRACING_SAMPLING:-1.0}}" >> "$COMPARE_CONFIG"
fi
if [ -n "${COMPARE_BIN_DIR:-}" ]; then
  "$COMPARE_BIN_DIR/sluice" serve --config "$COMPARE_CONFIG" --ready-file "$WORK/compare.ready" 2>"$WORK/compare.err" &
  PID[compare]=$!
  wait_file "$WORK/compare.ready"
  COMPARE=$(ready_port "$WORK/compare.ready" listener)
fi

# A 1 KB chat body.
python3 - "$WORK/post.lua" <<'PY'
import json, sys
content = "Summarise the following text. " * 30
body = json.dumps({"model": "bench", "messages": [{"role": "user", "content": content[:900]}], "max_tokens": 64})
open(sys.argv[1], "w").write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
  'wrk.headers["Authorization"] = "Bearer sk-bench-key"\nwrk.body = %s\n' % json.dumps(body))
PY

# CPU time (user + system, clock ticks) a process has used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
declare -A RPS P50 P99 CPU
run() {
  local name=$1 port=$2
  local out before=0
  [ -n "${PID[$name]:-}" ] && before=$(cpu_ticks "${PID[$name]}")
  out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$WORK/post.lua" "http://127.0.0.1:$port/v1/chat/completions")
  if [ -n "${PID[$name]:-}" ]; then
    # Router CPU per request, in microseconds (ticks are 1/100 s).
    local requests
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    CPU[$name]+="$(( ($(cpu_ticks "${PID[$name]}") - before) * 100000 / requests )) "
  fi
  local rps p50 p99 non2xx
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $4}' <<<"$out")
  if [ -n "$non2xx" ]; then echo "$name: $non2xx non-2xx responses" >&2; exit 1; fi
  RPS[$name]+="$rps "
  P50[$name]+="$p50 "
  P99[$name]+="$p99 "
  echo "round $r  $name: $rps req/s  p50 $p50  p99 $p99"
}
for r in $(seq "$ROUNDS"); do
  run direct "$UP"
  run nginx "$NGX"
  run haproxy "$HAP"
  run sluice "$SLUICE"
  if [ -n "${COMPARE_BIN_DIR:-}" ]; then run compare "$COMPARE"; fi
done

python3 - "$DURATION" "$CONNS" "$ROUNDS" "${RPS[direct]}" "${RPS[nginx]}" "${RPS[haproxy]}" "${RPS[sluice]}" \
  "${P50[direct]}" "${P50[nginx]}" "${P50[haproxy]}" "${P50[sluice]}" \
  "${P99[direct]}" "${P99[nginx]}" "${P99[haproxy]}" "${P99[sluice]}" "$RESULTS/overhead-latest.json" \
  "${RPS[compare]:-}" "${P50[compare]:-}" "${P99[compare]:-}" "${CPU[sluice]}" "${CPU[compare]:-}" <<'PY'
import json, statistics, sys, time
d, c, rounds = sys.argv[1:4]
rps = [list(map(float, a.split())) for a in sys.argv[4:8]]
def ms(v):
    v = v.strip()
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if v.endswith(unit):
            return float(v[:-len(unit)]) * f
    return float(v)
p50 = [[ms(x) for x in a.split()] for a in sys.argv[8:12]]
p99 = [[ms(x) for x in a.split()] for a in sys.argv[12:16]]
names = ["direct", "nginx proxy_pass", "haproxy", "sluice"]
out = sys.argv[16]
cpu = [sys.argv[20], sys.argv[21]]  # router CPU per request, in tenths of a microsecond
if len(sys.argv) > 19 and sys.argv[17].strip():
    names.append("sluice (compared)")
    rps.append(list(map(float, sys.argv[17].split())))
    p50.append([ms(x) for x in sys.argv[18].split()])
    p99.append([ms(x) for x in sys.argv[19].split()])
rows = []
print(f"\nwrk -t1 -c{c} -d{d}s, 1 KB chat POST, median of {rounds} interleaved rounds")
print(f"{'target':18} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
for i, n in enumerate(names):
    row = {"target": n, "rps": statistics.median(rps[i]), "p50_ms": statistics.median(p50[i]), "p99_ms": statistics.median(p99[i])}
    if i >= 3 and cpu[i - 3].strip():
        row["cpu_us_per_request"] = statistics.median(float(v) / 10 for v in cpu[i - 3].split())
    rows.append(row)
    extra = f"   router CPU {row['cpu_us_per_request']:.1f} us/request" if "cpu_us_per_request" in row else ""
    print(f"{n:18} {row['rps']:>10.0f} {row['p50_ms']:>8.3f} {row['p99_ms']:>8.3f}{extra}")
print(f"sluice / nginx throughput: {rows[3]['rps'] / rows[1]['rps']:.2f}, "
      f"sluice / haproxy: {rows[3]['rps'] / rows[2]['rps']:.2f}")
if len(rows) > 4:
    print(f"compared build / nginx throughput: {rows[4]['rps'] / rows[1]['rps']:.2f}; "
          f"sluice / compared build: {rows[3]['rps'] / rows[4]['rps']:.2f}")
json.dump({"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "duration_s": int(d), "connections": int(c), "rows": rows},
          open(out, "w"), indent=2)
PY
if [ "${COMPARE_TRACING:-0}" = 1 ]; then
  # Proof the traced target really exported: its span counters.
  curl -s "http://127.0.0.1:$(ready_port "$WORK/compare.ready" metrics)/metrics" | grep '^sluice_trace_'
fi
bash bench/plot.sh "$RESULTS" overhead-latest
