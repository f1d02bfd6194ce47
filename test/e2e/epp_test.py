#!/usr/bin/python3
"""End-to-end tests of `sluice epp`: the Envoy ext_proc endpoint picker of one InferencePool.

Real binaries (sluice, sluice-sim from $SLUICE_BIN_DIR, default <repo>/build/bin), a real gRPC
client driving each stream as Envoy's ext_proc filter does (envoy_like.py), and the requests
forwarded over HTTP to the simulated engines the picker chose.

Run with Debian's python (grpcio, protobuf):  /usr/bin/python3 test/e2e/epp_test.py
"""

import collections
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import unittest
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import grpc  # noqa: E402

import envoy_like as el  # noqa: E402
from processes import Proc, free_port, read_json, wait_for  # noqa: E402
from serving_router import promtool_check  # noqa: E402

REPO = el.repo_root()
BIN_DIR = os.environ.get("SLUICE_BIN_DIR") or os.path.join(REPO, "build", "bin")
ENGINE_IPS = ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
POOL_LABEL = "InferencePool/default/llama"
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def write_manifests(directory, sim_port):
    pods = "\n---\n".join(
        f"""apiVersion: v1
kind: Pod
metadata: {{name: llama-{i}, namespace: default, labels: {{app: llama}}}}
status: {{podIP: {ip}, phase: Running, conditions: [{{type: Ready, status: "True"}}]}}"""
        for i, ip in enumerate(ENGINE_IPS))
    with open(os.path.join(directory, "pods.yaml"), "w") as f:
        f.write(pods + "\n")
    with open(os.path.join(directory, "pool.yaml"), "w") as f:
        f.write(f"""apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {{name: llama, namespace: default}}
spec:
  selector: {{matchLabels: {{app: llama}}}}
  targetPorts: [{{number: {sim_port}}}]
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModelRewrite
metadata: {{name: llama-name, namespace: default}}
spec:
  poolRef: {{name: llama}}
  rules:
  - matches: [{{model: {{value: llama}}}}]
    targets: [{{modelRewrite: sim-llama}}]
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceObjective
metadata: {{name: interactive, namespace: default}}
spec: {{priority: 10, poolRef: {{name: llama}}}}
""")


def chat_body(content, max_tokens=4, model="llama", **extra):
    d = {"model": model, "messages": [{"role": "user", "content": content}],
         "max_tokens": max_tokens}
    d.update(extra)
    return json.dumps(d).encode()


def rewritten(body: bytes) -> bytes:
    """json.dumps' spelling of the model field, rewritten as the picker must."""
    assert body.count(b'"model": "llama"') == 1, body[:200]
    return body.replace(b'"model": "llama"', b'"model": "sim-llama"')


def written_back(upstream_body: bytes) -> bytes:
    return upstream_body.replace(b'"model":"sim-llama"', b'"model":"llama"')


