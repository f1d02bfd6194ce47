#!/usr/bin/python3
"""End-to-end tests of `sluice serve` as the gateway of the Gateway API Inference Extension: an
InferencePool with an endpointPickerRef is served by asking that picker (EPP) over Envoy's
ext_proc for every request, and following its answer.

Real binaries (sluice, sluice-sim from $SLUICE_BIN_DIR, default <repo>/build/bin) on a manifest
directory laid out like the Inference Extension conformance suite's base resources (two
Gateways, primary/secondary/data-parallel/appProtocol pools, one header-driven test EPP per
pool: test/fakes/lwepp.py, each on its own loopback "Pod IP"), and one end-to-end counterpart
for each conformance test (InferencePoolAccepted ... EppUnAvailableFailOpen), plus the
protocol details the conformance suite does not reach (the request phase as sent, immediate
responses, the destination in metadata only, retries along the EPP's list, body and header
mutations, half-close at the end of the response).

Where each request landed is read from the engines themselves (sluice-sim's /admin request
counter per ip:port, the h2c engine's /stats), not only from what the gateway says.

Run with Debian's python (grpcio, protobuf):  /usr/bin/python3 test/e2e/gateway_epp_test.py
"""

import concurrent.futures
import http.client
import json
import math
import os
import shutil
import socket
import sys
import tempfile
import time
import unittest
import urllib.request
import uuid

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "test", "fakes"))

import lwepp  # noqa: E402
from processes import Proc, free_port, read_json, wait_for  # noqa: E402

BIN_DIR = os.environ.get("SLUICE_BIN_DIR") or os.path.join(REPO, "build", "bin")
PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
NODE = shutil.which("node") or "/usr/bin/node"

INFRA = "inference-conformance-infra"
APP = "inference-conformance-app-backend"
PRIMARY_GW = "conformance-primary"
SECONDARY_GW = "conformance-secondary"
SECONDARY_SUFFIX = "secondary.example.com"

PRIMARY_IPS = ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
SECONDARY_IPS = ["127.0.0.14", "127.0.0.15", "127.0.0.16"]
DP_IPS = ["127.0.0.17", "127.0.0.18", "127.0.0.19"]
RETRY_DEAD_IP = "127.0.0.21"  # a Ready Pod with nothing listening
RETRY_IPS = ["127.0.0.22", "127.0.0.23"]
H2_IPS = ["127.0.0.24", "127.0.0.25", "127.0.0.26"]
EPP_IPS = {"primary": "127.0.0.31", "secondary": "127.0.0.32", "dp": "127.0.0.33",
           "retry": "127.0.0.34", "h2": "127.0.0.35", "failopen": "127.0.0.36"}

MODEL = "sim-llama"
SERVED = lwepp.SERVED_RESULT
SELECTION = lwepp.SELECTION
OK_5XX = (500, 501, 502, 503, 504)
PICKER_TIMEOUT_MS = 1500  # the router's timeouts.endpoint_picker here



# --- HTTP ------------------------------------------------------------------------------------

class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<{self.status} {self.headers} {self.body[:300]!r}>"


def request(port, host, method, path, body=None, headers=None, timeout=30.0):
    """One request on a new connection to 127.0.0.1:port with Host: host."""
    h = {"Host": host}
    if body is not None:
        if not isinstance(body, (bytes, bytearray)):
            body = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    h.update(headers or {})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        conn.close()


def get_json(url, timeout=5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.load(r)


def post_json(url, doc, timeout=5.0):
    req = urllib.request.Request(url, data=json.dumps(doc).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.load(r)


def run_concurrently(n, concurrency, fn):
    """fn(i) for i in range(n), `concurrency` at a time; the results in order."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as ex:
        return list(ex.map(fn, range(n)))


def completion(prompt="Answer with no disclaimers: what are the advantages of genetically "
                      "modified food?", max_tokens=2, model=MODEL, **extra):
    d = {"model": model, "prompt": prompt, "max_tokens": max_tokens}
    d.update(extra)
    return d


def chat(content="hi", max_tokens=2, model=MODEL, **extra):
    d = {"model": model, "messages": [{"role": "user", "content": content}],
         "max_tokens": max_tokens}
    d.update(extra)
    return d


def rid(tag):
    return f"{tag}-{uuid.uuid4().hex[:12]}"


# --- the h2c/HTTP1.1 engine (Node: http and http2 are built in) --------------------------------

H2_ENGINE = r"""
// A model server answering HTTP/1.1 on one port and cleartext HTTP/2 (prior knowledge) on
// another, on several addresses: each answer says where it was served and over which protocol.
import http from 'node:http';
import http2 from 'node:http2';
import { writeFileSync, renameSync } from 'node:fs';
import { createHash } from 'node:crypto';
const [ips, h1Port, h2Port, ready] = process.argv.slice(2);
const stats = {};
const METRICS = 'vllm:num_requests_running 0\nvllm:num_requests_waiting 0\nvllm:kv_cache_usage_perc 0\n';
function handler(req, res) {
  const sock = req.socket;
  const local = `${sock.localAddress}:${sock.localPort}`;
  if (req.url === '/metrics') { res.writeHead(200, { 'content-type': 'text/plain' }); res.end(METRICS); return; }
  if (req.url === '/health') { res.writeHead(200); res.end(); return; }
  if (req.url === '/stats') { res.writeHead(200, { 'content-type': 'application/json' }); res.end(JSON.stringify(stats)); return; }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const s = (stats[local] ??= { count: 0, versions: {} });
    s.count += 1;
    s.versions[req.httpVersion] = (s.versions[req.httpVersion] ?? 0) + 1;
    const raw = Buffer.concat(chunks);
    let body = {};
    try { body = JSON.parse(raw.toString() || '{}'); } catch { body = {}; }
    const headers = {};
    for (const [k, v] of Object.entries(req.headers)) if (!k.startsWith(':')) headers[k] = v;
    const out = JSON.stringify({
      id: 'cmpl-node', object: 'text_completion', model: body.model ?? '',
      choices: [{ index: 0, text: 'ok', finish_reason: 'stop' }],
      usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
      served_by: local, http_version: req.httpVersion, request_headers: headers,
      request_bytes: raw.length, request_sha256: createHash('sha256').update(raw).digest('hex'),
    });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(out),
      'x-served-by': local, 'x-http-version': req.httpVersion });
    res.end(out);
  });
}
const listening = [];
for (const ip of ips.split(',')) {
  for (const [kind, port] of [['h1', h1Port], ['h2', h2Port]]) {
    const server = kind === 'h1' ? http.createServer(handler) : http2.createServer(handler);
    listening.push(new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(Number(port), ip, () => resolve(`${ip}:${port}`));
    }));
  }
}
const addrs = await Promise.all(listening);
writeFileSync(ready + '.tmp', JSON.stringify(addrs));
renameSync(ready + '.tmp', ready);
process.on('SIGTERM', () => process.exit(0));
"""


# --- manifests -------------------------------------------------------------------------------

def pod(name, ip, app):
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {APP}, labels: {{app: {app}}}}}
status: {{podIP: {ip}, phase: Running, conditions: [{{type: Ready, status: "True"}}]}}
"""


def epp_service(name, app, target_port):
    """A picker's Service (port 9002 -> the lwepp's port) and its Pod on its own IP."""
    return f"""apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {APP}}}
spec:
  selector: {{app: {app}}}
  ports: [{{name: grpc, port: 9002, targetPort: {target_port}, appProtocol: http2}}]
"""


def pool(name, app, ports, epp=None, failure_mode=None, app_protocol=None):
    lines = [f"""apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {{name: {name}, namespace: {APP}}}
spec:
  selector: {{matchLabels: {{app: {app}}}}}
  targetPorts: [{", ".join(f"{{number: {p}}}" for p in ports)}]"""]
    if app_protocol:
        lines.append(f"  appProtocol: {app_protocol}")
    if epp:
        fm = f", failureMode: {failure_mode}" if failure_mode else ""
        lines.append(f"  endpointPickerRef: {{name: {epp}, port: {{number: 9002}}{fm}}}")
    return "\n".join(lines) + "\n"


def pool_ref(name, weight=None, port=None):
    extra = (f", weight: {weight}" if weight is not None else "") + (
        f", port: {port}" if port is not None else "")
    return f"{{group: inference.networking.k8s.io, kind: InferencePool, name: {name}{extra}}}"


def route(name, gateway, hostname, rules):
    """rules: list of (matches yaml or None, [backendRef yaml...])."""
    out = [f"""apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {APP}}}
spec:
  parentRefs: [{{name: {gateway}, namespace: {INFRA}}}]
  hostnames: [{hostname}]
  rules:"""]
    for matches, refs in rules:
        out.append(f"  - backendRefs: [{', '.join(refs)}]")
        if matches:
            out.append(f"    matches: {matches}")
    return "\n".join(out) + "\n"


