#!/usr/bin/python3
"""Open-loop load on `sluice epp`: ext_proc streams at a fixed rate, each sending a 1 KB chat
request the way Envoy does with full-duplex bodies (headers with protocol_config, then the body
with end_of_stream), and the time from the last request byte to the picker's header answer
(the decision) is recorded. The response phase follows (headers with the served endpoint, a
small body) so the picker's load accounting runs as in production.

Usage: bench/epp_load.py HOST:PORT RATE SECONDS [BODY_BYTES=1024] [JSON_OUT]
Prints p50/p90/p99/max of the decision time in ms, and the achieved rate. Debian's python3
(python3-grpcio, python3-protobuf)."""

import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "e2e"))
import envoy_like as el  # noqa: E402
import grpc  # noqa: E402

P = el.load_protos()
ep = P.ep


def request_messages(body):
    h = ep.ProcessingRequest()
    for k, v in ((":method", "POST"), (":path", "/v1/chat/completions"),
                 ("content-type", "application/json"), ("content-length", str(len(body)))):
        hv = h.request_headers.headers.headers.add()
        hv.key = k
        hv.raw_value = v.encode()
    h.protocol_config.request_body_mode = el.FULL_DUPLEX_STREAMED
    h.protocol_config.response_body_mode = el.FULL_DUPLEX_STREAMED
    b = ep.ProcessingRequest()
    b.request_body.body = body
    b.request_body.end_of_stream = True
    return h, b


async def one(call_factory, body, latencies, errors):
    h, b = request_messages(body)
    q = asyncio.Queue()
    await q.put(h)
    await q.put(b)

    async def gen():
        while True:
            m = await q.get()
            if m is None:
                return
            yield m

    call = call_factory(gen())
    t0 = time.perf_counter()
    try:
        first = await call.read()
        latencies.append((time.perf_counter() - t0) * 1e3)
        if first.WhichOneof("response") != "request_headers":
            errors.append(first.WhichOneof("response"))
            await q.put(None)
            return
        dest = first.request_headers.response.header_mutation.set_headers[0].header.raw_value.decode()
        while True:  # the body comes back
            m = await call.read()
            if m.request_body.response.body_mutation.streamed_response.end_of_stream:
                break
        rh = ep.ProcessingRequest()
        for k, v in ((":status", "200"), ("content-type", "application/json")):
            hv = rh.response_headers.headers.headers.add()
            hv.key = k
            hv.raw_value = v.encode()
        rh.metadata_context.filter_metadata["envoy.lb"].update({el.SERVED: dest.split(",")[0]})
        await q.put(rh)
        await call.read()
        rb = ep.ProcessingRequest()
        rb.response_body.body = b'{"model":"m","usage":{"prompt_tokens":250,"completion_tokens":8}}'
        rb.response_body.end_of_stream = True
        await q.put(rb)
        await call.read()
        await q.put(None)
        async for _ in call:
            pass
    except grpc.aio.AioRpcError as e:
        errors.append(str(e.code()))


async def main():
    target, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    size = int(sys.argv[4]) if len(sys.argv) > 4 else 1024
    out = sys.argv[5] if len(sys.argv) > 5 else None
    content = "x" * max(1, size - 80)
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": content}],
                       "max_tokens": 8}).encode()
    channels = [grpc.aio.insecure_channel(target) for _ in range(4)]
    factories = [c.stream_stream(el.PROCESS_PATH, request_serializer=ep.ProcessingRequest.SerializeToString,
                                 response_deserializer=ep.ProcessingResponse.FromString)
                 for c in channels]
    latencies, errors, tasks = [], [], []
    start = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(factories[i % len(factories)], body, latencies, errors)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    latencies.sort()

    def q(p):
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else float("nan")
    result = {"requests": n, "errors": len(errors), "achieved_rate": n / elapsed,
              "body_bytes": len(body), "decision_ms": {"p50": q(0.5), "p90": q(0.9),
                                                       "p99": q(0.99), "max": latencies[-1] if latencies else None}}
    print(json.dumps(result))
    if errors:
        print("errors:", sorted(set(errors))[:5], file=sys.stderr)
    if out:
        with open(out, "w") as f:
            json.dump(result, f)
    for c in channels:
        await c.close()


asyncio.run(main())