class EppFixture(unittest.TestCase):
    """Starts a simulated pool of three engines and an EPP serving it (and, with WITH_NOPE, a
    second EPP for a pool that does not exist) once per class."""

    WITH_NOPE = False
    TLS = False  # the EPP serves gRPC over TLS (a self-signed certificate made by openssl)

    @classmethod
    def channel_to(cls, target):
        if not cls.TLS:
            return grpc.insecure_channel(target)
        creds = grpc.ssl_channel_credentials(root_certificates=cls.cert_pem)
        return grpc.secure_channel(target, creds, options=[("grpc.ssl_target_name_override", "epp")])

    @classmethod
    def setUpClass(cls):
        cls.procs = []
        cls.tmp = tempfile.TemporaryDirectory(prefix="sluice-epp-e2e-")
        d = cls.tmp.name
        try:
            cls.p = el.load_protos(out_dir=os.path.join(d, "protos"))
            cls._start(d)
        except BaseException:
            cls._stop_all()
            cls.tmp.cleanup()
            raise

    @classmethod
    def _start(cls, d):
        for b in ("sluice", "sluice-sim"):
            if not os.access(os.path.join(BIN_DIR, b), os.X_OK):
                raise unittest.SkipTest(f"{b} is not built in {BIN_DIR}")
        manifests = os.path.join(d, "manifests")
        os.makedirs(manifests)
        cls.sim_port = free_port(ENGINE_IPS)
        write_manifests(manifests, cls.sim_port)
        cls.endpoints = [f"{ip}:{cls.sim_port}" for ip in ENGINE_IPS]

        sim_ready = os.path.join(d, "sim.ready")
        cls.sim = Proc("sim", [
            os.path.join(BIN_DIR, "sluice-sim"), "--replicas", "3", "--address", ENGINE_IPS[0],
            "--port", str(cls.sim_port), "--model", "sim-llama", "--ready-file", sim_ready,
            "--max-model-len", "131072", "--time-scale", "20"], d)
        cls.procs.append(cls.sim)

        tls_args = []
        if cls.TLS:
            cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                            "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=epp",
                            "-addext", "subjectAltName=DNS:epp"],
                           check=True, capture_output=True)
            with open(cert, "rb") as f:
                cls.cert_pem = f.read()
            tls_args = ["--tls-cert-file", cert, "--tls-key-file", key]

        def epp(name, pool):
            grpc_port, health_port = free_port(), free_port()
            ready = os.path.join(d, name + ".ready")
            proc = Proc(name, [
                os.path.join(BIN_DIR, "sluice"), "epp", "--pool-name", pool,
                "--pool-namespace", "default", "--manifests", manifests,
                "--grpc", f"127.0.0.1:{grpc_port}", "--health", f"127.0.0.1:{health_port}",
                "--metrics", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--workers", "1",
                "--ready-file", ready, *tls_args], d)
            cls.procs.append(proc)
            return proc, ready, grpc_port, health_port

        cls.epp, epp_ready, grpc_port, health_port = epp("epp", "llama")
        if cls.WITH_NOPE:
            cls.nope, nope_ready, nope_grpc, _ = epp("epp-nope", "nope")

        def ready_lines():
            cls.sim.check_alive()
            with open(sim_ready) as f:
                lines = f.read().split()
            return len(lines) == 3 and lines

        lines = wait_for("the simulator's ready file", ready_lines)
        assert sorted(lines) == sorted(cls.endpoints), lines

        def ready_json(proc, path):
            proc.check_alive()
            info = read_json(path)
            return all(k in info for k in ("listener", "admin", "metrics", "health")) and info

        cls.ready = wait_for("the EPP's ready file", lambda: ready_json(cls.epp, epp_ready))
        assert cls.ready["listener"] == grpc_port and cls.ready["health"] == health_port, cls.ready
        if cls.WITH_NOPE:
            wait_for("the second EPP's ready file", lambda: ready_json(cls.nope, nope_ready))
            cls.nope_channel = cls.channel_to(f"127.0.0.1:{nope_grpc}")
        cls.grpc_target = f"127.0.0.1:{grpc_port}"
        cls.health_target = f"127.0.0.1:{health_port}"
        cls.metrics_port = cls.ready["metrics"]
        cls.admin_port = cls.ready["admin"]
        cls.channel = cls.channel_to(cls.grpc_target)
        cls.health_channel = cls.channel_to(cls.health_target)
        serving = cls.p.health.HealthCheckResponse.SERVING
        wait_for("the EPP's readiness",
                 lambda: el.health_check(cls.health_channel, "readiness") == serving)

        def scraped():
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{cls.admin_port}/debug/endpoints", timeout=5) as r:
                eps = json.load(r)["endpoints"]
            return (sorted(e["address"] for e in eps if e["scraped"] and e["healthy"])
                    == sorted(cls.endpoints))

        wait_for("the EPP to scrape the three engines", scraped)

    @classmethod
    def _stop_all(cls):
        for ch in ("channel", "health_channel", "nope_channel"):
            if getattr(cls, ch, None) is not None:
                getattr(cls, ch).close()
        codes = {}
        for proc in reversed(cls.procs):
            codes[proc.name] = proc.stop()
        return codes

    @classmethod
    def tearDownClass(cls):
        codes = cls._stop_all()
        logs = {p.name: p.tail() for p in cls.procs}
        cls.tmp.cleanup()
        bad = {n: c for n, c in codes.items() if n.startswith("epp") and c != 0}
        if bad:
            raise AssertionError(f"EPP exit codes after SIGTERM: {bad}\n"
                                 + "\n".join(f"--- {n}\n{logs[n]}" for n in bad))

    def setUp(self):
        self.epp.check_alive()

    # -- helpers --

    def stream(self, **kw):
        return el.ExtProcStream(self.channel, self.p, **kw)

    def metrics(self):
        return el.scrape(self.metrics_port)

    def counter(self, samples, name, **labels):
        return el.metric_sum(samples, name, **labels)

    def wait_metric(self, before, name, expected_delta, **labels):
        """Polls /metrics until `name{labels}` grew by expected_delta (or the deadline), then
        checks it grew by exactly that much."""
        base = self.counter(before, name, **labels)
        try:
            wait_for(f"{name}{labels} +{expected_delta}",
                     lambda: self.counter(self.metrics(), name, **labels) >= base + expected_delta,
                     timeout=5)
        except AssertionError:
            pass  # reported below with the value
        self.assertEqual(self.counter(self.metrics(), name, **labels) - base, expected_delta,
                         f"{name}{labels}")

    def assert_destination_answer(self, a, body_len=None, expected_count=3, within=None):
        """The destination header and metadata as the protocol wants them."""
        self.assertIsNone(a.immediate, f"refused: {a.immediate}")
        self.assertIsNotNone(a.mutation, "no header mutation")
        dests = a.destinations
        self.assertEqual(len(dests), expected_count, a.destination)
        self.assertEqual(len(set(dests)), len(dests), f"duplicates in {a.destination}")
        for dst in dests:
            self.assertIn(dst, within or self.endpoints)
        self.assertEqual(a.metadata_destination, a.destination,
                         f"dynamic_metadata {a.dynamic_metadata}")
        self.assertTrue(a.clear_route_cache)
        self.assertEqual(set(a.mutation.remove_headers), set(el.CONTROL_HEADERS))
        overwrite = (self.p.base.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
                     self.p.base.HeaderValueOption.OVERWRITE_IF_EXISTS)
        self.assertIn(a.mutation.append_actions[el.DESTINATION], overwrite)
        if body_len is not None:
            self.assertEqual(a.mutation.set_headers.get("content-length"), str(body_len))
            self.assertIn(a.mutation.append_actions["content-length"], overwrite)

    def assert_error(self, a, status, error_type=None):
        self.assertIsNotNone(a.immediate, f"expected an immediate response, got {a.messages}")
        self.assertEqual(a.immediate_status, status, a.immediate)
        err = a.immediate_json["error"]
        self.assertEqual(set(err), {"message", "type", "param", "code"}, err)
        self.assertTrue(err["message"])
        if error_type:
            self.assertEqual(err["type"], error_type)
        self.assertEqual(a.immediate_headers.get("content-type"), "application/json")

    def assert_serves(self, channel=None):
        """A new stream is picked and answered (the server survived what came before)."""
        s = el.ExtProcStream(channel or self.channel, self.p)
        body = chat_body("still serving?")
        a = s.request("POST", CHAT, body)
        self.assert_destination_answer(a, len(rewritten(body)))
        self.assertEqual(a.body, rewritten(body))
        self.assertEqual(s.finish()[0], grpc.StatusCode.OK)