def docs(*parts):
    return "---\n".join(parts)


# --- the fixture: every process, once for the module ------------------------------------------

class Harness:
    def start(self):
        for b in ("sluice", "sluice-sim"):
            if not os.access(os.path.join(BIN_DIR, b), os.X_OK):
                raise unittest.SkipTest(f"{b} is not built in {BIN_DIR}")
        if not os.access(NODE, os.X_OK):
            raise unittest.SkipTest("node is not installed")
        self.procs = []
        self.tmp = tempfile.mkdtemp(prefix="sluice-gateway-epp-")
        d = self.tmp
        self.manifests = os.path.join(d, "manifests")
        os.makedirs(self.manifests)

        # Ports: the engines', the pickers' (one targetPort for all), the two Gateways'.
        self.pa = free_port(PRIMARY_IPS + SECONDARY_IPS + RETRY_IPS + [RETRY_DEAD_IP])
        self.pd = [free_port(DP_IPS) for _ in range(3)]
        self.ph1 = free_port(H2_IPS)
        self.ph2 = free_port(H2_IPS)
        self.pe = free_port(list(EPP_IPS.values()))
        self.g1 = free_port(("0.0.0.0",))
        self.g2 = free_port(("0.0.0.0",))

        self.primary = [f"{ip}:{self.pa}" for ip in PRIMARY_IPS]
        self.secondary = [f"{ip}:{self.pa}" for ip in SECONDARY_IPS]
        self.dp = [f"{ip}:{p}" for ip in DP_IPS for p in self.pd]
        self.retry_dead = f"{RETRY_DEAD_IP}:{self.pa}"
        self.retry = [f"{ip}:{self.pa}" for ip in RETRY_IPS]

        # Engines: primary+secondary (6 addresses), the retry pool's two, the DP ranks (one
        # simulator per port on the same three addresses), and the h2c/HTTP1.1 engine.
        sims = [("sim-ab", PRIMARY_IPS[0], 6, self.pa),
                ("sim-retry", RETRY_IPS[0], 2, self.pa)]
        sims += [(f"sim-dp{i}", DP_IPS[0], 3, p) for i, p in enumerate(self.pd)]
        waits = []
        for name, first, n, port in sims:
            ready = os.path.join(d, name + ".ready")
            proc = self.spawn(name, [os.path.join(BIN_DIR, "sluice-sim"), "--replicas", str(n),
                                     "--address", first, "--port", str(port), "--model", MODEL,
                                     "--ready-file", ready, "--time-scale", "50",
                                     "--max-tokens", "2", "--max-model-len", "262144"])
            waits.append((proc, ready, n))
        engine_js = os.path.join(d, "h2_engine.mjs")
        with open(engine_js, "w") as f:
            f.write(H2_ENGINE)
        h2_ready = os.path.join(d, "h2.ready")
        self.h2 = self.spawn("h2-engine", [NODE, engine_js, ",".join(H2_IPS), str(self.ph1),
                                           str(self.ph2), h2_ready])

        # The pickers: one lwepp per pool family, each on its own "Pod IP".
        rr = {"primary": self.primary, "secondary": self.secondary, "dp": self.dp,
              "retry": self.retry, "h2": [f"{ip}:{self.ph1}" for ip in H2_IPS],
              "failopen": self.secondary}
        target = {"primary": self.pa, "secondary": self.pa, "dp": self.pd[0], "retry": self.pa,
                  "h2": self.ph1, "failopen": self.pa}
        self.epps = {}
        self.epp_logs = {}
        self.epp_argv = {}
        epp_ready = {}
        protos = os.path.join(d, "protos")
        for name, ip in EPP_IPS.items():
            ready = os.path.join(d, f"epp-{name}.ready")
            log = os.path.join(d, f"epp-{name}.jsonl")
            self.epp_logs[name] = log
            self.epp_argv[name] = [
                PYTHON, os.path.join(REPO, "test", "fakes", "lwepp.py"),
                "--listen", f"{ip}:{self.pe}", "--endpoints", ",".join(rr[name]),
                "--target-port", str(target[name]), "--pool-name", name,
                "--ready-file", ready, "--log-file", log,
                "--proto-dir", os.path.join(protos, name)]
            self.epps[name] = self.spawn(f"epp-{name}", self.epp_argv[name])
            epp_ready[name] = ready

        for proc, ready, n in waits:
            def lines(proc=proc, ready=ready):
                proc.check_alive()
                with open(ready) as f:
                    return f.read().split()
            wait_for(f"{proc.name}'s ready file", lambda: len(lines()) == n and lines())
        wait_for("the h2 engine", lambda: self.h2.check_alive() or os.path.exists(h2_ready))
        for name, ready in epp_ready.items():
            proc = self.epps[name]
            wait_for(f"lwepp {name}", lambda: proc.check_alive() or os.path.exists(ready),
                     timeout=20)

        self.write_manifests()
        cfg = os.path.join(d, "sluice.yaml")
        with open(cfg, "w") as f:
            f.write("manifests_debounce: 10ms\n"
                    f"timeouts: {{endpoint_picker: {PICKER_TIMEOUT_MS}ms}}\n")
        ready = os.path.join(d, "router.ready")
        self.router = self.spawn("router", [
            os.path.join(BIN_DIR, "sluice"), "serve", "--config", cfg,
            "--manifests", self.manifests, "--listen", "127.0.0.1:0",
            "--admin", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--workers", "1",
            "--ready-file", ready])
        info = wait_for("the router's ready file",
                        lambda: self.router.check_alive() or (os.path.exists(ready)
                                                               and read_json(ready)))
        self.admin = info["admin"]
        self.metrics = info["metrics"]

        def gateways_programmed():
            objs = self.status()
            return all(any(c["type"] == "Programmed" and c["status"] == "True"
                           for c in objs.get(f"Gateway/{INFRA}/{g}", {}).get("conditions", []))
                       for g in (PRIMARY_GW, SECONDARY_GW))

        wait_for("both Gateways to be programmed", gateways_programmed)
        # The first request through the EPP path, per Gateway, eventually succeeds.
        wait_for("the primary Gateway to serve through its EPP", lambda: self.post(
            "following.example.com", headers={SELECTION: PRIMARY_IPS[0]}).status == 200)
        wait_for("the secondary Gateway to serve through its EPP", lambda: self.post(
            "mgw." + SECONDARY_SUFFIX, port=self.g2,
            headers={SELECTION: SECONDARY_IPS[0]}).status == 200)

    def restart_epp(self, name):
        """Starts the picker `name` again on the same address (after stop())."""
        argv = self.epp_argv[name]
        ready = argv[argv.index("--ready-file") + 1]
        if os.path.exists(ready):
            os.unlink(ready)
        proc = self.epps[name] = self.spawn(f"epp-{name}-again", argv)
        wait_for(f"lwepp {name} to listen again",
                 lambda: proc.check_alive() or os.path.exists(ready), timeout=20)

    def spawn(self, name, argv):
        p = Proc(name, argv, self.tmp)
        self.procs.append(p)
        return p

    def stop(self):
        for p in reversed(getattr(self, "procs", [])):
            p.stop()
        if os.environ.get("SLUICE_KEEP_TMP"):
            print(f"kept {self.tmp}", file=sys.stderr)
        elif getattr(self, "tmp", None):
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- manifests --

    def write(self, name, text):
        tmp = os.path.join(self.tmp, name + ".tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, os.path.join(self.manifests, name))

    def read(self, name):
        with open(os.path.join(self.manifests, name)) as f:
            return f.read()

    def remove(self, name):
        os.unlink(os.path.join(self.manifests, name))

    def failopen_service(self, selector_app):
        return epp_service("failopen-epp", selector_app, self.pe)

    def write_manifests(self):
        pa, pd, ph1, ph2 = self.pa, self.pd, self.ph1, self.ph2
        base = [f"""apiVersion: v1
kind: Namespace
metadata: {{name: {INFRA}}}
""", f"""apiVersion: v1
kind: Namespace
metadata: {{name: {APP}}}
""", f"""apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {PRIMARY_GW}, namespace: {INFRA}}}
spec:
  gatewayClassName: sluice
  listeners:
  - {{name: http, port: {self.g1}, protocol: HTTP, allowedRoutes: {{namespaces: {{from: All}}}}}}
""", f"""apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {SECONDARY_GW}, namespace: {INFRA}}}
spec:
  gatewayClassName: sluice
  listeners:
  - {{name: http, port: {self.g2}, protocol: HTTP, hostname: "*.{SECONDARY_SUFFIX}",
     allowedRoutes: {{namespaces: {{from: All}}}}}}
"""]
        for i, ip in enumerate(PRIMARY_IPS):
            base.append(pod(f"primary-inference-model-server-{i}", ip,
                            "primary-inference-model-server"))
        for i, ip in enumerate(SECONDARY_IPS):
            base.append(pod(f"secondary-inference-model-server-{i}", ip,
                            "secondary-inference-model-server"))
        for i, ip in enumerate(DP_IPS):
            base.append(pod(f"dp-inference-model-server-{i}", ip, "dp-inference-model-server"))
        base.append(pod("retry-model-server-dead", RETRY_DEAD_IP, "retry-model-server"))
        for i, ip in enumerate(RETRY_IPS):
            base.append(pod(f"retry-model-server-{i}", ip, "retry-model-server"))
        for i, ip in enumerate(H2_IPS):
            base.append(pod(f"appprotocol-model-server-{i}", ip, "appprotocol-model-server"))
        for name, ip in EPP_IPS.items():
            base.append(pod(f"{name}-epp", ip, f"{name}-epp"))
            if name != "failopen":
                base.append(epp_service(f"{name}-epp", f"{name}-epp", self.pe))
        base += [
            pool("primary-inference-pool", "primary-inference-model-server", [pa], "primary-epp"),
            pool("secondary-inference-pool", "secondary-inference-model-server", [pa],
                 "secondary-epp", "FailOpen"),
            pool("dp-inference-pool", "dp-inference-model-server", pd, "dp-epp"),
            pool("retry-inference-pool", "retry-model-server", [pa], "retry-epp"),
            pool("h2c-inference-pool", "appprotocol-model-server", [ph2], "h2-epp",
                 app_protocol="kubernetes.io/h2c"),
            pool("http-inference-pool", "appprotocol-model-server", [ph1], "h2-epp",
                 app_protocol="http"),
            pool("default-protocol-inference-pool", "appprotocol-model-server", [ph1], "h2-epp"),
            pool("missing-epp-pool", "primary-inference-model-server", [pa]),
            pool("pool-with-invalid-epp", "primary-inference-model-server", [pa],
                 "non-existent-epp-svc"),
            pool("resolvedrefs-pool", "primary-inference-model-server", [pa], "primary-epp"),
        ]
        self.write("base.yaml", docs(*base))

        P, S = PRIMARY_GW, SECONDARY_GW
        routes = [
            route("httproute-for-primary-gw", P, "following.example.com",
                  [(None, [pool_ref("primary-inference-pool")])]),
            route("httproute-for-dp", P, "dp.example.com",
                  [(None, [pool_ref("dp-inference-pool")])]),
            route("httproute-for-retry", P, "retry.example.com",
                  [(None, [pool_ref("retry-inference-pool")])]),
            route("httproute-port-absent", P, "port-absent.example.com",
                  [(None, [pool_ref("primary-inference-pool")])]),
            route("httproute-port-matching", P, "port-matching.example.com",
                  [(None, [pool_ref("primary-inference-pool", port=pa)])]),
            route("httproute-port-non-matching", P, "port-non-matching.example.com",
                  [(None, [pool_ref("primary-inference-pool", port=pa + 1)])]),
            route("httproute-multiple-rules-different-pools", P, "multiple-rules.example.com", [
                ("[{path: {type: PathPrefix, value: /v1/completions}}]",
                 [pool_ref("primary-inference-pool")]),
                ("[{path: {type: PathPrefix, value: /v1/chat/completions}}]",
                 [pool_ref("secondary-inference-pool")])]),
            route("route-for-primary-gateway", P, "mgw.example.com",
                  [(None, [pool_ref("primary-inference-pool")])]),
            route("route-for-secondary-gateway", S, "mgw." + SECONDARY_SUFFIX,
                  [(None, [pool_ref("secondary-inference-pool")])]),
            route("httproute-weighted-two-pools", P, "weighted.example.com",
                  [(None, [pool_ref("primary-inference-pool", weight=70),
                           pool_ref("secondary-inference-pool", weight=30)])]),
            route("httproute-for-inferencepool-appprotocol-h2c", P,
                  "appprotocol-h2c.example.com", [(None, [pool_ref("h2c-inference-pool")])]),
            route("httproute-for-inferencepool-appprotocol-http", P,
                  "appprotocol-http.example.com", [(None, [pool_ref("http-inference-pool")])]),
            route("httproute-for-inferencepool-appprotocol-default", P,
                  "appprotocol-default.example.com",
                  [(None, [pool_ref("default-protocol-inference-pool")])]),
            route("httproute-for-missing-epp-pool", P, "missing-epp.example.com",
                  [(None, [pool_ref("missing-epp-pool")])]),
            route("httproute-for-invalid-epp-pool", P, "invalid-epp.example.com",
                  [(None, [pool_ref("pool-with-invalid-epp")])]),
            route("httproute-to-non-existent-pool", P, "invalid-pool-ref.example.com",
                  [(None, [pool_ref("non-existent-inference-pool")])]),
        ]
        self.write("routes.yaml", docs(*routes))
        self.write("resolvedrefs-primary.yaml", route(
            "httproute-for-primary-gw-resolvedrefs", P, "resolvedrefs.example.com",
            [(None, [pool_ref("resolvedrefs-pool")])]))
        self.write("resolvedrefs-secondary.yaml", route(
            "httproute-for-secondary-gw-resolvedrefs", S, "resolvedrefs." + SECONDARY_SUFFIX,
            [(None, [pool_ref("resolvedrefs-pool")])]))
        self.write("failopen.yaml", docs(
            self.failopen_service("failopen-epp"),
            pool("failopen-pool", "secondary-inference-model-server", [pa], "failopen-epp",
                 "FailOpen"),
            pool("failclose-pool", "secondary-inference-model-server", [pa], "failopen-epp",
                 "FailClose"),
            route("httproute-for-failopen-pool-gw", S, "failopen." + SECONDARY_SUFFIX,
                  [(None, [pool_ref("failopen-pool")])]),
            route("httproute-for-failclose-pool-gw", S, "failclose." + SECONDARY_SUFFIX,
                  [(None, [pool_ref("failclose-pool")])])))

    # -- observing --

    def status(self):
        doc = get_json(f"http://127.0.0.1:{self.admin}/debug/status")
        return {o["object"]: o for o in doc["objects"]}

    def post(self, host, path="/v1/completions", body=None, headers=None, port=None,
             method="POST", timeout=30.0):
        if body is None and method == "POST":
            body = completion()
        return request(port or self.g1, host, method, path, body, headers, timeout)

    def sim_counts(self, endpoints):
        return {e: get_json(f"http://{e}/admin")["requests"] for e in endpoints}

    def epp_records(self, name):
        return lwepp.read_log(self.epp_logs[name])

    def epp_record_for(self, name, request_ids, timeout=10.0):
        """The picker's record of each request id (written when its stream ended)."""
        want = set(request_ids)

        def found():
            recs = {r.get("id"): r for r in self.epp_records(name) if r.get("id") in want}
            return len(recs) == len(want) and recs

        return wait_for(f"lwepp {name} to record {len(want)} streams", found, timeout=timeout)


H = None


def setUpModule():
    global H
    h = Harness()
    try:
        h.start()
    except BaseException:
        logs = "\n".join(f"--- {p.name}\n{p.tail()}" for p in getattr(h, "procs", []))
        h.stop()
        if isinstance(sys.exc_info()[1], unittest.SkipTest):
            raise
        print(logs, file=sys.stderr)
        raise
    H = h


def tearDownModule():
    if H is not None:
        H.stop()


class Base(unittest.TestCase):
    maxDiff = None

    def setUp(self):
        H.router.check_alive()

    # -- status --

    def parent(self, obj, gateway):
        for p in obj.get("parents") or []:
            if p["parentRef"] == f"Gateway/{INFRA}/{gateway}":
                return {c["type"]: c for c in p["conditions"]}
        return None

    def assert_condition(self, conds, type_, status, reason=None, what=""):
        self.assertIsNotNone(conds, f"{what}: no parent entry")
        self.assertIn(type_, conds, f"{what}: {conds}")
        self.assertEqual(conds[type_]["status"], status, f"{what}: {conds[type_]}")
        if reason is not None:
            self.assertEqual(conds[type_]["reason"], reason, f"{what}: {conds[type_]}")

    def wait_parent(self, kind, name, gateway, type_, status, reason=None):
        key = f"{kind}/{APP}/{name}"

        def ok():
            conds = self.parent(H.status().get(key, {}), gateway)
            return conds and conds.get(type_, {}).get("status") == status and (
                reason is None or conds[type_]["reason"] == reason) and conds

        try:
            return wait_for(f"{key} {type_}={status} for {gateway}", ok, timeout=10)
        except AssertionError:
            self.fail(f"{key} for {gateway}: {json.dumps(H.status().get(key), indent=1)}")

    # -- traffic --

    def assert_openai_error(self, r, status):
        self.assertEqual(r.status, status, r)
        self.assertEqual(r.headers.get("content-type"), "application/json", r)
        err = r.json()["error"]
        self.assertEqual(set(err), {"message", "type", "param", "code"}, err)
        self.assertTrue(err["message"])
        return err

    def assert_traffic_only_reaches(self, host, selection, expected_endpoints, pool_endpoints,
                                    epp, total=100, concurrency=10, first=None):
        """Conformance's assertTrafficOnlyReachesToExpectedPods, with the engines' own counters
        as the ground truth, the served endpoint the EPP was told, and (first) the protocol's
        "use the first endpoint of the list"."""
        before = H.sim_counts(pool_endpoints)
        ids = [rid("follow") for _ in range(total)]
        resps = run_concurrently(total, concurrency, lambda i: H.post(
            host, body=completion(), headers={SELECTION: selection, "x-request-id": ids[i]}))
        after = H.sim_counts(pool_endpoints)
        bad = [r for r in resps if r.status != 200]
        self.assertEqual(bad, [], f"{len(bad)} of {total} failed")
        served = {r.headers.get(SERVED) for r in resps}
        self.assertLessEqual(served, set(expected_endpoints), f"selection {selection!r}")
        delta = {e: after[e] - before[e] for e in pool_endpoints}
        self.assertEqual(sum(delta.values()), total, delta)
        for e, n in delta.items():
            if e not in expected_endpoints:
                self.assertEqual(n, 0, f"{e} got {n} requests; selection {selection!r}: {delta}")
        if first is not None:
            self.assertEqual(delta[first], total, f"not all on the first endpoint {first}: {delta}")
            self.assertEqual(served, {first})
        recs = H.epp_record_for(epp, ids)
        for i, r in zip(ids, resps):
            rec = recs[i]
            self.assertEqual(rec["served"], r.headers.get(SERVED), rec)
            self.assertEqual(rec["end"], "half-close", rec)
        return delta


# --- the conformance tests, end to end ----------------------------------------------------------

class ConformanceStatusTest(Base):
    """The status-only conformance tests (and what their routes serve)."""

    def test_inference_pool_accepted(self):
        """InferencePoolAccepted: the pool has a parent entry for the Gateway, Accepted=True."""
        conds = self.wait_parent("InferencePool", "primary-inference-pool", PRIMARY_GW,
                                 "Accepted", "True")
        self.assert_condition(conds, "Accepted", "True", "Accepted", "primary pool")
        self.assert_condition(conds, "ResolvedRefs", "True", None, "primary pool")
        route_conds = self.parent(H.status()[f"HTTPRoute/{APP}/httproute-for-primary-gw"],
                                  PRIMARY_GW)
        self.assert_condition(route_conds, "Accepted", "True", "Accepted", "route")
        self.assert_condition(route_conds, "ResolvedRefs", "True", "ResolvedRefs", "route")
        # The secondary pool is Accepted by both Gateways it is routed from.
        for gw in (PRIMARY_GW, SECONDARY_GW):
            self.wait_parent("InferencePool", "secondary-inference-pool", gw, "Accepted", "True")

    def test_inference_pool_resolved_refs_condition(self):
        """InferencePoolResolvedRefsCondition: one pool behind routes on two Gateways is Accepted
        by both; deleting one route keeps the other parent (and its traffic) and 404s the
        deleted route; deleting both empties status.parents and 404s all."""
        key = f"InferencePool/{APP}/resolvedrefs-pool"
        hosts = {PRIMARY_GW: ("resolvedrefs.example.com", H.g1),
                 SECONDARY_GW: ("resolvedrefs." + SECONDARY_SUFFIX, H.g2)}
        for gw in (PRIMARY_GW, SECONDARY_GW):
            c = self.wait_parent("InferencePool", "resolvedrefs-pool", gw, "Accepted", "True")
            self.assert_condition(c, "ResolvedRefs", "True", None, gw)
            host, port = hosts[gw]
            r = H.post(host, port=port, headers={SELECTION: PRIMARY_IPS[1]})
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.headers.get(SERVED), H.primary[1])
        H.remove("resolvedrefs-primary.yaml")
        wait_for("the primary parent to go", lambda: self.parent(
            H.status()[key], PRIMARY_GW) is None)
        self.wait_parent("InferencePool", "resolvedrefs-pool", SECONDARY_GW, "Accepted",
                         "True")
        host, port = hosts[PRIMARY_GW]
        wait_for("the deleted route to 404", lambda: H.post(host, port=port).status == 404)
        host, port = hosts[SECONDARY_GW]
        r = H.post(host, port=port, headers={SELECTION: PRIMARY_IPS[2]})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.headers.get(SERVED), H.primary[2])
        H.remove("resolvedrefs-secondary.yaml")
        wait_for("status.parents to be empty", lambda: not H.status()[key].get("parents"))
        wait_for("the second deleted route to 404",
                 lambda: H.post(host, port=port).status == 404)
        self.assertEqual(H.post(hosts[PRIMARY_GW][0]).status, 404)

    def test_inference_pool_missing_epp_ref(self):
        """InferencePoolMissingEPPRef: the route is Accepted; the pool Accepted=True (or False
        with EndpointPickerRefMissing). Sluice schedules such a pool itself: it serves."""
        route_conds = self.wait_parent("HTTPRoute", "httproute-for-missing-epp-pool", PRIMARY_GW,
                                       "Accepted", "True")
        self.assertIsNotNone(route_conds)
        conds = self.parent(H.status()[f"InferencePool/{APP}/missing-epp-pool"], PRIMARY_GW)
        self.assertIsNotNone(conds, "no parent entry for the Gateway")
        acc = conds["Accepted"]
        self.assertTrue(acc["status"] == "True" or acc["reason"] == "EndpointPickerRefMissing",
                        acc)
        r = H.post("missing-epp.example.com")
        self.assertEqual(r.status, 200, r)
        self.assertIn(r.headers.get("x-sim-engine"), ("sim-0", "sim-1", "sim-2"))
        self.assertNotIn(SERVED, r.headers)  # no picker was asked

    def test_inference_pool_invalid_epp_service(self):
        """InferencePoolInvalidEPPService: endpointPickerRef to a missing Service: the route is
        Accepted, the pool has ResolvedRefs=False, requests get a 5xx."""
        self.wait_parent("HTTPRoute", "httproute-for-invalid-epp-pool", PRIMARY_GW, "Accepted",
                         "True")
        self.wait_parent("InferencePool", "pool-with-invalid-epp", PRIMARY_GW, "ResolvedRefs",
                         "False")
        before = H.sim_counts(H.primary)
        r = H.post("invalid-epp.example.com", path="/invalid-epp-test", method="GET")
        self.assertIn(r.status, OK_5XX, r)
        r = H.post("invalid-epp.example.com")
        self.assertIn(r.status, OK_5XX, r)
        self.assert_openai_error(r, r.status)
        self.assertEqual(H.sim_counts(H.primary), before, "a request reached an engine")

    def test_httproute_invalid_inference_pool_ref(self):
        """HTTPRouteInvalidInferencePoolRef: a backendRef to a missing pool: Accepted=True,
        ResolvedRefs=False/BackendNotFound; its requests get 500 (Gateway API: all refs
        invalid)."""
        conds = self.wait_parent("HTTPRoute", "httproute-to-non-existent-pool", PRIMARY_GW,
                                 "ResolvedRefs", "False")
        self.assert_condition(conds, "Accepted", "True", "Accepted", "route")
        self.assert_condition(conds, "ResolvedRefs", "False", "BackendNotFound", "route")
        r = H.post("invalid-pool-ref.example.com")
        self.assertEqual(r.status, 500, r)


