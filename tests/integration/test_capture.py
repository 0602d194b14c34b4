"""Transparent capture for real: two network namespaces the test creates (`ip netns`, a veth
pair), an app in B, a client (curl) in A told nothing about proxies, and a sidecar in each
namespace running as `nobody` (so that excluding the sidecar's uid is what keeps its own
connections from being captured). `meshproxy capture` installs the rules in both namespaces,
with nftables and with iptables; the request then goes curl → sidecar A's capture listener
(routed by its original destination) → mTLS → sidecar B → app. `--remove` restores direct
traffic. Needs root (CAP_NET_ADMIN); skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from pki import issue, make_ca
from processes import follow_stderr, stop_followed

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="creating network namespaces and nat rules needs root"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2's 'ip' to create network namespaces"),
]

A_IP, B_IP = "10.77.0.1", "10.77.0.2"
APP_PORT, INBOUND_PORT, OUTBOUND_PORT = 8080, 15006, 15002
ADMIN = "127.0.0.1:15000"
NOBODY = 65534
A_ID = "spiffe://mesh.local/ns/default/sa/client"
B_ID = "spiffe://mesh.local/ns/default/sa/app"

# The app in B: answers every GET with the headers it received, as JSON.
APP = """
import http.server, json
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
server = http.server.ThreadingHTTPServer(("0.0.0.0", %d), Echo)
import sys
print("ready", file=sys.stderr, flush=True)
server.serve_forever()
""" % APP_PORT


@dataclass
class Namespaces:
    a: str
    b: str
    files: Path

    def run(self, ns: str, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # No proxy variables: the client is told nothing about the sidecar.
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        return subprocess.run(["ip", "netns", "exec", ns, *command], capture_output=True, text=True, check=check,
                              timeout=60, env=env)

    def capture(self, ns: str, *args: str) -> None:
        self.run(ns, sys.executable, "-m", "meshproxy", "capture", *args)

    def request(self) -> dict[str, str]:
        """What the app in B received from curl in A, sent to the app's own address."""
        done = self.run(self.a, "curl", "-sS", "--fail", "--max-time", "10", f"http://{B_IP}:{APP_PORT}/hello")
        received: dict[str, str] = json.loads(done.stdout)
        return received

    def stats(self, ns: str) -> dict[str, Any]:
        done = self.run(ns, "curl", "-sS", "--fail", "--max-time", "10", f"http://{ADMIN}/stats")
        document: dict[str, Any] = json.loads(done.stdout)
        return document


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    suffix = f"{os.getpid() % 100000}"
    a, b = f"mpcap-a-{suffix}", f"mpcap-b-{suffix}"
    veth_a, veth_b = f"mpca{suffix}", f"mpcb{suffix}"
    # Readable by `nobody`, which the sidecars run as (pytest's tmp_path is not).
    files = Path(tempfile.mkdtemp(prefix="meshproxy-capture-"))
    files.chmod(0o755)
    try:
        _ip("netns", "add", a)
        _ip("netns", "add", b)
        _ip("link", "add", veth_a, "netns", a, "type", "veth", "peer", "name", veth_b, "netns", b)
        for ns, dev, ip in ((a, veth_a, A_IP), (b, veth_b, B_IP)):
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
        yield Namespaces(a, b, files)
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        shutil.rmtree(files, ignore_errors=True)


def _sidecar_python() -> list[str]:
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
    """A process in a namespace, its stderr followed; stopped by the fixture that made it."""

    def __init__(self, command: list[str], ready: str) -> None:
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.reader = follow_stderr(self.process, self.lines)
        self.ready = ready

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if any(self.ready in line for line in self.lines):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.process.args} did not become ready:\n" + "".join(self.lines))

    def stop(self) -> None:
        stop_followed(self.process, self.reader)


