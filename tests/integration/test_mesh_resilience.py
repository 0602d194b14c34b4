"""A TrafficPolicy's circuit_breakers and a Route rule's retry, applied to the control plane,
reach the callers' meshproxy sidecars and act on real upstreams on loopback: calls to a slow
orders instance over max_requests get 503 ``overflow`` at once and never reach it; a payments
instance answering 500 once is tried again, so the caller sees 200 and the app counts two tries;
a rule's redirect and direct response are answered by the caller's sidecar, and its fault and
rate limit applied there."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from scripted_upstream import ScriptedUpstream

from mesh_documents import documents, resilience, service
from mesh_harness import LocalMesh, until

MESH = documents(
    service("frontend", "shop", calls=["orders", "payments"]),
    service("orders", "shop", calls=[]),
    service("payments", "shop", calls=[]),
    resilience("orders", "payments", "shop"),
)


@pytest.fixture(scope="module")
def apps() -> Iterator[dict[str, ScriptedUpstream]]:
    upstreams = {"orders": ScriptedUpstream(hold=True), "payments": ScriptedUpstream([500])}
    yield upstreams
    for upstream in upstreams.values():
        upstream.stop()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, apps: dict[str, ScriptedUpstream]) -> Iterator[LocalMesh]:
    with LocalMesh(tmp_path_factory.mktemp("mesh")) as mesh:
        mesh.apply(MESH)
        mesh.caller_of([(name, app.address) for name, app in apps.items()], namespace="shop",
                       sees={"outbound_orders.shop": 1, "outbound_payments.shop_v1": 1})
        yield mesh


def cluster_stats(mesh: LocalMesh, cluster: str) -> dict[str, int]:
    stats = httpx.get(f"http://{mesh.sidecars[0].admin}/stats", timeout=10).json()
    found: dict[str, int] = stats["clusters"][cluster]
    return found


def test_calls_over_the_traffic_policys_max_requests_get_503_overflow_and_never_reach_the_app(
        mesh: LocalMesh, apps: dict[str, ScriptedUpstream]) -> None:
    orders = apps["orders"]
    url = f"http://{mesh.sidecars[0].outbound}/"
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(httpx.get, url, headers={"host": "orders"}, timeout=20) for _ in range(6)]
        # Two calls are held at the app; the four over max_requests are answered at once.
        until(lambda: sum(f.done() for f in futures) == 4 and orders.count() == 2,
              what="the refused answers, and two calls held at orders")
        orders.release()
        answers = [f.result() for f in futures]
    assert sorted(a.status_code for a in answers) == [200, 200, 503, 503, 503, 503]
    assert {a.headers.get("x-meshproxy-error") for a in answers if a.status_code == 503} == {"overflow"}
    assert orders.count() == 2
    assert cluster_stats(mesh, "outbound_orders.shop")["overflow_total"] == 4


def test_a_call_answered_500_is_tried_again_as_the_routes_retry_says(
        mesh: LocalMesh, apps: dict[str, ScriptedUpstream]) -> None:
    payments = apps["payments"]
    response = httpx.get(f"http://{mesh.sidecars[0].outbound}/pay", headers={"host": "payments"}, timeout=20)
    assert response.status_code == 200
    assert [r.path for r in payments.received] == ["/pay", "/pay"]  # the 500, then the retry
    assert cluster_stats(mesh, "outbound_payments.shop_v1")["retries_total"] == 1


def test_a_rule_with_a_redirect_or_a_direct_response_is_answered_by_the_callers_sidecar(
        mesh: LocalMesh, apps: dict[str, ScriptedUpstream]) -> None:
    reached = apps["payments"].count()
    with httpx.Client(base_url=f"http://{mesh.sidecars[0].outbound}", headers={"host": "payments"}, timeout=10) as client:
        moved = client.get("/old?x=1")
        assert (moved.status_code, moved.headers["location"]) == (308, "http://payments/new?x=1")
        ping = client.get("/ping")
        assert (ping.status_code, ping.text) == (200, "pong")
    assert apps["payments"].count() == reached  # the caller's sidecar answered both


def test_a_rules_fault_and_rate_limit_are_applied_by_the_callers_sidecar(
        mesh: LocalMesh, apps: dict[str, ScriptedUpstream]) -> None:
    upstream = apps["payments"]
    with httpx.Client(base_url=f"http://{mesh.sidecars[0].outbound}", headers={"host": "payments"}, timeout=10) as client:
        aborted = client.get("/chaos", headers={"x-fault": "1"})
        assert aborted.status_code == 503
        assert aborted.headers["x-meshproxy-error"] == "fault_injected"
        assert [r.path for r in upstream.received].count("/chaos") == 0
        assert client.get("/chaos").status_code == 200  # without the header: no fault
        # One token, one a second: of calls made at once, the first passes and later ones get 429.
        statuses = [client.get("/limited").status_code for _ in range(5)]
    assert statuses[0] == 200 and 429 in statuses, statuses
    assert [r.path for r in upstream.received].count("/limited") == statuses.count(200)


def test_a_rules_regex_rewrite_is_applied_by_the_callers_sidecar(mesh: LocalMesh, apps: dict[str, ScriptedUpstream]) -> None:
    response = httpx.get(f"http://{mesh.sidecars[0].outbound}/v1/items", headers={"host": "payments"}, timeout=10)
    assert response.status_code == 200
    assert apps["payments"].received[-1].path == "/items"
