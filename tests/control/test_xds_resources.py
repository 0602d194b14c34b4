"""What the control plane builds for a client reads back, through the wire and the sidecar's own
translation (``meshproxy.mesh.translate``), into a sidecar config meshproxy's schema accepts,
meaning what the resources said: the AccessPolicy's rules (services turned into identities),
the Route's matches, splits and timeouts, the called services' clusters and endpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from meshcontrol.registry import Registry
from meshcontrol.resources import load_documents
from meshcontrol.store.sqlite import SqliteStore
from meshcontrol.xds.build import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET
from meshcontrol.xds.snapshot import Client, Snapshots
from meshproxy.config import coerce_config
from meshproxy.mesh import xds_pb2
from meshproxy.mesh.names import NodeMetadata
from meshproxy.mesh.translate import Local, Resources, missing, translate
from pki import issue, make_ca

from mesh_documents import documents, service

MESH = documents(
    service("orders", "shop", calls=["payments"]),
    service("payments", "shop", protocol="http2"),
    """\
kind: Route
service: payments
namespace: shop
rules:
  - name: beta
    match: {headers: {x-channel: beta}, method: [GET, HEAD], path_prefix: /api/}
    to: [{version: v2}]
  - to: [{version: v1, weight: 90}, {version: v2, weight: 10}]
    timeout: 5s
""",
    """\
kind: AccessPolicy
service: orders
namespace: shop
rules:
  - {name: payments-reads, action: allow, services: [payments], methods: [GET, HEAD], paths: ["/orders/*"]}
  - {name: no-admin, action: deny, paths: ["/admin/*"], not_namespaces: [shop], headers: {x-debug: {present: true}}}
""")

ORDERS = NodeMetadata("orders", "shop", "v1", "127.0.0.1:20001", "127.0.0.1:15000", "127.0.0.1:15001",
                      "127.0.0.1:8081")


@pytest.fixture
def snapshots(tmp_path: Path) -> Snapshots:
    store = SqliteStore(tmp_path / "mesh")
    registry = Registry(store, 10, lambda _: None)
    registry.register(NodeMetadata("payments", "shop", "v1", "127.0.0.1:20002"))
    registry.register(NodeMetadata("payments", "shop", "v2", "127.0.0.1:20003"))
    built = Snapshots(registry, "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n", "mesh.local")
    built.reload(load_documents(MESH, "mesh.yaml", []))
    return built


def subset(type_url: str, entries: list[Any]) -> dict[str, Any]:
    """The resources as the sidecar decodes them: their bytes, with its subset of Envoy's schema."""
    kind = getattr(xds_pb2, type_url.rsplit(".", 1)[-1])
    return {e.name: kind.FromString(e.resource.value) for e in entries}


def test_a_clients_resources_translate_into_a_valid_sidecar_config(snapshots: Snapshots, tmp_path: Path) -> None:
    client = Client(ORDERS)
    resources = Resources(*(subset(t, snapshots.resources(client, t)) for t in (LISTENER, ROUTE, CLUSTER, ENDPOINT)))
    assert missing(resources) == []
    files = issue(make_ca(tmp_path), "spiffe://mesh.local/ns/shop/sa/orders", tmp_path / "identity")
    local = Local(inbound="127.0.0.1:0", outbound=ORDERS.outbound, admin=ORDERS.admin, app=ORDERS.app,
                  trust_domain="mesh.local", cert=str(files.cert), key=str(files.key), bundle=str(files.bundle))
    config = coerce_config(translate(resources, local)).model_dump(mode="json", by_alias=True)

    listeners = {item["name"]: item for item in config["listeners"]}
    inbound = listeners["inbound"]
    assert inbound["tls"] == "strict"
    rules = {rule["name"]: rule for policy in inbound["authorization"] for rule in policy["rules"]}
    allow = rules["payments-reads"]
    assert (allow["action"], allow["identities"], allow["methods"], allow["paths"]) == (
        "allow", ["spiffe://mesh.local/ns/shop/sa/payments"], ["GET", "HEAD"], ["/orders/*"])
    deny = rules["no-admin"]
    assert (deny["action"], deny["paths"], deny["not_namespaces"], deny["headers"]) == (
        "deny", ["/admin/*"], ["shop"], {"x-debug": {"present": True}})

    routes = listeners["outbound"]["routes"]
    beta = [r for r in routes if r["match"]["headers"]]
    assert [(r["match"]["path_prefix"], r["match"]["method"], r["cluster"], r["timeout"]) for r in beta] == [
        ("/api/", ["GET", "HEAD"], "outbound_payments.shop_v2", "15000ms")] * len(beta)
    splits = [[(s["cluster"], s["weight"]) for s in r["split"]] for r in routes if r["split"]]
    assert splits and all(s == [("outbound_payments.shop_v1", 90), ("outbound_payments.shop_v2", 10)]
                          for s in splits)

    clusters = {c["name"]: c for c in config["clusters"]}
    assert set(clusters) == {"inbound_app", "outbound_payments.shop", "outbound_payments.shop_v1",
                             "outbound_payments.shop_v2"}
    assert [e["address"] for e in clusters["outbound_payments.shop"]["endpoints"]] == ["127.0.0.1:20002",
                                                                                        "127.0.0.1:20003"]
    assert [e["address"] for e in clusters["outbound_payments.shop_v2"]["endpoints"]] == ["127.0.0.1:20003"]
    assert clusters["outbound_payments.shop"]["lb"] == "p2c_ewma"


