"""An OTLP/HTTP trace receiver for the tests: POST /v1/traces with a protobuf
ExportTraceServiceRequest, decoded with modules protoc generates from Sluice's own copies of
the OTLP protos (src/tracing/proto). Debian's /usr/bin/python3 with python3-protobuf."""

import glob
import http.server
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_modules = None
_lock = threading.Lock()


def otlp_modules():
    """(trace_service_pb2, trace_pb2), generated once per process."""
    global _modules
    with _lock:
        if _modules is None:
            proto_dir = os.path.join(REPO, "src", "tracing", "proto")
            out = tempfile.mkdtemp(prefix="sluice-otlp-")
            files = sorted(os.path.relpath(p, proto_dir) for p in glob.glob(
                os.path.join(proto_dir, "**", "*.proto"), recursive=True))
            protoc = shutil.which("protoc") or "/usr/bin/protoc"
            subprocess.run([protoc, "-I", proto_dir, "--python_out=" + out, *files],
                           check=True, cwd=proto_dir)
            sys.path.insert(0, out)
            importlib.invalidate_caches()
            _modules = (
                importlib.import_module("opentelemetry.proto.collector.trace.v1.trace_service_pb2"),
                importlib.import_module("opentelemetry.proto.trace.v1.trace_pb2"))
        return _modules


class OtlpReceiver:
    """Collects every span exported to it; `status` is what it answers (200 by default)."""

    def __init__(self):
        service, self.trace_pb2 = otlp_modules()
        self.spans = []       # (resource attributes dict, Span)
        self.requests = []    # (content type, body size)
        self.connections = set()  # the client address of every request: kept connections
        self.status = 200
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keeps connections, as OpenTelemetry collectors do

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.requests.append((self.headers.get("Content-Type"), len(body)))
                    receiver.connections.add(self.client_address)
                    status = receiver.status
                if self.path != "/v1/traces":
                    status = 404
                if status == 200:
                    req = service.ExportTraceServiceRequest()
                    req.ParseFromString(body)
                    with receiver.lock:
                        for rs in req.resource_spans:
                            attrs = {kv.key: kv.value.string_value for kv in rs.resource.attributes}
                            for ss in rs.scope_spans:
                                for span in ss.spans:
                                    receiver.spans.append((attrs, span))
                answer = service.ExportTraceServiceResponse().SerializeToString()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def trace(self, trace_id_hex):
        """The spans of one trace, as (resource attributes, Span) pairs."""
        with self.lock:
            return [(a, s) for a, s in self.spans if s.trace_id.hex() == trace_id_hex]

    def close(self):
        self.server.shutdown()
        self.server.server_close()
