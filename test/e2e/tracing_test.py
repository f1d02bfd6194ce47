#!/usr/bin/python3
"""OpenTelemetry tracing through the real router: a streamed request's spans reach an OTLP/HTTP
receiver (test/fakes/otlp_receiver.py, decoding with protobuf) with the right trace id and
parent/child links; W3C traceparent is continued, started, or passed through when the caller
did not sample; each upstream attempt is a client span and the engine sees its id.

The engines are a small Python stand-in that records the headers it was sent.
Run with:  /usr/bin/python3 test/e2e/tracing_test.py
"""

import http.client
import http.server
import json
import os
import sys
import tempfile
import threading
import unittest
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "fakes"))

from otlp_receiver import OtlpReceiver  # noqa: E402
from processes import Proc, free_port, read_json, wait_for  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))
BIN_DIR = os.environ.get("SLUICE_BIN_DIR") or os.path.join(REPO, "build", "bin")
SLUICE = os.path.join(BIN_DIR, "sluice")
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
SERVER, CLIENT, INTERNAL = 2, 3, 1

METRICS = (b'vllm:num_requests_running{model_name="m"} 0\n'
           b'vllm:num_requests_waiting{model_name="m"} 0\n'
           b'vllm:kv_cache_usage_perc{model_name="m"} 0.1\n')


def chunk(obj):
    return ("data: " + json.dumps(obj) + "\n\n").encode()


