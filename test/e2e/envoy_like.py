"""An Envoy-like ext_proc client for the endpoint picker's end-to-end tests (`sluice epp`).

What is here:
  * load_protos(): compiles the ext_proc and gRPC health protos in src/extproc/proto with
    protoc into a temporary directory and imports them (the health module is loaded by file
    path, so its `grpc/` package directory never shadows the real grpcio package).
  * ExtProcStream: one ext_proc stream (`/envoy.service.ext_proc.v3.ExternalProcessor/Process`)
    driven like Envoy's ext_proc filter does it: the request headers (with protocol_config on
    the first message), the body in chunks, the header answer and the streamed body answer,
    then the response phase (headers with the served endpoint, body chunks, the streamed echo).
  * Helpers to forward a picked request over HTTP to its first destination, to read the
    gRPC health service and the Prometheus text of /metrics.

Run with Debian's /usr/bin/python3 (python3-grpcio, python3-protobuf).
"""

import dataclasses
import glob
import http.client
import importlib
import importlib.util
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import grpc

PROCESS_PATH = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"
HEALTH_CHECK_PATH = "/grpc.health.v1.Health/Check"
HEALTH_WATCH_PATH = "/grpc.health.v1.Health/Watch"
EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"

DESTINATION = "x-gateway-destination-endpoint"
SERVED = "x-gateway-destination-endpoint-served"
SUBSET = "x-gateway-destination-endpoint-subset"
LB_NAMESPACE = "envoy.lb"
SUBSET_NAMESPACE = "envoy.lb.subset_hint"
CONTROL_HEADERS = [
    "x-gateway-inference-objective",
    "x-gateway-inference-fairness-id",
    "x-gateway-model-name-rewrite",
    "x-gateway-destination-endpoint-served",
]
MAX_BODY_CHUNK = 62000

# envoy.extensions.filters.http.ext_proc.v3.ProcessingMode.BodySendMode
NONE, STREAMED, BUFFERED, BUFFERED_PARTIAL, FULL_DUPLEX_STREAMED, GRPC = range(6)