class ConformanceRoutingTest(Base):
    """The traffic conformance tests."""

    def test_port_validation(self):
        """InferencePoolHTTPRoutePortValidation: backendRef port absent, matching, non-matching:
        all 200 (the port is ignored for an InferencePool)."""
        for host in ("port-absent.example.com", "port-matching.example.com",
                     "port-non-matching.example.com"):
            with self.subTest(host=host):
                route_name = {"port-absent": "httproute-port-absent",
                              "port-matching": "httproute-port-matching",
                              "port-non-matching": "httproute-port-non-matching"}[
                    host.split(".")[0]]
                self.wait_parent("HTTPRoute", route_name, PRIMARY_GW, "Accepted", "True")
                r = H.post(host, headers={SELECTION: PRIMARY_IPS[2]})
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.headers.get(SERVED), H.primary[2])

    def test_multiple_rules_different_pools(self):
        """HTTPRouteMultipleRulesDifferentPools: two path rules of one route reach two pools."""
        host = "multiple-rules.example.com"
        for path, body, endpoints, epp in (
                ("/v1/completions", completion(), H.primary, "primary"),
                ("/v1/chat/completions", chat(), H.secondary, "secondary")):
            with self.subTest(path=path):
                seen = set()
                for _ in range(6):
                    r = H.post(host, path=path, body=body)
                    self.assertEqual(r.status, 200, r)
                    self.assertIn(r.headers.get(SERVED), endpoints)
                    self.assertEqual(r.headers.get(lwepp.POOL_RESULT), epp)
                    seen.add(r.headers[SERVED])
                self.assertEqual(seen, set(endpoints), "the EPP's round-robin was not followed")

    def test_multiple_gateways_different_pools(self):
        """HTTPRouteMultipleGatewaysDifferentPools: two Gateways, two routes, two pools."""
        for port, host, ips, endpoints, epp in (
                (H.g1, "mgw.example.com", PRIMARY_IPS, H.primary, "primary"),
                (H.g2, "mgw." + SECONDARY_SUFFIX, SECONDARY_IPS, H.secondary, "secondary")):
            with self.subTest(host=host):
                for ip, ep in zip(ips, endpoints):
                    r = H.post(host, port=port, headers={SELECTION: ip})
                    self.assertEqual(r.status, 200, r)
                    self.assertEqual(r.headers.get(SERVED), ep)
                    self.assertEqual(r.headers.get(lwepp.POOL_RESULT), epp)
        # A host of one Gateway is not served by the other.
        self.assertEqual(H.post("mgw.example.com", port=H.g2).status, 404)
        self.assertEqual(H.post("mgw." + SECONDARY_SUFFIX, port=H.g1).status, 404)

    def test_gateway_following_epp_routing(self):
        """GatewayFollowingEPPRouting: 100 requests, concurrency 10, land only on the endpoint(s)
        the EPP returned: one, two and three endpoints (and on the first of the list)."""
        host = "following.example.com"
        for ip, ep in zip(PRIMARY_IPS, H.primary):  # warm-up, one pod each
            r = H.post(host, headers={SELECTION: ip})
            self.assertEqual((r.status, r.headers.get(SERVED)), (200, ep), r)
        cases = [([PRIMARY_IPS[2]], [H.primary[2]]),
                 (PRIMARY_IPS[:2], H.primary[:2]),
                 (PRIMARY_IPS, H.primary)]
        for ips, expected in cases:
            with self.subTest(endpoints=ips):
                self.assert_traffic_only_reaches(host, ",".join(ips), expected, H.primary,
                                                 "primary", first=expected[0])

    def test_gateway_following_epp_routing_with_data_parallelism(self):
        """GatewayFollowingEPPRoutingWithDataParallelism: targetPorts with three ports on the same
        IPs (one simulator per port): traffic reaches only the chosen IPs and ports."""
        host = "dp.example.com"
        self.wait_parent("InferencePool", "dp-inference-pool", PRIMARY_GW, "Accepted", "True")
        ip0, ip1, ip2 = DP_IPS
        p0, p1, p2 = H.pd
        for ip in DP_IPS:  # single-pod pins: a bare IP is that IP on the first target port
            r = H.post(host, headers={SELECTION: ip})
            self.assertEqual((r.status, r.headers.get(SERVED)), (200, f"{ip}:{p0}"), r)
        cases = [
            (ip1, [f"{ip1}:{p0}"]),
            (f"{ip2}:{p1}", [f"{ip2}:{p1}"]),
            (f"{ip0}:{p2},{ip2}:{p1}", [f"{ip0}:{p2}", f"{ip2}:{p1}"]),
            (f"{ip0},{ip1}:{p0},{ip1}:{p2},{ip2}",
             [f"{ip0}:{p0}", f"{ip1}:{p0}", f"{ip1}:{p2}", f"{ip2}:{p0}"]),
        ]
        for selection, expected in cases:
            with self.subTest(selection=selection):
                self.assert_traffic_only_reaches(host, selection, expected, H.dp, "dp",
                                                 first=expected[0])
        # Round-robin over all nine ranks (no header): each rank gets its share.
        before = H.sim_counts(H.dp)
        resps = run_concurrently(90, 10, lambda i: H.post(host))
        self.assertEqual([r.status for r in resps], [200] * 90)
        after = H.sim_counts(H.dp)
        self.assertEqual({e: after[e] - before[e] for e in H.dp}, {e: 10 for e in H.dp})

    def test_gateway_destination_endpoint_served(self):
        """GatewayDestinationEndpointServed: x-conformance-test-served-endpoint (the EPP's echo of
        envoy.lb/x-gateway-destination-endpoint-served) is podIP:port of the pod that served."""
        host = "following.example.com"
        for i, (ip, ep) in enumerate(zip(PRIMARY_IPS, H.primary)):
            before = H.sim_counts(H.primary)
            req = rid("served")
            r = H.post(host, headers={SELECTION: ip, "x-request-id": req})
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.headers.get(SERVED), ep)
            self.assertEqual(r.headers.get("x-sim-engine"), f"sim-{i}")
            self.assertEqual(r.headers.get(lwepp.WENT_INTO_RESPONSE), "true")
            after = H.sim_counts(H.primary)
            self.assertEqual(after[ep] - before[ep], 1)
            rec = H.epp_record_for("primary", [req])[req]
            self.assertEqual(rec["response_metadata"],
                             {"envoy.lb": {"x-gateway-destination-endpoint-served": ep}})

    def test_gateway_weighted_across_two_inference_pools(self):
        """GatewayWeightedAcrossTwoInferencePools: 70/30 across two pools, 200 requests; each
        lands only in the pool chosen (its own EPP answered; the EPP header lists all six IPs,
        the gateway uses only the chosen pool's)."""
        host = "weighted.example.com"
        for pool_name in ("primary-inference-pool", "secondary-inference-pool"):
            self.wait_parent("InferencePool", pool_name, PRIMARY_GW, "Accepted", "True")
        selection = ",".join(PRIMARY_IPS + SECONDARY_IPS)
        warm = H.post(host, body=completion("Warmup"), headers={SELECTION: selection})
        self.assertEqual(warm.status, 200, warm)
        everything = H.primary + H.secondary
        before = H.sim_counts(everything)
        total = 200
        resps = run_concurrently(total, 5, lambda i: H.post(
            host, body=completion("Write as if you were a critic: San Francisco"),
            headers={SELECTION: selection}))
        after = H.sim_counts(everything)
        self.assertEqual([r.status for r in resps if r.status != 200], [])
        hits = {"primary": 0, "secondary": 0}
        for r in resps:
            served = r.headers.get(SERVED)
            pool_of = "primary" if served in H.primary else (
                "secondary" if served in H.secondary else None)
            self.assertIsNotNone(pool_of, f"served by {served}, in neither pool")
            # The pool's own EPP was asked, and the gateway took the first endpoint of ITS pool.
            self.assertEqual(r.headers.get(lwepp.POOL_RESULT), pool_of, r.headers)
            self.assertEqual(served, H.primary[0] if pool_of == "primary" else H.secondary[0])
            hits[pool_of] += 1
        delta = {e: after[e] - before[e] for e in everything}
        self.assertEqual(sum(delta.values()), total, delta)
        self.assertEqual(delta[H.primary[0]], hits["primary"], delta)
        self.assertEqual(delta[H.secondary[0]], hits["secondary"], delta)
        observed = hits["primary"] / total
        expected = 0.7
        sigma = math.sqrt(expected * (1 - expected) / total)
        tolerance = max(0.10, 4.5 * sigma)
        self.assertLessEqual(abs(observed - expected), tolerance,
                             f"primary share {observed:.3f} (hits {hits}), expected 0.70 "
                             f"± {tolerance:.3f}")

    def test_inference_pool_app_protocol(self):
        """InferencePoolAppProtocol: kubernetes.io/h2c reaches the h2c port over HTTP/2; http and
        an omitted appProtocol reach the HTTP/1.1 port over HTTP/1.1."""
        cases = [("appprotocol-h2c.example.com", "h2c-inference-pool", H.ph2, "2.0"),
                 ("appprotocol-http.example.com", "http-inference-pool", H.ph1, "1.1"),
                 ("appprotocol-default.example.com", "default-protocol-inference-pool", H.ph1,
                  "1.1")]
        for host, pool_name, port, version in cases:
            with self.subTest(pool=pool_name):
                self.wait_parent("InferencePool", pool_name, PRIMARY_GW, "Accepted", "True")
                for ip in H2_IPS:
                    ep = f"{ip}:{port}"
                    before = get_json(f"http://{ip}:{H.ph1}/stats").get(ep, {"count": 0})
                    r = H.post(host, headers={SELECTION: ep})
                    self.assertEqual(r.status, 200, r)
                    self.assertEqual(r.headers.get(SERVED), ep)
                    doc = r.json()
                    self.assertEqual((doc["served_by"], doc["http_version"]), (ep, version))
                    after = get_json(f"http://{ip}:{H.ph1}/stats")[ep]
                    self.assertEqual(after["count"] - before["count"], 1)


