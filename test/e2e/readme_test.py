#!/usr/bin/python3
"""The README's "Running it" commands, pasted in order as a new user would: each ```sh block of
that section runs as one bash script from the repository root, and must finish (its background
engines and router stopped by its last line) with the output a user expects.

The commands use the README's fixed ports (8080, 15000, 9090, 127.0.0.11-13:8000), so this test
runs alone (RUN_SERIAL). Run with:  /usr/bin/python3 test/e2e/readme_test.py
"""

import os
import re
import signal
import socket
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BIN_DIR = os.environ.get("SLUICE_BIN_DIR") or os.path.join(REPO, "build", "bin")
FIXED = [("127.0.0.1", 8080), ("127.0.0.1", 15000), ("127.0.0.1", 9090),
         ("127.0.0.11", 8000), ("127.0.0.12", 8000), ("127.0.0.13", 8000)]


def section_blocks(markdown, heading):
    """The ```sh blocks between `## heading` and the next `## ` heading."""
    start = markdown.index("## " + heading + "\n")
    end = markdown.find("\n## ", start + 1)
    section = markdown[start:end if end >= 0 else len(markdown)]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def run_block(block, timeout=90):
    # The README says build/bin; a build elsewhere (SLUICE_BIN_DIR) stands in for it.
    script = "set -euo pipefail\n" + block.replace("build/bin/", BIN_DIR.rstrip("/") + "/")
    p = subprocess.Popen(["bash", "-c", script], cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        raise AssertionError(f"timed out after {timeout}s:\n{block}\n{out.decode(errors='replace')}")
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # anything the block left behind
        except ProcessLookupError:
            pass
    return p.returncode, out.decode(errors="replace")


class ReadmeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        for b in ("sluice", "sluice-sim"):
            if not os.path.exists(os.path.join(BIN_DIR, b)):
                raise unittest.SkipTest(f"{b} is not built in {BIN_DIR}")
        for host, port in FIXED:
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((host, port))
                except OSError as e:
                    raise AssertionError(f"the README's port {host}:{port} is taken: {e}")
        with open(os.path.join(REPO, "README.md")) as f:
            cls.blocks = section_blocks(f.read(), "Running it")

    def test_two_blocks_with_their_stop_lines(self):
        self.assertEqual(len(self.blocks), 2, self.blocks)
        for b in self.blocks:
            self.assertIn("kill %1 %2; wait", b.strip().splitlines()[-1])

    def test_config_file_flow_streams_a_completion(self):
        code, out = run_block(self.blocks[0])
        self.assertEqual(code, 0, out)
        self.assertIn('"chat.completion.chunk"', out)
        self.assertIn("data: [DONE]", out)
        self.assertNotIn('"error":{', out)

    def test_manifest_flow_validates_then_serves(self):
        code, out = run_block(self.blocks[1])
        self.assertEqual(code, 0, out)
        self.assertIn("0 problem(s)", out)
        self.assertIn("Gateway/default/inference: Accepted=True", out)
        self.assertIn('"object":"chat.completion"', out)
        self.assertNotIn('"error":{', out)


if __name__ == "__main__":
    unittest.main(verbosity=2)
