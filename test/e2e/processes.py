"""Shared by the Python end-to-end suites: free ports chosen at run time, bounded polling, and
child processes with their output in a log file. Debian's /usr/bin/python3."""

import json
import os
import random
import signal
import socket
import subprocess
import time

_taken_ports = set()  # handed out in this process


def free_port(hosts=("127.0.0.1",)):
    """A random port in 20000-31999 that binds on every host now (and was not handed out):
    below the kernel's ephemeral range, so no outgoing connection takes it meanwhile."""
    rnd = random.SystemRandom()
    for _ in range(500):
        port = rnd.randint(20000, 31999)
        if port in _taken_ports:
            continue
        socks = []
        try:
            for h in hosts:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind((h, port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        _taken_ports.add(port)
        return port
    raise RuntimeError("no free port in 20000-31999")


def wait_for(what, fn, timeout=15.0, interval=0.02):
    """Polls fn() until it returns a truthy value (returned); fails after the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = fn()
            if v:
                return v
            last = v
        except Exception as e:  # noqa: BLE001 - kept for the failure message
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Proc:
    """A child process with its output in a log file."""

    def __init__(self, name, argv, log_dir):
        self.name = name
        self.log_path = os.path.join(log_dir, name + ".log")
        self.log = open(self.log_path, "wb")
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)

    def alive(self):
        return self.p.poll() is None

    def check_alive(self):
        if not self.alive():
            raise AssertionError(f"{self.name} exited with {self.p.returncode}:\n{self.tail()}")

    def tail(self, n=3000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout=10.0):
        if self.alive():
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        if not self.log.closed:
            self.log.close()
        return self.p.returncode


def read_json(path):
    with open(path) as f:
        return json.load(f)