class ConformanceFailOpenTest(Base):
    def test_epp_unavailable_fail_open(self):
        """EppUnAvailableFailOpen: phase 1 routes to the selected pod; phase 2 (the EPP Service
        without endpoints, then the EPP process stopped) a FailOpen pool still serves 200 from a
        pool pod, and a FailClose pool on the same EPP answers 503."""
        open_host, close_host = "failopen." + SECONDARY_SUFFIX, "failclose." + SECONDARY_SUFFIX
        for name in ("httproute-for-failopen-pool-gw", "httproute-for-failclose-pool-gw"):
            self.wait_parent("HTTPRoute", name, SECONDARY_GW, "Accepted", "True")
        self.wait_parent("InferencePool", "failopen-pool", SECONDARY_GW, "Accepted", "True")
        target_ip, target = SECONDARY_IPS[0], H.secondary[0]

        def phase1():
            for host in (open_host, close_host):
                r = H.post(host, port=H.g2, headers={SELECTION: target_ip})
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.headers.get(SERVED), target)
                self.assertEqual(r.headers.get("x-sim-engine"), "sim-3")

        def phase2(why):
            before = H.sim_counts(H.secondary)
            n = 10
            for _ in range(n):
                r = H.post(open_host, port=H.g2, headers={SELECTION: target_ip})
                self.assertEqual(r.status, 200, f"{why}: FailOpen: {r}")
                self.assertIn(r.headers.get("x-sim-engine"), ("sim-3", "sim-4", "sim-5"))
                self.assertNotIn(SERVED, r.headers, "an EPP answered")
                r = H.post(close_host, port=H.g2, headers={SELECTION: target_ip})
                err = self.assert_openai_error(r, 503)
                self.assertIn("endpoint picker", err["message"])
            after = H.sim_counts(H.secondary)
            self.assertEqual(sum(after.values()) - sum(before.values()), n,
                             "FailOpen requests must reach the pool's pods, FailClose none")

        with self.subTest(phase="1: the EPP is available"):
            phase1()
        with self.subTest(phase="2a: the EPP Service has no endpoints"):
            H.write("failopen.yaml", H.read("failopen.yaml").replace(
                "selector: {app: failopen-epp}", "selector: {app: nothing-here}"))
            wait_for("the FailClose pool to lose its EPP", lambda: H.post(
                close_host, port=H.g2).status == 503)
            phase2("no endpoints")
            H.write("failopen.yaml", H.read("failopen.yaml").replace(
                "selector: {app: nothing-here}", "selector: {app: failopen-epp}"))
            wait_for("the EPP Service to be back", lambda: H.post(
                close_host, port=H.g2, headers={SELECTION: target_ip}).status == 200)
            phase1()
        with self.subTest(phase="2b: the EPP process is stopped"):
            H.epps["failopen"].stop()
            phase2("stopped")
        with self.subTest(phase="3: the EPP is back (same address): the gateway reconnects"):
            H.restart_epp("failopen")
            wait_for("the FailClose pool to be served through the EPP again", lambda: H.post(
                close_host, port=H.g2, headers={SELECTION: target_ip}).status == 200)
            for _ in range(5):
                phase1()


