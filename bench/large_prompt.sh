#!/usr/bin/env bash
# Large prompts: ~220 KB chat bodies (55,000 prompt tokens) straight to a simulated engine and
# through the router, streamed; the difference in time to first token is what the router adds
# (body peek, prompt rendering and hashing, scheduling, splice, relay). The engine's prefill is
# made nearly free so the router's share is visible. Usage: bench/large_prompt.sh [requests]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REQUESTS=${1:-64}
BIN=${SLUICE_BIN_DIR:-build/bin}
WORK=$(mktemp -d /tmp/sluice-large.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
"$BIN/sluice-sim" --replicas 1 --address 127.0.0.1 --port 0 --model m --step-overhead-ms 1 \
  --prefill-ms-per-token 0.00001 --max-model-len 100000 --num-gpu-blocks 65536 \
  --max-num-batched-tokens 400000 --ready-file "$WORK/sim.ready" 2>"$WORK/sim.log" &
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
for target in "direct $EP" "sluice 127.0.0.1:$PORT"; do
  set -- $target
  "$BIN/sluice-bench" --target "$2" --model m --workload random --requests "$REQUESTS" \
    --system-tokens 55000 --question-tokens 64 --output-tokens 8 --concurrency 4 \
    --json "$WORK/$1.json" > "$WORK/$1.txt"
  python3 - "$1" "$WORK/$1.json" <<'PY'
import json, sys
name, path = sys.argv[1], sys.argv[2]
d = json.load(open(path))
s = d.get("summary", d)
def pick(*keys):
    for k in keys:
        if k in s: return s[k]
    return None
print(name, json.dumps({k: v for k, v in s.items() if "ttft" in k or k in ("ok", "errors", "requests", "throughput_rps")}))
PY
done
