"""The sidecar's translation of Envoy resources (as the control plane sends them over ADS) into a
sidecar config: real Envoy protos, built here by hand in the contract's shapes and read through
the wire as the sidecar reads them (its subset of Envoy's schema, xds_pb2), in; a config out that
meshproxy's own schema accepts, with the routes, splits, clusters and authorization the
resources mean. Shapes with no sidecar equivalent are refused with a message naming the part."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, health_check_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.matcher.v3 import path_pb2, regex_pb2, string_pb2
from google.protobuf import any_pb2, duration_pb2, struct_pb2, wrappers_pb2
from meshproxy.config import ConfigError, coerce_config
from meshproxy.mesh import names, xds_pb2
from meshproxy.mesh.translate import Local, Refused, Resources, base_config, missing, references
from meshproxy.mesh.translate import translate as translate_subset
from pki import issue, make_ca

TD = "mesh.local"
FRONTEND = f"spiffe://{TD}/ns/shop/sa/frontend"
ORDERS = f"spiffe://{TD}/ns/shop/sa/orders"


# === Envoy resources, as the contract writes them ===


def packed(message: Any) -> any_pb2.Any:
    wrapped = any_pb2.Any()
    wrapped.Pack(message)
    return wrapped


def socket(address: str) -> address_pb2.Address:
    host, _, port = address.rpartition(":")
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=host.strip("[]"), port_value=int(port)))


def ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(),
                                          resource_api_version=config_source_pb2.V3)


def sds(name: str) -> secret_pb2.SdsSecretConfig:
    return secret_pb2.SdsSecretConfig(name=name, sds_config=ads())


def uri_san(how: str, value: str) -> common_pb2.SubjectAltNameMatcher:
    return common_pb2.SubjectAltNameMatcher(san_type=common_pb2.SubjectAltNameMatcher.URI,
                                            matcher=string_pb2.StringMatcher(**{how: value}))


def common_tls(san: common_pb2.SubjectAltNameMatcher, alpn: list[str]) -> tls_pb2.CommonTlsContext:
    return tls_pb2.CommonTlsContext(
        tls_certificate_sds_secret_configs=[sds(names.CERTIFICATE_SECRET)],
        combined_validation_context=tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
            default_validation_context=common_pb2.CertificateValidationContext(match_typed_subject_alt_names=[san]),
            validation_context_sds_secret_config=sds(names.BUNDLE_SECRET)),
        alpn_protocols=alpn)


def downstream_tls() -> base_pb2.TransportSocket:
    context = tls_pb2.DownstreamTlsContext(require_client_certificate=wrappers_pb2.BoolValue(value=True),
                                           common_tls_context=common_tls(uri_san("prefix", f"spiffe://{TD}/"),
                                                                         ["h2", "http/1.1"]))
    return base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=packed(context))


def manager(route_config: str, http_filters: list[hcm_pb2.HttpFilter] = ()) -> listener_components_pb2.Filter:
    config = hcm_pb2.HttpConnectionManager(
        stat_prefix=route_config, codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(route_config_name=route_config, config_source=ads()),
        http_filters=[*http_filters, hcm_pb2.HttpFilter(name="envoy.filters.http.router",
                                                        typed_config=packed(router_pb2.Router()))],
        # What the control plane sends for WebSocket; the sidecar tunnels upgrades unasked.
        upgrade_configs=[hcm_pb2.HttpConnectionManager.UpgradeConfig(upgrade_type="websocket")],
        http2_protocol_options=protocol_pb2.Http2ProtocolOptions(allow_connect=True))
    return listener_components_pb2.Filter(name="envoy.filters.network.http_connection_manager",
                                          typed_config=packed(config))


def inbound_listener(mtls: str = "strict", http_filters: list[hcm_pb2.HttpFilter] = (),
                     address: str = "127.0.0.1:40001") -> listener_pb2.Listener:
    hcm = manager(names.INBOUND, http_filters)
    listener = listener_pb2.Listener(name=names.INBOUND, address=socket(address), traffic_direction=base_pb2.INBOUND)
    if mtls == "strict":
        listener.filter_chains.append(listener_components_pb2.FilterChain(filters=[hcm],
                                                                          transport_socket=downstream_tls()))
    else:
        listener.listener_filters.append(listener_components_pb2.ListenerFilter(
            name="envoy.filters.listener.tls_inspector", typed_config=packed(tls_inspector_pb2.TlsInspector())))
        listener.filter_chains.append(listener_components_pb2.FilterChain(
            filter_chain_match=listener_components_pb2.FilterChainMatch(transport_protocol="tls"),
            filters=[hcm], transport_socket=downstream_tls()))
        listener.filter_chains.append(listener_components_pb2.FilterChain(filters=[hcm]))
    return listener


def outbound_listener() -> listener_pb2.Listener:
    return listener_pb2.Listener(name=names.OUTBOUND, address=socket("127.0.0.1:15001"),
                                 traffic_direction=base_pb2.OUTBOUND,
                                 filter_chains=[listener_components_pb2.FilterChain(filters=[manager(names.OUTBOUND)])])


def inbound_routes() -> route_pb2.RouteConfiguration:
    to_app = route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(prefix="/"),
        route=route_components_pb2.RouteAction(cluster=names.APP_CLUSTER, timeout=duration_pb2.Duration(seconds=0)))
    return route_pb2.RouteConfiguration(name=names.INBOUND, virtual_hosts=[
        route_components_pb2.VirtualHost(name="inbound", domains=["*"], routes=[to_app])])


def exact(name: str, value: str) -> route_components_pb2.HeaderMatcher:
    return route_components_pb2.HeaderMatcher(name=name, string_match=string_pb2.StringMatcher(exact=value))


def regex(name: str, value: str) -> route_components_pb2.HeaderMatcher:
    return route_components_pb2.HeaderMatcher(
        name=name, string_match=string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=value)))


def weighted(*splits: tuple[str, int], timeout_ms: int = 15000) -> route_components_pb2.RouteAction:
    action = route_components_pb2.RouteAction(timeout=duration_pb2.Duration(seconds=timeout_ms // 1000,
                                                                            nanos=timeout_ms % 1000 * 1_000_000))
    if len(splits) == 1:
        action.cluster = splits[0][0]
    else:
        action.weighted_clusters.clusters.extend(
            route_components_pb2.WeightedCluster.ClusterWeight(name=c, weight=wrappers_pb2.UInt32Value(value=w))
            for c, w in splits)
    return action


def outbound_routes() -> route_pb2.RouteConfiguration:
    """orders.shop (same namespace as the caller) with the issue's Route: a beta test channel
    and a 90/10 split; payments.other without a Route."""
    v1, v2 = names.version_cluster("orders", "shop", "v1"), names.version_cluster("orders", "shop", "v2")
    orders = route_components_pb2.VirtualHost(
        name="orders.shop", domains=["orders.shop", "orders.shop:*", "orders", "orders:*"],
        routes=[
            route_components_pb2.Route(name="beta", match=route_components_pb2.RouteMatch(
                prefix="/", headers=[exact("x-channel", "beta"), regex(":method", "GET|HEAD")]),
                route=weighted((v2, 1))),
            route_components_pb2.Route(match=route_components_pb2.RouteMatch(prefix="/"),
                                       route=weighted((v1, 90), (v2, 10), timeout_ms=5000)),
        ])
    payments = route_components_pb2.VirtualHost(
        name="payments.other", domains=["payments.other", "payments.other:*"],
        routes=[route_components_pb2.Route(match=route_components_pb2.RouteMatch(prefix="/"),
                                           route=weighted((names.service_cluster("payments", "other"), 1)))])
    return route_pb2.RouteConfiguration(name=names.OUTBOUND, virtual_hosts=[payments, orders])


def eds_cluster(name: str, identity: str) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(
        name=name, type=cluster_pb2.Cluster.EDS, lb_policy=cluster_pb2.Cluster.LEAST_REQUEST,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ads()),
        connect_timeout=duration_pb2.Duration(seconds=1),
        transport_socket=base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=packed(
            tls_pb2.UpstreamTlsContext(common_tls_context=common_tls(uri_san("exact", identity), ["h2"])))))
    cluster.metadata.filter_metadata[names.METADATA_KEY].update({"lb": "p2c_ewma"})
    options = http_protocol_options_pb2.HttpProtocolOptions(
        explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http2_protocol_options=protocol_pb2.Http2ProtocolOptions()))
    cluster.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].CopyFrom(
        packed(options))
    return cluster


def assignment(name: str, *addresses: str, draining: str | None = None) -> endpoint_pb2.ClusterLoadAssignment:
    lb_endpoints = [endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(address=socket(a)),
        load_balancing_weight=wrappers_pb2.UInt32Value(value=1)) for a in addresses]
    if draining:
        lb_endpoints.append(endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(address=socket(draining)),
            health_status=health_check_pb2.DRAINING))
    return endpoint_pb2.ClusterLoadAssignment(cluster_name=name, endpoints=[
        endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=lb_endpoints)])


def app_cluster(app: str = "127.0.0.1:8081") -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(name=names.APP_CLUSTER, type=cluster_pb2.Cluster.STATIC,
                               connect_timeout=duration_pb2.Duration(seconds=1),
                               load_assignment=assignment(names.APP_CLUSTER, app))


# RBAC, as the contract writes an AccessPolicy rule.


def method_rules(*methods: str) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(or_rules=rbac_pb2.Permission.Set(rules=[
        rbac_pb2.Permission(header=exact(":method", m)) for m in methods]))


def path_rules(*paths: str) -> rbac_pb2.Permission:
    def one(path: str) -> rbac_pb2.Permission:
        matcher = string_pb2.StringMatcher(prefix=path[:-1]) if path.endswith("*") else string_pb2.StringMatcher(
            exact=path)
        return rbac_pb2.Permission(url_path=path_pb2.PathMatcher(path=matcher))
    return rbac_pb2.Permission(or_rules=rbac_pb2.Permission.Set(rules=[one(p) for p in paths]))


def principal_names(*matchers: string_pb2.StringMatcher) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(or_ids=rbac_pb2.Principal.Set(ids=[
        rbac_pb2.Principal(authenticated=rbac_pb2.Principal.Authenticated(principal_name=m)) for m in matchers]))


def policy(permissions: list[rbac_pb2.Permission], principals: list[rbac_pb2.Principal]) -> rbac_pb2.Policy:
    permission = (rbac_pb2.Permission(and_rules=rbac_pb2.Permission.Set(rules=permissions)) if permissions
                  else rbac_pb2.Permission(any=True))
    principal = (rbac_pb2.Principal(and_ids=rbac_pb2.Principal.Set(ids=principals)) if principals
                 else rbac_pb2.Principal(any=True))
    return rbac_pb2.Policy(permissions=[permission], principals=[principal])


def rbac_filter(name: str, action: int, policies: dict[str, rbac_pb2.Policy], *, dry_run: bool = False
                ) -> hcm_pb2.HttpFilter:
    rules = rbac_pb2.RBAC(action=action, policies=policies)
    config = rbac_filter_pb2.RBAC(shadow_rules=rules) if dry_run else rbac_filter_pb2.RBAC(rules=rules)
    return hcm_pb2.HttpFilter(name=name, typed_config=packed(config))


# === Fixtures ===


def subset(message: Any) -> Any:
    """An Envoy message as the sidecar reads it: its bytes, decoded with xds_pb2."""
    kind = getattr(xds_pb2, message.DESCRIPTOR.name)
    return kind.FromString(message.SerializeToString())


def translate(resources: Resources, local: Local) -> dict[str, Any]:
    """translate() of resources built with Envoy's classes, sent through the wire first."""
    return translate_subset(Resources(*({name: subset(m) for name, m in group.items()} for group in resources)),
                            local)


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Local:
    folder = tmp_path_factory.mktemp("identity")
    files = issue(make_ca(folder), ORDERS, folder / "identity")
    return Local(inbound="127.0.0.1:0", outbound="127.0.0.1:15001", admin="127.0.0.1:15000", app="127.0.0.1:8081",
                 trust_domain=TD, cert=str(files.cert), key=str(files.key), bundle=str(files.bundle))


