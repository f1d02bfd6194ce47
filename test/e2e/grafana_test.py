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
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from serving_router import serving_router_metrics  # noqa: E402

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
        text = serving_router_metrics(BIN_DIR)
        return set(re.findall(r"^# TYPE (\S+) ", text, re.M))

if __name__ == "__main__":
    unittest.main(verbosity=2)