class GatewayProtocolTest(Base):
    """The gateway side of the protocol beyond what the conformance tests reach."""

    host = "following.example.com"

    def test_request_phase_as_sent(self):
        """request_headers (pseudo-headers and the client's headers, lower-case) with
        protocol_config {FULL_DUPLEX_STREAMED, NONE}, the body in request_body chunks (the last
        end_of_stream), then response_headers with the served endpoint, then a half-close."""
        req = rid("phase")
        body = json.dumps(completion("phase " * 20)).encode()
        r = H.post(self.host, body=body, headers={SELECTION: PRIMARY_IPS[1], "x-request-id": req,
                                                  "X-Mixed-Case": "Value"})
        self.assertEqual(r.status, 200, r)
        rec = H.epp_record_for("primary", [req])[req]
        self.assertEqual(rec["protocol_config"], {"request_body_mode": 4, "response_body_mode": 0})
        h = rec["request_headers"]
        self.assertEqual(h[":method"], "POST")
        self.assertEqual(h[":path"], "/v1/completions")
        self.assertEqual(h[":authority"], self.host)
        self.assertEqual(h[":scheme"], "http")
        self.assertEqual(h["x-mixed-case"], "Value")
        self.assertEqual(h[SELECTION], PRIMARY_IPS[1])
        self.assertEqual(h["content-type"], "application/json")
        self.assertEqual(h.get("content-length"), str(len(body)))
        self.assertFalse(rec["request_headers_eos"])
        self.assertEqual(rec["body"], body.decode())
        self.assertEqual(sum(rec["body_chunks"]), len(body))
        self.assertEqual(rec["body_eos"][-1], True)
        self.assertEqual(rec["messages"], ["request_headers"] + ["request_body"] * len(
            rec["body_chunks"]) + ["response_headers"])
        self.assertEqual(rec["response_headers"][":status"], "200")
        self.assertEqual(rec["response_headers"].get("x-sim-engine"), "sim-1")
        self.assertEqual(rec["served"], H.primary[1])
        self.assertEqual(rec["end"], "half-close")

    def test_request_without_body(self):
        """A request without a body: request_headers with end_of_stream, the EPP's header answer
        is followed (no body phase)."""
        req = rid("nobody")
        r = H.post(self.host, path="/health", method="GET",
                   headers={SELECTION: PRIMARY_IPS[2], "x-request-id": req})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.headers.get(SERVED), H.primary[2])
        self.assertEqual(r.headers.get("x-sim-engine"), "sim-2")
        rec = H.epp_record_for("primary", [req])[req]
        self.assertTrue(rec["request_headers_eos"], rec)
        self.assertEqual(rec["request_headers"][":method"], "GET")
        self.assertEqual(rec["messages"], ["request_headers", "response_headers"])
        self.assertEqual(rec["end"], "half-close")

    def test_large_body_in_chunks(self):
        """A 300 KB body goes to the EPP in several request_body chunks and comes back (echoed
        chunk by chunk) to the engine intact."""
        req = rid("big")
        prompt = "".join(f"w{i} " for i in range(60000))[:300 * 1024]
        body = json.dumps(completion(prompt)).encode()
        r = H.post(self.host, body=body, headers={SELECTION: PRIMARY_IPS[0], "x-request-id": req},
                   timeout=60)
        self.assertEqual(r.status, 200, r)
        self.assertGreater(r.json()["usage"]["prompt_tokens"], 50000)
        rec = H.epp_record_for("primary", [req])[req]
        self.assertGreater(len(rec["body_chunks"]), 1)
        self.assertEqual(sum(rec["body_chunks"]), len(body))
        self.assertEqual(rec["body_eos"], [False] * (len(rec["body_eos"]) - 1) + [True])
        self.assertEqual(rec["served"], H.primary[0])

    def test_body_answered_without_mutation(self):
        """An EPP that answers the request_body message with an empty BodyResponse (pkg/lwepp's
        way, with the conformance suite's one-chunk bodies: no body mutation, the body goes
        unchanged) is followed, response phase included."""
        req = rid("continue")
        body = json.dumps(completion("the conformance suite's body")).encode()
        r = H.post(self.host, body=body, headers={
            SELECTION: PRIMARY_IPS[1], "x-request-id": req, lwepp.BODY_ANSWER: "continue"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.headers.get("x-sim-engine"), "sim-1")
        self.assertEqual(r.headers.get(SERVED), H.primary[1], r.headers)
        rec = H.epp_record_for("primary", [req])[req]
        self.assertEqual(len(rec["body_chunks"]), 1)
        self.assertEqual(rec["served"], H.primary[1])
        self.assertEqual(rec["end"], "half-close")

    def test_streaming_response(self):
        """A streamed (SSE) response: the response phase happens at its head, the served endpoint
        header reaches the client, the stream ends with a half-close."""
        req = rid("sse")
        r = H.post(self.host, body=completion(stream=True, max_tokens=4),
                   headers={SELECTION: PRIMARY_IPS[2], "x-request-id": req})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.headers.get("content-type"), "text/event-stream")
        self.assertEqual(r.headers.get(SERVED), H.primary[2])
        self.assertIn(b"data: [DONE]", r.body)
        rec = H.epp_record_for("primary", [req])[req]
        self.assertEqual(rec["response_headers"].get("content-type"), "text/event-stream")
        self.assertEqual(rec["end"], "half-close")

    def test_response_phase_at_the_head_half_close_at_the_end(self):
        """The response phase is sent when the response head arrives, and the stream is
        half-closed only when the response has ended (a stream that pauses a second midway)."""
        good = H.retry[0]
        post_json(f"http://{good}/admin", {"stall_rate": 1, "stall_ms": 50000})  # 1 s real
        try:
            req = rid("slow")
            conn = http.client.HTTPConnection("127.0.0.1", H.g1, timeout=30)
            body = json.dumps(completion(stream=True, max_tokens=8)).encode()
            conn.request("POST", "/v1/completions", body=body, headers={
                "Host": "retry.example.com", "Content-Type": "application/json",
                SELECTION: RETRY_IPS[0], "x-request-id": req})
            resp = conn.getresponse()
            t_head = time.time()
            data = resp.read()
            t_end = time.time()
            conn.close()
        finally:
            post_json(f"http://{good}/admin", {"stall_rate": 0})
        self.assertEqual(resp.status, 200, data)
        self.assertIn(b"data: [DONE]", data)
        self.assertGreater(t_end - t_head, 0.5, "the stream did not pause")
        self.assertEqual(resp.getheader(SERVED), good)
        rec = H.epp_record_for("retry", [req])[req]
        self.assertEqual(rec["end"], "half-close")
        self.assertLess(rec["t_response_headers"], t_head + 0.2, "response phase not at the head")
        self.assertGreater(rec["t_half_close"], t_end - 0.2,
                           f"half-closed {t_end - rec['t_half_close']:.3f}s before the response "
                           f"ended (the head came {t_end - t_head:.3f}s before the end)")

    def test_picker_timeout(self):
        """A picker slower than timeouts.endpoint_picker: FailClose answers 503 at the deadline,
        FailOpen serves from the pool."""
        delay = {lwepp.DELAY_MS: str(PICKER_TIMEOUT_MS + 2500)}
        t0 = time.monotonic()
        r = H.post(self.host, headers=delay)
        took = time.monotonic() - t0
        err = self.assert_openai_error(r, 503)
        self.assertIn("endpoint picker", err["message"])
        self.assertGreater(took, PICKER_TIMEOUT_MS / 1000 * 0.8)
        self.assertLess(took, PICKER_TIMEOUT_MS / 1000 + 2.0)
        r = H.post("mgw." + SECONDARY_SUFFIX, port=H.g2, headers=delay)
        self.assertEqual(r.status, 200, r)
        self.assertIn(r.headers.get("x-sim-engine"), ("sim-3", "sim-4", "sim-5"))

    def test_immediate_response(self):
        """An ImmediateResponse (429, JSON body, headers) is the client's answer; nothing goes
        upstream."""
        before = H.sim_counts(H.primary)
        r = H.post(self.host, headers={lwepp.IMMEDIATE: "429", SELECTION: PRIMARY_IPS[0]})
        self.assertEqual(r.status, 429, r)
        self.assertEqual(r.headers.get("content-type"), "application/json")
        self.assertEqual(r.json(), {"error": {"message": "the test EPP answered 429",
                                              "type": "rate_limit_error", "param": None,
                                              "code": "429"}})
        self.assertEqual(r.headers.get("retry-after"), "7")
        self.assertEqual(r.headers.get("x-test-epp"), "immediate")
        self.assertEqual(H.sim_counts(H.primary), before)
        # Other statuses, and on a FailOpen pool (an answer is not a failure).
        r = H.post(self.host, headers={lwepp.IMMEDIATE: "503"})
        self.assert_openai_error(r, 503)
        r = H.post("mgw." + SECONDARY_SUFFIX, port=H.g2, headers={lwepp.IMMEDIATE: "429"})
        self.assertEqual(r.status, 429, r)
        self.assertEqual(r.headers.get("retry-after"), "7")

    def test_destination_in_metadata_or_header_only(self):
        """x-gateway-destination-endpoint is taken from dynamic_metadata["envoy.lb"] when the
        header mutation does not carry it, and from the header alone."""
        for where in ("metadata", "header"):
            with self.subTest(where=where):
                before = H.sim_counts(H.primary)
                r = H.post(self.host, headers={SELECTION: PRIMARY_IPS[2],
                                               lwepp.DESTINATION_IN: where})
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.headers.get(SERVED), H.primary[2])
                after = H.sim_counts(H.primary)
                self.assertEqual(after[H.primary[2]] - before[H.primary[2]], 1)

    def test_only_pool_endpoints_are_used(self):
        """Destinations that are not endpoints of the pool are skipped; a list with none of them
        is a 5xx and nothing goes upstream."""
        foreign = [f"127.0.0.99:{H.pa}", f"{PRIMARY_IPS[0]}:1", H.secondary[0]]
        r = H.post(self.host, headers={SELECTION: ",".join(foreign + [H.primary[1]])})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.headers.get(SERVED), H.primary[1])
        before = H.sim_counts(H.primary + H.secondary)
        r = H.post(self.host, headers={SELECTION: ",".join(foreign)})
        self.assertIn(r.status, OK_5XX, r)
        self.assert_openai_error(r, r.status)
        self.assertEqual(H.sim_counts(H.primary + H.secondary), before)

    def test_retries_walk_the_epp_list(self):
        """On a connect failure or a 5xx the next destination of the EPP's list serves, and the
        served endpoint reported to the EPP (and echoed to the client) is the one that served."""
        host = "retry.example.com"
        dead, good, bad = H.retry_dead, H.retry[0], H.retry[1]
        cases = [("connection refused", [dead, good], None),
                 ("503", [bad, good], 503),
                 ("500", [bad, good], 500),
                 ("refused, then 503", [dead, bad, good], 503)]
        try:
            for what, order, status in cases:
                with self.subTest(case=what):
                    post_json(f"http://{bad}/admin", {"error_rate": 1 if status else 0,
                                                      "error_status": status or 503})
                    before = H.sim_counts(H.retry)
                    req = rid("retry")
                    r = H.post(host, headers={SELECTION: ",".join(order), "x-request-id": req})
                    self.assertEqual(r.status, 200, r)
                    self.assertEqual(r.headers.get("x-sim-engine"), "sim-0")
                    self.assertEqual(r.headers.get(SERVED), good)
                    after = H.sim_counts(H.retry)
                    self.assertEqual(after[good] - before[good], 1)
                    self.assertEqual(after[bad] - before[bad], 1 if bad in order else 0)
                    rec = H.epp_record_for("retry", [req])[req]
                    self.assertEqual(rec["destination"], ",".join(order))
                    self.assertEqual(rec["served"], good)
                    self.assertEqual(rec["end"], "half-close")
        finally:
            post_json(f"http://{bad}/admin", {"error_rate": 0})
        # When every destination fails, the last failure is the client's answer.
        post_json(f"http://{bad}/admin", {"error_rate": 1, "error_status": 503})
        try:
            r = H.post(host, headers={SELECTION: f"{dead},{bad}"})
            self.assertIn(r.status, OK_5XX, r)
        finally:
            post_json(f"http://{bad}/admin", {"error_rate": 0})

    def test_header_mutations(self):
        """The EPP's request header mutations reach the engine (set, remove) and its response
        header mutations the client (set, remove)."""
        ep = f"{H2_IPS[0]}:{H.ph1}"
        r = H.post("appprotocol-http.example.com", headers={
            SELECTION: ep, "x-remove-me": "1", "x-keep-me": "1",
            lwepp.SET_REQUEST_HEADER: "x-epp-set=yes,x-keep-me=overwritten",
            lwepp.REMOVE_REQUEST_HEADER: "x-remove-me",
            lwepp.REMOVE_RESPONSE_HEADER: "x-http-version"})
        self.assertEqual(r.status, 200, r)
        got = r.json()["request_headers"]
        self.assertEqual(got.get("x-epp-set"), "yes", got)
        self.assertEqual(got.get("x-keep-me"), "overwritten", got)
        self.assertNotIn("x-remove-me", got)
        self.assertNotIn("x-http-version", r.headers)
        self.assertEqual(r.headers.get("x-served-by"), ep)
        self.assertEqual(r.headers.get(SERVED), ep)

    def test_request_header_append_actions(self):
        """Request header mutations honour HeaderValueOption.append_action."""
        ep = f"{H2_IPS[1]}:{H.ph1}"
        r = H.post("appprotocol-http.example.com", headers={
            SELECTION: ep, "x-exists": "client", "x-over": "client",
            lwepp.SET_REQUEST_HEADER: "x-exists=epp@ADD_IF_ABSENT,x-absent=epp@OVERWRITE_IF_EXISTS,"
                                      "x-new=epp@ADD_IF_ABSENT,x-over=epp@OVERWRITE_IF_EXISTS"})
        self.assertEqual(r.status, 200, r)
        got = r.json()["request_headers"]
        self.assertEqual(got.get("x-exists"), "client", "ADD_IF_ABSENT replaced a header")
        self.assertNotIn("x-absent", got, "OVERWRITE_IF_EXISTS added a header")
        self.assertEqual(got.get("x-new"), "epp", "ADD_IF_ABSENT did not add")
        self.assertEqual(got.get("x-over"), "epp", "OVERWRITE_IF_EXISTS did not overwrite")

    def test_response_header_append_actions(self):
        """Response header mutations (the response phase's answer) honour
        HeaderValueOption.append_action as the request's do."""
        ep = f"{H2_IPS[2]}:{H.ph1}"
        r = H.post("appprotocol-http.example.com", headers={
            SELECTION: ep, lwepp.SET_RESPONSE_HEADER:
                "x-served-by=epp@ADD_IF_ABSENT,x-not-there=epp@OVERWRITE_IF_EXISTS,"
                "x-http-version=epp@OVERWRITE_IF_EXISTS,x-added=epp@ADD_IF_ABSENT"})
        self.assertEqual(r.status, 200, r)
        problems = []
        if r.headers.get("x-served-by") != ep:
            problems.append(f"ADD_IF_ABSENT on the engine's x-served-by: {ep!r} became "
                            f"{r.headers.get('x-served-by')!r}")
        if "x-not-there" in r.headers:
            problems.append("OVERWRITE_IF_EXISTS of an absent x-not-there added it: "
                            f"{r.headers['x-not-there']!r}")
        if r.headers.get("x-http-version") != "epp":
            problems.append("OVERWRITE_IF_EXISTS of the engine's x-http-version: "
                            f"{r.headers.get('x-http-version')!r}")
        if r.headers.get("x-added") != "epp":
            problems.append(f"ADD_IF_ABSENT of an absent x-added: {r.headers.get('x-added')!r}")
        self.assertEqual(problems, [], f"response head: {r.headers}")

    def test_body_round_trip_intact(self):
        """A 1.5 MB body through the EPP (deferred answer, and full duplex with each chunk echoed at
        once, before the body has all arrived) reaches the engine byte for byte."""
        import hashlib
        ep = f"{H2_IPS[0]}:{H.ph1}"
        prompt = "".join(f"token{i} " for i in range(200000))[:1536 * 1024]
        body = json.dumps(completion(prompt)).encode()
        digest = hashlib.sha256(body).hexdigest()
        for mode in ("deferred", "early"):
            with self.subTest(mode=mode):
                req = rid("intact")
                r = H.post("appprotocol-http.example.com", body=body, timeout=60, headers={
                    SELECTION: ep, lwepp.HEADERS_ANSWER: mode, "x-request-id": req})
                self.assertEqual(r.status, 200, r)
                doc = r.json()
                self.assertEqual((doc["request_bytes"], doc["request_sha256"]),
                                 (len(body), digest))
                self.assertEqual(r.headers.get(SERVED), ep)
                rec = H.epp_record_for("h2", [req])[req]
                self.assertEqual(sum(rec["body_chunks"]), len(body))
                self.assertEqual(rec["end"], "half-close")

    def test_client_gone_ends_the_epp_stream(self):
        """A client that leaves mid-response: the gateway ends its ext_proc stream too (the
        picker's load is not left behind)."""
        good = H.retry[0]
        post_json(f"http://{good}/admin", {"stall_rate": 1, "stall_ms": 150000})  # 3 s real
        try:
            req = rid("gone")
            sock = socket.create_connection(("127.0.0.1", H.g1), timeout=10)
            body = json.dumps(completion(stream=True, max_tokens=8)).encode()
            sock.sendall(
                b"POST /v1/completions HTTP/1.1\r\nHost: retry.example.com\r\n"
                b"Content-Type: application/json\r\n" +
                f"{SELECTION}: {RETRY_IPS[0]}\r\nx-request-id: {req}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            head = sock.recv(4096)
            self.assertTrue(head.startswith(b"HTTP/1.1 200"), head)
            t_gone = time.time()
            sock.close()
            rec = H.epp_record_for("retry", [req], timeout=10)[req]
        finally:
            post_json(f"http://{good}/admin", {"stall_rate": 0})
        self.assertIn(rec["end"], ("cancelled", "half-close"), rec)
        self.assertEqual(rec["served"], good)
        self.assertLess(rec["t1"] - t_gone, 5.0, "the stream outlived the client by far")

    def test_body_mutation_is_what_goes_upstream(self):
        """The body the EPP streams back is what the engine gets (its model rewrite), and the
        client's model name is written back into the response."""
        req = rid("rewrite")
        r = H.post(self.host, body=completion(model="client-model-name"), headers={
            SELECTION: PRIMARY_IPS[0], lwepp.MODEL_REWRITE: MODEL, "x-request-id": req})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["model"], "client-model-name")
        # Byte for byte: the engine (h2c here) gets the EPP's body, not the client's.
        import hashlib
        ep = f"{H2_IPS[1]}:{H.ph2}"
        sent = json.dumps(completion("rewrite me", model="alias")).encode()
        doc = json.loads(sent)
        doc["model"] = "engine-model"
        expected = json.dumps(doc).encode()
        r = H.post("appprotocol-h2c.example.com", body=sent, headers={
            SELECTION: ep, lwepp.MODEL_REWRITE: "engine-model"})
        self.assertEqual(r.status, 200, r)
        got = r.json()
        self.assertEqual((got["request_bytes"], got["request_sha256"]),
                         (len(expected), hashlib.sha256(expected).hexdigest()))
        self.assertEqual(got["request_headers"].get("content-length"), str(len(expected)))
        self.assertEqual(got["model"], "alias")  # the engine said "engine-model"

    def test_epp_names_no_destination_or_answers_out_of_order(self):
        """An answer without a destination (neither header nor metadata), or one out of order:
        FailClose answers 503, FailOpen picks a pool endpoint itself."""
        for hdrs in ({lwepp.DESTINATION_IN: "none"}, {lwepp.MISBEHAVE: "response-first"}):
            with self.subTest(epp=hdrs):
                before = H.sim_counts(H.primary)
                r = H.post(self.host, headers=hdrs)
                err = self.assert_openai_error(r, 503)
                self.assertIn("endpoint picker", err["message"])
                self.assertEqual(H.sim_counts(H.primary), before)
                r = H.post("mgw." + SECONDARY_SUFFIX, port=H.g2, headers=hdrs)
                self.assertEqual(r.status, 200, r)
                self.assertIn(r.headers.get("x-sim-engine"), ("sim-3", "sim-4", "sim-5"))

    def test_chunked_request_body(self):
        """A chunked request body (no Content-Length from the client) goes to the EPP whole and
        from it to the engine intact."""
        import hashlib
        ep = f"{H2_IPS[2]}:{H.ph1}"
        body = json.dumps(completion("chunked " * 5000)).encode()
        pieces = [body[i:i + 7000] for i in range(0, len(body), 7000)]
        req = rid("chunked")
        conn = http.client.HTTPConnection("127.0.0.1", H.g1, timeout=30)
        try:
            conn.request("POST", "/v1/completions", body=iter(pieces), encode_chunked=True,
                         headers={"Host": "appprotocol-http.example.com",
                                  "Content-Type": "application/json", SELECTION: ep,
                                  "x-request-id": req})
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        self.assertEqual(resp.status, 200, data)
        doc = json.loads(data)
        self.assertEqual((doc["request_bytes"], doc["request_sha256"]),
                         (len(body), hashlib.sha256(body).hexdigest()))
        rec = H.epp_record_for("h2", [req])[req]
        self.assertEqual(sum(rec["body_chunks"]), len(body))
        self.assertFalse(rec["request_headers_eos"])

    def test_keep_alive_requests_each_their_stream(self):
        """Requests on one client connection: each is its own ext_proc stream and follows its own
        answer."""
        conn = http.client.HTTPConnection("127.0.0.1", H.g1, timeout=30)
        ids = []
        try:
            for i in range(6):
                ip = PRIMARY_IPS[i % 3]
                ids.append(rid("keepalive"))
                conn.request("POST", "/v1/completions", body=json.dumps(completion()).encode(),
                             headers={"Host": self.host, "Content-Type": "application/json",
                                      SELECTION: ip, "x-request-id": ids[-1]})
                resp = conn.getresponse()
                resp.read()
                self.assertEqual(resp.status, 200)
                self.assertEqual(resp.getheader(SERVED), H.primary[i % 3])
        finally:
            conn.close()
        recs = H.epp_record_for("primary", ids)
        self.assertEqual(len({recs[i]["stream"] for i in ids}), 6)
        for i in ids:
            self.assertEqual(recs[i]["end"], "half-close")

    def test_epp_stream_failure(self):
        """The EPP ends the stream with an error: FailClose answers 503 (OpenAI-shaped), FailOpen
        picks a pool endpoint itself."""
        r = H.post(self.host, headers={lwepp.FAIL: "unavailable"})
        err = self.assert_openai_error(r, 503)
        self.assertIn("endpoint picker", err["message"])
        r = H.post("mgw." + SECONDARY_SUFFIX, port=H.g2, headers={lwepp.FAIL: "internal"})
        self.assertEqual(r.status, 200, r)
        self.assertIn(r.headers.get("x-sim-engine"), ("sim-3", "sim-4", "sim-5"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
