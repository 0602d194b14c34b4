"""How the sidecar's ADS client decides on what the control plane pushes: responses that come
together are applied together, once; a set naming what has not come waits for it (subscribing
to it) and is NACKed if it never comes; a refused set is NACKed with the refusal, and when it
spans several types each is tried alone, so one bad resource does not hold back the rest. The
applier is a stand-in; the messages are Envoy's, on the wire."""

from __future__ import annotations

import asyncio
import ssl
from types import SimpleNamespace
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import any_pb2
from meshproxy.mesh import ads, xds_pb2
from meshproxy.mesh.channel import Target
from meshproxy.mesh.names import NodeMetadata
from meshproxy.mesh.translate import Resources
from meshproxy.mesh.translate_base import Refused
from meshproxy.mesh.xds_state import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET

ADS = config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource())


def packed(message: Any) -> any_pb2.Any:
    wrapped = any_pb2.Any()
    wrapped.Pack(message)
    return wrapped


def response(type_url: str, version: int, *resources: Any) -> xds_pb2.DiscoveryResponse:
    return xds_pb2.DiscoveryResponse(version_info=str(version), type_url=type_url, nonce=f"n{version}",
                                     resources=[packed(r) for r in resources])


def listener(name: str = "outbound", stat_prefix: str = "outbound") -> listener_pb2.Listener:
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_prefix, rds=hcm_pb2.Rds(route_config_name=name, config_source=ADS),
        http_filters=[hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=packed(router_pb2.Router()))])
    return listener_pb2.Listener(name=name, traffic_direction=base_pb2.OUTBOUND, filter_chains=[
        listener_components_pb2.FilterChain(filters=[listener_components_pb2.Filter(
            name="envoy.filters.network.http_connection_manager", typed_config=packed(manager))])])


def routes(cluster: str) -> route_pb2.RouteConfiguration:
    route = route_components_pb2.Route(match=route_components_pb2.RouteMatch(prefix="/"),
                                       route=route_components_pb2.RouteAction(cluster=cluster))
    return route_pb2.RouteConfiguration(name="outbound", virtual_hosts=[
        route_components_pb2.VirtualHost(name="orders", domains=["orders"], routes=[route])])


def cluster(name: str, identity: str | None = None) -> cluster_pb2.Cluster:
    """An EDS cluster; with mesh mTLS to ``identity`` when given."""
    built = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS,
                                eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ADS))
    if identity is not None:
        san = common_pb2.SubjectAltNameMatcher(san_type=common_pb2.SubjectAltNameMatcher.URI,
                                               matcher=string_pb2.StringMatcher(exact=identity))
        context = tls_pb2.UpstreamTlsContext(common_tls_context=tls_pb2.CommonTlsContext(
            validation_context=common_pb2.CertificateValidationContext(match_typed_subject_alt_names=[san])))
        built.transport_socket.CopyFrom(base_pb2.TransportSocket(name="tls", typed_config=packed(context)))
    return built


def endpoints(name: str) -> endpoint_pb2.ClusterLoadAssignment:
    return endpoint_pb2.ClusterLoadAssignment(cluster_name=name)


class Applier:
    """Records what it was asked to apply; refuses listeners whose stat_prefix is 'bad'."""

    def __init__(self) -> None:
        self.applied: list[Resources] = []
        self.local = SimpleNamespace(trust_domain="mesh.local")

    def apply(self, resources: Resources) -> int | None:
        for item in resources.listeners.values():
            config = item.filter_chains[0].filters[0].typed_config
            if xds_pb2.HttpConnectionManager.FromString(config.value).stat_prefix == "bad":
                raise Refused(f"listener '{item.name}': bad")
        self.applied.append(resources)
        return len(self.applied)

    def apply_bundle(self, bundle: bytes) -> bool:
        return True


@pytest.fixture
def client() -> ads.AdsClient:
    metadata = NodeMetadata("orders", "default", "v1", "127.0.0.1:2")
    return ads.AdsClient(Target("127.0.0.1", 1), "sidecar~x~orders.default", metadata, ssl.create_default_context,
                         Applier())  # type: ignore[arg-type]