class EppTest(EppFixture):
    """The protocol, one feature at a time, against one EPP (and one for an unknown pool)."""

    WITH_NOPE = True

    # -- 1. the request phase, full duplex --

    def test_full_duplex_request_phase(self):
        body = (b'{ "model" : "llama",  "messages":[{"role":"user","content":'
                b'"caf\\u00e9 \xc3\xa9 {\\"model\\":\\"llama\\"}"}] , "max_tokens":3 }')
        expected = body.replace(b'"model" : "llama"', b'"model" : "sim-llama"', 1)
        s = self.stream()
        s.send_request_headers([
            (":method", "POST"), (":path", CHAT), (":authority", "gw"),
            ("content-type", "application/json"), ("content-length", str(len(body))),
            ("x-request-id", "e2e-full-duplex"), ("x-gateway-inference-objective", "interactive"),
            ("x-gateway-destination-endpoint-served", "10.0.0.1:1")])
        s.send_request_body(body[:20], end_of_stream=False)
        # Barrier: a whole exchange on another stream of the same connection; the first
        # stream's two messages went before it, and the picker must not have answered yet.
        self.assert_serves()
        self.assertFalse(s.answered(), "answered before the body was complete")
        m = self.p.ep.ProcessingRequest()
        m.request_body.body = body[20:]
        m.request_body.end_of_stream = True
        s.send(m)
        a = s.read_request_answer()
        self.assertEqual(a.messages[0].WhichOneof("response"), "request_headers",
                         "the header answer must come first")
        self.assert_destination_answer(a, len(expected))
        self.assertEqual(a.body, expected)
        self.assertEqual(a.body_eos, [False] * (len(a.body_eos) - 1) + [True])
        self.assertTrue(all(n <= el.MAX_BODY_CHUNK for n in a.body_chunks))
        for m in a.messages[1:]:
            self.assertEqual(m.WhichOneof("response"), "request_body")
            self.assertFalse(m.request_body.response.HasField("header_mutation"))
        self.assertEqual(s.finish(), (grpc.StatusCode.OK, ""))

    def test_unrewritten_model_passes_unchanged(self):
        body = chat_body("no rewrite for me", model="sim-llama")
        x = el.exchange(self.channel, "POST", CHAT, body, protos=self.p,
                        response_chunk_sizes=[11])
        self.assert_destination_answer(x.answer, len(body))
        self.assertEqual(x.answer.body, body)
        self.assertEqual(x.upstream.status, 200)
        self.assertEqual(x.response.body, x.upstream.body)
        self.assertIn(b'"model":"sim-llama"', x.response.body)
        self.assertEqual(x.status[0], grpc.StatusCode.OK)

    def test_rewrite_touches_only_the_top_level_model(self):
        cases = [
            (b'{"metadata":{"model":"llama"},"model":"llama","prompt":"x"}',
             b'{"metadata":{"model":"llama"},"model":"sim-llama","prompt":"x"}'),
            (b'  {"prompt":"\\"model\\":\\"llama\\"" ,\n "model"\t:\t"llama"}\n',
             b'  {"prompt":"\\"model\\":\\"llama\\"" ,\n "model"\t:\t"sim-llama"}\n'),
            (b'{"model":"ll\\u0061ma","prompt":"x"}', b'{"model":"sim-llama","prompt":"x"}'),
            (b'{"model":"llama"}', b'{"model":"sim-llama"}'),
        ]
        for body, expected in cases:
            with self.subTest(body=body):
                s = self.stream()
                a = s.request("POST", COMPLETIONS, body)
                self.assert_destination_answer(a, len(expected))
                self.assertEqual(a.body, expected)
                self.assertEqual(s.finish()[0], grpc.StatusCode.OK)

    # -- 6/7. forwarding, the response phase, accounting --

    def engine_of(self, endpoint):
        return f"sim-{self.endpoints.index(endpoint)}"

    def test_json_response_phase_and_usage(self):
        before = self.metrics()
        body = chat_body("tell me about the response phase", max_tokens=5)
        x = el.exchange(self.channel, "POST", CHAT, body,
                        headers=[("x-request-id", "e2e-json"),
                                 ("x-gateway-inference-objective", "interactive")],
                        response_chunk_sizes=[7, 50], protos=self.p)
        self.assert_destination_answer(x.answer, len(rewritten(body)))
        self.assertEqual(x.upstream.status, 200, x.upstream.body)
        self.assertEqual(x.upstream.headers.get("x-sim-engine"),
                         self.engine_of(x.answer.destinations[0]))
        up = json.loads(x.upstream.body)
        self.assertEqual(up["model"], "sim-llama")
        self.assertEqual(x.response.headers_response.WhichOneof("response"), "response_headers")
        self.assertEqual(x.response.body, written_back(x.upstream.body))
        self.assertEqual(json.loads(x.response.body)["model"], "llama")
        self.assertEqual(x.response.body_eos[-1], True)
        self.assertNotIn(True, x.response.body_eos[:-1])
        self.assertEqual(x.status, (grpc.StatusCode.OK, ""))
        usage = up["usage"]
        self.wait_metric(before, "sluice_requests_total", 1, backend=POOL_LABEL, code="200")
        self.wait_metric(before, "sluice_tokens_total", usage["prompt_tokens"],
                         backend=POOL_LABEL, type="input")
        self.wait_metric(before, "sluice_tokens_total", usage["completion_tokens"],
                         backend=POOL_LABEL, type="output")
        self.wait_metric(before, "sluice_endpoint_picks_total", 1,
                         endpoint=x.answer.destinations[0])

    def test_inference_extension_metric_names(self):
        """The picker exports the Inference Extension EPP's families beside its own."""
        before = self.metrics()
        x = el.exchange(self.channel, "POST", CHAT, chat_body("metric names"), protos=self.p)
        self.assertEqual(x.status, (grpc.StatusCode.OK, ""))
        self.wait_metric(before, "inference_objective_request_total", 1, model_name="llama",
                         target_model_name="sim-llama")
        self.wait_metric(before, "inference_extension_scheduler_e2e_duration_seconds_count", 1)
        now = self.metrics()
        pods = [v for (n, ls), v in now.items()
                if n == "inference_pool_ready_pods" and ("name", "llama") in ls]
        self.assertEqual(pods, [3])
        self.assertEqual(el.metric_sum(now, "inference_extension_info"), 1)

    def test_sse_response_phase_and_usage(self):
        before = self.metrics()
        body = chat_body("stream to me", max_tokens=6, stream=True,
                         stream_options={"include_usage": True})
        # Odd chunk sizes: events arrive split across response_body messages.
        x = el.exchange(self.channel, "POST", CHAT, body, response_chunk_sizes=[13, 29, 5],
                        protos=self.p)
        self.assert_destination_answer(x.answer, len(rewritten(body)))
        self.assertEqual(x.upstream.status, 200)
        self.assertTrue(x.upstream.headers["content-type"].startswith("text/event-stream"))
        self.assertEqual(x.response.body, written_back(x.upstream.body))
        events = [e for e in x.response.body.decode().split("\n\n") if e.strip()]
        self.assertEqual(events[-1], "data: [DONE]")
        datas = [json.loads(e[len("data: "):]) for e in events[:-1]]
        self.assertGreaterEqual(len(datas), 7)  # 6 tokens and the usage event
        self.assertTrue(all(d["model"] == "llama" for d in datas), datas)
        usage = [d["usage"] for d in datas if d.get("usage")]
        self.assertEqual(len(usage), 1)
        self.assertEqual(x.status, (grpc.StatusCode.OK, ""))
        self.wait_metric(before, "sluice_requests_total", 1, backend=POOL_LABEL, code="200")
        self.wait_metric(before, "sluice_tokens_total", usage[0]["prompt_tokens"],
                         backend=POOL_LABEL, type="input")
        self.wait_metric(before, "sluice_tokens_total", usage[0]["completion_tokens"],
                         backend=POOL_LABEL, type="output")

    def test_served_endpoint_other_than_first(self):
        """The gateway fell back: the response phase reports the second destination."""
        body = chat_body("fallback please")
        s = self.stream()
        a = s.request("POST", CHAT, body)
        self.assert_destination_answer(a, len(rewritten(body)))
        second = a.destinations[1]
        up = el.forward(a, "POST", CHAT, endpoint=second)
        self.assertEqual(up.status, 200)
        self.assertEqual(up.headers.get("x-sim-engine"), self.engine_of(second))
        r = s.respond(up.status, up.headers["content-type"], up.body, served=second)
        self.assertEqual(r.body, written_back(up.body))
        self.assertEqual(s.finish(), (grpc.StatusCode.OK, ""))

    def test_response_chunks_are_capped(self):
        """A large response comes back in chunks of at most 62,000 bytes, whole and written
        back; past the 4 MiB hold bound it passes on unchanged, still in bounded chunks."""
        for size, held in ((300_000, True), (5 * 1024 * 1024, False)):
            body = chat_body("a big answer")
            s = self.stream()
            a = s.request("POST", CHAT, body)
            self.assert_destination_answer(a, len(rewritten(body)))
            filler = "x" * size
            up = json.dumps({"id": "big", "model": "sim-llama", "choices": [
                {"message": {"content": filler}}]}, separators=(",", ":")).encode()
            r = s.respond(200, "application/json", up, served=a.destinations[0],
                          chunk_sizes=[16384, 65536])
            self.assertTrue(all(n <= 62000 for n in r.body_chunks), r.body_chunks[:5])
            self.assertEqual(r.body, written_back(up) if held else up)
            self.assertEqual(r.body_eos[-1], True)
            self.assertEqual(s.finish(), (grpc.StatusCode.OK, ""))

    def test_sse_last_event_without_blank_line(self):
        """A stream whose last event has no blank line after it: still written back, and its
        usage read."""
        before = self.metrics()
        body = chat_body("unterminated", stream=True)
        s = self.stream()
        a = s.request("POST", CHAT, body)
        up = (b'data: {"id":"a","model":"sim-llama","choices":[]}\n\n'
              b'data: {"id":"a","model":"sim-llama","choices":[],'
              b'"usage":{"prompt_tokens":11,"completion_tokens":7}}')
        r = s.respond(200, "text/event-stream", up, served=a.destinations[0], chunk_sizes=[20])
        self.assertEqual(r.body, written_back(up))
        self.assertEqual(s.finish(), (grpc.StatusCode.OK, ""))
        self.wait_metric(before, "sluice_tokens_total", 7, backend=POOL_LABEL, type="output")
        self.wait_metric(before, "sluice_tokens_total", 11, backend=POOL_LABEL, type="input")

    # -- 2. buffered --

    def test_buffered_request_mode(self):
        before = self.metrics()
        body = chat_body("buffered please", max_tokens=3)
        s = self.stream(request_mode=el.BUFFERED, response_mode=el.BUFFERED)
        s.send_request_headers([(":method", "POST"), (":path", CHAT),
                                ("content-type", "application/json"),
                                ("content-length", str(len(body)))])
        # The headers are answered at once, before any body was sent, and carry nothing.
        m = s.recv()
        self.assertEqual(m.WhichOneof("response"), "request_headers", m)
        self.assertFalse(m.request_headers.response.HasField("header_mutation"), m)
        self.assertFalse(m.HasField("dynamic_metadata"), m)
        s.send_request_body(body, chunk_size=len(body))
        m = s.recv()
        self.assertEqual(m.WhichOneof("response"), "request_body", m)
        common = m.request_body.response
        a = el.RequestAnswer(header_response=m, mutation=el.mutation_of(common.header_mutation),
                             clear_route_cache=common.clear_route_cache,
                             dynamic_metadata=el.struct_to_py(m.dynamic_metadata),
                             body=common.body_mutation.body,
                             body_replaced=common.body_mutation.WhichOneof("mutation") == "body",
                             messages=[m])
        self.assert_destination_answer(a, len(rewritten(body)))
        self.assertEqual(common.body_mutation.WhichOneof("mutation"), "body")
        self.assertEqual(a.body, rewritten(body))
        up = el.forward(a, "POST", CHAT, body=body)
        self.assertEqual(up.status, 200, up.body)
        r = s.respond(up.status, up.headers["content-type"], up.body, served=up.endpoint)
        # Buffered response: one answer per body message, none carrying a streamed response.
        self.assertEqual([m.WhichOneof("response") for m in r.messages],
                         ["response_headers", "response_body"])
        # The client's model name is written back into the buffered body.
        bm = r.messages[1].response_body.response.body_mutation
        self.assertEqual(bm.WhichOneof("mutation"), "body")
        self.assertEqual(bm.body, written_back(up.body))
        self.assertEqual(json.loads(bm.body)["model"], "llama")
        self.assertEqual(s.finish(), (grpc.StatusCode.OK, ""))
        usage = json.loads(up.body)["usage"]
        self.wait_metric(before, "sluice_tokens_total", usage["completion_tokens"],
                         backend=POOL_LABEL, type="output")

    # -- 3. no body --

    def test_get_without_body(self):
        s = self.stream()
        s.send_request_headers([(":method", "GET"), (":path", "/v1/models"),
                                (":authority", "gw")], end_of_stream=True)
        a = s.read_request_answer(body_expected=False)
        self.assertEqual(len(a.messages), 1)
        self.assertEqual(a.messages[0].WhichOneof("response"), "request_headers")
        self.assert_destination_answer(a)
        up = el.forward(a, "GET", "/v1/models")
        self.assertEqual(up.status, 200)
        self.assertEqual(json.loads(up.body)["data"][0]["id"], "sim-llama")
        r = s.respond(up.status, up.headers["content-type"], up.body, served=up.endpoint)
        self.assertEqual(r.body, up.body)
        self.assertEqual(s.finish(), (grpc.StatusCode.OK, ""))

    # -- 4. the subset hint --

    def pick_with_subset(self, value):
        s = self.stream()
        body = chat_body(f"subset {value!r}")
        a = s.request("POST", CHAT, body,
                      metadata={el.SUBSET_NAMESPACE: {el.SUBSET: value}})
        return s, a, body

    def test_subset_hint_list(self):
        p = self.sim_port
        cases = [
            ([f"127.0.0.12:{p}"], [f"127.0.0.12:{p}"]),
            ([f"127.0.0.11:{p}", f"127.0.0.13:{p}"], [f"127.0.0.11:{p}", f"127.0.0.13:{p}"]),
            (f"127.0.0.13:{p}, 127.0.0.12:{p}", [f"127.0.0.12:{p}", f"127.0.0.13:{p}"]),
            (f"127.0.0.11:{p}", [f"127.0.0.11:{p}"]),
            (["127.0.0.12", "127.0.0.13"], [f"127.0.0.12:{p}", f"127.0.0.13:{p}"]),
            # Only what is in the pool counts.
            ([f"10.9.9.9:{p}", f"127.0.0.13:{p}", "127.0.0.11:1"], [f"127.0.0.13:{p}"]),
        ]
        for value, allowed in cases:
            for _ in range(2):
                with self.subTest(subset=value):
                    s, a, body = self.pick_with_subset(value)
                    self.assert_destination_answer(a, len(rewritten(body)),
                                                   expected_count=len(allowed), within=allowed)
                    self.assertEqual(sorted(a.destinations), sorted(allowed))
                    self.assertEqual(s.finish()[0], grpc.StatusCode.OK)

    def test_subset_hint_forwarded_to_the_subset(self):
        only = f"127.0.0.13:{self.sim_port}"
        s, a, body = self.pick_with_subset([only])
        self.assertEqual(a.destinations, [only])
        up = el.forward(a, "POST", CHAT)
        self.assertEqual(up.headers.get("x-sim-engine"), "sim-2")
        r = s.respond(up.status, up.headers["content-type"], up.body, served=only)
        self.assertEqual(r.body, written_back(up.body))
        self.assertEqual(s.finish(), (grpc.StatusCode.OK, ""))

    def test_subset_hint_empty_or_foreign(self):
        for value in ([], ["10.1.2.3:8000", f"127.0.0.99:{self.sim_port}"], "10.1.2.3:8000"):
            with self.subTest(subset=value):
                s, a, _ = self.pick_with_subset(value)
                self.assert_error(a, 503)
                self.assertEqual(s.wait_end(), (grpc.StatusCode.OK, ""))
        self.assert_serves()

    # -- 5. refusals --

    def test_malformed_json_is_400(self):
        for body in (b'{"model": "llama", "messages": [', b"not json at all", b"[1,2,3]"):
            with self.subTest(body=body):
                s = self.stream()
                a = s.request("POST", CHAT, body)
                self.assert_error(a, 400, "invalid_request_error")
                self.assertEqual(s.wait_end(), (grpc.StatusCode.OK, ""))
        self.assert_serves()

    def test_body_over_limit_is_413(self):
        limit = 32 * 1024 * 1024
        s = self.stream()
        s.send_request_headers([(":method", "POST"), (":path", CHAT),
                                ("content-type", "application/json"),
                                ("content-length", str(limit + 1024 * 1024))])
        chunk = b" " * (1024 * 1024)
        m = self.p.ep.ProcessingRequest()
        m.request_body.body = b'{"model":"llama","prompt":"' + chunk[27:]
        s.send(m)
        for _ in range(32):
            m = self.p.ep.ProcessingRequest()
            m.request_body.body = chunk
            s.send(m)
        m = self.p.ep.ProcessingRequest()
        m.request_body.body = b'"}'
        m.request_body.end_of_stream = True
        s.send(m)
        a = s.read_request_answer(timeout=20)
        self.assert_error(a, 413)
        self.assertEqual(s.wait_end(timeout=20), (grpc.StatusCode.OK, ""))
        self.assert_serves()

    def test_unknown_pool_is_503(self):
        s = el.ExtProcStream(self.nope_channel, self.p)
        a = s.request("POST", CHAT, chat_body("who serves nope?"))
        self.assert_error(a, 503)
        self.assertEqual(s.wait_end(), (grpc.StatusCode.OK, ""))
        h = self.p.health.HealthCheckResponse
        self.assertEqual(el.health_check(self.nope_channel, "liveness", protos=self.p), h.SERVING)
        self.assertEqual(el.health_check(self.nope_channel, "readiness", protos=self.p),
                         h.NOT_SERVING)

    # -- 5. protocol violations --

    def test_invalid_protobuf(self):
        s = self.stream()
        s.send_raw(b"\x12\x05ab")  # request_headers, 5 bytes long, 2 there
        code, _ = s.wait_end()
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assert_serves()
        # Mid-stream, after valid headers.
        s = self.stream()
        s.send_request_headers([(":method", "POST"), (":path", CHAT),
                                ("content-type", "application/json")])
        s.send_raw(b"\x22\xff\xff\xff\xff\x0f")  # request_body with an absurd length
        code, _ = s.wait_end()
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assert_serves()

    def test_response_headers_before_request(self):
        s = self.stream()
        s.send_response_headers(200, "application/json")
        code, _ = s.wait_end()
        self.assertEqual(code, grpc.StatusCode.FAILED_PRECONDITION)
        self.assert_serves()
        # And a response body chunk after headers that were never answered with a pick.
        s = self.stream()
        s.send_request_headers([(":method", "POST"), (":path", CHAT),
                                ("content-type", "application/json")])
        m = self.p.ep.ProcessingRequest()
        m.response_body.body = b"{}"
        m.response_body.end_of_stream = True
        s.send(m)
        code, _ = s.wait_end()
        self.assertEqual(code, grpc.StatusCode.FAILED_PRECONDITION)
        self.assert_serves()

    def test_unknown_method(self):
        for path in ("/envoy.service.ext_proc.v3.ExternalProcessor/Nope", "/foo.Bar/Baz"):
            with self.subTest(path=path):
                s = el.ExtProcStream(self.channel, self.p, path=path)
                s.send_request_headers([(":method", "GET"), (":path", "/")], end_of_stream=True)
                code, _ = s.wait_end()
                self.assertEqual(code, grpc.StatusCode.UNIMPLEMENTED)
        self.assert_serves()

    # -- 7. concurrency --

    def test_concurrent_streams_spread(self):
        n = 30
        streams, firsts = [], collections.Counter()
        try:
            for i in range(n):
                s = self.stream()
                streams.append(s)
                s.send_request_headers([(":method", "POST"), (":path", CHAT),
                                        ("content-type", "application/json")])
            bodies = [chat_body(f"concurrent request {i}: " + f"topic {i} " * 40)
                      for i in range(n)]
            for s, b in zip(streams, bodies):
                s.send_request_body(b)
            for s, b in zip(streams, bodies):
                a = s.read_request_answer()
                self.assert_destination_answer(a, len(rewritten(b)))
                self.assertEqual(a.body, rewritten(b))
                firsts[a.destinations[0]] += 1
            # All 30 are picked and none completed: the picks must not herd.
            self.assertEqual(sum(firsts.values()), n)
            self.assertEqual(set(firsts), set(self.endpoints), firsts)
            self.assertLessEqual(max(firsts.values()), n // 3 + 4, firsts)
        finally:
            for s in streams:
                s.half_close()
        for s in streams:
            self.assertEqual(s.wait_end()[0], grpc.StatusCode.OK)

    # -- 8. cancel --

    def test_cancel_mid_body(self):
        body = chat_body("cancel me " * 4000)
        for _ in range(3):
            s = self.stream()
            s.send_request_headers([(":method", "POST"), (":path", CHAT),
                                    ("content-type", "application/json"),
                                    ("content-length", str(len(body)))])
            s.send_request_body(body[:16384], end_of_stream=False)
            s.cancel()
            code, _ = s.wait_end()
            self.assertEqual(code, grpc.StatusCode.CANCELLED)
        # Cancelled after the pick, before the response phase.
        s = self.stream()
        a = s.request("POST", CHAT, body)
        self.assert_destination_answer(a, len(rewritten(body)))
        s.cancel()
        self.assertEqual(s.wait_end()[0], grpc.StatusCode.CANCELLED)
        self.assert_serves()
        # A new connection works too.
        ch = grpc.insecure_channel(self.grpc_target)
        try:
            self.assert_serves(ch)
        finally:
            ch.close()
        self.epp.check_alive()

    # -- 9. health --

    def test_health(self):
        h = self.p.health.HealthCheckResponse
        for name, ch in (("grpc", self.channel), ("health", self.health_channel)):
            for svc in ("", "liveness", "readiness", el.EXT_PROC_SERVICE):
                with self.subTest(port=name, service=svc):
                    self.assertEqual(el.health_check(ch, svc, protos=self.p), h.SERVING)
                    self.assertEqual(el.health_watch_first(ch, svc, protos=self.p), h.SERVING)
            with self.subTest(port=name, service="unknown"):
                with self.assertRaises(grpc.RpcError) as cm:
                    el.health_check(ch, "no.such.Service", protos=self.p)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)
                self.assertEqual(el.health_watch_first(ch, "no.such.Service", protos=self.p),
                                 h.SERVICE_UNKNOWN)

    def test_metrics_pass_promtool(self):
        # After a request through the picker, so its per-request families have series.
        self.test_json_response_phase_and_usage()
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            rc, out = promtool_check(r.read().decode())
        self.assertEqual((rc, out), (0, ""))

    # -- 10. big bodies --

    def test_multi_chunk_220kb_body(self):
        before = self.metrics()
        prompt = "".join(f"word{i % 997} " for i in range(30000))[:220 * 1024]
        body = json.dumps({"model": "llama", "prompt": prompt, "max_tokens": 2}).encode()
        self.assertGreater(len(body), 220 * 1024)
        expected = rewritten(body)
        s = self.stream()
        a = s.request("POST", COMPLETIONS, body, chunk_size=16 * 1024)
        self.assert_destination_answer(a, len(expected))
        self.assertEqual(len(a.body), len(expected))
        self.assertEqual(a.body, expected)
        self.assertTrue(all(0 < n <= el.MAX_BODY_CHUNK for n in a.body_chunks), a.body_chunks)
        self.assertGreaterEqual(len(a.body_chunks), math.ceil(len(expected) / el.MAX_BODY_CHUNK))
        self.assertEqual(a.body_eos, [False] * (len(a.body_eos) - 1) + [True])
        up = el.forward(a, "POST", COMPLETIONS)
        self.assertEqual(up.status, 200, up.body[:300])
        r = s.respond(up.status, up.headers["content-type"], up.body, served=up.endpoint,
                      chunk_sizes=[100])
        self.assertEqual(r.body, written_back(up.body))
        self.assertEqual(s.finish(), (grpc.StatusCode.OK, ""))
        usage = json.loads(up.body)["usage"]
        self.assertGreater(usage["prompt_tokens"], 40000)
        self.wait_metric(before, "sluice_tokens_total", usage["prompt_tokens"],
                         backend=POOL_LABEL, type="input")

    def test_many_exchanges_in_parallel(self):
        """Whole exchanges from several threads at once, over one connection."""
        errors, results = [], []

        def run(i):
            try:
                body = chat_body(f"parallel {i} " * 10, max_tokens=3,
                                 stream=bool(i % 2), stream_options={"include_usage": True})
                x = el.exchange(self.channel, "POST", CHAT, body, protos=self.p,
                                response_chunk_sizes=[31])
                results.append(x)
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        self.assertEqual(errors, [])
        self.assertEqual(len(results), 12)
        for x in results:
            self.assertEqual(x.status[0], grpc.StatusCode.OK)
            self.assertEqual(x.upstream.status, 200)
            self.assertEqual(x.response.body, written_back(x.upstream.body))