def repo_root():
    """The repository this file is in (test/e2e/envoy_like.py -> the repo)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Protos:
    """The generated modules: ep (external_processor_pb2), base (base_pb2), mode
    (processing_mode_pb2), status (http_status_pb2), health (health_pb2), struct (struct_pb2)."""


_protos = None
_protos_lock = threading.Lock()


def load_protos(proto_dir=None, out_dir=None):
    """Generates and imports the modules once per process; returns a Protos."""
    global _protos
    with _protos_lock:
        if _protos is not None:
            return _protos
        proto_dir = proto_dir or os.path.join(repo_root(), "src", "extproc", "proto")
        protoc = shutil.which("protoc") or "/usr/bin/protoc"
        out_dir = out_dir or tempfile.mkdtemp(prefix="sluice-epp-protos-")
        envoy_out = os.path.join(out_dir, "envoy_py")
        health_out = os.path.join(out_dir, "health_py")
        os.makedirs(envoy_out, exist_ok=True)
        os.makedirs(health_out, exist_ok=True)
        envoy_files = sorted(
            os.path.relpath(p, proto_dir)
            for p in glob.glob(os.path.join(proto_dir, "envoy", "**", "*.proto"), recursive=True))
        includes = ["-I", proto_dir]
        if os.path.isdir("/usr/include/google/protobuf"):
            includes += ["-I", "/usr/include"]
        subprocess.run([protoc, *includes, "--python_out=" + envoy_out, *envoy_files],
                       check=True, cwd=proto_dir)
        subprocess.run([protoc, *includes, "--python_out=" + health_out,
                        os.path.join("grpc", "health", "v1", "health.proto")],
                       check=True, cwd=proto_dir)
        # The envoy/ tree is a namespace package: importable once its root is on sys.path.
        if envoy_out not in sys.path:
            sys.path.insert(0, envoy_out)
        importlib.invalidate_caches()
        p = Protos()
        p.out_dir = out_dir
        p.ep = importlib.import_module("envoy.service.ext_proc.v3.external_processor_pb2")
        p.base = importlib.import_module("envoy.config.core.v3.base_pb2")
        p.mode = importlib.import_module(
            "envoy.extensions.filters.http.ext_proc.v3.processing_mode_pb2")
        p.status = importlib.import_module("envoy.type.v3.http_status_pb2")
        from google.protobuf import struct_pb2
        p.struct = struct_pb2
        # grpc.health.v1 lives in a grpc/ directory: load it by path, under a private name.
        path = os.path.join(health_out, "grpc", "health", "v1", "health_pb2.py")
        spec = importlib.util.spec_from_file_location("sluice_test_grpc_health_v1_pb2", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        p.health = mod
        _protos = p
        return p


# --- one ext_proc stream -------------------------------------------------------------------------

class StreamEnded(Exception):
    """The server ended the stream while a response message was expected."""

    def __init__(self, code, details):
        super().__init__(f"stream ended: {code} {details!r}")
        self.code = code
        self.details = details


@dataclasses.dataclass
class Mutation:
    set_headers: dict  # lower-case name -> value (raw_value, or value)
    append_actions: dict  # name -> HeaderAppendAction
    remove_headers: list


def mutation_of(hm):
    sets, actions = {}, {}
    for opt in hm.set_headers:
        v = opt.header.raw_value.decode() if opt.header.raw_value else opt.header.value
        sets[opt.header.key.lower()] = v
        actions[opt.header.key.lower()] = opt.append_action
    return Mutation(sets, actions, list(hm.remove_headers))


def struct_to_py(s):
    from google.protobuf import json_format
    return json.loads(json_format.MessageToJson(s))


@dataclasses.dataclass
class RequestAnswer:
    """What the picker answered for the request phase."""
    immediate: object = None  # ImmediateResponse, when the request was refused
    header_response: object = None  # the ProcessingResponse carrying the header mutation
    mutation: Mutation = None
    clear_route_cache: bool = False
    dynamic_metadata: dict = None
    body: bytes = b""  # the (rewritten) request body the gateway would forward
    body_chunks: list = dataclasses.field(default_factory=list)  # sizes of streamed chunks
    body_replaced: bool = False  # the body came back in the answer (streamed or buffered)
    body_eos: list = dataclasses.field(default_factory=list)  # end_of_stream of each chunk
    messages: list = dataclasses.field(default_factory=list)  # every ProcessingResponse

    @property
    def destination(self):
        return self.mutation.set_headers.get(DESTINATION) if self.mutation else None

    @property
    def destinations(self):
        d = self.destination
        return d.split(",") if d else []

    @property
    def metadata_destination(self):
        try:
            return self.dynamic_metadata[LB_NAMESPACE][DESTINATION]
        except (TypeError, KeyError):
            return None

    @property
    def immediate_status(self):
        return self.immediate.status.code if self.immediate is not None else None

    @property
    def immediate_json(self):
        return json.loads(self.immediate.body) if self.immediate is not None else None

    @property
    def immediate_headers(self):
        return mutation_of(self.immediate.headers).set_headers if self.immediate else {}


@dataclasses.dataclass
class ResponseAnswer:
    headers_response: object = None
    body: bytes = b""
    body_chunks: list = dataclasses.field(default_factory=list)
    body_eos: list = dataclasses.field(default_factory=list)
    messages: list = dataclasses.field(default_factory=list)


_END = object()


class ExtProcStream:
    """One ext_proc stream, driven as Envoy's filter drives it.

    Messages go out through a queue as the conversation goes (the gRPC request iterator reads
    it); responses are read by a thread into another queue, so every wait has a deadline."""

    def __init__(self, channel, protos=None, request_mode=FULL_DUPLEX_STREAMED,
                 response_mode=FULL_DUPLEX_STREAMED, timeout=30.0, path=PROCESS_PATH,
                 wait_timeout=10.0):
        self.p = protos or load_protos()
        self.request_mode = request_mode
        self.response_mode = response_mode
        self.wait_timeout = wait_timeout
        self._out = queue.Queue()
        self._in = queue.Queue()
        self._first = True
        self._closed = False
        self.ended = None  # (grpc.StatusCode, details) once the stream is over
        rpc = channel.stream_stream(path, request_serializer=lambda b: b,
                                    response_deserializer=self.p.ep.ProcessingResponse.FromString)
        self.call = rpc(self._requests(), timeout=timeout)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    # -- plumbing --

    def _requests(self):
        while True:
            item = self._out.get()
            if item is _END:
                return
            yield item

    def _read(self):
        try:
            for msg in self.call:
                self._in.put(msg)
            self._in.put((_END, self.call.code(), self.call.details()))
        except grpc.RpcError as e:
            self._in.put((_END, e.code(), e.details()))
        except Exception as e:  # noqa: BLE001 - reported to the waiting test
            self._in.put((_END, grpc.StatusCode.UNKNOWN, f"client error: {e!r}"))

    def send_raw(self, data: bytes):
        self._out.put(data)

    def send(self, msg):
        """Sends one ProcessingRequest (the first carries protocol_config, as Envoy's does)."""
        if self._first:
            msg.protocol_config.request_body_mode = self.request_mode
            msg.protocol_config.response_body_mode = self.response_mode
            self._first = False
        self._out.put(msg.SerializeToString())

    def half_close(self):
        if not self._closed:
            self._closed = True
            self._out.put(_END)

    def cancel(self):
        self.call.cancel()
        self.half_close()

    def recv(self, timeout=None):
        """The next ProcessingResponse; raises StreamEnded when the stream is over."""
        if self.ended is not None:
            raise StreamEnded(*self.ended)
        try:
            item = self._in.get(timeout=timeout or self.wait_timeout)
        except queue.Empty:
            raise TimeoutError("no ext_proc response within the deadline") from None
        if isinstance(item, tuple) and item and item[0] is _END:
            self.ended = (item[1], item[2])
            raise StreamEnded(*self.ended)
        return item

    def wait_end(self, timeout=None):
        """Waits for the stream's status; returns (code, details). Extra messages are an
        error (the caller wanted the end)."""
        extra = []
        deadline = time.monotonic() + (timeout or self.wait_timeout)
        while True:
            try:
                extra.append(self.recv(timeout=max(0.01, deadline - time.monotonic())))
            except StreamEnded as e:
                if extra:
                    raise AssertionError(f"unexpected messages before the end: {extra}")
                return e.code, e.details

    def finish(self, timeout=None):
        """Half-closes and waits for the status, as Envoy does at the end of an exchange."""
        self.half_close()
        return self.wait_end(timeout)

    # -- building requests --

    def header_map(self, headers):
        hm = self.p.base.HeaderMap()
        for k, v in headers:
            hv = hm.headers.add()
            hv.key = k
            hv.raw_value = v.encode() if isinstance(v, str) else v
        return hm

    def _metadata(self, msg, metadata):
        """metadata: {namespace: {key: value}} with Python values (lists, strings, ...)."""
        for ns, fields in (metadata or {}).items():
            msg.metadata_context.filter_metadata[ns].update(fields)

    def send_request_headers(self, headers, end_of_stream=False, metadata=None):
        m = self.p.ep.ProcessingRequest()
        m.request_headers.headers.CopyFrom(self.header_map(headers))
        m.request_headers.end_of_stream = end_of_stream
        self._metadata(m, metadata)
        self.send(m)

    def send_request_body(self, body: bytes, chunk_size=16384, end_of_stream=True):
        """The body in chunks of chunk_size (Envoy sends what its buffers hold: ~16 KB)."""
        chunks = [body[i:i + chunk_size] for i in range(0, len(body), chunk_size)] or [b""]
        for i, c in enumerate(chunks):
            m = self.p.ep.ProcessingRequest()
            m.request_body.body = c
            m.request_body.end_of_stream = end_of_stream and i == len(chunks) - 1
            self.send(m)

    # -- reading the request answer --

    def answered(self):
        """Whether a response (or the stream's end) is waiting to be read."""
        return not self._in.empty()

    def read_request_answer(self, timeout=None, body_expected=True):
        """Collects the request phase's answer: an immediate response, or the header mutation
        (with the destination) and, for a body (body_expected: the headers did not end the
        stream), the streamed (or buffered) body."""
        a = RequestAnswer()
        while True:
            m = self.recv(timeout)
            a.messages.append(m)
            kind = m.WhichOneof("response")
            if kind == "immediate_response":
                a.immediate = m.immediate_response
                return a
            if kind == "request_headers":
                common = m.request_headers.response
                hm = common.header_mutation
                if common.HasField("header_mutation") and (hm.set_headers or hm.remove_headers):
                    self._take_headers(a, m, common)
                    if self.request_mode != FULL_DUPLEX_STREAMED or not body_expected:
                        return a
                    continue
                if self.request_mode == BUFFERED:
                    continue  # the buffered headers' empty answer: the body's answer follows
                self._take_headers(a, m, common)
                return a
            if kind == "request_body":
                common = m.request_body.response
                if common.HasField("header_mutation") and a.mutation is None:
                    self._take_headers(a, m, common)
                bm = common.body_mutation
                which = bm.WhichOneof("mutation")
                if which == "streamed_response":
                    a.body_replaced = True
                    a.body += bm.streamed_response.body
                    a.body_chunks.append(len(bm.streamed_response.body))
                    a.body_eos.append(bm.streamed_response.end_of_stream)
                    if bm.streamed_response.end_of_stream:
                        return a
                    continue
                if which == "body":
                    a.body_replaced = True
                    a.body = bm.body
                    a.body_chunks.append(len(bm.body))
                return a
            raise AssertionError(f"unexpected answer in the request phase: {m}")

    def _take_headers(self, a, m, common):
        a.header_response = m
        a.mutation = mutation_of(common.header_mutation)
        a.clear_route_cache = common.clear_route_cache
        a.dynamic_metadata = struct_to_py(m.dynamic_metadata) if m.HasField(
            "dynamic_metadata") else {}

    def request(self, method, path, body=None, headers=(), chunk_size=16384, metadata=None,
                timeout=None):
        """The whole request phase: headers (end_of_stream when there is no body), the body in
        chunks, and the answer."""
        h = [(":method", method), (":path", path), (":authority", "gateway"),
             (":scheme", "http")]
        if body is not None:
            h += [("content-type", "application/json"), ("content-length", str(len(body)))]
        h += list(headers)
        self.send_request_headers(h, end_of_stream=body is None, metadata=metadata)
        if body is not None:
            self.send_request_body(body, chunk_size=chunk_size)
        return self.read_request_answer(timeout, body_expected=body is not None)

    # -- the response phase --

    def send_response_headers(self, status, content_type, served=None, headers=(),
                              end_of_stream=False):
        m = self.p.ep.ProcessingRequest()
        h = [(":status", str(status))]
        if content_type:
            h.append(("content-type", content_type))
        m.response_headers.headers.CopyFrom(self.header_map(h + list(headers)))
        m.response_headers.end_of_stream = end_of_stream
        if served is not None:
            self._metadata(m, {LB_NAMESPACE: {SERVED: served}})
        self.send(m)

    def respond(self, status, content_type, body: bytes, served=None, chunk_sizes=None,
                headers=(), timeout=None):
        """The response phase: headers (with the served endpoint), their answer, the body in
        chunks (sizes cycled from chunk_sizes, default one chunk) and the body's answer."""
        r = ResponseAnswer()
        self.send_response_headers(status, content_type, served=served, headers=headers)
        m = self.recv(timeout)
        r.messages.append(m)
        if m.WhichOneof("response") != "response_headers":
            raise AssertionError(f"expected a response_headers answer, got {m}")
        r.headers_response = m
        sizes = list(chunk_sizes or [max(1, len(body))])
        chunks, off, i = [], 0, 0
        while off < len(body):
            n = sizes[i % len(sizes)]
            chunks.append(body[off:off + n])
            off += n
            i += 1
        if not chunks:
            chunks = [b""]
        for j, c in enumerate(chunks):
            msg = self.p.ep.ProcessingRequest()
            msg.response_body.body = c
            msg.response_body.end_of_stream = j == len(chunks) - 1
            self.send(msg)
        if self.response_mode == FULL_DUPLEX_STREAMED:
            while True:
                m = self.recv(timeout)
                r.messages.append(m)
                if m.WhichOneof("response") != "response_body":
                    raise AssertionError(f"expected a response_body answer, got {m}")
                sr = m.response_body.response.body_mutation.streamed_response
                r.body += sr.body
                r.body_chunks.append(len(sr.body))
                r.body_eos.append(sr.end_of_stream)
                if sr.end_of_stream:
                    break
        else:
            for _ in chunks:
                m = self.recv(timeout)
                r.messages.append(m)
                if m.WhichOneof("response") != "response_body":
                    raise AssertionError(f"expected a response_body answer, got {m}")
            r.body = body
        return r


# --- forwarding, like the gateway does ----------------------------------------------------------

@dataclasses.dataclass
class Upstream:
    status: int
    headers: dict
    body: bytes
    endpoint: str


def forward(answer: RequestAnswer, method, path, headers=(), body=None, endpoint=None,
            timeout=30.0):
    """Sends the picked request to its first destination (or `endpoint`) over HTTP/1.1 as the
    gateway would: the header mutation applied (set headers; removed headers are not sent) and
    the body the picker gave back (in buffered mode without a body mutation, the original)."""
    endpoint = endpoint or answer.destinations[0]
    host, port = endpoint.rsplit(":", 1)
    h = {k.lower(): v for k, v in headers if k.lower() not in answer.mutation.remove_headers}
    for k, v in answer.mutation.set_headers.items():
        if k != DESTINATION:
            h[k] = v
    payload = answer.body if answer.body_replaced else body
    if payload:
        h.setdefault("content-type", "application/json")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=payload or None, headers=h)
        resp = conn.getresponse()
        body = resp.read()
        return Upstream(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body, endpoint)
    finally:
        conn.close()


