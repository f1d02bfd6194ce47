#!/usr/bin/python3
"""A header-driven test endpoint picker (EPP), like the Inference Extension conformance suite's
lightweight EPP (`pkg/lwepp`): the gateway side of the protocol is tested against it.

It serves Envoy's ext_proc (`/envoy.service.ext_proc.v3.ExternalProcessor/Process`, gRPC over
HTTP/2 cleartext) and the gRPC health service, and per stream (one HTTP request):

  * request phase: the destination is the request header `test-epp-endpoint-selection`
    ("ip" or "ip:port", comma-separated; an "ip" alone is that IP on --target-port), else the
    next of --endpoints, round-robin. The headers' answer is deferred until the whole body has
    arrived (as the reference EPP does in FULL_DUPLEX_STREAMED mode), carries
    `x-gateway-destination-endpoint` as a header mutation AND in
    dynamic_metadata["envoy.lb"], and is followed by the body echoed back unchanged as
    streamed_response chunks (as it came; the last with end_of_stream);
  * response phase: the served endpoint from metadata_context "envoy.lb" /
    "x-gateway-destination-endpoint-served" comes back in the response header
    `x-conformance-test-served-endpoint` (with `x-conformance-test-selected-endpoint`, the pool
    name in `x-conformance-test-pool` and `x-went-into-resp-headers: true`, as lwepp does).

Test switches (request headers, all optional):
  test-epp-immediate: CODE            answer an ImmediateResponse CODE with an OpenAI-shaped JSON
                                      body and headers retry-after: 7, x-test-epp: immediate
  test-epp-fail: GRPC_CODE            end the stream with that gRPC status (e.g. UNAVAILABLE)
                                      instead of answering
  test-epp-destination-in: header|metadata|both|none (default both)
  test-epp-misbehave: response-first  answer the request headers with a response_headers message
  test-epp-model-rewrite: NAME        replace the body's "model" (the body is re-chunked at
                                      62,000 bytes and content-length is set)
  test-epp-body-answer: streamed|continue   continue: answer each request_body message with an
                                      empty BodyResponse (no body mutation), as pkg/lwepp does
  test-epp-set-request-header: N=V[@ACTION]  set a request header (several, comma-separated;
                                      ACTION: a HeaderValueOption.HeaderAppendAction name, default
                                      OVERWRITE_IF_EXISTS_OR_ADD)
  test-epp-set-response-header: N=V[@ACTION]  the same on the response
  test-epp-headers-answer: early      answer the request headers as they arrive and echo each
                                      body chunk at once (full duplex, not deferred)
  test-epp-remove-request-header: N   remove request headers (comma-separated)
  test-epp-remove-response-header: N  remove response headers (comma-separated)
  test-epp-delay-ms: N                wait N ms before answering the request phase

Everything seen on each stream is recorded (LwEpp.records, and with --log-file one JSON line
per stream, written when the stream ends).

As a program:
  /usr/bin/python3 test/fakes/lwepp.py --listen 127.0.0.30:PORT --endpoints a:p,b:p \
      --target-port N [--pool-name NAME] [--ready-file F] [--log-file F]
As a module:
  epp = LwEpp("127.0.0.30:0", ["127.0.0.11:8000"], 8000).start(); ...; epp.stop()

Needs Debian's python (/usr/bin/python3: python3-grpcio, python3-protobuf) and protoc; the
protobuf modules are generated at run time by test/e2e/envoy_like.py's load_protos().
"""

import argparse
import json
import os
import signal
import sys
import threading
import time
from concurrent import futures

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "e2e"))

import grpc  # noqa: E402

import envoy_like as el  # noqa: E402

SELECTION = "test-epp-endpoint-selection"
IMMEDIATE = "test-epp-immediate"
FAIL = "test-epp-fail"
DESTINATION_IN = "test-epp-destination-in"
MODEL_REWRITE = "test-epp-model-rewrite"
BODY_ANSWER = "test-epp-body-answer"
SET_REQUEST_HEADER = "test-epp-set-request-header"
REMOVE_REQUEST_HEADER = "test-epp-remove-request-header"
REMOVE_RESPONSE_HEADER = "test-epp-remove-response-header"
DELAY_MS = "test-epp-delay-ms"
SET_RESPONSE_HEADER = "test-epp-set-response-header"
HEADERS_ANSWER = "test-epp-headers-answer"
MISBEHAVE = "test-epp-misbehave"

SERVED_RESULT = "x-conformance-test-served-endpoint"
SELECTED_RESULT = "x-conformance-test-selected-endpoint"
POOL_RESULT = "x-conformance-test-pool"
WENT_INTO_RESPONSE = "x-went-into-resp-headers"

