"""Transparent capture through the control plane, for real: `meshctl serve` in namespace A,
a sidecar joined to it in each namespace (as `nobody`, run with --capture), the app in B, curl
in A told nothing about proxies. The control plane learns B's app port at registration (from
--app) and sends A a capture listener routing B's IP and app port to B's service; `meshproxy
capture` in both namespaces then sends curl's request through both sidecars over mTLS. The
mesh's mTLS is strict, so with A's capture removed B's capture refuses the plain-text request;
with both removed, traffic is direct again. A captured call to an address outside the mesh
passes through to where it was going. Needs root; skipped otherwise.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

from netns import A_IP, B_IP, NOBODY, Namespaces, Started, as_nobody, needs_root, start_app, two_namespaces, until

pytestmark = needs_root

APP_PORT, INBOUND_PORT, CAPTURE_PORT = 8080, 15006, 15002
# A port of B outside the mesh: a captured call to it passes through to where it was going.
OTHER_PORT = 9090
ADMIN, API = "127.0.0.1:15000", "127.0.0.1:15080"
GRPC = f"{A_IP}:15010"
MESHCTL = str(Path(sys.executable).parent / "meshctl")
MESH = """\
kind: Service
name: client
calls: [app]
---
kind: Service
name: app
"""


class Mesh:
    def __init__(self, ns: Namespaces) -> None:
        self.ns = ns
        self.started: list[Started] = []

    def meshctl(self, *args: str, stdin: str | None = None) -> str:
        return self.ns.run(self.ns.a, MESHCTL, "--server", f"http://{API}", *args, stdin=stdin).stdout

    def sidecar(self, service: str, ns: str, ip: str, app: str,
                captures: tuple[str, ...] = (f"127.0.0.1:{CAPTURE_PORT}",)) -> None:
        folder = self.ns.files / service
        folder.mkdir(mode=0o700)
        os.chown(folder, NOBODY, NOBODY)
        token = folder / "token"
        token.write_text(self.meshctl("token", "create", "--service", service))
        os.chown(token, NOBODY, NOBODY)
        command = [
            "ip", "netns", "exec", ns, *as_nobody(), "-m", "meshproxy", "run", "--control", GRPC,
            "--token-file", str(token), "--service", service, "--app", app,
            "--inbound", f"[{ip}]:{INBOUND_PORT}" if ":" in ip else f"{ip}:{INBOUND_PORT}", "--outbound", "127.0.0.1:15001",
            *(flag for address in captures for flag in ("--capture", address)), "--admin", ADMIN,
            "--state-dir", str(folder / "state"), "--drain-timeout", "2",
        ]
        self.started.append(Started(command, "ready:").wait_ready())


MeshOf = TypeVar("MeshOf", bound=Mesh)


@contextmanager
def serving(made: MeshOf, documents: str) -> Iterator[MeshOf]:
    """`meshctl serve` in namespace A holding `documents`; on the way out, both namespaces'
    capture rules removed and every process `made` started stopped, the last first."""
    ns = made.ns
    try:
        made.started.append(Started(
            ["ip", "netns", "exec", ns.a, MESHCTL, "serve", "--data", str(ns.files / "control"), "--grpc", GRPC,
             "--api", API], "ready:").wait_ready())
        made.meshctl("apply", "-f", "-", stdin=documents)
        yield made
    finally:
        for namespace in (ns.a, ns.b):
            ns.capture(namespace, "--remove")
        for process in reversed(made.started):
            process.stop()


@pytest.fixture
def mesh() -> Iterator[Mesh]:
    with two_namespaces() as ns:
        with serving(Mesh(ns), MESH) as made:
            made.started.append(start_app(ns, APP_PORT))
            made.started.append(start_app(ns, OTHER_PORT))
            # The app listens on every address; its sidecar reaches it on loopback, and
            # registers the app port with it.
            made.sidecar("app", ns.b, B_IP, f"127.0.0.1:{APP_PORT}")
            made.sidecar("client", ns.a, A_IP, f"127.0.0.1:{9000}")
            yield made


def test_the_control_plane_routes_a_captured_call_by_the_app_port_it_learnt(mesh: Mesh) -> None:
    ns = mesh.ns
    url = f"http://{B_IP}:{APP_PORT}/hello"
    # The client's sidecar has the capture listener with B's app address, from the control plane.
    until(lambda: f"{B_IP}:{APP_PORT}" in ns.get(ns.a, f"http://{ADMIN}/config").stdout, what="the capture route")
    assert "x-meshproxy-peer-identity" not in ns.json(ns.a, url)

    ns.capture(ns.a, "--uid", "nobody", "--outbound-port", str(CAPTURE_PORT))
    ns.capture(ns.b, "--uid", "nobody", "--inbound-port", str(INBOUND_PORT), "--app-port", str(APP_PORT))
    received = ns.json(ns.a, url)
    assert received["x-meshproxy-peer-identity"].endswith("/ns/default/sa/client")
    assert received["x-forwarded-for"] == f"{A_IP}, {A_IP}"
    stats = ns.json(ns.a, f"http://{ADMIN}/stats")
    assert stats["listeners"]["outbound_capture"]["requests_total"] == 1
    assert stats["clusters"]["outbound_app.default"]["upstream_requests_total"] == 1
    # Not a mesh address: out through the passthrough cluster, plain text.
    elsewhere = ns.json(ns.a, f"http://{B_IP}:{OTHER_PORT}/elsewhere")
    assert elsewhere["x-forwarded-for"] == A_IP and "x-meshproxy-peer-identity" not in elsewhere
    assert ns.json(ns.a, f"http://{ADMIN}/stats")["clusters"]["passthrough"]["upstream_requests_total"] == 1

    # Without A's capture the request goes out as plain text; B's capture hands it to B's
    # inbound listener, whose mTLS is strict: refused.
    ns.capture(ns.a, "--remove")
    assert ns.get(ns.a, url, check=False).returncode != 0

    ns.capture(ns.b, "--remove")
    received = ns.json(ns.a, url)
    assert "x-meshproxy-peer-identity" not in received and "x-forwarded-for" not in received
