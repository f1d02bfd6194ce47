#!/usr/bin/env bash
# Large prompts: ~220 KB chat bodies (55,000 prompt tokens) straight to a simulated engine and
# through the router, streamed; the difference in time to first token is what the router adds
# (body peek, prompt rendering and hashing, scheduling, splice, relay). The engine's prefill is
# made nearly free so the router's share is visible, at each concurrency level.
# Usage: bench/large_prompt.sh [requests per level=64] [concurrency levels="20 100 200"]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REQUESTS=${1:-64}
CONCURRENCY=${2:-"20 100 200"}
BIN=${SLUICE_BIN_DIR:-build/bin}
WORK=$(mktemp -d /tmp/sluice-large.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
"$BIN/sluice-sim" --replicas 1 --address 127.0.0.1 --port 0 --model m --step-overhead-ms 1 \
  --prefill-ms-per-token 0.00001 --max-model-len 100000 --num-gpu-blocks 1000000 \
  --max-num-batched-tokens 10000000 --ready-file "$WORK/sim.ready" 2>"$WORK/sim.log" &
for _ in $(seq 200); do [ -s "$WORK/sim.ready" ] && break; sleep 0.05; done
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
for _ in $(seq 200); do [ -s "$WORK/router.ready" ] && break; sleep 0.05; done
PORT=$(python3 -c "import json;print(json.load(open('$WORK/router.ready'))['listener'])")
RESULTS=${RESULTS:-bench/results}
mkdir -p "$RESULTS"
: > "$WORK/rows"
for conc in $CONCURRENCY; do
  # At least two requests per client, so every level has a steady state.
  n=$((REQUESTS > conc * 2 ? REQUESTS : conc * 2))
  for target in "direct $EP" "sluice 127.0.0.1:$PORT"; do
    set -- $target
    "$BIN/sluice-bench" --target "$2" --model m --workload large-prompt --requests "$n" \
      --prompt-kb 220 --output-tokens 8 --concurrency "$conc" --progress off \
      --json "$WORK/$1-$conc.json" > "$WORK/$1-$conc.txt" 2>/dev/null
    python3 -c 'import json,sys; s=json.load(open(sys.argv[3]))["summary"]; print(json.dumps({"concurrency": int(sys.argv[1]), "target": sys.argv[2], "requests": s["requests"], "ok": s["ok"], "ttft_p50_ms": s["ttft_p50_s"]*1e3, "ttft_p99_ms": s["ttft_p99_s"]*1e3}))' \
      "$conc" "$1" "$WORK/$1-$conc.json" >> "$WORK/rows"
  done
done
python3 - "$WORK/rows" "$RESULTS/large-prompt.json" <<'PY'
import json, sys, time
rows = [json.loads(l) for l in open(sys.argv[1])]
print("220 KB chat prompts (55k tokens), streamed, engine prefill nearly free: TTFT direct and through sluice")
print(f"{'concurrency':>11} {'direct p50':>11} {'direct p99':>11} {'sluice p50':>11} {'sluice p99':>11} {'added p50':>10} {'added p99':>10}")
for c in sorted({r["concurrency"] for r in rows}):
    d = next(r for r in rows if r["concurrency"] == c and r["target"] == "direct")
    s = next(r for r in rows if r["concurrency"] == c and r["target"] == "sluice")
    if d["ok"] != d["requests"] or s["ok"] != s["requests"]:
        sys.exit(f"concurrency {c}: failed requests (direct {d['ok']}/{d['requests']}, sluice {s['ok']}/{s['requests']})")
    print(f"{c:>11} {d['ttft_p50_ms']:>9.1f}ms {d['ttft_p99_ms']:>9.1f}ms {s['ttft_p50_ms']:>9.1f}ms {s['ttft_p99_ms']:>9.1f}ms "
          f"{s['ttft_p50_ms'] - d['ttft_p50_ms']:>8.1f}ms {s['ttft_p99_ms'] - d['ttft_p99_ms']:>8.1f}ms")
json.dump({"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "metric": "ttft",
           "title": "220 KB prompts: time to first token, direct and through sluice", "rows": rows},
          open(sys.argv[2], "w"), indent=2)
PY
bash bench/plot.sh "$RESULTS" large-prompt
