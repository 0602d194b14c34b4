"""Transparent capture for real: two network namespaces the test creates (`ip netns`, a veth
pair), an app in B, a client (curl) in A told nothing about proxies, and a sidecar in each
namespace running as `nobody` (so that excluding the sidecar's uid is what keeps its own
connections from being captured). `meshproxy capture` installs the rules in both namespaces,
with nftables and with iptables; the request then goes curl → sidecar A's capture listener
(routed by its original destination) → mTLS → sidecar B → app. `--remove` restores direct
traffic. Needs root (CAP_NET_ADMIN); skipped otherwise.
"""

from __future__ import annotations

import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from netns import A_IP, B_IP, NOBODY, Namespaces, Started, as_nobody, needs_root, start_app, two_namespaces
from pki import issue, make_ca

pytestmark = needs_root

APP_PORT, INBOUND_PORT, OUTBOUND_PORT = 8080, 15006, 15002
# Another port of the app, not in the mesh: reached through sidecar A's passthrough cluster.
OTHER_PORT = 9090
ADMIN = "127.0.0.1:15000"
A_ID = "spiffe://mesh.local/ns/default/sa/client"
B_ID = "spiffe://mesh.local/ns/default/sa/app"


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    with two_namespaces() as made:
        yield made


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
        "routes": [
            {"name": "to-app", "match": {"original_destination": [f"{B_IP}:{APP_PORT}"]}, "cluster": "app-b"},
            {"name": "elsewhere", "match": {"original_destination": [f"{B_IP}:{OTHER_PORT}"]}, "cluster": "passthrough"},
        ],
    }
    to_b = {
        "name": "app-b",
        "protocol": "http2",
        "tls": {"mode": "mesh", "identities": [B_ID]},
        "endpoints": [{"address": f"{B_IP}:{INBOUND_PORT}"}],
    }
    passthrough = {"name": "passthrough", "original_destination": True}
    a = {"admin": {"address": ADMIN}, "identity": identities["a"], "listeners": [capture_out],
         "clusters": [to_b, passthrough]}
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
        started.append(start_app(namespaces, APP_PORT))
        started.append(start_app(namespaces, OTHER_PORT))
        python = as_nobody()
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


def request(ns: Namespaces) -> dict[str, str]:
    """What the app in B received from curl in A, sent to the app's own address."""
    return ns.json(ns.a, f"http://{B_IP}:{APP_PORT}/hello")


def stats(ns: Namespaces, name: str) -> dict[str, Any]:
    return ns.json(name, f"http://{ADMIN}/stats")


def _sidecar_headers(received: dict[str, str]) -> set[str]:
    return {name for name in ("x-meshproxy-peer-identity", "x-forwarded-for", "x-request-id") if name in received}


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_an_unconfigured_client_reaches_the_app_through_both_sidecars_once_captured(mesh_pair: Namespaces, backend: str) -> None:
    ns = mesh_pair
    # Before: straight to the app.
    assert _sidecar_headers(request(ns)) == set()

    for namespace in (ns.a, ns.b):
        # Twice: installing again replaces the rules rather than adding a second copy.
        for _ in range(2):
            ns.capture(namespace, "--backend", backend, "--uid", "nobody", "--outbound-port", str(OUTBOUND_PORT),
                       "--inbound-port", str(INBOUND_PORT), "--app-port", str(APP_PORT))

    received = request(ns)
    # Through sidecar A (routed by the original destination) and over mTLS to sidecar B: the app
    # sees A's identity, which only B's verification of A's certificate can have put there.
    assert received["x-meshproxy-peer-identity"] == A_ID
    # Each sidecar appended the address its client came from: curl's, then sidecar A's.
    assert received["x-forwarded-for"] == f"{A_IP}, {A_IP}"
    a, b = stats(ns, ns.a), stats(ns, ns.b)
    assert a["listeners"]["capture-out"]["requests_total"] == 1
    assert a["clusters"]["app-b"]["upstream_requests_total"] == 1
    assert b["listeners"]["inbound"]["requests_total"] == 1

    # Capture removed in A only: curl reaches B's app port directly, which B's rules still send
    # through its sidecar (plain text, so no peer identity).
    ns.capture(ns.a, "--backend", backend, "--remove")
    received = request(ns)
    assert "x-meshproxy-peer-identity" not in received
    assert received["x-forwarded-for"] == A_IP
    assert stats(ns, ns.b)["listeners"]["inbound"]["requests_total"] == 2

    # Removed in B too: direct traffic again, the sidecars not involved.
    ns.capture(ns.b, "--backend", backend, "--remove")
    assert _sidecar_headers(request(ns)) == set()
    assert stats(ns, ns.b)["listeners"]["inbound"]["requests_total"] == 2
    for namespace in (ns.a, ns.b):
        assert "meshproxy" not in ns.run(namespace, "nft", "list", "ruleset").stdout
        assert "MESHPROXY" not in ns.run(namespace, "iptables", "-t", "nat", "-S").stdout


def test_a_captured_connection_is_passed_through_to_its_original_destination_or_refused(mesh_pair: Namespaces) -> None:
    """A route to a cluster with original_destination: true sends the request where the client
    was connecting (out of the mesh: no mTLS, no peer identity); a destination no route claims
    is answered by sidecar A (404, no route)."""
    ns = mesh_pair
    ns.capture(ns.a, "--uid", str(NOBODY), "--outbound-port", str(OUTBOUND_PORT))
    received = ns.json(ns.a, f"http://{B_IP}:{OTHER_PORT}/elsewhere")
    assert received["x-forwarded-for"] == A_IP and "x-meshproxy-peer-identity" not in received
    assert stats(ns, ns.a)["clusters"]["passthrough"]["upstream_requests_total"] == 1
    done = ns.run(ns.a, "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
                  f"http://{B_IP}:9999/", check=False)
    assert done.stdout == "404"