@dataclasses.dataclass
class Exchange:
    answer: RequestAnswer
    upstream: Upstream = None
    response: ResponseAnswer = None
    status: tuple = None  # (grpc.StatusCode, details) of the ext_proc stream


def exchange(channel, method, path, body=None, headers=(), chunk_size=16384,
             response_chunk_sizes=None, metadata=None, request_mode=FULL_DUPLEX_STREAMED,
             response_mode=FULL_DUPLEX_STREAMED, protos=None, timeout=None):
    """One whole request through an Envoy-like gateway: the request phase, the request sent to
    the first destination, the response phase with that endpoint reported as served, the
    half-close and the stream's status. A refused request stops after the request phase (the
    stream's status is read)."""
    s = ExtProcStream(channel, protos, request_mode=request_mode, response_mode=response_mode)
    a = s.request(method, path, body, headers=headers, chunk_size=chunk_size, metadata=metadata,
                  timeout=timeout)
    x = Exchange(a)
    if a.immediate is not None:
        x.status = s.finish(timeout)
        return x
    fwd = [(k, v) for k, v in headers if not k.startswith(":")]
    x.upstream = forward(a, method, path, headers=fwd, body=body)
    x.response = s.respond(x.upstream.status, x.upstream.headers.get("content-type", ""),
                           x.upstream.body, served=x.upstream.endpoint,
                           chunk_sizes=response_chunk_sizes, timeout=timeout)
    x.status = s.finish(timeout)
    return x


