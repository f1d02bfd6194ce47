#!/usr/bin/env bash
# The endpoint picker's two targets (#13), in one run, each against its baseline interleaved:
#  1. 1 KB requests in open loop at RATE/s through `sluice serve` to a pool whose endpoints it
#     picks itself, and to the same endpoints as a pool with an endpointPickerRef to
#     `sluice epp`: the difference in time to first token is what asking the picker adds (the
#     gRPC round trip, the picker's decision, the body there and back).
#  2. 220 KB prompts at concurrency 200, straight to the engine and through `sluice serve` asking
#     `sluice epp`: the time to first token added.
# Usage: bench/epp.sh [rate=1000] [seconds=10] [requests=400] [concurrency=200]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/lib.sh
RATE=${1:-1000}
SECONDS_=${2:-10}
REQUESTS=${3:-400}
CONC=${4:-200}
BIN=${SLUICE_BIN_DIR:-build/bin}
WORK=$(mktemp -d /tmp/sluice-epp.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
SIM_PORT=$(free_port)
GW_PORT=$(free_port)
SELF_PORT=$(free_port)
EPP_PORT=$(free_port)
"$BIN/sluice-sim" --replicas 1 --address 127.0.0.11 --port "$SIM_PORT" --model m --step-overhead-ms 1 \
  --prefill-ms-per-token 0.00001 --max-model-len 100000 --num-gpu-blocks 1000000 \
  --max-num-batched-tokens 10000000 --ready-file "$WORK/sim.ready" 2>"$WORK/sim.log" &
wait_file "$WORK/sim.ready"
mkdir -p "$WORK/m"
cat > "$WORK/m/all.yaml" <<YAML
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: sluice
  listeners: [{name: http, port: $GW_PORT, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: m}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: self, namespace: default}
spec:
  gatewayClassName: sluice
  listeners: [{name: http, port: $SELF_PORT, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: self, namespace: default}
spec:
  parentRefs: [{name: self}]
  rules: [{backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: m-self}]}]
---
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: m-self, namespace: default}
spec:
  selector: {matchLabels: {app: m}}
  targetPorts: [{number: $SIM_PORT}]
---
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: m, namespace: default}
spec:
  selector: {matchLabels: {app: m}}
  targetPorts: [{number: $SIM_PORT}]
  endpointPickerRef: {name: epp, port: {number: 9002}, failureMode: FailClose}
---
apiVersion: v1
kind: Service
metadata: {name: epp, namespace: default}
spec:
  selector: {app: epp}
  ports: [{name: grpc, port: 9002, targetPort: $EPP_PORT}]
---
apiVersion: v1
kind: Pod
metadata: {name: epp-0, namespace: default, labels: {app: epp}}
status: {podIP: 127.0.0.1, phase: Running, conditions: [{type: Ready, status: "True"}]}
YAML
for i in 0; do
  cat >> "$WORK/m/all.yaml" <<YAML
---
apiVersion: v1
kind: Pod
metadata: {name: m-$i, namespace: default, labels: {app: m}}
status: {podIP: 127.0.0.1$((i + 1)), phase: Running, conditions: [{type: Ready, status: "True"}]}
YAML
done
echo 'access_log: {path: "off"}' > "$WORK/sluice.yaml"
"$BIN/sluice" epp --pool-name m --config "$WORK/sluice.yaml" --manifests "$WORK/m" \
  --grpc "127.0.0.1:$EPP_PORT" --health "127.0.0.1:$(free_port)" --metrics 127.0.0.1:0 \
  --admin 127.0.0.1:0 --workers 1 --ready-file "$WORK/epp.ready" 2>"$WORK/epp.log" &
wait_file "$WORK/epp.ready"
"$BIN/sluice" serve --config "$WORK/sluice.yaml" --manifests "$WORK/m" --admin 127.0.0.1:0 \
  --metrics 127.0.0.1:0 --workers 1 --ready-file "$WORK/gw.ready" 2>"$WORK/gw.log" &
wait_file "$WORK/gw.ready"
RESULTS=${RESULTS:-bench/results}
mkdir -p "$RESULTS"

echo "== 1. 1 KB requests at ${RATE}/s for ${SECONDS_} s: sluice serve picking itself, and asking sluice epp"
N=$((RATE * SECONDS_))
for round in 1 2; do
  for target in "self 127.0.0.1:$SELF_PORT" "picker 127.0.0.1:$GW_PORT"; do
    set -- $target
    "$BIN/sluice-bench" --target "$2" --model m --workload large-prompt --prompt-kb 1 \
      --requests "$N" --output-tokens 1 --rate "$RATE" --progress off \
      --json "$WORK/small-$1-$round.json" > "$WORK/small-$1-$round.txt" 2>/dev/null
  done
  python3 - "$WORK/small-self-$round.json" "$WORK/small-picker-$round.json" <<'PY'
import json, sys
a, b = (json.load(open(p)).get("summary") for p in sys.argv[1:3])
for s, name in ((a, "self"), (b, "picker")):
    assert s["ok"] == s["requests"], (name, s["ok"], s["requests"])
print(f"  self   ttft p50 {a['ttft_p50_s']*1e3:7.2f} ms  p99 {a['ttft_p99_s']*1e3:7.2f} ms")
print(f"  picker ttft p50 {b['ttft_p50_s']*1e3:7.2f} ms  p99 {b['ttft_p99_s']*1e3:7.2f} ms")
print(f"  added by the picker: p50 {(b['ttft_p50_s']-a['ttft_p50_s'])*1e3:+.2f} ms, p99 {(b['ttft_p99_s']-a['ttft_p99_s'])*1e3:+.2f} ms")
PY
done
[ "${SKIP_LARGE:-0}" = 1 ] && exit 0
echo "== 2. 220 KB prompts, concurrency $CONC: direct, and sluice serve -> sluice epp"
EP="127.0.0.11:$SIM_PORT"
RUNS=()
for round in 1 2; do
  for target in "direct $EP" "sluice 127.0.0.1:$GW_PORT" "self 127.0.0.1:$SELF_PORT"; do
    set -- $target
    "$BIN/sluice-bench" --target "$2" --model m --workload large-prompt --requests "$REQUESTS" \
      --prompt-kb 220 --output-tokens 8 --concurrency "$CONC" --progress off \
      --json "$WORK/$1-$round.json" > "$WORK/$1-$round.txt" 2>/dev/null
  done
  RUNS=("$CONC:direct:$WORK/direct-$round.json" "$CONC:sluice:$WORK/sluice-$round.json")
  python3 bench/direct_vs_router.py "$RESULTS/epp-large-prompt-$round.json" ttft \
    "round $round: 220 KB prompts, time to first token, direct and through sluice serve + sluice epp" "${RUNS[@]}"
  RUNS=("$CONC:direct:$WORK/direct-$round.json" "$CONC:sluice:$WORK/self-$round.json")
  python3 bench/direct_vs_router.py "$RESULTS/epp-large-prompt-self-$round.json" ttft \
    "round $round: the same through sluice serve picking itself (no picker), for comparison" "${RUNS[@]}"
done
