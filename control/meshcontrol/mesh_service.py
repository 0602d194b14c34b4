"""The control plane's own gRPC service, ``meshproxy.mesh.v1.Mesh`` (``mesh.proto``), beside
ADS on the same TLS port: how a sidecar joins the mesh and leaves it.

- ``Bundle``: the CA bundle, to anyone (the caller checks it against its token's CA pin).
- ``Certify``: signs the caller's CSR for the identity it proved (join token, or the current
  certificate when renewing); the SPIFFE ID is the control plane's, and a CSR naming another
  identity is refused.
- ``Leave``: a draining sidecar's instance leaves the registry now; the answer waits until the
  sidecars that had it among their endpoints ACKed endpoints without it (or ``wait_ms``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from grpclib.const import Cardinality, Handler, Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream
from meshproxy.mesh import mesh_pb2
from meshproxy.mesh.names import spiffe_id

from .ca import CaError, CertificateAuthority, csr_names, load_csr
from .identity import Authenticator
from .registry import Registry
from .telemetry import Telemetry
from .xds.server import AdsServer
from .xds.snapshot import World

log = logging.getLogger("meshcontrol.mesh")

SERVICE = "/meshproxy.mesh.v1.Mesh"
MAX_LEAVE_WAIT_MS = 30_000


class MeshService:
    def __init__(self, ca: CertificateAuthority, authenticator: Authenticator, registry: Registry, ads: AdsServer,
                 world: Callable[[], World], telemetry: Telemetry) -> None:
        self.ca = ca
        self.authenticator = authenticator
        self.registry = registry
        self.ads = ads
        self.world = world
        self.telemetry = telemetry

    def __mapping__(self) -> dict[str, Handler]:
        return {
            f"{SERVICE}/Bundle": Handler(self.bundle, Cardinality.UNARY_UNARY, mesh_pb2.BundleRequest,
                                         mesh_pb2.BundleResponse),
            f"{SERVICE}/Certify": Handler(self.certify, Cardinality.UNARY_UNARY, mesh_pb2.CertifyRequest,
                                          mesh_pb2.CertifyResponse),
            f"{SERVICE}/Leave": Handler(self.leave, Cardinality.UNARY_UNARY, mesh_pb2.LeaveRequest,
                                        mesh_pb2.LeaveResponse),
        }

    async def bundle(self, stream: Stream[mesh_pb2.BundleRequest, mesh_pb2.BundleResponse]) -> None:
        await stream.recv_message()
        await stream.send_message(mesh_pb2.BundleResponse(trust_domain=self.world().trust_domain,
                                                          bundle_pem=self.ca.bundle_pem()))

    async def certify(self, stream: Stream[mesh_pb2.CertifyRequest, mesh_pb2.CertifyResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        caller = self.authenticator.caller(stream)
        world = self.world()
        # The identity is the proof's, in today's trust domain (a certificate of an earlier one
        # renews into the current one).
        identity = spiffe_id(world.trust_domain, caller.namespace, caller.service)
        try:
            csr = load_csr(request.csr_pem)
        except CaError as error:
            raise GRPCError(Status.INVALID_ARGUMENT, str(error)) from None
        for name in csr_names(csr):
            if name.startswith("spiffe://") and name != identity:
                raise GRPCError(Status.PERMISSION_DENIED, f"the CSR asks for {name}, but the caller may only get a "
                                f"certificate for {identity} (service {caller.service!r} in namespace "
                                f"{caller.namespace!r}, from its {caller.via})")
            if not name.startswith("spiffe://") and name != caller.service:
                # The subject's common name, if any, is the service's name (as issued certificates have it).
                raise GRPCError(Status.PERMISSION_DENIED, f"the CSR's subject names service {name!r}, but the caller "
                                f"is service {caller.service!r} in namespace {caller.namespace!r} "
                                f"(from its {caller.via})")
        try:
            cert_pem, not_after = self.ca.issue(request.csr_pem, identity, world.cert_lifetime_s)
        except CaError as error:
            raise GRPCError(Status.INVALID_ARGUMENT, str(error)) from None
        self.telemetry.certificates.labels("csr").inc()
        log.info("issued a certificate for %s (by %s), valid %ds", identity, caller.via, world.cert_lifetime_s)
        await stream.send_message(mesh_pb2.CertifyResponse(certificate_pem=cert_pem, bundle_pem=self.ca.bundle_pem(),
                                                           spiffe_id=identity, not_after=not_after))

    async def leave(self, stream: Stream[mesh_pb2.LeaveRequest, mesh_pb2.LeaveResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        caller = self.authenticator.caller(stream)
        instance = self.registry.get(request.node_id)
        if instance is None:
            # Already gone (its lease ran out, or a second Leave): nothing to wait for.
            await stream.send_message(mesh_pb2.LeaveResponse(acknowledged=0, pending=0))
            return
        if (instance.service, instance.namespace) != (caller.service, caller.namespace):
            raise GRPCError(Status.PERMISSION_DENIED, f"node {request.node_id} is an instance of service "
                            f"{instance.service!r} in namespace {instance.namespace!r}; the caller is "
                            f"{caller.service!r} in {caller.namespace!r} and may only remove its own instances")
        watchers = [ads for ads in self.ads.callers_of(instance.key) if ads.node_id != instance.node_id]
        self.registry.leave(instance.node_id)
        self.ads.push_now()
        wait_s = min(request.wait_ms, MAX_LEAVE_WAIT_MS) / 1000
        acknowledged, pending = await self.ads.wait_endpoints_acked(watchers, self.registry.generation, wait_s)
        log.info("instance %s left: %d sidecar(s) acknowledged endpoints without it, %d still pending",
                 instance.node_id, acknowledged, pending)
        await stream.send_message(mesh_pb2.LeaveResponse(acknowledged=acknowledged, pending=pending))