# --- gRPC health ---------------------------------------------------------------------------------

def health_check(channel, service="", timeout=5.0, protos=None):
    """Returns the ServingStatus; raises grpc.RpcError on a failed call."""
    p = protos or load_protos()
    rpc = channel.unary_unary(HEALTH_CHECK_PATH,
                              request_serializer=p.health.HealthCheckRequest.SerializeToString,
                              response_deserializer=p.health.HealthCheckResponse.FromString)
    return rpc(p.health.HealthCheckRequest(service=service), timeout=timeout).status


def health_watch_first(channel, service="", timeout=5.0, protos=None):
    """The first status a Watch sends (the call is cancelled after it)."""
    p = protos or load_protos()
    rpc = channel.unary_stream(HEALTH_WATCH_PATH,
                               request_serializer=p.health.HealthCheckRequest.SerializeToString,
                               response_deserializer=p.health.HealthCheckResponse.FromString)
    call = rpc(p.health.HealthCheckRequest(service=service), timeout=timeout)
    try:
        return next(iter(call)).status
    finally:
        call.cancel()


# --- Prometheus ----------------------------------------------------------------------------------

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(port, host="127.0.0.1", timeout=5.0):
    """The /metrics samples as {(name, frozenset(labels.items())): value}."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = frozenset(_LABEL.findall(m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def metric_sum(samples, name, **labels):
    """Sum of the samples of `name` whose labels include all of `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))