def resources(inbound: listener_pb2.Listener | None = None) -> Resources:
    v1, v2 = names.version_cluster("orders", "shop", "v1"), names.version_cluster("orders", "shop", "v2")
    payments = names.service_cluster("payments", "other")
    clusters = {names.APP_CLUSTER: app_cluster(), v1: eds_cluster(v1, ORDERS), v2: eds_cluster(v2, ORDERS),
                payments: eds_cluster(payments, f"spiffe://{TD}/ns/other/sa/payments")}
    return Resources(
        listeners={names.INBOUND: inbound or inbound_listener(), names.OUTBOUND: outbound_listener()},
        routes={names.INBOUND: inbound_routes(), names.OUTBOUND: outbound_routes()},
        clusters=clusters,
        endpoints={v1: assignment(v1, "127.0.0.1:40001", "127.0.0.1:40002", draining="127.0.0.1:40009"),
                   v2: assignment(v2, "[::1]:40003"), payments: assignment(payments)},
    )


def valid(config: dict[str, Any]) -> dict[str, Any]:
    """The config as the schema accepted it (defaults filled in), as a dict."""
    return coerce_config(config).model_dump(mode="json", by_alias=True)


def listener(config: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(item for item in config["listeners"] if item["name"] == name)
    return found


# === Tests ===


def test_the_base_config_is_valid_and_serves_the_app_over_strict_mtls(local: Local) -> None:
    config = valid(base_config(local))
    inbound = listener(config, "inbound")
    assert (inbound["tls"], inbound["direction"], inbound["address"]) == ("strict", "inbound", "127.0.0.1:0")
    assert [route["cluster"] for route in inbound["routes"]] == [names.APP_CLUSTER]
    assert listener(config, "outbound")["routes"] == []
    assert config["clusters"][0]["endpoints"] == [{"address": "127.0.0.1:8081", "weight": 1}]


def test_outbound_routes_become_host_matched_routes_with_splits_and_timeouts(local: Local) -> None:
    config = valid(translate(resources(), local))
    routes = listener(config, "outbound")["routes"]
    v1, v2 = names.version_cluster("orders", "shop", "v1"), names.version_cluster("orders", "shop", "v2")
    shown = [(r["match"]["host"], r["match"]["headers"], r["match"]["method"], r["cluster"],
              [(s["cluster"], s["weight"]) for s in r["split"] or []], r["timeout"]) for r in routes]
    beta = ({"x-channel": {"exact": "beta"}}, ["GET", "HEAD"], v2, [], "15000ms")
    split = ({}, None, None, [(v1, 90), (v2, 10)], "5000ms")
    assert shown == [
        ("payments.other", {}, None, names.service_cluster("payments", "other"), [], "15000ms"),
        ("orders.shop", *beta), ("orders.shop", *split),
        ("orders", *beta), ("orders", *split),
    ]
    # Named rules keep their name, with the host: names are unique within a listener.
    assert [r["name"] for r in routes if r["name"]] == ["orders.shop/beta", "orders/beta"]


def test_clusters_are_mesh_mtls_http2_p2c_ewma_with_the_serving_endpoints(local: Local) -> None:
    config = valid(translate(resources(), local))
    clusters = {c["name"]: c for c in config["clusters"]}
    v1 = clusters[names.version_cluster("orders", "shop", "v1")]
    assert (v1["lb"], v1["protocol"], v1["connect_timeout"]) == ("p2c_ewma", "http2", "1000ms")
    assert v1["tls"] == {"mode": "mesh", "identities": [ORDERS], "sni": None, "ca": None}
    # The DRAINING endpoint is left out, as Envoy would leave it.
    assert [e["address"] for e in v1["endpoints"]] == ["127.0.0.1:40001", "127.0.0.1:40002"]
    assert clusters[names.version_cluster("orders", "shop", "v2")]["endpoints"][0]["address"] == "[::1]:40003"
    assert clusters[names.service_cluster("payments", "other")]["endpoints"] == []
    app = clusters[names.APP_CLUSTER]
    assert (app["protocol"], app["tls"]["mode"], app["endpoints"]) == (
        "http1", "disable", [{"address": "127.0.0.1:8081", "weight": 1}])


def test_the_inbound_listener_keeps_the_sidecars_own_address_and_routes_to_the_app(local: Local) -> None:
    config = valid(translate(resources(), local))
    inbound = listener(config, "inbound")
    # The control plane names the bound port; the sidecar keeps binding what it was started with.
    assert (inbound["address"], inbound["tls"], inbound["authorization"]) == ("127.0.0.1:0", "strict", [])
    assert [(r["cluster"], r["timeout"], r["match"]["host"]) for r in inbound["routes"]] == [
        (names.APP_CLUSTER, "0ms", None)]
    assert listener(config, "outbound")["address"] == "127.0.0.1:15001"


def test_two_filter_chains_with_tls_inspector_mean_permissive(local: Local) -> None:
    config = valid(translate(resources(inbound_listener("permissive")), local))
    assert listener(config, "inbound")["tls"] == "permissive"


def test_rbac_filters_become_authorization_policies(local: Local) -> None:
    deny = rbac_filter("rbac-deny", rbac_pb2.RBAC.DENY, {
        "no-admin": policy([path_rules("/admin/*")], [principal_names(
            string_pb2.StringMatcher(prefix=f"spiffe://{TD}/ns/other/"))]),
    })
    allow = rbac_filter("rbac-allow", rbac_pb2.RBAC.ALLOW, {
        "frontend-reads": policy([method_rules("GET", "HEAD")], [principal_names(
            string_pb2.StringMatcher(exact=FRONTEND))]),
        "anyone-health": policy([
            path_rules("/healthz"),
            rbac_pb2.Permission(header=route_components_pb2.HeaderMatcher(name="x-probe", present_match=True)),
            rbac_pb2.Permission(not_rule=method_rules("DELETE")),
        ], [principal_names(string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=".+")))]),
        "not-payments": policy([], [rbac_pb2.Principal(not_id=principal_names(
            string_pb2.StringMatcher(prefix=f"spiffe://{TD}/ns/other/sa/pay")))]),
    })
    config = valid(translate(resources(inbound_listener(http_filters=[deny, allow])), local))
    policies = listener(config, "inbound")["authorization"]
    assert [(p["name"], p["dry_run"]) for p in policies] == [("rbac-deny", False), ("rbac-allow", False)]

    def conditions(rule: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in rule.items() if v not in (None, {}) and k != "name"}

    assert [conditions(r) for r in policies[0]["rules"]] == [
        {"action": "deny", "paths": ["/admin/*"], "namespaces": ["other"]}]
    assert {r["name"]: conditions(r) for r in policies[1]["rules"]} == {
        "anyone-health": {"action": "allow", "paths": ["/healthz"], "headers": {"x-probe": {"present": True}},
                          "not_methods": ["DELETE"], "identities": ["*"]},
        "frontend-reads": {"action": "allow", "methods": ["GET", "HEAD"], "identities": [FRONTEND]},
        "not-payments": {"action": "allow", "not_identities": [f"spiffe://{TD}/ns/other/sa/pay*"]},
    }


