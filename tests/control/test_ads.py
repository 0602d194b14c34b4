"""The ADS server as a sidecar sees it: a real ``meshctl serve`` and grpcio clients over TLS,
each joined with a token and then streaming with the certificate it got. What a client gets is
scoped to its service; an instance joining or leaving sends endpoints only; ACKs and NACKs are
kept per type and shown by the status; versions keep growing across a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from control_plane import (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, AdsClient, ControlPlane, Sidecar, certify,
                           channel_credentials, key_and_csr, node, start_control_plane)
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from meshproxy.mesh import mesh_pb2

from mesh_documents import canary_route, documents, service

MESH = documents(
    service("orders", "shop", calls=["payments"]),
    service("payments", "shop"),
    service("billing", "shop"),
    canary_route("payments", "shop"),
    """\
kind: AccessPolicy
service: orders
namespace: shop
rules:
  - {name: billing-reads, action: allow, services: [billing], methods: [GET, HEAD]}
""")


@pytest.fixture
def control(tmp_path: Path) -> Iterator[ControlPlane]:
    plane = start_control_plane(tmp_path / "mesh", "--lease", "30s")
    yield plane
    plane.stop()


@asynccontextmanager
async def joined(control: ControlPlane, service: str, namespace: str = "shop", *, version: str = "v1",
                 inbound: str = "127.0.0.1:20001", names: dict[str, tuple[str, ...]] | None = None,
                 start: bool = True, **metadata: str) -> AsyncIterator[Sidecar]:
    """A sidecar that joined with a token and streams ADS with the certificate it got."""
    bundle = control.bundle()
    token = control.token(service, namespace)
    async with grpc.aio.secure_channel(control.grpc, channel_credentials(bundle)) as channel:
        key, csr = key_and_csr(f"spiffe://mesh.local/ns/{namespace}/sa/{service}")
        certified = await certify(channel, csr, token)
    credentials = channel_credentials(bundle, certified.certificate_pem.encode(), key)
    async with grpc.aio.secure_channel(control.grpc, credentials) as channel:
        sidecar = Sidecar(AdsClient(channel, node(service, namespace, version=version, inbound=inbound, **metadata)),
                          names)
        sidecar.channel = channel  # type: ignore[attr-defined]
        if start:
            await sidecar.start()
        try:
            yield sidecar
        finally:
            await sidecar.stop()


def has_all(sidecar: Sidecar) -> bool:
    return all(t in sidecar.latest for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET))


def test_a_sidecar_gets_its_own_listeners_and_the_clusters_of_what_it_calls(control: ControlPlane) -> None:
    control.apply(MESH)

    async def run() -> None:
        async with joined(control, "orders", inbound="127.0.0.1:20001") as orders:
            await orders.until(lambda: has_all(orders), what="every type")
            clusters = orders.resources(CLUSTER, cluster_pb2.Cluster)
            # payments only (billing is not in its calls): all versions, and one per Route version.
            assert set(clusters) == {"inbound_app", "outbound_payments.shop", "outbound_payments.shop_v1",
                                     "outbound_payments.shop_v2"}
            peer = clusters["outbound_payments.shop_v1"]
            assert peer.type == cluster_pb2.Cluster.EDS and peer.lb_policy == cluster_pb2.Cluster.LEAST_REQUEST
            assert peer.metadata.filter_metadata["meshproxy"]["lb"] == "p2c_ewma"

            listeners = orders.resources(LISTENER, listener_pb2.Listener)
            assert set(listeners) == {"inbound", "outbound"}
            inbound = listeners["inbound"]
            assert inbound.address.socket_address.port_value == 20001
            manager = hcm_pb2.HttpConnectionManager()
            inbound.filter_chains[0].filters[0].typed_config.Unpack(manager)
            # orders' AccessPolicy has one allow rule: the ALLOW filter only, then the router.
            assert [f.name for f in manager.http_filters] == ["orders.shop", "envoy.filters.http.router"]

            routes = orders.resources(ROUTE, route_pb2.RouteConfiguration)
            hosts = {h.name: h for h in routes["outbound"].virtual_hosts}
            assert list(hosts) == ["payments.shop"]
            assert list(hosts["payments.shop"].domains) == ["payments.shop", "payments.shop:*", "payments", "payments:*"]
            assert [r.route.WhichOneof("cluster_specifier") for r in hosts["payments.shop"].routes] == [
                "cluster", "weighted_clusters"]

            # A meshproxy sidecar has its own certificate: the CA bundle only.
            assert set(orders.resources(SECRET, secret_pb2.Secret)) == {"ROOTCA"}
            endpoints = orders.resources(ENDPOINT, endpoint_pb2.ClusterLoadAssignment)
            assert set(endpoints) == {"outbound_payments.shop", "outbound_payments.shop_v1",
                                      "outbound_payments.shop_v2"}

        # Without calls, a service gets every service of its namespace.
        async with joined(control, "payments", inbound="127.0.0.1:20002") as payments:
            await payments.until(lambda: has_all(payments), what="every type")
            names = {n for n in payments.resources(CLUSTER, cluster_pb2.Cluster) if not n.endswith(("_v1", "_v2"))}
            assert names == {"inbound_app", "outbound_billing.shop", "outbound_orders.shop", "outbound_payments.shop"}

    asyncio.run(run())


def test_a_subscription_by_name_gets_those_resources_only(control: ControlPlane) -> None:
    control.apply(MESH)

    async def run() -> None:
        names = {ENDPOINT: ("outbound_payments.shop_v2",), ROUTE: ("outbound",), SECRET: ("ROOTCA",)}
        async with joined(control, "orders", names=names) as orders:
            await orders.until(lambda: has_all(orders), what="every type")
            assert list(orders.resources(ENDPOINT, endpoint_pb2.ClusterLoadAssignment)) == ["outbound_payments.shop_v2"]
            assert list(orders.resources(ROUTE, route_pb2.RouteConfiguration)) == ["outbound"]

    asyncio.run(run())


def test_an_instance_joining_and_leaving_sends_endpoints_only(control: ControlPlane) -> None:
    control.apply(MESH)

    async def run() -> None:
        async with joined(control, "orders", inbound="127.0.0.1:20001") as orders:
            await orders.until(lambda: has_all(orders), what="every type")
            before = len(orders.received)

            def payments_v1() -> list[str]:
                assignments = orders.resources(ENDPOINT, endpoint_pb2.ClusterLoadAssignment)
                return [f"{e.endpoint.address.socket_address.address}:{e.endpoint.address.socket_address.port_value}"
                        for group in assignments["outbound_payments.shop_v1"].endpoints for e in group.lb_endpoints]

            async with joined(control, "payments", version="v1", inbound="127.0.0.1:20002",
                              admin="127.0.0.1:15002") as payments:
                await orders.until(lambda: payments_v1() == ["127.0.0.1:20002"], what="payments in EDS")
                # Prometheus finds every sidecar's metrics endpoint there.
                assert control.call("GET", "/v1/prometheus-sd") == [{
                    "targets": ["127.0.0.1:15002"],
                    "labels": {"service": "payments", "namespace": "shop", "version": "v1",
                               "node_id": "sidecar~127.0.0.1:20002~payments.shop"}}]
                joined_pushes = orders.received[before:]
                assert {r.type_url for r in joined_pushes} == {ENDPOINT}
                # Leave answers once orders ACKed endpoints without it.
                leave = payments.channel.unary_unary(  # type: ignore[attr-defined]
                    "/meshproxy.mesh.v1.Mesh/Leave", request_serializer=mesh_pb2.LeaveRequest.SerializeToString,
                    response_deserializer=mesh_pb2.LeaveResponse.FromString)
                answer = await leave(mesh_pb2.LeaveRequest(node_id="sidecar~127.0.0.1:20002~payments.shop",
                                                           wait_ms=5000), timeout=10)
                assert (answer.acknowledged, answer.pending) == (1, 0)
                assert payments_v1() == []
                assert {r.type_url for r in orders.received[before:]} == {ENDPOINT}
                instances = control.call("GET", "/v1/instances")
                assert [i["service"] for i in instances] == ["orders"]

    asyncio.run(run())


def weights(sidecar: Sidecar) -> list[int]:
    """The weights of payments' split in the sidecar's latest outbound route configuration."""
    routes = sidecar.resources(ROUTE, route_pb2.RouteConfiguration)
    (host,) = [h for h in routes["outbound"].virtual_hosts if h.name == "payments.shop"]
    return [c.weight.value for c in host.routes[1].route.weighted_clusters.clusters]


def test_a_route_change_sends_routes_to_its_callers_only(control: ControlPlane) -> None:
    control.apply(MESH)

    async def run() -> None:
        async with joined(control, "orders", inbound="127.0.0.1:20001") as orders, \
                joined(control, "billing", inbound="127.0.0.1:20003") as billing:
            # billing calls every service of shop (no calls given); orders only payments.
            await orders.until(lambda: has_all(orders), what="orders: every type")
            await billing.until(lambda: has_all(billing) and billing.resources(
                ENDPOINT, endpoint_pb2.ClusterLoadAssignment)["outbound_orders.shop"].endpoints, what="billing: orders")
            seen_orders = len(orders.received)
            reweighted = MESH.replace("weight: 90", "weight: 80").replace("weight: 10", "weight: 20")
            control.apply(reweighted)
            await orders.until(lambda: weights(orders) == [80, 20], what="the new weights")
            await billing.until(lambda: weights(billing) == [80, 20], what="the new weights")
            # Same versions, other weights: the route configuration only.
            assert {r.type_url for r in orders.received[seen_orders:]} == {ROUTE}
            assert int(orders.latest[ROUTE].version_info) > int(orders.latest[LISTENER].version_info)

            # orders' AccessPolicy changes orders' inbound listener only; billing gets nothing.
            def sent(service: str) -> dict[str, str]:
                (row,) = [r for r in control.call("GET", "/v1/status") if r["service"] == service]
                return {kind: entry["sent"] for kind, entry in row["types"].items()}

            seen_orders, billing_sent = len(orders.received), sent("billing")
            control.apply(reweighted.replace("methods: [GET, HEAD]", "methods: [GET]"))
            await orders.until(lambda: len(orders.received) > seen_orders, what="the policy push")
            assert {r.type_url for r in orders.received[seen_orders:]} == {LISTENER}
            assert sent("billing") == billing_sent

    asyncio.run(run())


def test_a_nack_is_kept_per_type_and_shown_by_the_status(control: ControlPlane) -> None:
    control.apply(MESH)

    async def run() -> None:
        async with joined(control, "orders", start=False) as orders:
            orders.nack[LISTENER] = "listeners[0]: address 127.0.0.1:20001 is taken"
            await orders.start()
            await orders.until(lambda: any(r.type_url == LISTENER for r in orders.received) and
                               all(t in orders.latest for t in (CLUSTER, ROUTE, SECRET)), what="responses")

            def row() -> dict[str, dict[str, str | None]]:
                status = control.call("GET", "/v1/status")
                (found,) = [r for r in status if r["service"] == "orders"]
                assert found["connected"] and found["kind"] == "meshproxy"
                return dict(found["types"])

            await orders.until(lambda: row()["listeners"]["nack"] is not None, what="the NACK in the status")
            types = row()
            assert types["listeners"] == {"sent": types["listeners"]["sent"], "acked": None,
                                          "nack": "listeners[0]: address 127.0.0.1:20001 is taken"}
            assert types["clusters"]["acked"] == types["clusters"]["sent"] and types["clusters"]["nack"] is None
            metrics = control.call("GET", "/metrics").decode()
            assert 'meshcontrol_xds_nacks_total{type="lds"} 1.0' in metrics

    asyncio.run(run())


def test_versions_keep_growing_across_a_restart(control: ControlPlane, tmp_path: Path) -> None:
    control.apply(MESH)

    async def versions(plane: ControlPlane) -> int:
        async with joined(plane, "orders") as orders:
            await orders.until(lambda: has_all(orders), what="every type")
            return max(int(r.version_info) for r in orders.latest.values())

    first = asyncio.run(versions(control))
    control.stop()
    again = start_control_plane(tmp_path / "mesh", "--lease", "30s")
    try:
        # The instance of the stream before the restart is restored, under a fresh lease.
        assert [i["connected"] for i in again.call("GET", "/v1/instances")] == [False]
        assert asyncio.run(versions(again)) > first
    finally:
        again.stop()


def test_a_stream_for_another_service_is_refused(control: ControlPlane) -> None:
    control.apply(MESH)

    async def run() -> None:
        async with joined(control, "orders", start=False) as orders:
            impostor = AdsClient(orders.channel, node("payments", "shop"))  # type: ignore[attr-defined]
            await impostor.send(CLUSTER)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await impostor.receive()
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "node metadata says service 'payments'" in (refused.value.details() or "")
            assert "spiffe://mesh.local/ns/shop/sa/orders" in (refused.value.details() or "")
        # No certificate, no token.
        async with grpc.aio.secure_channel(control.grpc, channel_credentials(control.bundle())) as channel:
            anonymous = AdsClient(channel, node("orders", "shop"))
            await anonymous.send(CLUSTER)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await anonymous.receive()
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "no client certificate and no join token" in (refused.value.details() or "")
            # A token of orders for a node of payments.
            token = control.token("orders", "shop")
            wrong = AdsClient(channel, node("payments", "shop", agent="envoy"), (("authorization", f"Bearer {token}"),))
            await wrong.send(CLUSTER)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await wrong.receive()
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "with its join token" in (refused.value.details() or "")

    asyncio.run(run())


class Relay:
    """A TCP relay that can go silent (forwarding nothing, closing nothing): a host that is lost
    without a FIN or RST."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.silent = asyncio.Event()
        self.address = ""
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> Relay:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.address = "127.0.0.1:%d" % self._server.sockets[0].getsockname()[1]
        return self

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = self.target.rsplit(":", 1)
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        self._writers += [writer, upstream_writer]
        pumps = [asyncio.create_task(self._pump(reader, upstream_writer)),
                 asyncio.create_task(self._pump(upstream_reader, writer))]
        self._tasks.update(pumps)
        await asyncio.gather(*pumps, return_exceptions=True)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if self.silent.is_set():
                await asyncio.Event().wait()  # lost: never forwards again
            writer.write(data)
            await writer.drain()

    async def close(self) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            try:
                await writer.wait_closed()
            except OSError:
                pass
        await self._server.wait_closed()