def test_permissive_mtls_serves_tls_and_plain_text_on_the_inbound_listener(snapshots: Snapshots) -> None:
    snapshots.reload(load_documents(MESH + "---\nkind: Mesh\nmtls: permissive\n", "mesh.yaml", []))
    (inbound, _) = subset(LISTENER, snapshots.resources(Client(ORDERS), LISTENER)).values()
    assert [c.filter_chain_match.transport_protocol for c in inbound.filter_chains] == ["tls", "raw_buffer"]
    assert [f.name for f in inbound.listener_filters] == ["envoy.filters.listener.tls_inspector"]


def test_an_envoy_client_gets_its_own_certificate_by_sds_and_a_sidecar_does_not(snapshots: Snapshots) -> None:
    from meshcontrol.xds.snapshot import entry
    from meshcontrol.xds.build import certificate_secret

    sidecar = Client(ORDERS)
    assert [e.name for e in snapshots.resources(sidecar, SECRET)] == ["ROOTCA"]
    envoy = Client(ORDERS, envoy_secret=entry("default", certificate_secret("CERT", "KEY")))
    assert [e.name for e in snapshots.resources(envoy, SECRET)] == ["default", "ROOTCA"]


def test_clients_of_one_service_share_what_they_get_alike(snapshots: Snapshots) -> None:
    one, other = Client(ORDERS), Client(ORDERS._replace(inbound="127.0.0.1:20009"))
    for type_url in (ROUTE, ENDPOINT):
        assert all(a.resource is b.resource for a, b in zip(snapshots.resources(one, type_url),
                                                            snapshots.resources(other, type_url), strict=True))
    shared = [a.resource is b.resource for a, b in zip(snapshots.resources(one, CLUSTER),
                                                        snapshots.resources(other, CLUSTER), strict=True)]
    assert shared == [False, True, True, True]  # its own app cluster, then the peer clusters


def test_websocket_is_on_for_every_http_connection_manager_and_peer_cluster(snapshots: Snapshots) -> None:
    """Stock Envoy clients carry a WebSocket as a meshproxy sidecar does, unasked: upgrades on both
    listeners, RFC 8441 extended CONNECT accepted over HTTP/2 and sent to peers."""
    from envoy.config.cluster.v3 import cluster_pb2
    from envoy.config.listener.v3 import listener_pb2
    from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
    from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

    client = Client(ORDERS)
    for item in snapshots.resources(client, LISTENER):
        listener = listener_pb2.Listener.FromString(item.resource.value)
        manager = hcm_pb2.HttpConnectionManager()
        listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
        assert [u.upgrade_type for u in manager.upgrade_configs] == ["websocket"], listener.name
        assert manager.http2_protocol_options.allow_connect, listener.name
    peers = [cluster_pb2.Cluster.FromString(item.resource.value) for item in snapshots.resources(client, CLUSTER)]
    peers = [c for c in peers if c.name.startswith("outbound_")]
    assert peers
    for cluster in peers:
        options = http_protocol_options_pb2.HttpProtocolOptions()
        cluster.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].Unpack(options)
        assert options.explicit_http_config.http2_protocol_options.allow_connect, cluster.name
