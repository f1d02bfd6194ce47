#!/usr/bin/python3
"""The router's Prometheus exposition passes `promtool check metrics` (Debian's prometheus
package): every family Sluice, the Inference Extension and Kthena name, after real traffic
(streamed requests, a 404, a 400) through an InferencePool, with tracing on. The endpoint
picker's exposition (`sluice epp`) is checked the same way in epp_test.py.

Run with:  /usr/bin/python3 test/e2e/promtool_test.py
"""

import os
import re
import shutil
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from serving_router import promtool_check, serving_router_metrics  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))
BIN_DIR = os.environ.get("SLUICE_BIN_DIR") or os.path.join(REPO, "build", "bin")


class PromtoolTest(unittest.TestCase):
    def setUp(self):
        self.assertIsNotNone(shutil.which("promtool"),
                             "promtool is missing: scripts/install-deps.sh installs prometheus")

    def test_promtool_finds_problems_when_there_are_some(self):
        # The check can fail: a counter without _total and a family declared twice.
        rc, out = promtool_check("# HELP x_requests Requests.\n# TYPE x_requests counter\n"
                                 "x_requests 1\n# HELP x_requests Again.\n")
        self.assertNotEqual(rc, 0)
        self.assertTrue(out.strip())

    def test_the_serving_routers_metrics_pass(self):
        text = serving_router_metrics(
            BIN_DIR, "access_log: {path: off}\n"
                     "tracing: {endpoint: \"http://127.0.0.1:9\", sampling: 1.0}\n")
        families = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
        for needed in ("sluice_requests_total", "inference_objective_request_total",
                       "inference_pool_ready_pods", "kthena_router_requests_total",
                       "sluice_trace_spans_exported_total", "process_cpu_seconds_total",
                       "sluice_build_info"):
            self.assertIn(needed, families)
        rc, out = promtool_check(text)
        self.assertEqual((rc, out), (0, ""))


if __name__ == "__main__":
    unittest.main(verbosity=2)
