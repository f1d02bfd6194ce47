#!/usr/bin/python3
"""The operator's first contact with Sluice, end to end on the real binaries: help, validate
(config and manifests, text and JSON), listeners that cannot bind, and what the log says at
startup, at a reload and when an engine goes away and comes back.

Run with:  /usr/bin/python3 test/e2e/cli_test.py
"""

import json
import os
import socket
import subprocess
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
SLUICE = os.path.join(BIN_DIR, "sluice")
SIM = os.path.join(BIN_DIR, "sluice-sim")


def sluice(*args, timeout=30):
    return subprocess.run([SLUICE, *args], capture_output=True, text=True, timeout=timeout)


def get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.status, r.read().decode()


def write(directory, name, text):
    with open(os.path.join(directory, name), "w") as f:
        f.write(text)


def status_of(admin_port, key):
    _, body = get(admin_port, "/debug/status")
    for o in json.loads(body)["objects"]:
        if o["object"] == key:
            return o
    return None


def condition(conds, type_):
    return next((c for c in conds if c["type"] == type_), None)


class Base(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        for b in (SLUICE, SIM):
            if not os.path.exists(b):
                raise unittest.SkipTest(f"{b} is not built")

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name
        self.procs = []

    def tearDown(self):
        for p in reversed(self.procs):
            p.stop()
        self.tmp.cleanup()

    def start(self, name, argv):
        p = Proc(name, argv, self.dir)
        self.procs.append(p)
        return p

    def serve(self, *args, name="router"):
        ready = os.path.join(self.dir, name + ".ready")
        p = self.start(name, [SLUICE, "serve", "--listen", "127.0.0.1:0", "--admin",
                              "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--workers", "1",
                              "--ready-file", ready, *args])
        wait_for(f"{name} ready", lambda: (p.check_alive(), os.path.exists(ready))[1])
        return p, read_json(ready)

    def sim(self, port, name="sim"):
        ready = os.path.join(self.dir, name + ".ready")
        if os.path.exists(ready):
            os.remove(ready)
        p = self.start(name, [SIM, "--replicas", "1", "--address", "127.0.0.11", "--port",
                              str(port), "--model", "sim-llama", "--time-scale", "50",
                              "--ready-file", ready])
        wait_for("sim ready", lambda: os.path.exists(ready) and os.path.getsize(ready) > 0)
        return p


class HelpTest(Base):
    def test_every_command_has_help(self):
        for args in (["--help"], ["-h"], ["help"], ["serve", "--help"], ["serve", "-h"],
                     ["validate", "--help"], ["epp", "--help"],
                     ["serve", "--config", "x.yaml", "--help"]):
            r = sluice(*args)
            self.assertEqual(r.returncode, 0, (args, r.stderr))
            self.assertIn("usage:", r.stdout, args)
            self.assertIn("sluice validate", r.stdout, args)

    def test_unknown_command_and_flag_are_usage_errors(self):
        for args in (["frobnicate"], ["serve", "--frob"]):
            r = sluice(*args)
            self.assertEqual(r.returncode, 2, args)
            self.assertIn("usage:", r.stderr, args)


class ValidateTest(Base):
    def test_config_json_valid_and_invalid(self):
        good = os.path.join(self.dir, "good.yaml")
        write(self.dir, "good.yaml", "models:\n  - {name: m, endpoints: [127.0.0.1:9]}\n")
        r = sluice("validate", "--config", good, "--json")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        d = json.loads(r.stdout)
        self.assertTrue(d["valid"])
        self.assertEqual(d["config"], {"file": good, "valid": True, "errors": [], "models": 1})
        write(self.dir, "bad.yaml", "models:\n  - {name: m, endpoints: [nowhere]}\n")
        r = sluice("validate", "--config", os.path.join(self.dir, "bad.yaml"), "--json")
        self.assertEqual(r.returncode, 1)
        d = json.loads(r.stdout)
        self.assertFalse(d["valid"])
        self.assertFalse(d["config"]["valid"])
        self.assertEqual(d["problems"], len(d["config"]["errors"]))
        self.assertTrue(any(e.startswith("models[0].endpoints[0]") for e in d["config"]["errors"]),
                        d)

    def test_a_missing_file_says_why(self):
        missing = os.path.join(self.dir, "nope.yaml")
        r = sluice("validate", "--config", missing)
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"{missing}: cannot open: No such file or directory", r.stdout)
        r = sluice("validate", "--manifests", os.path.join(self.dir, "none"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("no such directory", r.stdout)

    def manifests(self):
        d = os.path.join(self.dir, "m")
        os.mkdir(d)
        write(d, "gateway.yaml", gateway("inference", 8080) + "---\n" + gateway("other", 8081, "istio")
              + "---\n" + pool_and_route(["inference"], 8000))
        write(d, "extra.yaml", """apiVersion: apps/v1
kind: Deployment
metadata: {name: llama}
spec: {replicas: 3}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {a: b}
""")
        write(d, "pods.yaml", pod("ok", "127.0.0.11") + "---\n"
              + pod("bad", "10.0.0.999"))
        return d

    def test_manifests_text(self):
        r = sluice("validate", "--manifests", self.manifests())
        out = r.stdout
        self.assertEqual(r.returncode, 1, out)
        # The bad Pod is named by its file and the line its document starts on.
        self.assertIn('error: pods.yaml:6: Pod/default/bad: status.podIP: "10.0.0.999" is not an IP',
                      out)
        self.assertIn("skipped: extra.yaml:1: Deployment (apps/v1) is not used by Sluice", out)
        self.assertIn("skipped: extra.yaml:6: ConfigMap (v1) is not used by Sluice", out)
        self.assertIn("ignored: Gateway/default/other: gatewayClassName istio", out)
        self.assertNotIn("last good version", out)
        self.assertNotIn("Gateway/default/other: ", out.replace("ignored: Gateway/default/other", ""))
        # 5 routing documents loaded (Gateway x2, pool, route, Pod ok), 1 invalid, 2 skipped.
        self.assertIn("8 document(s): 5 loaded, 1 invalid, 2 skipped; 0 object(s) not accepted; "
                      "1 ignored", out)
        self.assertIn("1 problem(s)", out)

    def test_manifests_json_counts_add_up(self):
        r = sluice("validate", "--manifests", self.manifests(), "--json")
        self.assertEqual(r.returncode, 1, r.stdout)
        d = json.loads(r.stdout)
        m = d["manifests"]
        self.assertEqual(m["documents"], m["loaded"] + m["invalid"] + m["skipped"])
        self.assertEqual((m["loaded"], m["invalid"], m["skipped"]), (5, 1, 2))
        self.assertEqual(d["problems"], m["invalid"] + m["refused"])
        self.assertEqual([e["where"] for e in m["errors"]], ["pods.yaml:6"])
        self.assertEqual(len(m["skipped_documents"]), 2)
        self.assertEqual(len(m["ignored"]), 1)
        self.assertIn("Gateway/default/inference", [o["object"] for o in d["objects"]])

    def test_config_and_manifests_together(self):
        write(self.dir, "c.yaml", "models:\n  - {name: m, endpoints: [127.0.0.1:9]}\n")
        r = sluice("validate", "--config", os.path.join(self.dir, "c.yaml"), "--manifests",
                   os.path.join(REPO, "examples", "quickstart"), "--json")
        self.assertEqual(r.returncode, 0, r.stdout)
        d = json.loads(r.stdout)
        self.assertTrue(d["config"]["valid"])
        self.assertEqual(d["manifests"]["invalid"], 0)


class ListenerTest(Base):
    def hold(self):
        s = socket.socket()
        port = free_port()
        s.bind(("127.0.0.1", port))
        s.listen()
        self.addCleanup(s.close)
        return s, port

    def test_config_listener_in_use_stops_the_start_and_names_the_holder(self):
        _, port = self.hold()
        r = sluice("serve", "--listen", f"127.0.0.1:{port}", "--admin", "127.0.0.1:0",
                   "--metrics", "127.0.0.1:0")
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"listener 127.0.0.1:{port}: Address already in use", r.stderr)
        self.assertIn(f"port {port} is held by pid {os.getpid()} (", r.stderr)

    def test_two_routers_cannot_share_a_port(self):
        port = free_port()
        first = self.start("first", [SLUICE, "serve", "--listen", f"127.0.0.1:{port}", "--admin",
                                     "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--ready-file",
                                     os.path.join(self.dir, "first.ready")])
        wait_for("first router", lambda: os.path.exists(os.path.join(self.dir, "first.ready")))
        r = sluice("serve", "--listen", f"127.0.0.1:{port}", "--admin", "127.0.0.1:0",
                   "--metrics", "127.0.0.1:0")
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"held by pid {first.p.pid} (sluice)", r.stderr)
        first.check_alive()

    def test_gateway_listener_in_use_is_reported_and_retried(self):
        held, busy = self.hold()
        free = free_port()
        sim_port = free_port(("127.0.0.11",))
        self.sim(sim_port)
        d = os.path.join(self.dir, "m")
        os.mkdir(d)
        write(d, "gw.yaml", gateway("busy", busy) + "---\n" + gateway("free", free) + "---\n"
              + pool_and_route(["busy", "free"], sim_port))
        write(d, "pods.yaml", pod("p0", "127.0.0.11"))
        router, ports = self.serve("--manifests", d)
        admin = ports["admin"]
        st = status_of(admin, "Gateway/default/busy")
        ls = st["listeners"][0]
        accepted = condition(ls["conditions"], "Accepted")
        self.assertEqual((accepted["status"], accepted["reason"]), ("False", "PortUnavailable"))
        self.assertIn(f"port {busy} is held by pid {os.getpid()}", accepted["message"])
        programmed = condition(ls["conditions"], "Programmed")
        self.assertEqual(programmed["status"], "False")
        self.assertEqual(condition(st["conditions"], "Programmed")["status"], "False")
        ok = status_of(admin, "Gateway/default/free")
        self.assertEqual(condition(ok["conditions"], "Programmed")["status"], "True")
        code, _ = get(free, "/v1/models")
        self.assertEqual(code, 200)
        self.assertIn(f"cannot listen on 127.0.0.1:{busy}: Address already in use", router.tail())
        # Freed and reloaded: the listener is opened and reported programmed.
        held.close()
        with open(os.path.join(d, "gw.yaml"), "a") as f:
            f.write("# touched\n")
        wait_for("the busy listener programmed", lambda: condition(
            status_of(admin, "Gateway/default/busy")["conditions"], "Programmed")["status"] == "True")
        code, _ = get(busy, "/v1/models")
        self.assertEqual(code, 200)


