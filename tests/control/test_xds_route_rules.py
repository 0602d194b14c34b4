"""A Route rule's other settings as the control plane sends them: answers of its own
(``redirect``, ``direct_response``: Envoy's ``Route.redirect`` and ``Route.direct_response``), a
``mirror`` (``request_mirror_policies``), ``fault`` and ``rate_limit`` (per-route configs of
Envoy's HTTP filters) and rewrites (``regex_rewrite``, ``host_rewrite_literal``), read with
Envoy's classes; and, through the wire and the sidecar's translation, the same sidecar route the
document wrote."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from meshcontrol.resources import as_document, load_documents
from meshcontrol.xds.build import LISTENER, ROUTE
from meshcontrol.xds.snapshot import Client
from meshproxy.config.errors import ConfigError
from test_xds_traffic_policy import ORDERS, built, envoy_clusters, sidecar_config

from mesh_documents import documents, service

CALLED = (service("orders", "shop", calls=["payments"]), service("payments", "shop"))
ROUTE_DOC = """\
kind: Route
service: payments
namespace: shop
rules:
  - match: {path: /old}
    redirect: {path: /new, status: 308, strip_query: true}
  - match: {path: /elsewhere}
    redirect: {host: "pay.example:8443", scheme: https}
  - match: {path: /ping}
    direct_response: {status: 200, body: pong}
  - to: [{version: v1}]
"""


def test_redirects_and_direct_responses_are_envoys_route_actions(tmp_path: Path) -> None:
    snapshots = built(tmp_path, *CALLED, ROUTE_DOC)
    [outbound] = [e for e in snapshots.resources(Client(ORDERS), ROUTE) if e.name == "outbound"]
    config = route_pb2.RouteConfiguration()
    outbound.resource.Unpack(config)
    [host] = config.virtual_hosts
    old, elsewhere, ping, rest = host.routes
    assert (old.redirect.path_redirect, old.redirect.response_code, old.redirect.strip_query) == (
        "/new", route_components_pb2.RedirectAction.PERMANENT_REDIRECT, True)
    assert (elsewhere.redirect.host_redirect, elsewhere.redirect.scheme_redirect, elsewhere.redirect.response_code) \
        == ("pay.example:8443", "https", route_components_pb2.RedirectAction.MOVED_PERMANENTLY)
    assert (ping.direct_response.status, ping.direct_response.body.inline_string) == (200, "pong")
    assert rest.route.cluster == "outbound_payments.shop_v1"
    # A rule that answers itself has no cluster of its own.
    assert set(envoy_clusters(snapshots)) == {"inbound_app", "outbound_payments.shop", "outbound_payments.shop_v1"}


def test_the_sidecar_reads_back_the_redirects_and_direct_responses(tmp_path: Path) -> None:
    config = sidecar_config(built(tmp_path, *CALLED, ROUTE_DOC), tmp_path)
    routes = [r for r in config["listeners"][1]["routes"] if r["match"]["host"] == "payments"]
    assert [r["redirect"] for r in routes[:2]] == [
        {"path": "/new", "host": None, "scheme": None, "status": 308, "strip_query": True},
        {"path": None, "host": "pay.example:8443", "scheme": "https", "status": 301, "strip_query": False}]
    assert routes[2]["direct_response"] == {"status": 200, "body": "pong"}
    assert (routes[3]["cluster"], routes[3]["redirect"], routes[3]["direct_response"]) == (
        "outbound_payments.shop_v1", None, None)




@pytest.mark.parametrize(("rule", "message"), [
    ("{to: [{version: v1}], direct_response: {status: 200}}",
     "rules[0]: a rule needs exactly one of to, redirect, direct_response; found to and direct_response"),
    ("{match: {path: /a}}", "rules[0]: a rule needs exactly one of to, redirect, direct_response; found none"),
    ("{redirect: {path: /b}, timeout: 1s}",
     "rules[0].timeout: applies to a rule with to only; this one answers with redirect"),
])
def test_a_rule_answers_one_way(rule: str, message: str) -> None:
    text = documents(service("payments", "shop"), f"kind: Route\nservice: payments\nnamespace: shop\nrules:\n  - {rule}\n")
    with pytest.raises(ConfigError) as raised:
        load_documents(text, "mesh.yaml", [])
    assert [str(issue).split(": ", 2)[2] for issue in raised.value.issues] == [message]


MIRRORING = """\
kind: Route
service: payments
namespace: shop
rules:
  - to: [{version: v1}]
    mirror: {version: v2, percent: 12.5}