MAX_CHUNK = 62000
HEALTH_SERVICES = ("", "liveness", "readiness", el.EXT_PROC_SERVICE)


def _csv(value):
    return [s.strip() for s in (value or "").split(",") if s.strip()]


def _text(b: bytes, limit=1 << 20):
    return b[:limit].decode("utf-8", errors="replace")


class LwEpp:
    """The picker: start() binds and serves, stop() ends it (open streams are cancelled)."""

    def __init__(self, listen, endpoints, target_port, pool_name="", log_path=None,
                 protos=None, max_workers=64):
        self.listen = listen
        self.endpoints = list(endpoints)
        self.target_port = int(target_port)
        self.pool_name = pool_name
        self.log_path = log_path
        self.p = protos or el.load_protos()
        self.max_workers = max_workers
        self.records = []
        self.streams = 0
        self._rr = 0
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._log = open(log_path, "a", buffering=1) if log_path else None
        self.server = None
        self.port = None

    # -- lifecycle --

    def start(self):
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.max_workers),
            options=[("grpc.so_reuseport", 0)],
            maximum_concurrent_rpcs=None)
        p = self.p
        handlers = {
            "Process": grpc.stream_stream_rpc_method_handler(
                self._process, request_deserializer=p.ep.ProcessingRequest.FromString,
                response_serializer=p.ep.ProcessingResponse.SerializeToString),
        }
        health = {
            "Check": grpc.unary_unary_rpc_method_handler(
                self._health_check, request_deserializer=p.health.HealthCheckRequest.FromString,
                response_serializer=p.health.HealthCheckResponse.SerializeToString),
        }
        self.server.add_generic_rpc_handlers((
            grpc.method_handlers_generic_handler(el.EXT_PROC_SERVICE, handlers),
            grpc.method_handlers_generic_handler("grpc.health.v1.Health", health),
        ))
        host, _, port = self.listen.rpartition(":")
        self.port = self.server.add_insecure_port(self.listen)
        if not self.port:
            raise OSError(f"cannot listen on {self.listen}")
        self.address = f"{host}:{self.port}"
        self.server.start()
        return self

    def stop(self, grace=None):
        if self.server is not None:
            self.server.stop(grace).wait()
            self.server = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def wait_records(self, predicate, count=1, timeout=10.0):
        """Waits until `count` records satisfy predicate(record); returns them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [r for r in self.records if predicate(r)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"only {len(found)} of {count} records after {timeout}s")
                self._cond.wait(left)

    # -- the picker's choices --

    def pick(self, headers):
        chosen = _csv(headers.get(SELECTION))
        if chosen:
            return [e if ":" in e else f"{e}:{self.target_port}" for e in chosen]
        with self._lock:
            if not self.endpoints:
                return []
            e = self.endpoints[self._rr % len(self.endpoints)]
            self._rr += 1
        return [e]

    # -- messages --

    def _option(self, mutation, key, value, action="OVERWRITE_IF_EXISTS_OR_ADD"):
        opt = mutation.set_headers.add()
        opt.header.key = key
        opt.header.raw_value = value.encode()
        opt.append_action = self.p.base.HeaderValueOption.HeaderAppendAction.Value(action)

    def _set_from(self, mutation, spec):
        """'name=value[@ACTION],...' into set_headers."""
        for item in _csv(spec):
            name, _, rest = item.partition("=")
            value, _, action = rest.partition("@")
            self._option(mutation, name.strip(), value.strip(),
                         action.strip() or "OVERWRITE_IF_EXISTS_OR_ADD")

    def _headers_answer(self, headers, destination, body_len=None):
        m = self.p.ep.ProcessingResponse()
        common = m.request_headers.response
        common.clear_route_cache = True
        where = headers.get(DESTINATION_IN, "both")
        hm = common.header_mutation
        if where in ("header", "both"):
            self._option(hm, el.DESTINATION, destination)
        self._set_from(hm, headers.get(SET_REQUEST_HEADER))
        if body_len is not None:
            self._option(hm, "content-length", str(body_len))
        for name in _csv(headers.get(REMOVE_REQUEST_HEADER)):
            hm.remove_headers.append(name)
        if where in ("metadata", "both"):
            m.dynamic_metadata.update({el.LB_NAMESPACE: {el.DESTINATION: destination}})
        return m

    def _immediate(self, code):
        m = self.p.ep.ProcessingResponse()
        imm = m.immediate_response
        imm.status.code = code
        imm.body = json.dumps({"error": {
            "message": f"the test EPP answered {code}", "type": "rate_limit_error"
            if code == 429 else "test_epp_error", "param": None, "code": str(code)}}).encode()
        for k, v in (("content-type", "application/json"), ("retry-after", "7"),
                     ("x-test-epp", "immediate")):
            self._option(imm.headers, k, v)
        imm.details = "test-epp-immediate"
        return m

    def _body_chunk(self, data, eos):
        m = self.p.ep.ProcessingResponse()
        sr = m.request_body.response.body_mutation.streamed_response
        sr.body = data
        sr.end_of_stream = eos
        return m

    def _response_headers_answer(self, rec, headers):
        m = self.p.ep.ProcessingResponse()
        hm = m.response_headers.response.header_mutation
        self._option(hm, SERVED_RESULT, rec["served"])
        self._option(hm, WENT_INTO_RESPONSE, "true")
        if rec.get("destination"):
            self._option(hm, SELECTED_RESULT, rec["destination"])
        if self.pool_name:
            self._option(hm, POOL_RESULT, self.pool_name)
        self._set_from(hm, headers.get(SET_RESPONSE_HEADER))
        for name in _csv(headers.get(REMOVE_RESPONSE_HEADER)):
            hm.remove_headers.append(name)
        return m

    @staticmethod
    def _header_dict(header_map):
        out = {}
        for h in header_map.headers:
            v = h.raw_value.decode(errors="replace") if h.raw_value else h.value
            out[h.key] = v if h.key not in out else out[h.key] + "," + v
        return out

    def _metadata(self, msg):
        if not msg.HasField("metadata_context"):
            return None
        return {ns: el.struct_to_py(s) for ns, s in msg.metadata_context.filter_metadata.items()}

    # -- the stream --

    def _process(self, request_iterator, context):
        with self._lock:
            self.streams += 1
            n = self.streams
        rec = {"stream": n, "messages": [], "protocol_config": None, "request_headers": None,
               "request_headers_eos": None, "body_chunks": [], "body_eos": [], "body": "",
               "destination": None, "immediate": None, "failed": None,
               "response_headers": None, "response_metadata": None, "served": None,
               "after_response": [], "end": None, "picker": self.address, "t0": time.time()}
        headers = {}
        body = bytearray()
        done = {"handler": False, "rpc": False}

        def finish(part):
            # The record is complete once the handler returned and the RPC is over (a reset
            # is only known at the end: the request iterator just stops).
            with self._cond:
                done[part] = True
                if part == "rpc":
                    state = getattr(context, "_state", None)
                    rec["reset_by_gateway"] = getattr(state, "client", None) == "cancelled"
                if not (done["handler"] and done["rpc"]):
                    return
                if rec["reset_by_gateway"] and rec["end"] in ("half-close", "closed", None):
                    rec["end"] = "cancelled"
                rec["t1"] = time.time()
                self.records.append(rec)
                if self._log is not None:
                    self._log.write(json.dumps(rec) + "\n")
                self._cond.notify_all()

        context.add_callback(lambda: finish("rpc"))
        try:
            for req in request_iterator:
                kind = req.WhichOneof("request")
                rec["messages"].append(kind)
                if rec["protocol_config"] is None and req.HasField("protocol_config"):
                    pc = req.protocol_config
                    rec["protocol_config"] = {"request_body_mode": pc.request_body_mode,
                                              "response_body_mode": pc.response_body_mode}
                if rec["response_headers"] is not None and kind != "response_headers":
                    rec["after_response"].append(kind)
                if kind == "request_headers":
                    headers = self._header_dict(req.request_headers.headers)
                    rec["request_headers"] = headers
                    rec["request_headers_eos"] = req.request_headers.end_of_stream
                    rec["request_metadata"] = self._metadata(req)
                    rec["id"] = headers.get("x-request-id")
                    if headers.get(FAIL):
                        rec["failed"] = headers[FAIL]
                        context.abort(grpc.StatusCode[headers[FAIL].upper()],
                                      "test-epp-fail: " + headers[FAIL])
                    if headers.get(IMMEDIATE):
                        rec["immediate"] = int(headers[IMMEDIATE])
                        yield self._immediate(int(headers[IMMEDIATE]))
                        rec["end"] = "immediate"
                        return
                    if headers.get(MISBEHAVE) == "response-first":
                        m = self.p.ep.ProcessingResponse()
                        m.response_headers.response.SetInParent()
                        yield m
                    if headers.get(DELAY_MS):
                        time.sleep(int(headers[DELAY_MS]) / 1000.0)
                    dests = self.pick(headers)
                    if not dests:
                        rec["failed"] = "no endpoints"
                        context.abort(grpc.StatusCode.UNAVAILABLE, "no endpoints available")
                    rec["destination"] = ",".join(dests)
                    early = headers.get(HEADERS_ANSWER) == "early"
                    if req.request_headers.end_of_stream or early:
                        yield self._headers_answer(headers, rec["destination"])
                elif kind == "request_body":
                    chunk = req.request_body.body
                    rec["body_chunks"].append(len(chunk))
                    rec["body_eos"].append(req.request_body.end_of_stream)
                    body += chunk
                    if headers.get(HEADERS_ANSWER) == "early":
                        # Full duplex: each chunk goes back as it came, at once.
                        yield self._body_chunk(chunk, req.request_body.end_of_stream)
                        if req.request_body.end_of_stream:
                            rec["body"] = _text(bytes(body))
                        continue
                    if headers.get(BODY_ANSWER) == "continue":
                        if req.request_body.end_of_stream:
                            yield self._headers_answer(headers, rec["destination"])
                        m = self.p.ep.ProcessingResponse()
                        m.request_body.response.SetInParent()
                        if req.request_body.end_of_stream:
                            # the earlier chunks' answers go after the deferred headers
                            for _ in rec["body_chunks"]:
                                yield m
                        continue
                    if not req.request_body.end_of_stream:
                        continue
                    rec["body"] = _text(bytes(body))
                    new_model = headers.get(MODEL_REWRITE)
                    if new_model:
                        doc = json.loads(bytes(body))
                        doc["model"] = new_model
                        out = json.dumps(doc).encode()
                        yield self._headers_answer(headers, rec["destination"], len(out))
                        chunks = [out[i:i + MAX_CHUNK] for i in range(0, len(out), MAX_CHUNK)]
                        for i, c in enumerate(chunks or [b""]):
                            yield self._body_chunk(c, i == len(chunks) - 1)
                        continue
                    yield self._headers_answer(headers, rec["destination"])
                    # Unchanged, as it came: one streamed chunk per chunk received.
                    off = 0
                    for i, size in enumerate(rec["body_chunks"]):
                        yield self._body_chunk(bytes(body[off:off + size]),
                                               i == len(rec["body_chunks"]) - 1)
                        off += size
                elif kind == "response_headers":
                    rec["t_response_headers"] = time.time()
                    rec["response_headers"] = self._header_dict(req.response_headers.headers)
                    md = self._metadata(req) or {}
                    rec["response_metadata"] = md
                    lb = md.get(el.LB_NAMESPACE)
                    if not isinstance(lb, dict):
                        rec["served"] = "fail: missing envoy lb metadata"
                    elif not isinstance(lb.get(el.SERVED), str):
                        rec["served"] = "fail: missing destination endpoint served metadata"
                    else:
                        rec["served"] = lb[el.SERVED]
                    yield self._response_headers_answer(rec, headers)
                elif kind == "response_body":
                    m = self.p.ep.ProcessingResponse()
                    m.response_body.response.SetInParent()
                    yield m
                elif kind == "request_trailers":
                    m = self.p.ep.ProcessingResponse()
                    m.request_trailers.SetInParent()
                    yield m
                elif kind == "response_trailers":
                    m = self.p.ep.ProcessingResponse()
                    m.response_trailers.SetInParent()
                    yield m
            rec["end"] = "half-close"
            rec["t_half_close"] = time.time()
        except grpc.RpcError:  # the gateway reset the stream
            rec["end"] = "cancelled"
        except Exception as e:  # noqa: BLE001 - context.abort raises; anything else is recorded
            if rec["end"] is None:
                rec["end"] = "aborted" if rec["failed"] else f"error: {e!r}"
            raise
        finally:
            if rec["end"] is None:
                rec["end"] = "closed"
            finish("handler")

    def _health_check(self, req, context):
        h = self.p.health.HealthCheckResponse
        if req.service not in HEALTH_SERVICES:
            context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return h(status=h.SERVING)


def read_log(path):
    """The records of a --log-file, in the order the streams ended."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                if line.endswith("\n"):
                    out.append(json.loads(line))
    except FileNotFoundError:
        pass
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", required=True, help="ADDR:PORT (port 0: any)")
    ap.add_argument("--endpoints", default="", help="ip:port,... for round-robin")
    ap.add_argument("--target-port", type=int, required=True,
                    help="the pool's first target port (for a bare IP in the header)")
    ap.add_argument("--pool-name", default="")
    ap.add_argument("--ready-file", help='written once listening: {"address":..,"port":..}')
    ap.add_argument("--log-file", help="one JSON line per finished stream")
    ap.add_argument("--proto-dir", help="where to generate the protobuf modules")
    args = ap.parse_args(argv)
    protos = el.load_protos(out_dir=args.proto_dir) if args.proto_dir else el.load_protos()
    epp = LwEpp(args.listen, _csv(args.endpoints), args.target_port, args.pool_name,
                args.log_file, protos).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"address": epp.address, "port": epp.port, "pid": os.getpid()}, f)
        os.rename(tmp, args.ready_file)
    print(f"lwepp listening on {epp.address}", flush=True)
    stop.wait()
    epp.stop(grace=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
