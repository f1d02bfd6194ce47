#!/usr/bin/python3
"""deploy/grafana/sluice-dashboard.json against the real router: the dashboard is valid
Grafana JSON (unique panel ids, a datasource variable, a query per panel) and every metric
its queries read is one that `sluice serve` exports, checked on the /metrics of a router
serving an InferencePool (manifests) after real requests through it.

Run with:  /usr/bin/python3 test/e2e/grafana_test.py
"""

import json
import os
import re
import sys
import tempfile
import unittest
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from manifest_docs import gateway, pod, pool_and_route  # noqa: E402
from processes import Proc, free_port, read_json, wait_for  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))
BIN_DIR = os.environ.get("SLUICE_BIN_DIR") or os.path.join(REPO, "build", "bin")
DASHBOARD = os.path.join(REPO, "deploy", "grafana", "sluice-dashboard.json")
PREFIXES = ("sluice_", "inference_", "kthena_", "process_")


def metric_names(expr):
    """The metric names a PromQL expression reads: the identifiers of the router's families
    (label names and PromQL functions have none of their prefixes)."""
    expr = re.sub(r'"[^"]*"', '""', expr)  # not inside label values
    return {n for n in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr) if n.startswith(PREFIXES)}


def family(name):
    return re.sub(r"_(bucket|sum|count)$", "", name)


class GrafanaDashboardTest(unittest.TestCase):
    def test_the_dashboard_reads_only_exported_metrics(self):
        with open(DASHBOARD) as f:
            dash = json.load(f)
        ids = [p["id"] for p in dash["panels"]]
        self.assertEqual(len(ids), len(set(ids)))
        self.assertIn("datasource", [v["name"] for v in dash["templating"]["list"]])
        exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
        self.assertTrue(all(p["targets"] for p in dash["panels"]))
        exprs += [v["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
        wanted = set()
        for e in exprs:
            self.assertEqual(e.count("("), e.count(")"), e)
            wanted |= {family(n) for n in metric_names(e)}
        for needed in ("sluice_time_to_first_token_seconds", "sluice_inter_token_latency_seconds",
                       "sluice_tokens_total", "sluice_endpoint_picks_total",
                       "sluice_flow_control_queued", "sluice_prefix_match_ratio"):
            self.assertIn(needed, wanted)
        exported = self.router_families()
        self.assertEqual(sorted(wanted - exported), [])

    def router_families(self):
        for b in ("sluice", "sluice-sim"):
            if not os.path.exists(os.path.join(BIN_DIR, b)):
                self.skipTest(f"{b} is not built")
        with tempfile.TemporaryDirectory() as d:
            sim_port = free_port(("127.0.0.11",))
            sim = Proc("sim", [os.path.join(BIN_DIR, "sluice-sim"), "--address", "127.0.0.11",
                               "--port", str(sim_port), "--model", "llama", "--time-scale", "50",
                               "--ready-file", os.path.join(d, "sim.ready")], d)
            gw = free_port()
            m = os.path.join(d, "m")
            os.mkdir(m)
            with open(os.path.join(m, "all.yaml"), "w") as f:
                f.write(gateway("gw", gw) + "---\n" + pool_and_route(["gw"], sim_port)
                        + "---\n" + pod("p0", "127.0.0.11"))
            ready = os.path.join(d, "router.ready")
            router = Proc("router", [os.path.join(BIN_DIR, "sluice"), "serve", "--manifests", m,
                                     "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
                                     "--metrics", "127.0.0.1:0", "--ready-file", ready], d)
            try:
                wait_for("sim", lambda: os.path.exists(os.path.join(d, "sim.ready")))
                wait_for("router", lambda: (router.check_alive(), os.path.exists(ready))[1])
                ports = read_json(ready)
                body = json.dumps({"model": "llama", "stream": True, "max_tokens": 4,
                                   "messages": [{"role": "user", "content": "hello"}]}).encode()

                def served():
                    req = urllib.request.Request(f"http://127.0.0.1:{gw}/v1/chat/completions",
                                                 body, {"Content-Type": "application/json"})
                    with urllib.request.urlopen(req, timeout=10) as r:
                        return r.status == 200 and b"[DONE]" in r.read()
                for _ in range(3):
                    wait_for("a streamed request", served)
                url = f"http://127.0.0.1:{ports['metrics']}/metrics"
                text = urllib.request.urlopen(url, timeout=5).read().decode()
                return set(re.findall(r"^# TYPE (\S+) ", text, re.M))
            finally:
                router.stop()
                sim.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
