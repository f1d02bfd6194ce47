"""A real `sluice serve` on a manifest directory (a Gateway, an InferencePool with its HTTPRoute,
one Pod) in front of one real sluice-sim engine, after streamed requests through it: what the
metric checks (grafana_test.py, promtool_test.py) scrape."""

import json
import os
import tempfile
import urllib.error
import urllib.request

from manifest_docs import gateway, pod, pool_and_route
from processes import Proc, free_port, read_json, wait_for


def serving_router_metrics(bin_dir, config_text="", requests=3):
    """The router's /metrics text after `requests` streamed chat completions, one request for
    an unknown model (404) and one malformed body (400). `config_text` is the router file."""
    with tempfile.TemporaryDirectory() as d:
        sim_port = free_port(("127.0.0.11",))
        sim = Proc("sim", [os.path.join(bin_dir, "sluice-sim"), "--address", "127.0.0.11",
                           "--port", str(sim_port), "--model", "llama", "--time-scale", "50",
                           "--ready-file", os.path.join(d, "sim.ready")], d)
        gw = free_port()
        m = os.path.join(d, "m")
        os.mkdir(m)
        with open(os.path.join(m, "all.yaml"), "w") as f:
            f.write(gateway("gw", gw) + "---\n" + pool_and_route(["gw"], sim_port)
                    + "---\n" + pod("p0", "127.0.0.11"))
        config = os.path.join(d, "sluice.yaml")
        with open(config, "w") as f:
            f.write(config_text or "access_log: {path: off}\n")
        ready = os.path.join(d, "router.ready")
        router = Proc("router", [os.path.join(bin_dir, "sluice"), "serve", "--config", config,
                                 "--manifests", m, "--listen", "127.0.0.1:0", "--admin",
                                 "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--ready-file",
                                 ready], d)
        try:
            wait_for("sim", lambda: os.path.exists(os.path.join(d, "sim.ready")))
            wait_for("router", lambda: (router.check_alive(), os.path.exists(ready))[1])
            ports = read_json(ready)

            def post(body):
                req = urllib.request.Request(f"http://127.0.0.1:{gw}/v1/chat/completions",
                                             body, {"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(req, timeout=10) as r:
                        return r.status, r.read()
                except urllib.error.HTTPError as e:
                    return e.code, e.read()

            stream = json.dumps({"model": "llama", "stream": True, "max_tokens": 4,
                                 "messages": [{"role": "user", "content": "hello"}]}).encode()
            for _ in range(requests):
                wait_for("a streamed request",
                         lambda: (lambda r: r[0] == 200 and b"[DONE]" in r[1])(post(stream)))
            post(json.dumps({"model": "nope", "messages": []}).encode())
            post(b'{"model": "llama", "messages": [')
            url = f"http://127.0.0.1:{ports['metrics']}/metrics"
            return urllib.request.urlopen(url, timeout=5).read().decode()
        finally:
            router.stop()
            sim.stop()


def promtool_check(text):
    """`promtool check metrics` (Debian's prometheus package) on an exposition: its exit
    status and what it printed (problems, one a line; nothing when the text is clean)."""
    import subprocess
    r = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                       capture_output=True, timeout=30)
    return r.returncode, (r.stdout + r.stderr).decode()
