#!/usr/bin/env bash
# Every benchmark part at smoke size (seconds each), for `make test`: the scripts, the load
# generator and the plots keep working. The numbers mean nothing at these sizes.
# Environment: RESULTS (where the JSON and PNG go), SLUICE_BIN_DIR, and those of each script.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export RESULTS=${RESULTS:-/tmp/sluice-bench-smoke}
mkdir -p "$RESULTS"
check() {  # a result and, when matplotlib is there, its plot
  [ -s "$RESULTS/$1.json" ] || { echo "smoke: $RESULTS/$1.json missing" >&2; exit 1; }
  if /usr/bin/python3 -c 'import matplotlib' 2>/dev/null && [ ! -s "$RESULTS/$1.png" ]; then
    echo "smoke: $RESULTS/$1.png missing" >&2
    exit 1
  fi
}
echo "== scheduling (every workload, ${PRESETS:-all presets})"
SMOKE=1 bash bench/scheduling.sh
for w in kthena-long kthena-short oversubscribed low-sharing multi-turn; do check "scheduling-$w"; done
echo "== streaming relay"
bash bench/streaming.sh 16 "4"
check streaming
echo "== large prompts"
bash bench/large_prompt.sh 4 "2"
check large-prompt
echo "== overhead"
bash bench/overhead.sh 1 8 1
check overhead-latest
echo "== h2c upstreams"
bash bench/h2c.sh 1 8 1
[ -s "$RESULTS/h2c-latest.json" ] || { echo "smoke: $RESULTS/h2c-latest.json missing" >&2; exit 1; }
echo "== memory"
bash bench/memory.sh 50 5
echo "smoke: every benchmark part ran"