class LogTest(Base):
    def test_startup_reload_and_endpoint_health_are_logged_once(self):
        sim_port = free_port(("127.0.0.11",))
        gw_port = free_port()
        sim = self.sim(sim_port)
        d = os.path.join(self.dir, "m")
        os.mkdir(d)
        write(d, "gw.yaml", gateway("inference", gw_port) + "---\n"
              + pool_and_route(["inference"], sim_port))
        write(d, "pods.yaml", pod("p0", "127.0.0.11"))
        router, ports = self.serve("--manifests", d)
        wait_for("startup summary", lambda: "loaded: 1 listener(s)" in router.tail(100000))
        log = router.tail(100000)
        self.assertIn(f"port(s) {gw_port}", log)
        self.assertIn("1 InferencePool", log)
        self.assertIn("1 HTTPRoute", log)
        self.assertIn("1 endpoint(s)", log)
        # A broken route: the object and why, once, however many reloads follow.
        write(d, "broken.yaml", """apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: inference}]
  rules: [{backendRefs: [{name: svc, port: 80, weight: 5000000}]}]
""")
        line = "broken.yaml:1: HTTPRoute/default/r: spec.rules[0].backendRefs[0].weight"
        wait_for("the error logged", lambda: line in router.tail(100000))
        applied = router.tail(100000).count("manifests applied")
        write(d, "extra.yaml", """apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceObjective
metadata: {name: batch, namespace: default}
spec: {priority: 1, poolRef: {name: llama}}
""")
        wait_for("the next reload",
                 lambda: router.tail(100000).count("manifests applied") > applied)
        self.assertEqual(router.tail(100000).count(line), 1)
        os.remove(os.path.join(d, "broken.yaml"))
        wait_for("resolved", lambda: "resolved: " + line in router.tail(100000))
        # The engine goes away: logged once, however many scrapes fail; back: logged once.
        address = f"127.0.0.11:{sim_port}"
        sim.stop()
        down = f"endpoint {address} is unhealthy"
        wait_for("down logged", lambda: down in router.tail(100000))

        def failures():
            _, body = get(ports["admin"], "/debug/endpoints")
            for e in json.loads(body)["endpoints"]:
                if e["address"] == address:
                    return e["consecutive_failures"]
            return 0
        seen = failures()
        wait_for("more failed scrapes", lambda: failures() >= seen + 5)
        self.assertEqual(router.tail(100000).count(down), 1)
        self.sim(sim_port, name="sim2")
        up = f"endpoint {address} is healthy again"
        wait_for("up logged", lambda: up in router.tail(100000))
        self.assertEqual(router.tail(100000).count(up), 1)


if __name__ == "__main__":
    unittest.main(verbosity=2)
