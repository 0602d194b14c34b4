"""The ADS server (``envoy.service.discovery.v3.AggregatedDiscoveryService``, state of the
world): one stream per client, its resources cut by :mod:`.snapshot`, ACK/NACK kept per type.

    request (type, names, nonce) ── reader ──▶ ACK / NACK / subscription ──┐
    store or registry change ── debounce ──▶ mark types of the affected clients ──┴─▶ writer ──▶ response

A stream's writer sends a type only when what the client would get differs from what it was
last sent (a digest), so an instance joining or leaving sends endpoints (EDS) only, and a change
of one service's Route reaches only the clients that call it. Versions come from the store's
counter: monotonic across restarts, one per push round.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format
from grpclib.const import Cardinality, Handler, Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream
from meshproxy.mesh.names import CERTIFICATE_SECRET, USER_AGENT, NodeMetadata, capture_addresses

from ..ca import CertificateAuthority
from ..identity import Authenticator
from ..registry import Registry, ServiceKey, sleep_or_wake
from ..store.base import Store
from ..telemetry import Telemetry
from .build import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, SHORT, TYPES, certificate_secret, socket_address
from .snapshot import Client, Snapshots, digest, entry

log = logging.getLogger("meshcontrol.xds")

METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
MAX_DEBOUNCE_S = 1.0
# How `meshctl status` names the types.
STATUS_NAMES = {LISTENER: "listeners", ROUTE: "routes", CLUSTER: "clusters", ENDPOINT: "endpoints", SECRET: "secrets"}


@dataclass(slots=True)
class TypeState:
    """One resource type of one stream."""

    requested: bool = False
    subscribed: frozenset[str] | None = None
    """Resource names asked for; None for all (a wildcard)."""
    force: bool = False
    """Answer even if nothing changed (a first request, a new subscription)."""
    nonce: str = ""
    version_sent: int = 0
    digest_sent: int | None = None
    version_acked: int = 0
    nack: str = ""
    nack_version: int = 0
    changed_at: float | None = None
    """monotonic time of the oldest change not yet ACKed, for the push latency."""
    generation_sent: int = 0
    generation_acked: int = 0
    """Registry generation of the endpoints sent and ACKed (EDS), for Leave."""


@dataclass(slots=True, eq=False)
class AdsStream:
    node_id: str
    kind: str
    client: Client
    connected_at: float
    types: dict[str, TypeState] = field(default_factory=lambda: {t: TypeState() for t in TYPES})
    pending: set[str] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    nonces: Any = field(default_factory=lambda: itertools.count(1))
    secret_renew_at: float = 0.0
    secret_trust_domain: str = ""


class AdsServer:
    def __init__(self, store: Store, registry: Registry, snapshots: Snapshots, ca: CertificateAuthority,
                 authenticator: Authenticator, telemetry: Telemetry, debounce_s: float = 0.1) -> None:
        self.store = store
        self.registry = registry
        self.snapshots = snapshots
        self.ca = ca
        self.authenticator = authenticator
        self.telemetry = telemetry
        self.debounce_s = debounce_s
        self.streams: set[AdsStream] = set()
        self.version = 0
        self.generation = 0
        """The registry generation the endpoints being sent reflect (synced at each push)."""
        self.acked = asyncio.Event()
        """Set on every ACK and every stream's end: what a Leave waits on."""
        self._loop = asyncio.get_running_loop()
        self._dirty_all = False
        self._dirty_services: set[ServiceKey] = set()
        self._first_change: float | None = None
        self._last_change = 0.0
        self._changed = asyncio.Event()
        self._urgent = False
        self._hurry = asyncio.Event()

    def __mapping__(self) -> dict[str, Handler]:
        return {METHOD: Handler(self._stream, Cardinality.STREAM_STREAM, discovery_pb2.DiscoveryRequest,
                                discovery_pb2.DiscoveryResponse)}

    def start(self, resources: list[dict[str, Any]]) -> None:
        self.snapshots.reload(resources)
        self.generation = self.registry.generation
        self.version = self._next_version()

    # --- changes and the debounce -------------------------------------------------------

    def store_changed(self, revision: int) -> None:
        """Store.on_change callback: any thread."""
        self._loop.call_soon_threadsafe(self._mark, True, set())

    def endpoints_changed(self, services: set[ServiceKey]) -> None:
        """Registry callback: on the loop."""
        self._mark(False, services)

    def _mark(self, everything: bool, services: set[ServiceKey]) -> None:
        now = time.monotonic()
        self._dirty_all |= everything
        self._dirty_services |= services
        if self._first_change is None:
            self._first_change = now
        self._last_change = now
        self._changed.set()

    async def run(self) -> None:
        """Pushes after a quiet ``debounce`` window, and at most MAX_DEBOUNCE_S after the first
        change of a burst (so a steady stream of changes cannot hold pushes back forever)."""
        while True:
            await self._changed.wait()
            while True:
                assert self._first_change is not None
                deadline = min(self._last_change + self.debounce_s, self._first_change + MAX_DEBOUNCE_S)
                delay = deadline - time.monotonic()
                if delay <= 0 or self._urgent:
                    break
                await sleep_or_wake(self._hurry, delay)  # push_now() cuts the wait short
            self._urgent = False
            self._hurry.clear()
            self._changed.clear()
            first, everything, services = self._first_change, self._dirty_all, self._dirty_services
            self._first_change, self._dirty_all, self._dirty_services = None, False, set()
            try:
                self._push(first, everything, services)
            except Exception:  # a bad resource must not end pushes for good
                log.exception("push failed")

    def _push(self, changed_at: float, everything: bool, services: set[ServiceKey]) -> None:
        if everything:
            started = time.monotonic()
            resources = self.store.resources()
            self.telemetry.store_latency.labels("resources").observe(time.monotonic() - started)
            self.snapshots.reload(resources)
        else:
            self.snapshots.endpoints_changed(services)
        self.generation = self.registry.generation
        self.version = self._next_version()
        trust_domain = self.snapshots.world.trust_domain
        for ads in self.streams:
            if ads.client.envoy_secret is not None and ads.secret_trust_domain != trust_domain:
                self._mint(ads)  # the Mesh's trust domain changed: its identity with it
            types = TYPES if everything else self.snapshots.changed_types(ads.client, services)
            self._schedule(ads, types, changed_at)
        self.telemetry.instances.set(len(self.registry.all()))

    def push_now(self) -> None:
        """Pushes what changed without waiting for the debounce window (a draining instance's
        Leave is waiting on it)."""
        self._urgent = True
        self._hurry.set()

    def _schedule(self, ads: AdsStream, types: tuple[str, ...], changed_at: float | None) -> None:
        for type_url in types:
            state = ads.types[type_url]
            if not state.requested:
                continue
            if changed_at is not None and state.changed_at is None:
                state.changed_at = changed_at
            ads.pending.add(type_url)
        if ads.pending:
            ads.wake.set()

    def _next_version(self) -> int:
        started = time.monotonic()
        version = self.store.next_version()
        self.telemetry.store_latency.labels("next_version").observe(time.monotonic() - started)
        return version

    # --- a stream -----------------------------------------------------------------------

    async def _stream(self, stream: Stream[discovery_pb2.DiscoveryRequest, discovery_pb2.DiscoveryResponse]) -> None:
        first = await stream.recv_message()
        if first is None:
            return
        ads = self._admit(stream, first)
        self.streams.add(ads)
        self.telemetry.clients.labels(ads.kind).inc()
        log.info("%s client %s connected (%s)", ads.kind, ads.node_id, ads.client.meta.version)
        writer = asyncio.create_task(self._write(stream, ads))
        try:
            request: discovery_pb2.DiscoveryRequest | None = first
            while request is not None:
                self._receive(ads, request)
                request = await stream.recv_message()
        finally:
            writer.cancel()
            self.streams.discard(ads)
            self.telemetry.clients.labels(ads.kind).dec()
            self.registry.disconnected(ads.node_id)
            log.info("%s client %s disconnected", ads.kind, ads.node_id)
            self.acked.set()  # a Leave waiting on it need not wait any more

    def _admit(self, stream: Stream[Any, Any], first: discovery_pb2.DiscoveryRequest) -> AdsStream:
        """Checks the first request's node and the caller's proof; registers the instance."""
        node = first.node
        try:
            meta = NodeMetadata.from_struct(json_format.MessageToDict(node.metadata))
            for name in ("inbound", "outbound", "app"):
                try:
                    socket_address(getattr(meta, name))
                except ValueError as error:
                    raise ValueError(f"node metadata: '{name}': {error}") from None
            for address in capture_addresses(meta.capture):
                try:
                    # Listener addresses: IPs (Envoy NACKs a host name there), e.g. [::1]:15002.
                    ipaddress.ip_address(socket_address(address).socket_address.address)
                except ValueError as error:
                    raise ValueError(f"node metadata: 'capture': {address!r}: {error}; expected IP:PORT "
                                     "(several separated by commas)") from None
        except ValueError as error:
            raise GRPCError(Status.INVALID_ARGUMENT, f"{error} (node {node.id!r})") from None
        caller = self.authenticator.caller(stream)
        self.authenticator.check_current(caller, meta.service, meta.namespace, "the node metadata")
        if self._dirty_all:
            # A change waits for the debounce window; a client starting now gets it at once
            # rather than the set before it and then a push (the others still get the push).
            self.snapshots.reload(self.store.resources())
        kind = "meshproxy" if node.user_agent_name == USER_AGENT else (node.user_agent_name or "unknown")
        ads = AdsStream(node.id, kind, Client(meta), time.time())
        if kind != "meshproxy":
            self._mint(ads)  # no CSR agent: its certificate comes by SDS
        # Last: from here on, the stream's end is what starts the instance's lease.
        ads.node_id = self.registry.register(meta)
        return ads

    def _mint(self, ads: AdsStream) -> None:
        world = self.snapshots.world
        meta = ads.client.meta
        identity = f"spiffe://{world.trust_domain}/ns/{meta.namespace}/sa/{meta.service}"
        cert_pem, key_pem = self.ca.mint(identity, world.cert_lifetime_s)
        ads.client.envoy_secret = entry(CERTIFICATE_SECRET, certificate_secret(cert_pem, key_pem))
        ads.secret_renew_at = time.monotonic() + world.cert_lifetime_s / 2
        ads.secret_trust_domain = world.trust_domain
        self.telemetry.certificates.labels("minted").inc()

    def renew_secrets(self) -> None:
        """Re-mints the certificates of Envoy clients past half their lifetime."""
        now = time.monotonic()
        for ads in self.streams:
            if ads.client.envoy_secret is not None and now >= ads.secret_renew_at:
                log.info("renewing the certificate of %s", ads.node_id)
                self._mint(ads)
                self._schedule(ads, (SECRET,), now)

    def _receive(self, ads: AdsStream, request: discovery_pb2.DiscoveryRequest) -> None:
        type_url = request.type_url
        state = ads.types.get(type_url)
        if state is None:
            log.debug("%s asked for unknown type %s", ads.node_id, type_url)
            return
        if request.response_nonce and state.requested:
            if request.response_nonce != state.nonce:
                return  # about an earlier response: the answer to the latest one is on its way
            short = SHORT[type_url]
            if request.HasField("error_detail"):
                state.nack, state.nack_version = request.error_detail.message, state.version_sent
                self.telemetry.nacks.labels(short).inc()
                log.warning("%s NACKed %s version %d: %s", ads.node_id, short, state.version_sent, state.nack)
            else:
                state.version_acked = state.version_sent
                state.generation_acked = state.generation_sent
                self.telemetry.acks.labels(short).inc()
                if state.changed_at is not None:
                    self.telemetry.push_latency.observe(time.monotonic() - state.changed_at)
                    state.changed_at = None
                self.acked.set()
        names = frozenset(request.resource_names)
        subscribed = None if not names or "*" in names else names
        if not state.requested or subscribed != state.subscribed:
            state.requested, state.subscribed, state.force = True, subscribed, True
            ads.pending.add(type_url)
            ads.wake.set()

    async def _write(self, stream: Stream[Any, discovery_pb2.DiscoveryResponse], ads: AdsStream) -> None:
        try:
            await self._write_loop(stream, ads)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Ending the stream makes the client reconnect and resync; logged, since it is a bug.
            log.exception("sending to %s failed; ending its stream", ads.node_id)
            await stream.cancel()

    async def _write_loop(self, stream: Stream[Any, discovery_pb2.DiscoveryResponse], ads: AdsStream) -> None:
        while True:
            await ads.wake.wait()
            ads.wake.clear()
            for type_url in TYPES:  # clusters before endpoints, listeners before routes
                if type_url in ads.pending:
                    ads.pending.discard(type_url)
                    response = self._response(ads, type_url)
                    if response is not None:
                        await stream.send_message(response)
                        self.telemetry.pushes.labels(SHORT[type_url]).inc()

    def _response(self, ads: AdsStream, type_url: str) -> discovery_pb2.DiscoveryResponse | None:
        state = ads.types[type_url]
        entries = self.snapshots.resources(ads.client, type_url)
        if state.subscribed is not None:
            entries = [e for e in entries if e.name in state.subscribed]
        content = digest(entries)
        generation = self.generation
        if content == state.digest_sent and not state.force:
            # Nothing new for this client; if it has ACKed what it has, it is up to date.
            state.changed_at = None
            if state.version_acked == state.version_sent:
                state.generation_sent = state.generation_acked = generation
            return None
        version = self.version if self.version > state.version_sent else self._next_version()
        self.version = version
        state.nonce = str(next(ads.nonces))
        state.version_sent, state.digest_sent, state.force = version, content, False
        state.generation_sent = generation
        return discovery_pb2.DiscoveryResponse(version_info=str(version), resources=[e.resource for e in entries],
                                               type_url=type_url, nonce=state.nonce)

    # --- for Leave and status -----------------------------------------------------------

    def callers_of(self, key: ServiceKey) -> list[AdsStream]:
        return [ads for ads in self.streams if self.snapshots.calls(ads.client, {key})]

    async def wait_endpoints_acked(self, streams: list[AdsStream], generation: int,
                                   timeout_s: float) -> tuple[int, int]:
        """Waits until each stream has ACKed endpoints of registry ``generation`` or later (or
        ended); returns (acknowledged, pending)."""
        def done(ads: AdsStream) -> bool:
            return ads not in self.streams or ads.types[ENDPOINT].generation_acked >= generation

        deadline = time.monotonic() + timeout_s
        while not all(done(a) for a in streams) and (left := deadline - time.monotonic()) > 0:
            self.acked.clear()
            await sleep_or_wake(self.acked, left)
        acknowledged = sum(1 for a in streams if done(a))
        return acknowledged, len(streams) - acknowledged

    def status(self) -> list[dict[str, Any]]:
        """Each connected stream: who, where, and per type the version sent/ACKed and last NACK."""
        rows = []
        for ads in sorted(self.streams, key=lambda a: a.node_id):
            meta = ads.client.meta
            rows.append({
                "node_id": ads.node_id, "kind": ads.kind, "service": meta.service, "namespace": meta.namespace,
                "version": meta.version, "address": meta.inbound, "admin": meta.admin, "connected": True,
                "connected_since": ads.connected_at,
                "types": {STATUS_NAMES[t]: {"sent": str(s.version_sent) if s.version_sent else None,
                                            "acked": str(s.version_acked) if s.version_acked else None,
                                            "nack": s.nack or None}
                          for t, s in ads.types.items() if s.requested},
            })
        return rows


async def run_renewals(server: AdsServer) -> None:
    """Looks every second for Envoy certificates due for renewal: a comparison per Envoy client,
    and a lifetime the Mesh shortens takes effect within a second."""
    while True:
        await asyncio.sleep(1.0)
        try:
            server.renew_secrets()
        except Exception:  # a failed renewal is retried at the next look
            log.exception("renewing Envoy certificates failed")