def test_shadow_rules_mean_a_dry_run(local: Local) -> None:
    allow = rbac_filter("rbac-allow", rbac_pb2.RBAC.ALLOW, {
        "frontend": policy([], [principal_names(string_pb2.StringMatcher(exact=FRONTEND))])}, dry_run=True)
    config = valid(translate(resources(inbound_listener(http_filters=[allow])), local))
    (only,) = listener(config, "inbound")["authorization"]
    assert (only["name"], only["dry_run"], only["rules"][0]["identities"]) == ("rbac-allow", True, [FRONTEND])


@pytest.mark.parametrize(("shape", "message"), [
    (rbac_pb2.RBAC(action=rbac_pb2.RBAC.LOG, policies={"p": policy([], [])}), "action LOG has no sidecar equivalent"),
    (rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW, policies={"p": rbac_pb2.Policy(
        permissions=[rbac_pb2.Permission(any=True)] * 2, principals=[rbac_pb2.Principal(any=True)])}),
     "policy 'p': expected exactly one permission and one principal"),
    (rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW, policies={"p": policy(
        [rbac_pb2.Permission(destination_port=8080)], [])}), "policy 'p': permissions[0]: and_rules[0]: "
     "destination_port has no sidecar equivalent"),
    (rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW, policies={"p": policy([], [rbac_pb2.Principal(
        or_ids=rbac_pb2.Principal.Set(ids=[rbac_pb2.Principal(source_ip=address_pb2.CidrRange(
            address_prefix="10.0.0.0", prefix_len=wrappers_pb2.UInt32Value(value=8)))]))])}),
     "source_ip has no sidecar equivalent"),
    (rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW, policies={"p": policy([], [principal_names(
        string_pb2.StringMatcher(suffix="/sa/frontend"))])}), "principal_name suffix '/sa/frontend' has no sidecar "
     "equivalent"),
])
def test_rbac_outside_the_contracts_shape_is_refused_with_the_part_named(
        local: Local, shape: rbac_pb2.RBAC, message: str) -> None:
    refused = hcm_pb2.HttpFilter(name="rbac-allow", typed_config=packed(rbac_filter_pb2.RBAC(rules=shape)))
    with pytest.raises(Refused) as caught:
        translate(resources(inbound_listener(http_filters=[refused])), local)
    assert str(caught.value).startswith("listener 'inbound': http_filters[0] 'rbac-allow': ")
    assert message in str(caught.value)


