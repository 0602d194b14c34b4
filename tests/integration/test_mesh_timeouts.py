"""A TrafficPolicy's rate_limit and a Route rule's idle_timeout, applied to the control plane,
reach meshproxy sidecars and act on real upstreams on loopback: calls of payments beyond its
rate limit are answered 429 ``rate_limited`` by payments' own sidecar, whoever calls, and never
reach the app; a call of orders whose app stays silent past the rule's idle_timeout is answered
504 ``timeout`` by the caller's sidecar."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from scripted_upstream import ScriptedUpstream

from mesh_documents import documents, service
from mesh_harness import LocalMesh

MESH = documents(
    service("frontend", "shop", calls=["orders", "payments"]),
    service("orders", "shop", calls=[]),
    service("payments", "shop", calls=[]),
    """\
kind: TrafficPolicy
service: payments
namespace: shop
rate_limit: {requests_per_second: 1, burst: 2}
---
kind: Route
service: orders
namespace: shop
rules:
  - to: [{version: v1}]
    idle_timeout: 300ms
""")


@pytest.fixture(scope="module")
def apps() -> Iterator[dict[str, ScriptedUpstream]]:
    # orders: silent for 5 s before its first answer.
    upstreams = {"orders": ScriptedUpstream([(200, 5.0)]), "payments": ScriptedUpstream()}
    yield upstreams
    for upstream in upstreams.values():
        upstream.stop()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, apps: dict[str, ScriptedUpstream]) -> Iterator[LocalMesh]:
    with LocalMesh(tmp_path_factory.mktemp("mesh")) as mesh:
        mesh.apply(MESH)
        mesh.caller_of([(name, app.address) for name, app in apps.items()], namespace="shop",
                       sees={"outbound_orders.shop_v1": 1, "outbound_payments.shop": 1})
        yield mesh


def test_calls_over_the_services_rate_limit_get_429_from_its_sidecar_and_never_reach_the_app(
        mesh: LocalMesh, apps: dict[str, ScriptedUpstream]) -> None:
    url = f"http://{mesh.sidecars[0].outbound}/"
    with httpx.Client(timeout=20) as client:
        answers = [client.get(url, headers={"host": "payments"}) for _ in range(6)]
    limited = [a for a in answers if a.status_code == 429]
    assert limited, [a.status_code for a in answers]
    assert all(a.headers["x-meshproxy-error"] == "rate_limited" and "retry-after" in a.headers for a in limited)
    assert {a.status_code for a in answers} == {200, 429}
    # Refused at payments' inbound listener: only the calls answered 200 reached the app.
    assert apps["payments"].count() == sum(a.status_code == 200 for a in answers)


def test_a_call_silent_past_the_rules_idle_timeout_gets_504_timeout(
        mesh: LocalMesh, apps: dict[str, ScriptedUpstream]) -> None:
    answer = httpx.get(f"http://{mesh.sidecars[0].outbound}/", headers={"host": "orders"}, timeout=20)
    assert answer.status_code == 504
    assert answer.headers["x-meshproxy-error"] == "timeout"
    assert "idle_timeout" in answer.text
