"""Transparent capture over IPv6 through the control plane, for real: the namespaces of
test_capture_mesh.py with IPv6 addresses on the veth pair (fd77::1 in A, fd77::2 in B), each
sidecar registered at its IPv6 inbound address and run with a capture listener and its IPv6
twin (`--capture 127.0.0.1:15002 --capture [::1]:15002`: the kernel redirects IPv6 connections
to `[::1]`). The control plane learns B's app port and sends A a capture listener with
`additional_addresses` routing `[fd77::2]:8080` to B's service; curl in A, told nothing about
proxies, calls `http://[fd77::2]:8080` and reaches the app through both sidecars over mTLS;
with A's capture removed, B's strict inbound listener refuses the plain request; with both
removed, traffic is direct again. Needs root; skipped otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from netns import A_IP6, B_IP6, needs_root, start_app, two_namespaces, until
from test_capture_mesh import ADMIN, APP_PORT, CAPTURE_PORT, INBOUND_PORT, MESH, Mesh, serving

pytestmark = needs_root

CAPTURES = (f"127.0.0.1:{CAPTURE_PORT}", f"[::1]:{CAPTURE_PORT}")


@pytest.fixture
def mesh() -> Iterator[Mesh]:
    with two_namespaces(ipv6=True) as ns:
        with serving(Mesh(ns), MESH) as made:
            made.started.append(start_app(ns, APP_PORT, "::"))
            made.sidecar("app", ns.b, B_IP6, f"127.0.0.1:{APP_PORT}", CAPTURES)
            made.sidecar("client", ns.a, A_IP6, "127.0.0.1:9000", CAPTURES)
            yield made


def test_the_control_plane_routes_a_captured_ipv6_call_to_an_instance_registered_at_an_ipv6_address(
        mesh: Mesh) -> None:
    ns = mesh.ns
    url = f"http://[{B_IP6}]:{APP_PORT}/hello"
    # Both capture listeners of the client's sidecar route B's IPv6 app address.
    until(lambda: ns.get(ns.a, f"http://{ADMIN}/config").stdout.count(f"[{B_IP6}]:{APP_PORT}") >= 2,
          what="the capture routes of both capture listeners")
    assert "x-meshproxy-peer-identity" not in ns.json(ns.a, url)

    ns.capture(ns.a, "--uid", "nobody", "--outbound-port", str(CAPTURE_PORT))
    ns.capture(ns.b, "--uid", "nobody", "--inbound-port", str(INBOUND_PORT), "--app-port", str(APP_PORT))
    received = ns.json(ns.a, url)
    assert received["x-meshproxy-peer-identity"].endswith("/ns/default/sa/client")
    assert received["x-forwarded-for"] == f"{A_IP6}, {A_IP6}"
    stats = ns.json(ns.a, f"http://{ADMIN}/stats")
    assert stats["listeners"]["outbound_capture_1"]["requests_total"] == 1
    assert stats["listeners"]["outbound_capture"]["requests_total"] == 0
    assert stats["clusters"]["outbound_app.default"]["upstream_requests_total"] == 1

    ns.capture(ns.a, "--remove")
    assert ns.get(ns.a, url, check=False).returncode != 0
    ns.capture(ns.b, "--remove")
    received = ns.json(ns.a, url)
    assert "x-meshproxy-peer-identity" not in received and "x-forwarded-for" not in received