def _credentials(files: Path) -> dict[str, dict[str, str]]:
    ca = make_ca(files)
    identities = {}
    for name, spiffe in (("a", A_ID), ("b", B_ID)):
        cert, key, bundle = issue(ca, spiffe, files / name)
        (files / name).chmod(0o755)
        for path in (cert, key, bundle):
            path.chmod(stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
        identities[name] = {"trust_domain": "mesh.local", "cert": str(cert), "key": str(key), "bundle": str(bundle)}
    return identities


def _sidecar_configs(identities: dict[str, dict[str, str]]) -> dict[str, dict[str, Any]]:
    # The outbound capture listener of each: routes by where the app's connection was going.
    capture_out = {
        "name": "capture-out",
        "address": f"127.0.0.1:{OUTBOUND_PORT}",
        "original_destination": True,
        "routes": [{"name": "to-app", "match": {"original_destination": [f"{B_IP}:{APP_PORT}"]}, "cluster": "app-b"}],
    }
    to_b = {
        "name": "app-b",
        "protocol": "http2",
        "tls": {"mode": "mesh", "identities": [B_ID]},
        "endpoints": [{"address": f"{B_IP}:{INBOUND_PORT}"}],
    }
    a = {"admin": {"address": ADMIN}, "identity": identities["a"], "listeners": [capture_out], "clusters": [to_b]}
    # Permissive: the mesh's mTLS, and plain connections to the app's port the capture redirects.
    inbound = {
        "name": "inbound",
        "address": f"0.0.0.0:{INBOUND_PORT}",
        "direction": "inbound",
        "tls": "permissive",
        "routes": [{"cluster": "local-app"}],
    }
    b = {
        "admin": {"address": ADMIN},
        "identity": identities["b"],
        "listeners": [inbound],
        "clusters": [{"name": "local-app", "endpoints": [{"address": f"127.0.0.1:{APP_PORT}"}]}],
    }
    return {"a": a, "b": b}


@pytest.fixture
def mesh_pair(namespaces: Namespaces) -> Iterator[Namespaces]:
    """The app in B, and a sidecar as `nobody` in each namespace; no capture yet."""
    started: list[Started] = []
    try:
        app_script = namespaces.files / "app.py"
        app_script.write_text(APP)
        app = Started(["ip", "netns", "exec", namespaces.b, sys.executable, str(app_script)], "ready")
        started.append(app)
        app.wait_ready()
        python = _sidecar_python()
        configs = _sidecar_configs(_credentials(namespaces.files))
        for name, ns in (("a", namespaces.a), ("b", namespaces.b)):
            path = namespaces.files / f"sidecar-{name}.yaml"
            path.write_text(yaml.safe_dump(configs[name], sort_keys=False))
            path.chmod(0o644)
            sidecar = Started(
                ["ip", "netns", "exec", ns, *python, "-m", "meshproxy", "run", "--config", str(path), "--no-watch"],
                "ready:",
            )
            started.append(sidecar)
            sidecar.wait_ready()
        yield namespaces
    finally:
        for ns in (namespaces.a, namespaces.b):
            namespaces.capture(ns, "--remove")
        for process in reversed(started):
            process.stop()


def _sidecar_headers(received: dict[str, str]) -> set[str]:
    return {name for name in ("x-meshproxy-peer-identity", "x-forwarded-for", "x-request-id") if name in received}


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_an_unconfigured_client_reaches_the_app_through_both_sidecars_once_captured(mesh_pair: Namespaces, backend: str) -> None:
    ns = mesh_pair
    # Before: straight to the app.
    assert _sidecar_headers(ns.request()) == set()

    for namespace in (ns.a, ns.b):
        # Twice: installing again replaces the rules rather than adding a second copy.
        for _ in range(2):
            ns.capture(namespace, "--backend", backend, "--uid", "nobody", "--outbound-port", str(OUTBOUND_PORT),
                       "--inbound-port", str(INBOUND_PORT), "--app-port", str(APP_PORT))

    received = ns.request()
    # Through sidecar A (routed by the original destination) and over mTLS to sidecar B: the app
    # sees A's identity, which only B's verification of A's certificate can have put there.
    assert received["x-meshproxy-peer-identity"] == A_ID
    # Each sidecar appended the address its client came from: curl's, then sidecar A's.
    assert received["x-forwarded-for"] == f"{A_IP}, {A_IP}"
    a, b = ns.stats(ns.a), ns.stats(ns.b)
    assert a["listeners"]["capture-out"]["requests_total"] == 1
    assert a["clusters"]["app-b"]["upstream_requests_total"] == 1
    assert b["listeners"]["inbound"]["requests_total"] == 1

    # Capture removed in A only: curl reaches B's app port directly, which B's rules still send
    # through its sidecar (plain text, so no peer identity).
    ns.capture(ns.a, "--backend", backend, "--remove")
    received = ns.request()
    assert "x-meshproxy-peer-identity" not in received
    assert received["x-forwarded-for"] == A_IP
    assert ns.stats(ns.b)["listeners"]["inbound"]["requests_total"] == 2

    # Removed in B too: direct traffic again, the sidecars not involved.
    ns.capture(ns.b, "--backend", backend, "--remove")
    assert _sidecar_headers(ns.request()) == set()
    assert ns.stats(ns.b)["listeners"]["inbound"]["requests_total"] == 2
    for namespace in (ns.a, ns.b):
        assert "meshproxy" not in ns.run(namespace, "nft", "list", "ruleset").stdout
        assert "MESHPROXY" not in ns.run(namespace, "iptables", "-t", "nat", "-S").stdout


def test_a_captured_connection_no_route_claims_is_answered_by_the_sidecar(mesh_pair: Namespaces) -> None:
    """A destination the capture listener has no route for: refused by sidecar A (404, no
    route), not sent anywhere — passthrough needs the original-destination cluster (see
    docs/protocols-capture.md)."""
    ns = mesh_pair
    ns.capture(ns.a, "--uid", str(NOBODY))
    done = ns.run(ns.a, "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
                  f"http://{B_IP}:9999/", check=False)
    assert done.stdout == "404"
