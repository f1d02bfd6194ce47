#!/usr/bin/env bash
# Installs everything Sluice needs to build, test, benchmark and demo on Debian 12.
# Idempotent: packages already present are skipped; safe to run on every `make`.
set -euo pipefail

PKGS=(
  build-essential cmake ninja-build ccache pkg-config git
  g++ clang clang-format clang-tidy libclang-rt-14-dev
  libboost-dev libsimdjson-dev libyaml-cpp-dev nlohmann-json3-dev
  libspdlog-dev libfmt-dev libssl-dev libre2-dev libxxhash-dev libhiredis-dev libnghttp2-dev
  protobuf-compiler libprotobuf-dev python3-grpcio python3-protobuf
  libgtest-dev libgmock-dev libbenchmark-dev
  nginx-light haproxy wrk redis-server curl procps python3-matplotlib openssl
  nodejs npm
  kubernetes-client
  chromium prometheus
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    # A command of that name already on PATH (e.g. a preinstalled node) counts as present.
    case "$p" in
      nodejs) command -v node >/dev/null 2>&1 && continue ;;
      npm) command -v npm >/dev/null 2>&1 && continue ;;
      kubernetes-client) command -v kubectl >/dev/null 2>&1 && continue ;;
    esac
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "install-deps: all Debian packages present"
fi

# npm packages used by the end-to-end tests: the official OpenAI client, and playwright-core to
# drive Debian's chromium (it never downloads a browser of its own).
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -f "$here/test/e2e/package.json" ] && { [ ! -d "$here/test/e2e/node_modules/openai" ] ||
  [ ! -d "$here/test/e2e/node_modules/playwright-core" ]; }; then
  (cd "$here/test/e2e" && npm install --no-audit --no-fund --silent)
fi