def test_an_unknown_http_filter_is_refused_unless_optional(local: Local) -> None:
    lua = hcm_pb2.HttpFilter(name="envoy.filters.http.lua", typed_config=packed(struct_pb2.Struct()))
    with pytest.raises(Refused, match="'envoy.filters.http.lua': google.protobuf.Struct has no sidecar equivalent"):
        translate(resources(inbound_listener(http_filters=[lua])), local)
    lua.is_optional = True
    translate(resources(inbound_listener(http_filters=[lua])), local)


def test_a_route_honouring_grpc_timeout_is_taken_as_the_sidecar_does_anyway(local: Local) -> None:
    routes = outbound_routes()
    routes.virtual_hosts[1].routes[1].route.max_stream_duration.grpc_timeout_header_max.SetInParent()
    given = resources()
    plain = valid(translate(given, local))
    config = valid(translate(given._replace(routes={**given.routes, names.OUTBOUND: routes}), local))
    assert listener(config, "outbound")["routes"] == listener(plain, "outbound")["routes"]


def test_route_features_without_a_sidecar_equivalent_are_refused(local: Local) -> None:
    routes = outbound_routes()
    routes.virtual_hosts[1].routes[1].route.priority = 1
    given = resources()
    with pytest.raises(Refused, match=r"route configuration 'outbound': virtual host 'orders.shop': routes\[1\]: "
                                      "route: priority has no sidecar equivalent"):
        translate(given._replace(routes={**given.routes, names.OUTBOUND: routes}), local)
    routes = outbound_routes()
    routes.virtual_hosts[1].routes[1].route.max_stream_duration.max_stream_duration.seconds = 3
    with pytest.raises(Refused, match=r"routes\[1\]: route: max_stream_duration is supported only as "
                                      "grpc_timeout_header_max: 0s"):
        translate(given._replace(routes={**given.routes, names.OUTBOUND: routes}), local)
    routes = outbound_routes()
    routes.virtual_hosts[1].routes[1].route.retry_policy.retry_on = "5xx,retriable-4xx"
    with pytest.raises(Refused, match=r"routes\[1\]: route: retry_policy: retry_on 'retriable-4xx' has no sidecar "
                                      "equivalent"):
        translate(given._replace(routes={**given.routes, names.OUTBOUND: routes}), local)


