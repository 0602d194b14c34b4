"""A real control plane for tests (``meshctl serve`` in a child process, on ephemeral ports,
its readiness read from its log by processes.LoggedProcess), and a grpcio ADS client to
talk to it as a sidecar would."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2
from meshproxy.mesh import mesh_pb2

from processes import LoggedProcess

ADS_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


class ControlPlane(LoggedProcess):
    """``meshctl serve`` on ephemeral ports, at the addresses it logged."""

    def __init__(self, data: Path, *extra: str, grpc_address: str = "127.0.0.1:0",
                 api_address: str = "127.0.0.1:0") -> None:
        flags = ["--data", str(data), "--grpc", grpc_address, "--api", api_address, *extra]
        super().__init__([sys.executable, "-m", "meshcontrol.cli", "serve", *flags], "meshctl serve")
        self.data = data
        try:
            self.grpc = self.wait_for_line(r"grpc listening on (\S+)").group(1)
            self.api = self.wait_for_line(r"api listening on (\S+)").group(1)
            self.wait_for_line(r"ready:")
        except BaseException:
            self.stop()
            raise

    def call(self, method: str, path: str, body: bytes | None = None) -> Any:
        request = urllib.request.Request(self.api + path, data=body, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                data = response.read()
        except urllib.error.HTTPError as error:
            raise AssertionError(f"{method} {path}: {error.code}: {error.read().decode()}") from None
        return json.loads(data) if response.headers.get_content_type() == "application/json" else data

    def apply(self, text: str) -> Any:
        return self.call("POST", "/v1/apply?file=test.yaml", text.encode())

    def token(self, service: str, namespace: str = "default", ttl: str = "1h") -> str:
        body = json.dumps({"service": service, "namespace": namespace, "ttl": ttl}).encode()
        return str(self.call("POST", "/v1/tokens", body)["token"])

    def bundle(self) -> bytes:
        return bytes(self.call("GET", "/v1/bundle"))


def start_control_plane(data: Path, *extra: str, grpc_address: str = "127.0.0.1:0",
                        api_address: str = "127.0.0.1:0") -> ControlPlane:
    """``meshctl serve`` on ephemeral ports; returns once it logged 'ready'."""
    return ControlPlane(data, *extra, grpc_address=grpc_address, api_address=api_address)


# === an ADS client ===


def node(service: str, namespace: str = "default", *, version: str = "v1", inbound: str = "127.0.0.1:20001",
         agent: str = "meshproxy", **more: str) -> base_pb2.Node:
    metadata = struct_pb2.Struct()
    metadata.update({"service": service, "namespace": namespace, "version": version, "inbound": inbound, **more})
    return base_pb2.Node(id=f"sidecar~{inbound}~{service}.{namespace}", user_agent_name=agent, metadata=metadata)


def channel_credentials(bundle: bytes, cert_pem: bytes | None = None, key_pem: bytes | None = None
                        ) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(bundle, key_pem, cert_pem)


class AdsClient:
    """One ADS stream over grpc.aio; requests and responses one at a time."""

    def __init__(self, channel: grpc.aio.Channel, node: base_pb2.Node, metadata: tuple[tuple[str, str], ...] = ()):
        self.node = node
        self.call = channel.stream_stream(ADS_METHOD, request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
                                          response_deserializer=discovery_pb2.DiscoveryResponse.FromString)(
            metadata=metadata or None)
        self._first = True

    async def send(self, type_url: str, names: tuple[str, ...] = (), *, version: str = "", nonce: str = "",
                   error: str | None = None) -> None:
        request = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=list(names), version_info=version,
                                                 response_nonce=nonce)
        if self._first:
            request.node.CopyFrom(self.node)
            self._first = False
        if error is not None:
            request.error_detail.code = 3
            request.error_detail.message = error
        await self.call.write(request)

    async def receive(self, timeout: float = 5.0) -> discovery_pb2.DiscoveryResponse:
        response = await asyncio.wait_for(self.call.read(), timeout)
        if response is grpc.aio.EOF:
            raise EOFError("the ADS stream ended")
        assert isinstance(response, discovery_pb2.DiscoveryResponse)
        return response

    async def ack(self, response: discovery_pb2.DiscoveryResponse, names: tuple[str, ...] = ()) -> None:
        await self.send(response.type_url, names, version=response.version_info, nonce=response.nonce)

    async def nack(self, response: discovery_pb2.DiscoveryResponse, message: str,
                   names: tuple[str, ...] = ()) -> None:
        await self.send(response.type_url, names, nonce=response.nonce, error=message)


async def certify(channel: grpc.aio.Channel, csr_pem: bytes, token: str | None = None) -> mesh_pb2.CertifyResponse:
    method = channel.unary_unary("/meshproxy.mesh.v1.Mesh/Certify",
                                 request_serializer=mesh_pb2.CertifyRequest.SerializeToString,
                                 response_deserializer=mesh_pb2.CertifyResponse.FromString)
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    response = await method(mesh_pb2.CertifyRequest(csr_pem=csr_pem.decode()), metadata=metadata, timeout=10)
    assert isinstance(response, mesh_pb2.CertifyResponse)
    return response


def key_and_csr(spiffe_id: str, common_name: str | None = None) -> tuple[bytes, bytes]:
    """(key PEM, CSR PEM) as the sidecar makes them."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                       common_name or spiffe_id.rsplit("/", 1)[-1])]))
           .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=False)
           .sign(key, hashes.SHA256()))
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()),
            csr.public_bytes(serialization.Encoding.PEM))


class Sidecar:
    """An ADS client that subscribes to every type, ACKs whatever it gets (or NACKs a type it
    is told to), and keeps each response, in a background task."""

    def __init__(self, client: AdsClient, names: dict[str, tuple[str, ...]] | None = None) -> None:
        self.client = client
        self.names = names or {}
        self.latest: dict[str, discovery_pb2.DiscoveryResponse] = {}
        self.received: list[discovery_pb2.DiscoveryResponse] = []
        self.nack: dict[str, str] = {}
        self.changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, types: tuple[str, ...] = (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)) -> Sidecar:
        for type_url in types:
            await self.client.send(type_url, self.names.get(type_url, ()))
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        while True:
            response = await self.client.receive(timeout=3600)
            self.received.append(response)
            names = self.names.get(response.type_url, ())
            if response.type_url in self.nack:
                await self.client.nack(response, self.nack[response.type_url], names)
            else:
                self.latest[response.type_url] = response
                await self.client.ack(response, names)
            self.changed.set()

    async def until(self, condition: Any, timeout: float = 10.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}; got "
                                   f"{[(r.type_url.rsplit('.', 1)[-1], r.version_info) for r in self.received]}")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                pass

    def resources(self, type_url: str, message: Any) -> dict[str, Any]:
        """The latest resources of a type, unpacked into ``message`` instances, by name."""
        found = {}
        response = self.latest.get(type_url)
        for resource in response.resources if response is not None else ():
            item = message()
            resource.Unpack(item)
            found[getattr(item, "name", "") or getattr(item, "cluster_name", "")] = item
        return found

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        self.client.call.cancel()
