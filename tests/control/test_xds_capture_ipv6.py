"""IPv6 capture through the control plane: an instance registered at an IPv6 address is reached
by captured callers at that address and its app port, and a sidecar run with an IPv6 twin of
its capture listener (``--capture 127.0.0.1:15002 --capture [::1]:15002``: the kernel
redirects IPv6 connections to ``[::1]``) gets one capture listener with ``additional_addresses``,
which Envoy takes (test_xds_capture.py validates it) and the sidecar reads back as two listeners
with the same routes; a capture address that is not an IP and port is refused at registration.
In network namespaces: tests/integration/test_capture_mesh_ipv6.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from control_plane import CLUSTER as CLUSTER_TYPE
from control_plane import ControlPlane, start_control_plane
from meshcontrol.registry import Registry
from meshcontrol.resources import load_documents
from meshcontrol.store.sqlite import SqliteStore
from meshcontrol.xds.build import CLUSTER, ENDPOINT, LISTENER, ROUTE
from meshcontrol.xds.snapshot import Client, Snapshots
from meshproxy.mesh import names
from meshproxy.mesh.names import NodeMetadata
from meshproxy.mesh.translate import Local, Refused, Resources, translate
from test_ads import joined
from test_xds_capture import MESH, subset, translated

ORDERS = NodeMetadata("orders", "shop", "v1", "[fd00::1]:15006", "127.0.0.1:15000", "127.0.0.1:15001",
                      "127.0.0.1:8081", capture="127.0.0.1:15002,[::1]:15002")


@pytest.fixture
def snapshots(tmp_path: Path) -> Snapshots:
    registry = Registry(SqliteStore(tmp_path / "mesh"), 10, lambda _: None)
    registry.register(NodeMetadata("payments", "shop", "v1", "[fd00::2]:15006", app="127.0.0.1:8080"))
    registry.register(NodeMetadata("stock", "shop", "v1", "10.1.0.4:15006", app="10.1.0.4:8080"))
    built = Snapshots(registry, "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n", "mesh.local")
    built.reload(load_documents(MESH, "mesh.yaml", []))
    return built


def test_an_ipv6_instance_is_reached_at_its_address_and_app_port_by_both_capture_listeners(
        snapshots: Snapshots, tmp_path: Path) -> None:
    [instance] = snapshots.registry.of("payments", "shop")
    assert instance.capture_destination == "[fd00::2]:8080"
    listener = subset(LISTENER, snapshots.resources(Client(ORDERS), LISTENER))[names.CAPTURE]
    assert [(a.address.socket_address.address, a.address.socket_address.port_value)
            for a in listener.additional_addresses] == [("::1", 15002)]
    config = translated(snapshots, Client(ORDERS), tmp_path)
    captures = {item["name"]: item for item in config["listeners"] if item.get("original_destination")}
    assert {name: item["address"] for name, item in captures.items()} == {
        names.CAPTURE: "127.0.0.1:15002", f"{names.CAPTURE}_1": "[::1]:15002"}
    for item in captures.values():
        assert [(r["match"].get("original_destination"), r["cluster"]) for r in item["routes"]] == [
            (["[fd00::2]:8080"], "outbound_payments.shop_v2"), (["[fd00::2]:8080"], "outbound_payments.shop_v1"),
            (["10.1.0.4:8080"], "outbound_stock.shop"), (None, names.PASSTHROUGH)]


def test_additional_addresses_elsewhere_than_on_a_capture_listener_are_refused(snapshots: Snapshots,
                                                                              tmp_path: Path) -> None:
    client = Client(ORDERS)
    resources = Resources(*(subset(t, snapshots.resources(client, t)) for t in (LISTENER, ROUTE, CLUSTER, ENDPOINT)))
    extra = resources.listeners[names.OUTBOUND].additional_addresses.add().address.socket_address
    extra.address, extra.port_value = "::1", 15001
    local = Local(inbound=ORDERS.inbound, outbound=ORDERS.outbound, admin=None, app=ORDERS.app,
                  trust_domain="mesh.local", cert="c", key="k", bundle="b")
    with pytest.raises(Refused, match="listener 'outbound': additional_addresses has no sidecar equivalent but on a "
                       "capture listener"):
        translate(resources, local)


@pytest.fixture
def control(tmp_path: Path) -> Iterator[ControlPlane]:
    plane = start_control_plane(tmp_path / "plane", "--lease", "30s")
    yield plane
    plane.stop()


def test_a_capture_address_that_is_not_ip_port_is_refused_at_registration(control: ControlPlane) -> None:
    control.apply(MESH)

    async def run() -> None:
        async with joined(control, "orders", start=False, capture="127.0.0.1:15002,localhost:15002") as orders:
            await orders.client.send(CLUSTER_TYPE)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await orders.client.receive()
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "node metadata: 'capture': 'localhost:15002': " in (refused.value.details() or "")

    asyncio.run(run())