def test_a_ring_with_a_size_of_its_own_and_a_policy_the_sidecar_lacks_are_refused(local: Local) -> None:
    given = resources()
    app = app_cluster()
    app.lb_policy = cluster_pb2.Cluster.RING_HASH
    app.ring_hash_lb_config.minimum_ring_size.value = 64
    with pytest.raises(Refused, match="cluster 'inbound_app': ring_hash_lb_config has no sidecar equivalent"):
        translate(given._replace(clusters={**given.clusters, names.APP_CLUSTER: app}), local)
    app = app_cluster()
    app.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
    with pytest.raises(Refused, match="cluster 'inbound_app': lb_policy CLUSTER_PROVIDED has no sidecar equivalent"):
        translate(given._replace(clusters={**given.clusters, names.APP_CLUSTER: app}), local)


def test_references_name_what_to_subscribe_to_and_missing_what_has_not_come(local: Local) -> None:
    given = Resources(*({name: subset(m) for name, m in group.items()} for group in resources()))
    wanted = references(given)
    assert wanted.routes == {names.INBOUND, names.OUTBOUND}
    assert wanted.endpoints == {names.version_cluster("orders", "shop", "v1"),
                                names.version_cluster("orders", "shop", "v2"),
                                names.service_cluster("payments", "other")}
    # The certificate is the sidecar's own; only the CA bundle comes over SDS.
    assert wanted.secrets == {names.BUNDLE_SECRET}
    assert missing(given) == []
    v2 = names.version_cluster("orders", "shop", "v2")
    clusters = {name: c for name, c in given.clusters.items() if name != v2}
    endpoints = {name: e for name, e in given.endpoints.items() if name != names.service_cluster("payments", "other")}
    assert missing(given._replace(clusters=clusters, endpoints=endpoints)) == [
        "endpoints of 'outbound_payments.other'", f"cluster '{v2}' (routed to by 'outbound')"]


def test_a_translation_the_schema_refuses_names_the_field(local: Local) -> None:
    given = resources()
    bad = {"bad name!": policy([], [])}
    allow = rbac_filter("rbac-allow", rbac_pb2.RBAC.ALLOW, bad)
    config = translate(given._replace(listeners={**given.listeners, names.INBOUND: inbound_listener(
        http_filters=[allow])}), local)
    with pytest.raises(ConfigError, match=r"listeners\[0\]\.authorization\[0\]\.rules\[0\]\.name"):
        coerce_config(config)

