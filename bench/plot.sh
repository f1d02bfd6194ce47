#!/usr/bin/env bash
# Draws PNG plots from benchmark results: bench/plot.sh RESULTS_DIR NAME... (NAME.json in
# RESULTS_DIR, NAME.png written beside it). Uses Debian's python3-matplotlib (installed by
# scripts/install-deps.sh) through /usr/bin/python3, whatever python3 is first on PATH.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=/usr/bin/python3
if ! "$PY" -c 'import matplotlib' 2>/dev/null; then
  echo "plot: matplotlib not installed (make deps installs python3-matplotlib); no plots drawn" >&2
  exit 0
fi
exec "$PY" bench/plot.py "$@"
