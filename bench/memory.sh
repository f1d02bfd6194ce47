#!/usr/bin/env bash
# Router memory: resident set size idle, with 10,000 idle keep-alive client connections, and
# with 1,000 concurrent streams in flight (a slow simulated engine keeps them open).
# Usage: bench/memory.sh [connections] [streams]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/lib.sh
CONNS=${1:-10000}
STREAMS=${2:-1000}
BIN=${SLUICE_BIN_DIR:-build/bin}
WORK=$(mktemp -d /tmp/sluice-memory.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
ulimit -n $((CONNS + STREAMS * 2 + 1000)) 2>/dev/null || ulimit -n 20000
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# A slow engine: streams of 4000 tokens at 20 ms a step stay open for minutes.
"$BIN/sluice-sim" --replicas 1 --address 127.0.0.1 --port 0 --model sim-llama \
  --step-overhead-ms 20 --max-num-seqs 4096 --ready-file "$WORK/sim.ready" 2>"$WORK/sim.log" &
wait_file "$WORK/sim.ready"
EP=$(head -1 "$WORK/sim.ready")
cat > "$WORK/sluice.yaml" <<YAML
listener: {address: 127.0.0.1, port: 0}
admin: {address: 127.0.0.1, port: 0}
metrics: {address: 127.0.0.1, port: 0}
workers: 2
access_log: {path: "off"}
limits: {max_connections: 100000}
timeouts: {idle: 600s}
models:
  - {name: llama, upstream_model: sim-llama, endpoints: [$EP]}
YAML
"$BIN/sluice" serve --config "$WORK/sluice.yaml" --ready-file "$WORK/router.ready" 2>"$WORK/router.log" &
ROUTER=$!
wait_file "$WORK/router.ready"
PORT=$(ready_port "$WORK/router.ready" listener)
sleep 1
IDLE=$(rss $ROUTER)
echo "idle: ${IDLE} KiB"

python3 - "$PORT" "$CONNS" "$STREAMS" "$ROUTER" <<'PY'
import asyncio, json, sys
port, conns, streams, pid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
async def main():
    # Idle keep-alive connections: one request each, then they stay open.
    body = json.dumps({"model": "llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
    req = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(body)}\r\n\r\n{body}").encode()
    idle = []
    for i in range(0, conns, 500):
        batch = await asyncio.gather(*[asyncio.open_connection("127.0.0.1", port) for _ in range(min(500, conns - i))])
        for r, w in batch:
            w.write(req)
        await asyncio.gather(*[w.drain() for r, w in batch])
        await asyncio.gather(*[r.readuntil(b"}}") for r, w in batch])
        idle.extend(batch)
    await asyncio.sleep(1)
    print(f"{conns} idle keep-alive connections: {rss()} KiB", flush=True)
    for r, w in idle:
        w.close()
    await asyncio.sleep(2)
    # Streams in flight.
    sbody = json.dumps({"model": "llama", "stream": True, "messages": [{"role": "user", "content": "tell a long story"}], "max_tokens": 4000})
    sreq = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(sbody)}\r\n\r\n{sbody}").encode()
    live = []
    for i in range(0, streams, 250):
        batch = await asyncio.gather(*[asyncio.open_connection("127.0.0.1", port) for _ in range(min(250, streams - i))])
        for r, w in batch:
            w.write(sreq)
        await asyncio.gather(*[w.drain() for r, w in batch])
        await asyncio.gather(*[r.readuntil(b"data:") for r, w in batch])
        live.extend(batch)
    # Keep reading so the router is not held back by a full socket buffer.
    async def drain(r):
        try:
            while True:
                if not await r.read(65536):
                    return
        except Exception:
            return
    tasks = [asyncio.create_task(drain(r)) for r, w in live]
    await asyncio.sleep(3)
    print(f"{streams} concurrent streams: {rss()} KiB", flush=True)
    for r, w in live:
        w.close()
    for t in tasks:
        t.cancel()
asyncio.run(main())
PY