def decide(client: ads.AdsClient, *responses: xds_pb2.DiscoveryResponse) -> list[xds_pb2.DiscoveryRequest]:
    return asyncio.run(client._decide(list(responses)))


def shown(requests: list[xds_pb2.DiscoveryRequest]) -> list[tuple[str, str, str, list[str], str]]:
    """(type, version, nonce, names, NACK message) of each request, types shortened."""
    short = {CLUSTER: "CDS", ENDPOINT: "EDS", LISTENER: "LDS", ROUTE: "RDS", SECRET: "SDS"}
    return [(short[r.type_url], r.version_info, r.response_nonce, list(r.resource_names), r.error_detail.message)
            for r in requests]


def test_a_push_waits_for_the_endpoints_it_names_then_applies_once_and_acks_every_type(client: ads.AdsClient) -> None:
    applier: Applier = client.applier  # type: ignore[assignment]
    first = decide(client, response(CLUSTER, 1, cluster("c1")), response(LISTENER, 1, listener()),
                   response(ROUTE, 1, routes("c1")))
    # Nothing is applied or ACKed without c1's endpoints: they are subscribed to instead.
    assert applier.applied == []
    assert shown(first) == [("EDS", "", "", ["c1"], "")]
    second = decide(client, response(ENDPOINT, 2, endpoints("c1")))
    assert len(applier.applied) == 1
    assert set(applier.applied[0].clusters) == {"c1"} and set(applier.applied[0].endpoints) == {"c1"}
    assert shown(second) == [("CDS", "1", "n1", [], ""), ("EDS", "2", "n2", ["c1"], ""),
                             ("LDS", "1", "n1", [], ""), ("RDS", "1", "n1", ["outbound"], "")]


def test_a_refused_type_is_nacked_while_the_others_apply(client: ads.AdsClient) -> None:
    applier: Applier = client.applier  # type: ignore[assignment]
    decide(client, response(CLUSTER, 1, cluster("c1")), response(ENDPOINT, 1, endpoints("c1")),
           response(LISTENER, 1, listener()), response(ROUTE, 1, routes("c1")))
    requests = decide(client, response(CLUSTER, 3, cluster("c1"), cluster("c2")),
                      response(ENDPOINT, 3, endpoints("c1"), endpoints("c2")),
                      response(LISTENER, 3, listener(stat_prefix="bad")))
    # Together they are refused; the clusters with their endpoints apply, the listener does not.
    assert shown(requests) == [("CDS", "3", "n3", [], ""), ("EDS", "3", "n3", ["c1", "c2"], ""),
                               ("LDS", "1", "n3", [], "listener 'outbound': bad")]
    assert set(applier.applied[-1].clusters) == {"c1", "c2"}
    assert [client.state.types[t].version for t in (CLUSTER, ENDPOINT, LISTENER)] == ["3", "3", "1"]


def test_a_set_still_incomplete_after_the_wait_is_nacked(client: ads.AdsClient,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ads, "_INCOMPLETE_S", 0.0)
    decide(client, response(LISTENER, 1, listener()))
    requests = decide(client)  # the wait ran out with nothing new
    assert shown(requests) == [("LDS", "", "n1", [], "incomplete: no route configuration 'outbound' after 0s")]
    assert client.applier.applied == []  # type: ignore[attr-defined]


def test_resources_of_another_trust_domain_wait_for_a_certificate_of_it(client: ads.AdsClient) -> None:
    applier: Applier = client.applier  # type: ignore[assignment]
    renewals: list[bool] = []
    client.renew_soon = lambda: renewals.append(True)
    decide(client, response(CLUSTER, 1, cluster("c1", "spiffe://new.domain/ns/default/sa/orders")),
           response(ENDPOINT, 1, endpoints("c1")), response(LISTENER, 1, listener()), response(ROUTE, 1, routes("c1")))
    # Not applied (the engine would refuse identities outside its trust domain): a renewal first.
    assert (applier.applied, renewals) == ([], [True])
    applier.local.trust_domain = "new.domain"  # what the sidecar does once renewed, then it pokes
    requests = decide(client)
    assert len(applier.applied) == 1
    assert [r.error_detail.message for r in requests] == ["", "", "", ""]