"""


def test_a_rules_mirror_is_envoys_request_mirror_policy_to_the_versions_cluster(tmp_path: Path) -> None:
    snapshots = built(tmp_path, *CALLED, MIRRORING)
    assert "outbound_payments.shop_v2" in envoy_clusters(snapshots)  # the shadow has its cluster
    [outbound] = [e for e in snapshots.resources(Client(ORDERS), ROUTE) if e.name == "outbound"]
    config = route_pb2.RouteConfiguration()
    outbound.resource.Unpack(config)
    [[route]] = [host.routes for host in config.virtual_hosts]
    [mirror] = route.route.request_mirror_policies
    assert (mirror.cluster, mirror.runtime_fraction.default_value.numerator,
            mirror.runtime_fraction.default_value.denominator) == ("outbound_payments.shop_v2", 125_000, 2)
    sidecar = sidecar_config(snapshots, tmp_path)
    [payments] = [r for r in sidecar["listeners"][1]["routes"] if r["match"]["host"] == "payments"]
    assert payments["mirror"] == {"cluster": "outbound_payments.shop_v2", "percent": 12.5}


CHAOS = """\
kind: Route
service: payments
namespace: shop
rules:
  - match: {path_prefix: /slow}
    to: [{version: v1}]
    fault: {delay: {fixed: 1500ms, percent: 10, header: x-fault}, abort: {status: 503, percent: 5, header: x-fault}}
  - to: [{version: v1}]
    rate_limit: {requests_per_second: 100, burst: 200}
"""


def test_a_rules_fault_and_rate_limit_are_envoys_per_route_filter_configs(tmp_path: Path) -> None:
    snapshots = built(tmp_path, *CALLED, CHAOS)
    [outbound] = [e for e in snapshots.resources(Client(ORDERS), LISTENER) if e.name == "outbound"]
    listener = listener_pb2.Listener()
    outbound.resource.Unpack(listener)
    manager = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    assert [f.name for f in manager.http_filters] == [
        "envoy.filters.http.local_ratelimit", "envoy.filters.http.fault", "envoy.filters.http.router"]
    [routes] = [e for e in snapshots.resources(Client(ORDERS), ROUTE) if e.name == "outbound"]
    config = route_pb2.RouteConfiguration()
    routes.resource.Unpack(config)
    [[slow, rest]] = [host.routes for host in config.virtual_hosts]
    fault = fault_pb2.HTTPFault()
    slow.typed_per_filter_config["envoy.filters.http.fault"].Unpack(fault)
    assert (fault.delay.fixed_delay.ToMilliseconds(), fault.delay.percentage.numerator) == (1500, 100_000)
    assert (fault.abort.http_status, fault.abort.percentage.numerator) == (503, 50_000)
    assert [(h.name, h.present_match) for h in fault.headers] == [("x-fault", True)]
    limit = local_rate_limit_pb2.LocalRateLimit()
    rest.typed_per_filter_config["envoy.filters.http.local_ratelimit"].Unpack(limit)
    assert (limit.token_bucket.max_tokens, limit.token_bucket.tokens_per_fill.value,
            limit.token_bucket.fill_interval.seconds) == (200, 100, 1)
    assert limit.filter_enabled.default_value.numerator == limit.filter_enforced.default_value.numerator == 1_000_000

    sidecar = sidecar_config(snapshots, tmp_path)
    [slow_route, rest_route] = [r for r in sidecar["listeners"][1]["routes"] if r["match"]["host"] == "payments"]
    assert slow_route["fault"] == {"delay": {"fixed": "1500ms", "percent": 10.0, "header": "x-fault"},
                                   "abort": {"status": 503, "percent": 5.0, "header": "x-fault"}}
    assert rest_route["rate_limit"] == {"requests_per_second": 100, "burst": 200}
    # Without fault or rate_limit rules, the listener has only the router.
    plain = built(tmp_path / "plain", *CALLED)
    [outbound] = [e for e in plain.resources(Client(ORDERS), LISTENER) if e.name == "outbound"]
    outbound.resource.Unpack(listener)
    listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    assert [f.name for f in manager.http_filters] == ["envoy.filters.http.router"]


def test_a_faults_delay_and_abort_name_one_header() -> None:
    text = documents(service("payments", "shop"), """\
