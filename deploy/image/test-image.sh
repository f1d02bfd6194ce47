#!/usr/bin/env bash
# Builds the image offline (deploy/image/build-rootfs.sh) and runs it the way the Deployment does
# (uid 65532, read-only root filesystem, every capability dropped, no privilege escalation):
#   1. `sluice version` prints "sluice VERSION";
#   2. `sluice validate --config` accepts the Deployment's router file
#      (deploy/kubernetes/router/sluice.yaml);
#   3. `sluice serve` answers /healthz, /readyz and /metrics, and exits 0 when SIGTERM drains it
#      (it is PID 1 in the container);
#   4. in-cluster, against the test API server (test/fakes/apiserver.mjs, with node): the
#      service-account mount, the downward-API variables and the ConfigMap's router file, as in
#      deploy/kubernetes/router/deployment.yaml; watches sync, a request goes through a Gateway
#      listener, the Lease is taken, status is written (deploy/image/test-in-cluster.mjs).
# Exits 0 printing "SKIP: <what failed>" when this machine cannot build or run containers (no
# binary, no podman, podman unusable, no OCI runtime that starts here); exits 1 when the image is
# wrong.
#
# Needs podman (and buildah, or podman alone): apt-get install -y podman buildah runc. Notes from
# machines where it was tried: crun 1.8 refuses hosts with a cgroup v1/v2 hybrid layout ("cgroups
# in hybrid mode not supported"), runc works there; podman's default RLIMIT_NOFILE (1048576) fails
# where the hard limit is lower, so explicit --ulimit values within the limits are passed; a host
# whose overlay storage does not work can use STORAGE_DRIVER=vfs.
#
# Environment: SLUICE_BIN (default build/bin/sluice); for trying this script with another binary,
# SLUICE_EXPECT (a regular expression for step 1's output), SKIP_VALIDATE=1, SKIP_SERVE=1,
# SKIP_IN_CLUSTER=1.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="${SLUICE_BIN:-$root/build/bin/sluice}"
version="$(sed -n 's/^project(sluice VERSION \([0-9][0-9.]*\).*/\1/p' "$root/CMakeLists.txt")"
image="docker.io/library/sluice:$version"
expect="${SLUICE_EXPECT:-^sluice ${version//./\\.}\$}"
out="$root/build/image"

passed=0
failed=0
skipped=0
skip() { echo "SKIP: $*"; echo "0 passed, 0 failed, 1 skipped"; exit 0; }
ok() { echo "ok: $*"; passed=$((passed + 1)); }
bad() { echo "FAIL: $*"; failed=$((failed + 1)); }
step_skip() { echo "SKIP: $*"; skipped=$((skipped + 1)); }

[ -x "$bin" ] || skip "$bin not found (build it first: make build)"
command -v podman >/dev/null || skip "podman is not installed (apt-get install -y podman buildah runc)"
if ! info_err="$(podman info 2>&1 >/dev/null)"; then
  skip "podman cannot start here: $(tail -n 3 <<<"$info_err" | tr '\n' ' ')"
fi

echo "test-image: building $image from $bin"
if ! SLUICE_BIN="$bin" bash "$root/deploy/image/build-rootfs.sh" --out "$out" --image "$image"; then
  echo "FAIL: deploy/image/build-rootfs.sh failed"
  echo "0 passed, 1 failed"
  exit 1
fi

# RLIMITs within this process's hard limits (podman's defaults may exceed them), and small enough
# for every runtime tried so far (conmon caps RLIMIT_NPROC at 32768).
limit() { # $1 = current hard limit, $2 = cap
  if [ "$1" = unlimited ] || [ "$1" -gt "$2" ]; then echo "$2"; else echo "$1"; fi
}
nofile="$(limit "$(ulimit -Hn)" 65536)"
nproc="$(limit "$(ulimit -Hu)" 4096)"
ulimits=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")
# shellcheck disable=SC2054 # the commas are inside one option value
hardened=(--user 65532:65532 --read-only --tmpfs /tmp:rw,size=16m --cap-drop ALL
  --security-opt no-new-privileges)

# Find an OCI runtime that starts a container here: the configured one, then runc, then crun
# without cgroups. Exit status 125/126 is podman's or the runtime's own failure; anything else
# means the container ran (and its output is judged below).
runtime=()
attempts=""
try_runtime() {
  local out rc
  out="$(timeout 120 podman run --rm --network none "${ulimits[@]}" "$@" "${hardened[@]}" "$image" version 2>&1)"
  rc=$?
  if [ "$rc" -ne 125 ] && [ "$rc" -ne 126 ] && [ "$rc" -ne 124 ]; then
    runtime=("$@")
    version_out="$out"
    version_rc=$rc
    return 0
  fi
  attempts+="${attempts:+; }podman run ${*:-(default runtime)}: $(grep -m1 -E 'Error|error' <<<"$out" || tail -n1 <<<"$out")"
  return 1
}
version_out=""
version_rc=0
found=0
if try_runtime; then found=1
elif command -v runc >/dev/null && try_runtime --runtime runc; then found=1
elif command -v crun >/dev/null && try_runtime --runtime crun --cgroups disabled; then found=1
fi
((found)) || skip "no container could be started here: $attempts"
echo "test-image: containers run with: podman run ${runtime[*]:-(default runtime)} ${ulimits[*]}"
run=(podman run --rm --network none "${ulimits[@]}" "${runtime[@]}" "${hardened[@]}")

