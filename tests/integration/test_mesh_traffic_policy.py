"""A TrafficPolicy applied to the control plane reaches the callers' meshproxy sidecars and acts
on real failures on loopback: an orders instance whose app answers 500 is ejected by frontend's
sidecar (``meshctl endpoints`` says ``ejected``) and gets no more requests, counted at the app;
a stock instance whose app fails its health check is ``unhealthy`` and gets none either; and a
Route's hash_policy keeps a user on one instance."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from controlled_upstream import ControlledUpstream

from mesh_documents import documents, service
from mesh_harness import LocalMesh, until

MESH = documents(
    service("frontend", "shop", calls=["orders", "stock"]),
    service("orders", "shop", calls=[]),
    service("stock", "shop", calls=[]),
    """\
kind: TrafficPolicy
service: orders
namespace: shop
lb: round_robin
outlier_detection: {consecutive_5xx: 3, interval: 200ms, base_ejection_time: 60s, max_ejection_percent: 50, success_rate: null}
---
kind: TrafficPolicy
service: stock
namespace: shop
lb: ring_hash
health_check: {http: {path: /healthz}, interval: 200ms, timeout: 1s, unhealthy_threshold: 2}
---
kind: Route
service: stock
namespace: shop
rules:
  - to: [{version: v1}]
    hash_policy: [{header: x-user}]
""")


@pytest.fixture(scope="module")
def apps() -> Iterator[dict[str, ControlledUpstream]]:
    upstreams = {name: ControlledUpstream(name) for name in ("orders-a", "orders-b", "orders-c",
                                                             "stock-a", "stock-b", "stock-c")}
    yield upstreams
    for upstream in upstreams.values():
        upstream.stop()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, apps: dict[str, ControlledUpstream]) -> Iterator[LocalMesh]:
    apps["orders-a"].mode = "error"
    apps["stock-a"].mode = "error"  # its /healthz answers 500 too
    with LocalMesh(tmp_path_factory.mktemp("mesh")) as mesh:
        mesh.apply(MESH)
        mesh.caller_of([(name.split("-")[0], app.address) for name, app in apps.items()], namespace="shop",
                       sees={"outbound_orders.shop": 3, "outbound_stock.shop_v1": 3})
        yield mesh


def inbound_of(mesh: LocalMesh, app: ControlledUpstream) -> str:
    """The inbound address of the sidecar in front of ``app``."""
    [sidecar] = [s for s in mesh.sidecars if f"--app {app.address}" in " ".join(s.command)]
    return sidecar.inbound


def health(mesh: LocalMesh, service: str, cluster: str) -> dict[str, str]:
    rows = json.loads(mesh.meshctl("endpoints", f"{service}.shop", "-o", "json").stdout)
    return {row["endpoint"]: row["health"] for row in rows if row["sidecar"] == "frontend" and row["cluster"] == cluster}


def test_an_instance_answering_500_is_ejected_and_gets_no_more_requests(
        mesh: LocalMesh, apps: dict[str, ControlledUpstream]) -> None:
    failing, bad = apps["orders-a"], inbound_of(mesh, apps["orders-a"])
    assert health(mesh, "orders", "outbound_orders.shop") == {inbound_of(mesh, apps[n]): "healthy"
                                                               for n in ("orders-a", "orders-b", "orders-c")}
    with httpx.Client(base_url=f"http://{mesh.sidecars[0].outbound}", timeout=10, headers={"host": "orders"}) as client:
        # Round robin: the failing instance gets every third call; its third 500 in a row ejects it.
        statuses = Counter(client.get("/").status_code for _ in range(12))
        assert statuses[500] == 3, statuses
        assert health(mesh, "orders", "outbound_orders.shop")[bad] == "ejected"
        table = mesh.meshctl("endpoints", "orders.shop").stdout
        # SIDECAR (3 words), CLUSTER, ENDPOINT, HEALTH, ...
        assert [line.split()[3:6] for line in table.splitlines() if line.split()[4] == bad] == [
            ["outbound_orders.shop", bad, "ejected"]]
        reached = failing.requests()
        # Ejected for 60 s: every call now goes to the two others.
        assert Counter(client.get("/").status_code for _ in range(30)) == Counter({200: 30})
    assert failing.requests() == reached == 3
    assert apps["orders-b"].requests() + apps["orders-c"].requests() == 9 + 30


def test_an_instance_failing_its_health_check_is_unhealthy_and_a_user_stays_on_one_instance(
        mesh: LocalMesh, apps: dict[str, ControlledUpstream]) -> None:
    bad = inbound_of(mesh, apps["stock-a"])
    until(lambda: health(mesh, "stock", "outbound_stock.shop_v1") == {
        inbound_of(mesh, apps[n]): "unhealthy" if n == "stock-a" else "healthy" for n in ("stock-a", "stock-b", "stock-c")},
          what="frontend's checks to find stock-a unhealthy and the others healthy")
    assert bad in health(mesh, "stock", "outbound_stock.shop_v1")
    checked = apps["stock-a"].requests("/healthz")
    assert checked >= 2 and apps["stock-b"].requests("/healthz") >= 1
    served: dict[str, set[str]] = {}
    with httpx.Client(base_url=f"http://{mesh.sidecars[0].outbound}", timeout=10, headers={"host": "stock"}) as client:
        for user in range(20):
            for _ in range(3):
                response = client.get("/", headers={"x-user": f"user-{user}"})
                assert response.status_code == 200
                served.setdefault(f"user-{user}", set()).add(response.text)
    assert all(len(instances) == 1 for instances in served.values()), served
    assert set().union(*served.values()) == {"stock-b", "stock-c"}
    assert apps["stock-a"].requests("/") == 0