class Engines:
    """Two engines on 127.0.0.11 and .12 (one port): streamed chat completions; `fail` answers
    that many requests with 503 first. `seen` holds each request's headers."""

    def __init__(self):
        self.port = free_port(("127.0.0.11", "127.0.0.12"))
        self.seen = []
        self.fail = 0
        self.lock = threading.Lock()
        engines = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def reply(self, status, body, ctype="application/json"):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path == "/metrics":
                    self.reply(200, METRICS, "text/plain")
                else:
                    self.reply(200, b'{"object":"list","data":[{"id":"m","object":"model"}]}')

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with engines.lock:
                    engines.seen.append({k.lower(): v for k, v in self.headers.items()})
                    failing = engines.fail > 0
                    engines.fail -= 1 if failing else 0
                if failing:
                    self.reply(503, b'{"error":{"message":"busy"}}')
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
                events = [chunk({**base, "choices": [{"index": 0, "delta": {"content": w},
                                                      "finish_reason": None}]})
                          for w in ("hello", " there")]
                events.append(chunk({**base, "choices": [], "usage": {
                    "prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}))
                events.append(b"data: [DONE]\n\n")
                for e in events:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(e), e))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # the router closing its pooled connections at the end

        self.servers = [Server((ip, self.port), Handler) for ip in ("127.0.0.11", "127.0.0.12")]
        for s in self.servers:
            threading.Thread(target=s.serve_forever, daemon=True).start()

    def close(self):
        for s in self.servers:
            s.shutdown()
            s.server_close()


def attrs(span):
    out = {}
    for kv in span.attributes:
        v = kv.value
        out[kv.key] = v.int_value if v.WhichOneof("value") == "int_value" else v.string_value
    return out


class TracingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.path.exists(SLUICE):
            raise unittest.SkipTest(f"sluice is not built in {BIN_DIR}")
        cls.tmp = tempfile.TemporaryDirectory()
        cls.receiver = OtlpReceiver()
        cls.engines = Engines()
        cls.access_log = os.path.join(cls.tmp.name, "access.log")
        cfg = os.path.join(cls.tmp.name, "sluice.yaml")
        with open(cfg, "w") as f:
            f.write(f"""listener: {{address: 127.0.0.1, port: 0}}
admin: {{address: 127.0.0.1, port: 0}}
metrics: {{address: 127.0.0.1, port: 0}}
workers: 1
access_log: {{path: {cls.access_log}}}
tracing: {{endpoint: "{cls.receiver.url()}", flush_interval: 50ms, service_name: sluice-e2e}}
models:
  - name: m
    endpoints: [127.0.0.11:{cls.engines.port}, 127.0.0.12:{cls.engines.port}]
""")
        ready = os.path.join(cls.tmp.name, "ready")
        cls.router = Proc("router", [SLUICE, "serve", "--config", cfg, "--ready-file", ready],
                          cls.tmp.name)
        wait_for("router ready", lambda: (cls.router.check_alive(), os.path.exists(ready))[1])
        cls.ports = read_json(ready)

    @classmethod
    def tearDownClass(cls):
        cls.router.stop()
        cls.engines.close()
        cls.receiver.close()
        cls.tmp.cleanup()

    def setUp(self):
        with self.engines.lock:
            self.engines.seen.clear()
            self.engines.fail = 0

    def chat(self, headers):
        c = http.client.HTTPConnection("127.0.0.1", self.ports["listener"], timeout=10)
        body = json.dumps({"model": "m", "stream": True,
                           "messages": [{"role": "user", "content": "hi"}]})
        c.request("POST", "/v1/chat/completions", body,
                  {"Content-Type": "application/json", **headers})
        r = c.getresponse()
        text = r.read().decode()
        c.close()
        self.assertEqual(r.status, 200, text)
        self.assertIn("data: [DONE]", text)
        return text

    def spans_of(self, trace_id, at_least):
        return wait_for(f"{at_least} spans of {trace_id}",
                        lambda: (lambda s: s if len(s) >= at_least else None)(
                            self.receiver.trace(trace_id)))

    def test_a_streamed_request_continues_the_callers_trace(self):
        self.chat({"traceparent": f"00-{TRACE}-{PARENT}-01", "tracestate": "vendor=abc"})
        spans = [s for _, s in self.spans_of(TRACE, 5)]
        resource = self.receiver.trace(TRACE)[0][0]
        self.assertEqual(resource["service.name"], "sluice-e2e")
        servers = [s for s in spans if s.kind == SERVER]
        self.assertEqual(len(servers), 1, spans)
        server = servers[0]
        self.assertEqual(server.parent_span_id.hex(), PARENT)
        self.assertEqual(server.name, "POST /v1/chat/completions")
        self.assertEqual(server.trace_state, "vendor=abc")
        a = attrs(server)
        self.assertEqual(a["http.response.status_code"], 200)
        self.assertEqual(a["gen_ai.request.model"], "m")
        self.assertEqual(a["gen_ai.usage.output_tokens"], 2)
        children = {s.name: s for s in spans if s is not server}
        for name in ("admission", "schedule", "upstream", "first_token"):
            self.assertIn(name, children, [s.name for s in spans])
        for s in children.values():
            self.assertEqual(s.parent_span_id, server.span_id, s.name)
            self.assertEqual(s.trace_id.hex(), TRACE)
            self.assertGreaterEqual(s.start_time_unix_nano, server.start_time_unix_nano, s.name)
            self.assertLessEqual(s.end_time_unix_nano, server.end_time_unix_nano, s.name)
        upstream = children["upstream"]
        self.assertEqual(upstream.kind, CLIENT)
        self.assertEqual(attrs(upstream)["http.response.status_code"], 200)
        # The engine was told the attempt's span as its parent, and the caller's tracestate.
        seen = self.engines.seen[-1]
        self.assertEqual(seen["traceparent"], f"00-{TRACE}-{upstream.span_id.hex()}-01")
        self.assertEqual(seen["tracestate"], "vendor=abc")
        # The access log names the trace and the server span.
        def logged():
            with open(self.access_log) as f:
                return [json.loads(line) for line in f if TRACE in line]
        rec = wait_for("access record", logged)[0]
        self.assertEqual(rec["trace_id"], TRACE)
        self.assertEqual(rec["span_id"], server.span_id.hex())

    def test_a_request_without_traceparent_starts_a_trace(self):
        self.chat({})
        seen = self.engines.seen[-1]
        version, trace, parent, flags = seen["traceparent"].split("-")
        self.assertEqual((version, flags), ("00", "01"))
        spans = [s for _, s in self.spans_of(trace, 4)]
        server = next(s for s in spans if s.kind == SERVER)
        self.assertEqual(server.parent_span_id, b"")  # a root span
        upstream = next(s for s in spans if s.name == "upstream")
        self.assertEqual(upstream.span_id.hex(), parent)

    def test_an_unsampled_caller_is_not_recorded_and_passed_through(self):
        unsampled = "5bf92f3577b34da6a3ce929d0e0e4737"
        header = f"00-{unsampled}-{PARENT}-00"
        self.chat({"traceparent": header, "tracestate": "k=v"})
        seen = self.engines.seen[-1]
        self.assertEqual(seen["traceparent"], header)
        self.assertEqual(seen["tracestate"], "k=v")
        # Another, sampled request's spans arriving means this one's would have too.
        self.chat({"traceparent": f"00-6bf92f3577b34da6a3ce929d0e0e4738-{PARENT}-01"})
        self.spans_of("6bf92f3577b34da6a3ce929d0e0e4738", 4)
        self.assertEqual(self.receiver.trace(unsampled), [])

    def test_an_invalid_traceparent_starts_a_new_trace(self):
        for bad in (f"00-{'0' * 32}-{PARENT}-01", f"00-{TRACE.upper()}-{PARENT}-01",
                    f"ff-{TRACE}-{PARENT}-01", f"00-{TRACE}-{PARENT}-01-extra", "garbage"):
            self.chat({"traceparent": bad})
            got = self.engines.seen[-1]["traceparent"]
            self.assertNotEqual(got, bad)
            self.assertNotIn(TRACE, got.lower())
            self.assertRegex(got, r"^00-[0-9a-f]{32}-[0-9a-f]{16}-01$")

    def test_each_upstream_attempt_is_a_client_span(self):
        with self.engines.lock:
            self.engines.fail = 1
        trace = "7bf92f3577b34da6a3ce929d0e0e4739"
        self.chat({"traceparent": f"00-{trace}-{PARENT}-01"})
        spans = [s for _, s in self.spans_of(trace, 6)]
        attempts = sorted((s for s in spans if s.name == "upstream"),
                          key=lambda s: attrs(s)["sluice.attempt"])
        self.assertEqual(len(attempts), 2, [s.name for s in spans])
        self.assertEqual(attrs(attempts[0])["http.response.status_code"], 503)
        self.assertEqual(attempts[0].status.code, 2)  # STATUS_CODE_ERROR
        self.assertEqual(attrs(attempts[1])["http.response.status_code"], 200)
        # Each attempt told its engine its own span id.
        parents = [h["traceparent"].split("-")[2] for h in self.engines.seen]
        self.assertEqual(parents, [s.span_id.hex() for s in attempts])

    def test_export_requests_are_protobuf_and_counted(self):
        self.chat({"traceparent": f"00-8bf92f3577b34da6a3ce929d0e0e4730-{PARENT}-01"})
        self.spans_of("8bf92f3577b34da6a3ce929d0e0e4730", 4)
        with self.receiver.lock:
            types = {t for t, _ in self.receiver.requests}
        self.assertEqual(types, {"application/x-protobuf"})
        url = f"http://127.0.0.1:{self.ports['metrics']}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        exported = [line for line in text.splitlines()
                    if line.startswith("sluice_trace_spans_exported_total ")]
        self.assertTrue(exported and int(exported[0].split()[1]) >= 4, exported)

    def test_exports_share_one_kept_connection(self):
        # Two exports, each after the other's spans arrived: one collector connection for all.
        for trace in ("1bf92f3577b34da6a3ce929d0e0e4731", "2bf92f3577b34da6a3ce929d0e0e4732"):
            self.chat({"traceparent": f"00-{trace}-{PARENT}-01"})
            self.spans_of(trace, 4)
        with self.receiver.lock:
            exports, connections = len(self.receiver.requests), len(self.receiver.connections)
        self.assertGreaterEqual(exports, 2)
        self.assertEqual(connections, 1)


class CollectorDownTest(unittest.TestCase):
    """A collector that refuses exports: spans are dropped and counted, requests unaffected."""

    def test_failed_exports_drop_and_count(self):
        if not os.path.exists(SLUICE):
            self.skipTest("sluice is not built")
        with tempfile.TemporaryDirectory() as d:
            receiver = OtlpReceiver()
            receiver.status = 503
            engines = Engines()
            cfg = os.path.join(d, "sluice.yaml")
            with open(cfg, "w") as f:
                f.write(f"""listener: {{address: 127.0.0.1, port: 0}}
admin: {{address: 127.0.0.1, port: 0}}
metrics: {{address: 127.0.0.1, port: 0}}
access_log: {{path: off}}
tracing: {{endpoint: "{receiver.url()}", flush_interval: 50ms}}
models:
  - {{name: m, endpoints: [127.0.0.11:{engines.port}]}}
""")
            ready = os.path.join(d, "ready")
            router = Proc("router", [SLUICE, "serve", "--config", cfg, "--ready-file", ready], d)
            try:
                wait_for("router", lambda: (router.check_alive(), os.path.exists(ready))[1])
                ports = read_json(ready)
                for _ in range(3):
                    c = http.client.HTTPConnection("127.0.0.1", ports["listener"], timeout=10)
                    c.request("POST", "/v1/chat/completions", json.dumps(
                        {"model": "m", "stream": True, "messages": []}))
                    r = c.getresponse()
                    r.read()
                    self.assertEqual(r.status, 200)
                    c.close()
                url = f"http://127.0.0.1:{ports['metrics']}/metrics"

                def counters():
                    text = urllib.request.urlopen(url, timeout=5).read().decode()
                    v = dict(line.split() for line in text.splitlines()
                             if line.startswith("sluice_trace_") and "{" not in line)
                    return v if int(v.get("sluice_trace_export_failures_total", 0)) > 0 else None
                v = wait_for("a failed export counted", counters)
                self.assertGreater(int(v["sluice_trace_spans_dropped_total"]), 0)
                self.assertEqual(int(v["sluice_trace_spans_exported_total"]), 0)
                self.assertIn("export of", router.tail())
                router.check_alive()
            finally:
                router.stop()
                engines.close()
                receiver.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