kind: Route
service: payments
namespace: shop
rules:
  - to: [{version: v1}]
    fault: {delay: {fixed: 1s, header: x-a}, abort: {status: 503}}
""")
    with pytest.raises(ConfigError) as raised:
        load_documents(text, "mesh.yaml", [])
    assert [str(issue).split(": ", 2)[2] for issue in raised.value.issues] == [
        "rules[0].fault.abort.header: the delay and the abort must name the same header, or neither: an Envoy client "
        "conditions a rule's whole fault on its header"]


@pytest.mark.parametrize("route", [ROUTE_DOC, MIRRORING, CHAOS], ids=["answers", "mirror", "fault-rate-limit"])
def test_meshctl_get_prints_them_so_apply_takes_them_again(route: str) -> None:
    stored = load_documents(documents(*CALLED, route), "mesh.yaml", [])
    printed = yaml.safe_dump_all([as_document(resource) for resource in stored])
    assert load_documents(printed, "again.yaml", []) == stored


REWRITING = """\
kind: Route
service: payments
namespace: shop
rules:
  - match: {path_prefix: /v1/}
    to: [{version: v1}]
    regex_rewrite: {pattern: '^/v1/(.*)$', substitution: '/\\1'}
    host_rewrite: payments.internal
"""


def test_a_rules_rewrites_are_envoys_regex_rewrite_and_host_rewrite_literal(tmp_path: Path) -> None:
    snapshots = built(tmp_path, *CALLED, REWRITING)
    [outbound] = [e for e in snapshots.resources(Client(ORDERS), ROUTE) if e.name == "outbound"]
    config = route_pb2.RouteConfiguration()
    outbound.resource.Unpack(config)
    [[route]] = [host.routes for host in config.virtual_hosts]
    assert (route.route.regex_rewrite.pattern.regex, route.route.regex_rewrite.substitution) == ("^/v1/(.*)$", "/\\1")
    assert route.route.host_rewrite_literal == "payments.internal"
    sidecar = sidecar_config(snapshots, tmp_path)
    [payments] = [r for r in sidecar["listeners"][1]["routes"] if r["match"]["host"] == "payments"]
    assert (payments["regex_rewrite"], payments["host_rewrite"]) == (
        {"pattern": "^/v1/(.*)$", "substitution": "/\\1"}, "payments.internal")
    stored = load_documents(documents(*CALLED, REWRITING), "mesh.yaml", [])
    printed = yaml.safe_dump_all([as_document(resource) for resource in stored])
    assert load_documents(printed, "again.yaml", []) == stored


def test_a_regex_rewrite_is_judged_by_the_engine() -> None:
    text = documents(service("payments", "shop"), """\
kind: Route
service: payments
namespace: shop
rules:
  - to: [{version: v1}]
    regex_rewrite: {pattern: '(unclosed', substitution: /}
""")
    with pytest.raises(ConfigError) as raised:
        load_documents(text, "mesh.yaml", [])
    [issue] = raised.value.issues
    assert str(issue).split(": ", 2)[2].startswith("rules[0].regex_rewrite.pattern: "), str(issue)