# 1. version
if [ "$version_rc" -eq 0 ] && grep -qE "$expect" <<<"$version_out"; then
  ok "version: $version_out"
else
  bad "version (exit $version_rc, expected /$expect/): $version_out"
fi

# 2. the Deployment's router file
if [ "${SKIP_VALIDATE:-0}" = 1 ]; then
  step_skip "validate (SKIP_VALIDATE=1)"
else
  cfg="$root/deploy/kubernetes/router/sluice.yaml"
  if v_out="$(timeout 60 "${run[@]}" -v "$cfg:/etc/sluice/sluice.yaml:ro" "$image" \
    validate --config /etc/sluice/sluice.yaml 2>&1)"; then
    ok "validate --config deploy/kubernetes/router/sluice.yaml"
  else
    bad "validate --config deploy/kubernetes/router/sluice.yaml: $v_out"
  fi
fi

# 3. serve, probe, drain. Host networking, so that curl reaches it; ports chosen by the router.
if [ "${SKIP_SERVE:-0}" = 1 ]; then
  step_skip "serve (SKIP_SERVE=1)"
else
  dir="$(mktemp -d)"
  chmod 0777 "$dir"
  name="sluice-test-image-$$"
  cleanup() { podman rm -f "$name" >/dev/null 2>&1; rm -rf "$dir"; }
  trap cleanup EXIT
  cp "$root/examples/router-config/sluice.yaml" "$dir/sluice.yaml"
  chmod 0644 "$dir/sluice.yaml"
  if ! s_err="$(podman run -d --name "$name" --network host "${ulimits[@]}" "${runtime[@]}" \
    "${hardened[@]}" -v "$dir:/run/sluice:rw" "$image" serve --config /run/sluice/sluice.yaml \
    --listen 127.0.0.1:0 --admin 127.0.0.1:0 --metrics 127.0.0.1:0 \
    --ready-file /run/sluice/ready.json 2>&1 >/dev/null)"; then
    step_skip "serve: podman run --network host failed: $(tail -n1 <<<"$s_err")"
  else
    for _ in $(seq 100); do
      [ -s "$dir/ready.json" ] && break
      [ "$(podman inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" = true ] || break
      sleep 0.2
    done
    if [ ! -s "$dir/ready.json" ]; then
      bad "serve: no ready file after 20 s: $(podman logs "$name" 2>&1 | tail -n 5 | tr '\n' ' ')"
    else
      port() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" "$dir/ready.json"; }
      admin="$(port admin)"
      metrics="$(port metrics)"
      health="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin/healthz")"
      ready=""
      for _ in $(seq 50); do
        ready="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin/readyz")"
        [ "$ready" = 200 ] && break
        sleep 0.2
      done
      families="$(curl -s "http://127.0.0.1:$metrics/metrics" | grep -c '^# TYPE sluice_')"
      timeout 60 podman stop -t 30 "$name" >/dev/null 2>&1
      code="$(podman inspect -f '{{.State.ExitCode}}' "$name" 2>/dev/null)"
      if [ "$health" = 200 ] && [ "$ready" = 200 ] && [ "${families:-0}" -gt 0 ] && [ "$code" = 0 ]; then
        ok "serve: /healthz 200, /readyz 200, $families sluice_* metric families, exit 0 after SIGTERM"
      else
        bad "serve: /healthz $health, /readyz $ready, ${families:-0} metric families, exit code after SIGTERM ${code:-?}: $(podman logs "$name" 2>&1 | tail -n 5 | tr '\n' ' ')"
      fi
    fi
  fi
fi

# 4. in-cluster, as the Deployment runs it
if [ "${SKIP_IN_CLUSTER:-0}" = 1 ]; then
  step_skip "in-cluster (SKIP_IN_CLUSTER=1)"
elif ! command -v node >/dev/null; then
  step_skip "in-cluster: node is not installed"
elif [ ! -f "$root/test/fakes/apiserver.mjs" ] || [ ! -x "$root/build/bin/sluice-sim" ]; then
  step_skip "in-cluster: needs test/fakes/apiserver.mjs and build/bin/sluice-sim"
else
  ic_out="$(timeout 180 node "$root/deploy/image/test-in-cluster.mjs" "$image" "${ulimits[@]}" \
    "${runtime[@]}" "${hardened[@]}" 2>&1)"
  echo "$ic_out"
  passed=$((passed + $(grep -c '^ok:' <<<"$ic_out")))
  failed=$((failed + $(grep -c '^FAIL:' <<<"$ic_out")))
fi

if ((skipped)); then
  echo "$passed passed, $failed failed, $skipped skipped"
else
  echo "$passed passed, $failed failed"
fi
((failed == 0))
