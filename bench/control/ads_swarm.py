"""N simulated sidecars in one process: each an ADS stream of its own (its own TCP and TLS
connection, grpc.aio) with mutual TLS, registering as an instance of `frontend`, subscribing to
what a meshproxy sidecar subscribes to, and ACKing every response at once. For timing pushes at
a scale of sidecars this machine could not run as processes."""

from __future__ import annotations

import asyncio
import time

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2

from meshproxy.mesh import mesh_pb2, names

ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
TYPE = "type.googleapis.com/envoy.config.{}"
CDS = TYPE.format("cluster.v3.Cluster")
EDS = TYPE.format("endpoint.v3.ClusterLoadAssignment")
LDS = TYPE.format("listener.v3.Listener")
RDS = TYPE.format("route.v3.RouteConfiguration")
SDS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


async def certify(grpc_address: str, token: str, bundle_pem: bytes) -> tuple[bytes, bytes]:
    """A key made here and a certificate for it from the control plane's CA, by join token."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
    credentials = grpc.ssl_channel_credentials(root_certificates=bundle_pem)
    async with grpc.aio.secure_channel(grpc_address, credentials) as channel:
        certify_call = channel.unary_unary("/meshproxy.mesh.v1.Mesh/Certify",
                                           request_serializer=mesh_pb2.CertifyRequest.SerializeToString,
                                           response_deserializer=mesh_pb2.CertifyResponse.FromString)
        answer = await certify_call(mesh_pb2.CertifyRequest(csr_pem=csr.public_bytes(serialization.Encoding.PEM).decode()),
                                    metadata=(("authorization", f"Bearer {token}"),))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return answer.certificate_pem.encode(), key_pem


class Client:
    def __init__(self, swarm: Swarm, index: int) -> None:
        self.swarm = swarm
        inbound = f"127.0.0.2:{20000 + index}"
        metadata = struct_pb2.Struct()
        metadata.update(names.NodeMetadata("frontend", "default", "v1", inbound).as_struct())
        self.node = base_pb2.Node(
            id=names.node_id("frontend", "default", inbound), user_agent_name=names.USER_AGENT, metadata=metadata)
        self.acked: dict[str, str] = {}
        self.subscribed: dict[str, list[str]] = {CDS: [], LDS: []}
        self.channel: grpc.aio.Channel | None = None
        self.task: asyncio.Task[None] | None = None

    async def run(self, credentials: grpc.ChannelCredentials) -> None:
        # A local subchannel pool: each client its own connection, as N sidecars would have.
        self.channel = grpc.aio.secure_channel(self.swarm.address, credentials,
                                               options=[("grpc.use_local_subchannel_pool", 1)])
        stream = self.channel.stream_stream(ADS, request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
                                            response_deserializer=discovery_pb2.DiscoveryResponse.FromString)()
        first = True
        for type_url in (CDS, LDS):
            await stream.write(discovery_pb2.DiscoveryRequest(node=self.node if first else None, type_url=type_url))
            first = False
        async for response in stream:
            names_now = self._names_for(response)
            await stream.write(discovery_pb2.DiscoveryRequest(
                type_url=response.type_url, version_info=response.version_info, response_nonce=response.nonce,
                resource_names=self.subscribed.get(response.type_url, [])))
            self.acked[response.type_url] = response.version_info
            for type_url, wanted in names_now:
                if self.subscribed.get(type_url) != wanted:
                    self.subscribed[type_url] = wanted
                    await stream.write(discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=wanted))
            self.swarm.acked(self)

    def _names_for(self, response: discovery_pb2.DiscoveryResponse) -> list[tuple[str, list[str]]]:
        """The names of the resources a response refers to, to subscribe to."""
        if response.type_url == CDS:
            from envoy.config.cluster.v3 import cluster_pb2

            eds = []
            for any_cluster in response.resources:
                cluster = cluster_pb2.Cluster()
                any_cluster.Unpack(cluster)
                if cluster.type == cluster_pb2.Cluster.EDS:
                    eds.append(cluster.name)
            return [(EDS, sorted(eds)), (SDS, [names.BUNDLE_SECRET])]
        if response.type_url == LDS:
            return [(RDS, [names.INBOUND, names.OUTBOUND])]
        return []


class Swarm:
    def __init__(self, address: str, token: str, count: int, bundle_pem: bytes) -> None:
        """``bundle_pem``: the control plane's CA bundle (``meshctl ca bundle``)."""
        self.address = address
        self.token = token
        self.bundle_pem = bundle_pem
        self.clients = [Client(self, i) for i in range(count)]
        self._waiting: tuple[dict[Client, str], asyncio.Future[float]] | None = None

    async def connect(self) -> None:
        cert_pem, key_pem = await certify(self.address, self.token, self.bundle_pem)
        credentials = grpc.ssl_channel_credentials(root_certificates=self.bundle_pem, private_key=key_pem,
                                                   certificate_chain=cert_pem)
        for client in self.clients:
            client.task = asyncio.create_task(client.run(credentials))

    async def settled(self, timeout: float = 120) -> None:
        """Until every client has ACKed all five types."""
        deadline = time.monotonic() + timeout
        while any(len(c.acked) < 5 for c in self.clients):
            if time.monotonic() > deadline:
                done = sum(len(c.acked) == 5 for c in self.clients)
                raise TimeoutError(f"{done} of {len(self.clients)} clients got every type")
            for client in self.clients:
                if client.task is not None and client.task.done() and client.task.exception() is not None:
                    raise RuntimeError(f"a client failed: {client.task.exception()!r}")
            await asyncio.sleep(0.05)

    def expect_new_routes(self) -> asyncio.Future[float]:
        """A future of the time at which every client has ACKed routes newer than now."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiting = ({c: c.acked.get(RDS, "") for c in self.clients}, future)
        return future

    def acked(self, client: Client) -> None:
        if self._waiting is None:
            return
        before, future = self._waiting
        if before.get(client) == client.acked.get(RDS):
            return
        before.pop(client, None)
        if not before and not future.done():
            future.set_result(time.monotonic())
            self._waiting = None

    async def close(self) -> None:
        for client in self.clients:
            if client.task is not None:
                client.task.cancel()
            if client.channel is not None:
                await client.channel.close()
