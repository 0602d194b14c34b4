"""Network namespaces for the capture tests: two namespaces joined by a veth pair (A at
10.77.0.1, B at 10.77.0.2; with ``ipv6=True`` also fd77::1 and fd77::2), processes run in them
with `ip netns exec`, as `nobody` when they are sidecars (the capture tells a sidecar's
connections apart by its uid). Needs root."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from processes import follow_stderr, stop_followed

A_IP, B_IP = "10.77.0.1", "10.77.0.2"
A_IP6, B_IP6 = "fd77::1", "fd77::2"
NOBODY = 65534

# An app: answers every GET with the headers it received, as JSON.
ECHO_APP = """
import http.server, json, socket, sys
class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class Server(http.server.ThreadingHTTPServer):
    # "::" takes IPv4 too (v4-mapped), as net.ipv6.bindv6only is 0 in a new namespace.
    address_family = socket.AF_INET6 if ":" in sys.argv[2] else socket.AF_INET
server = Server((sys.argv[2], int(sys.argv[1])), Echo)
print("ready", file=sys.stderr, flush=True)
server.serve_forever()
"""

needs_root = [
    pytest.mark.skipif(os.geteuid() != 0, reason="creating network namespaces and nat rules needs root"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2's 'ip' to create network namespaces"),
]


@dataclass
class Namespaces:
    a: str
    b: str
    files: Path
    """A folder `nobody` can read (pytest's tmp_path is not)."""

    def run(self, ns: str, *command: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        # No proxy variables: the client is told nothing about the sidecar.
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        return subprocess.run(["ip", "netns", "exec", ns, *command], capture_output=True, text=True, check=check,
                              timeout=60, env=env, input=stdin)

    def capture(self, ns: str, *args: str) -> None:
        self.run(ns, sys.executable, "-m", "meshproxy", "capture", *args)

    def get(self, ns: str, url: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # -g: an IPv6 URL's brackets are the address's, not a curl glob.
        return self.run(ns, "curl", "-sS", "-g", "--fail", "--max-time", "10", url, check=check)

    def json(self, ns: str, url: str) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.get(ns, url).stdout)
        return document


@contextlib.contextmanager
def two_namespaces(ipv6: bool = False) -> Iterator[Namespaces]:
    suffix = f"{os.getpid() % 100000}"
    a, b = f"mpcap-a-{suffix}", f"mpcap-b-{suffix}"
    veth_a, veth_b = f"mpca{suffix}", f"mpcb{suffix}"
    files = Path(tempfile.mkdtemp(prefix="meshproxy-capture-"))
    files.chmod(0o755)
    try:
        _ip("netns", "add", a)
        _ip("netns", "add", b)
        _ip("link", "add", veth_a, "netns", a, "type", "veth", "peer", "name", veth_b, "netns", b)
        for ns, dev, ip in ((a, veth_a, A_IP), (b, veth_b, B_IP)):
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
        if ipv6:
            for ns, dev, ip in ((a, veth_a, A_IP6), (b, veth_b, B_IP6)):
                # nodad: usable at once, not "tentative" for the second or so duplicate address
                # detection takes (a bind or connect to it would fail meanwhile).
                _ip("-n", ns, "addr", "add", f"{ip}/64", "dev", dev, "nodad")
        for ns, dev in ((a, veth_a), (b, veth_b)):
            _ip("-n", ns, "link", "set", dev, "up")
        yield Namespaces(a, b, files)
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        shutil.rmtree(files, ignore_errors=True)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def as_nobody() -> list[str]:
    """How to run meshproxy as `nobody`: this interpreter when that user may run it, else the
    system's interpreter of the same version with this environment's packages on its path (a
    virtualenv under a home directory only its owner can enter, as /root is)."""
    import meshproxy
    import pydantic

    user = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    packages = str(Path(pydantic.__file__).parent.parent)
    source = str(Path(meshproxy.__file__).parent.parent)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, f"/usr/bin/{version}"):
        command = [*user, "env", f"PYTHONPATH={packages}:{source}", candidate]
        probe = subprocess.run([*command, "-c", "import meshproxy._native, pydantic"], capture_output=True, timeout=60)
        if probe.returncode == 0:
            return command
    pytest.skip(f"user {NOBODY} can run no Python interpreter that imports meshproxy (tried {sys.executable}, /usr/bin/{version})")


class Started:
    """A process (in a namespace), its stderr followed."""

    def __init__(self, command: list[str], ready: str) -> None:
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.reader = follow_stderr(self.process, self.lines)
        self.ready = ready

    def wait_ready(self, timeout: float = 60) -> Started:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(self.ready in line for line in self.lines):
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.process.args} did not become ready:\n" + "".join(self.lines))

    def stop(self) -> None:
        stop_followed(self.process, self.reader)


def start_app(ns: Namespaces, port: int, host: str = "0.0.0.0") -> Started:
    """The echo app in B on ``host`` (``::``: IPv6 and IPv4)."""
    script = ns.files / "app.py"
    script.write_text(ECHO_APP)
    return Started(["ip", "netns", "exec", ns.b, sys.executable, str(script), str(port), host], "ready").wait_ready()


def until(condition: Any, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not hold within {timeout}s")