def test_a_lost_hosts_stream_ends_by_keepalive_and_its_instance_leaves_a_lease_later(tmp_path: Path) -> None:
    control = start_control_plane(tmp_path / "mesh", "--lease", "4s")  # keepalive: ping every 1s, 1s to answer
    try:
        async def run() -> tuple[float, float]:
            relay = await Relay(control.grpc).start()
            token = control.token("orders", "shop")
            # Through the relay: the server certificate names 127.0.0.1, which the relay's address is too.
            async with grpc.aio.secure_channel(relay.address, channel_credentials(control.bundle())) as channel:
                client = AdsClient(channel, node("orders", "shop", agent="envoy"), (("authorization", f"Bearer {token}"),))
                await client.send(CLUSTER)
                await client.receive()

                def state() -> str:
                    found = control.call("GET", "/v1/instances")
                    return "gone" if not found else "connected" if found[0]["connected"] else "kept"

                assert state() == "connected"
                relay.silent.set()
                lost = time.monotonic()
                while state() == "connected":
                    await asyncio.sleep(0.05)
                ended = time.monotonic() - lost
                while state() == "kept":
                    await asyncio.sleep(0.05)
                kept = time.monotonic() - lost - ended
                client.call.cancel()
            await relay.close()
            return ended, kept

        ended, kept = asyncio.run(run())
        assert ended < 3.5  # the server's pings went unanswered: keepalive ended the stream
        assert 3.8 <= kept < 4.6  # then one lease (both ends polled every 50 ms)
    finally:
        control.stop()