class EppTlsTest(EppFixture):
    """The same picker over TLS (ALPN h2): health, and a whole exchange."""

    TLS = True

    def test_health_and_exchange_over_tls(self):
        serving = self.p.health.HealthCheckResponse.SERVING
        self.assertEqual(el.health_check(self.health_channel, "readiness", protos=self.p), serving)
        self.assertEqual(el.health_check(self.channel, el.EXT_PROC_SERVICE, protos=self.p), serving)
        body = chat_body("over tls")
        x = el.exchange(self.channel, "POST", CHAT, body, protos=self.p)
        self.assertIn(x.answer.destinations[0], self.endpoints)
        self.assertEqual(x.answer.body, rewritten(body))
        self.assertEqual(x.upstream.status, 200)
        self.assertEqual(x.response.body, written_back(x.upstream.body))
        self.assertEqual(x.status, (grpc.StatusCode.OK, ""))

    def test_sluice_serve_asks_it_over_tls(self):
        """sluice serve in front: the pool's endpointPickerRef with the annotation
        sluice.dev/endpoint-picker-tls: insecure reaches this picker over TLS (FailClose, so
        a 200 proves the picker answered)."""
        d = self.tmp.name
        gw_dir = os.path.join(d, "gateway-manifests")
        os.makedirs(gw_dir, exist_ok=True)
        with open(os.path.join(d, "manifests", "pods.yaml")) as f:
            pods = f.read()
        with open(os.path.join(d, "manifests", "pool.yaml")) as f:
            pool = f.read().replace(
                "metadata: {name: llama, namespace: default}\nspec:\n",
                "metadata: {name: llama, namespace: default, annotations: "
                "{sluice.dev/endpoint-picker-tls: insecure}}\nspec:\n"
                "  endpointPickerRef: {name: epp, port: {number: 9002}, failureMode: FailClose}\n", 1)
        gw_port = free_port()
        grpc_port = int(self.grpc_target.rsplit(":", 1)[1])
        with open(os.path.join(gw_dir, "all.yaml"), "w") as f:
            f.write(pods + "---\n" + pool + f"""---
apiVersion: v1
kind: Service
metadata: {{name: epp, namespace: default}}
spec:
  selector: {{app: epp}}
  ports: [{{name: grpc, port: 9002, targetPort: {grpc_port}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: epp-0, namespace: default, labels: {{app: epp}}}}
status: {{podIP: 127.0.0.1, phase: Running, conditions: [{{type: Ready, status: "True"}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: sluice
  listeners: [{{name: http, port: {gw_port}, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules: [{{backendRefs: [{{group: inference.networking.k8s.io, kind: InferencePool, name: llama}}]}}]
""")
        ready = os.path.join(d, "gw.ready")
        gw = Proc("gateway", [os.path.join(BIN_DIR, "sluice"), "serve", "--manifests", gw_dir,
                              "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
                              "--metrics", "127.0.0.1:0", "--workers", "1",
                              "--ready-file", ready], d)
        self.procs.append(gw)
        wait_for("the gateway's ready file", lambda: (gw.check_alive(), os.path.exists(ready))[1])
        before = self.metrics()
        body = chat_body("through the gateway, over tls")
        req = urllib.request.Request(f"http://127.0.0.1:{gw_port}{CHAT}", data=body,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            self.assertEqual(r.status, 200)
            self.assertEqual(json.load(r)["model"], "llama")
        self.wait_metric(before, "inference_objective_request_total", 1, model_name="llama",
                         target_model_name="sim-llama")

    def test_plaintext_client_is_refused(self):
        ch = grpc.insecure_channel(self.grpc_target)
        try:
            with self.assertRaises(grpc.RpcError):
                el.health_check(ch, "readiness", timeout=2.0, protos=self.p)
        finally:
            ch.close()


class EppDrainTest(EppFixture):
    """SIGTERM while a picked request is open: the EPP stops taking new work, lets the open
    stream finish its response phase, then exits 0."""

    def test_sigterm_drains_open_stream(self):
        body = chat_body("drain around me", max_tokens=3)
        s = self.stream()
        a = s.request("POST", CHAT, body)
        self.assert_destination_answer(a, len(rewritten(body)))
        self.epp.p.send_signal(signal.SIGTERM)
        serving = self.p.health.HealthCheckResponse.SERVING

        def not_ready():
            ch = grpc.insecure_channel(self.health_target)
            try:
                return el.health_check(ch, "readiness", timeout=1, protos=self.p) != serving
            except grpc.RpcError as e:
                return e.code() == grpc.StatusCode.UNAVAILABLE
            finally:
                ch.close()

        wait_for("the EPP to stop being ready after SIGTERM", not_ready, timeout=10)
        self.assertTrue(self.epp.alive(), "the EPP exited with a stream still open")
        up = el.forward(a, "POST", CHAT)
        self.assertEqual(up.status, 200)
        r = s.respond(up.status, up.headers["content-type"], up.body, served=up.endpoint)
        self.assertEqual(r.body, written_back(up.body))
        self.assertEqual(s.finish(), (grpc.StatusCode.OK, ""))
        self.epp.p.wait(timeout=15)
        self.assertEqual(self.epp.p.returncode, 0, self.epp.tail())


if __name__ == "__main__":
    unittest.main(verbosity=2)
