"""A mesh run by `meshctl serve`: routes and policies applied once reach every sidecar, and the
traffic between sidecars follows them (split, test channel, denial)."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mesh_documents import canary_route, documents, service
from mesh_harness import LocalMesh, apps_by_name, until
from upstreams import Upstream

SERVICES = documents(
    service("frontend", "shop", calls=["orders", "payments"]),
    service("orders", "shop", calls=[]),
    service("payments", "shop", calls=["orders"]),
)
CANARY = documents(
    canary_route("orders", "shop"),
    """\
kind: AccessPolicy
service: orders
namespace: shop
rules:
  - {name: frontend-reads, action: allow, services: [frontend], methods: [GET, HEAD]}
""")


@pytest.fixture(scope="module")
def apps() -> Iterator[dict[str, Upstream]]:
    yield from apps_by_name("frontend", "orders-v1", "orders-v2", "payments")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, apps: dict[str, Upstream]) -> Iterator[LocalMesh]:
    with LocalMesh(tmp_path_factory.mktemp("mesh")) as mesh:
        mesh.apply(documents(SERVICES, CANARY))
        for name in ("frontend", "payments"):
            mesh.sidecar(name, namespace="shop", app=apps[name].address)
        for version in ("v1", "v2"):
            mesh.sidecar("orders", namespace="shop", version=version, app=apps[f"orders-{version}"].address)
        frontend = mesh.sidecars[0]
        until(lambda: frontend.endpoints("outbound_orders.shop_v1") != []
              and frontend.endpoints("outbound_orders.shop_v2") != [], what="frontend to see both versions")
        mesh.wait_acked()
        yield mesh


def served(client: httpx.Client, host: str = "orders", **headers: str) -> str:
    response = client.get("/anything", headers={"host": host, **headers})
    assert response.status_code == 200, (response.status_code, response.headers, response.text)
    return str(response.json()["upstream"])


def test_split_within_three_points_over_10000_requests(mesh: LocalMesh) -> None:
    with httpx.Client(base_url=f"http://{mesh.sidecars[0].outbound}", timeout=10) as client:
        seen = Counter(served(client) for _ in range(10_000))
    assert set(seen) == {"orders-v1", "orders-v2"}
    assert abs(seen["orders-v2"] / 10_000 - 0.10) <= 0.03, seen


def test_test_channel_header_goes_to_v2_only(mesh: LocalMesh) -> None:
    with httpx.Client(base_url=f"http://{mesh.sidecars[0].outbound}", timeout=10) as client:
        seen = Counter(served(client, **{"x-channel": "beta"}) for _ in range(200))
    assert seen == Counter({"orders-v2": 200})


def test_the_callee_sees_the_callers_spiffe_id(mesh: LocalMesh) -> None:
    response = httpx.get(f"http://{mesh.sidecars[0].outbound}/anything", headers={"host": "orders"}, timeout=10)
    headers = response.json()["headers"]
    assert headers["x-meshproxy-peer-identity"] == "spiffe://mesh.local/ns/shop/sa/frontend"


def test_a_service_the_policy_does_not_allow_gets_403(mesh: LocalMesh) -> None:
    payments = mesh.sidecars[1]
    response = httpx.get(f"http://{payments.outbound}/anything", headers={"host": "orders"}, timeout=10)
    assert response.status_code == 403
    assert response.headers["x-meshproxy-error"] == "denied"
    # frontend may read, not write
    response = httpx.post(f"http://{mesh.sidecars[0].outbound}/anything", headers={"host": "orders"}, timeout=10)
    assert response.status_code == 403


def test_the_fully_qualified_name_routes_too(mesh: LocalMesh) -> None:
    with httpx.Client(base_url=f"http://{mesh.sidecars[0].outbound}", timeout=10) as client:
        assert served(client, "orders.shop", **{"x-channel": "beta"}) == "orders-v2"
        assert served(client, "payments") == "payments"


def test_a_route_change_is_acked_by_every_sidecar_within_a_second(mesh: LocalMesh) -> None:
    """Timed from the API's apply (a meshctl process would add its own start-up) to the last
    ACK, three times (the figure is the median): each sidecar validates a pushed config in a
    child process, which a busy machine can delay."""
    took = []
    for weights in ("weight: 0}, {version: v2, weight: 100}", "weight: 50}, {version: v2, weight: 50}",
                    "weight: 0}, {version: v2, weight: 100}"):
        before = {row["node_id"]: row["types"]["routes"]["acked"] for row in mesh.status()}
        applied = time.monotonic()
        answer = httpx.post(f"http://{mesh.api}/v1/apply", timeout=10,
                            content=CANARY.replace("weight: 90}, {version: v2, weight: 10}", weights))
        assert answer.status_code == 200, answer.text

        def all_acked_new() -> bool:
            rows = [r for r in mesh.status() if r["service"] in ("frontend", "payments")]
            return len(rows) == 2 and all(r["types"]["routes"]["acked"] not in (None, before[r["node_id"]])
                                          and r["types"]["routes"]["acked"] == r["types"]["routes"]["sent"]
                                          for r in rows)

        until(all_acked_new, timeout=10, what="every caller to ACK the new routes")
        took.append(time.monotonic() - applied)
    assert sorted(took)[1] < 1.0, f"apply -> every ACK took {', '.join(f'{t:.2f}s' for t in took)}"
    with httpx.Client(base_url=f"http://{mesh.sidecars[0].outbound}", timeout=10) as client:
        assert Counter(served(client) for _ in range(100)) == Counter({"orders-v2": 100})
    mesh.apply(CANARY)


def test_meshctl_endpoints_shows_each_callers_view_of_a_service(mesh: LocalMesh) -> None:
    rows = json.loads(mesh.meshctl("endpoints", "orders.shop", "-o", "json").stdout)
    inbound = {row["address"] for row in mesh.status() if row["service"] == "orders"}
    assert len(inbound) == 2 and not [row for row in rows if row.get("error")], rows
    # Both callers of orders, each with the service's cluster and one per version; orders itself
    # calls nothing.
    assert {row["sidecar"] for row in rows} == {"frontend", "payments"}
    for caller in ("frontend", "payments"):
        clusters = {row["cluster"] for row in rows if row["sidecar"] == caller}
        assert clusters == {"outbound_orders.shop", "outbound_orders.shop_v1", "outbound_orders.shop_v2"}
    assert {row["endpoint"] for row in rows} == inbound
    # No health checks are configured here: the sidecars say so.
    assert {row["health"] for row in rows} == {"unchecked"}
    table = mesh.meshctl("endpoints", "orders", "-n", "shop").stdout.splitlines()
    assert table[0].split() == ["SIDECAR", "CLUSTER", "ENDPOINT", "HEALTH", "IN-FLIGHT", "LATENCY"]
    assert len(table) == len(rows) + 1
