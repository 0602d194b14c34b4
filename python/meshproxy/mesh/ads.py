"""The sidecar's xDS client: one ADS stream (envoy.service.discovery.v3.AggregatedDiscoveryService,
state of the world) to the control plane over mutual TLS, kept open for as long as the sidecar runs.

    connect ─▶ CDS, LDS (wildcard) ─▶ responses ─▶ batch ─▶ complete? ─▶ translate, apply ─▶ ACK
                 ▲   EDS, RDS, SDS by the names they reference ◀─┘   │        refused ─▶ NACK
                 └──── stream lost: back-off (capped, jittered), the last good config keeps serving

Responses that arrive together (a push sends clusters, endpoints, listeners and routes back to
back) are decided together: one translation, one reload. A set that names what has not arrived
yet (a new cluster's endpoints, say) waits for it, as Envoy warms a cluster, and is NACKed if it
is still incomplete after _INCOMPLETE_S. When a set of several types is refused, the types are
added one at a time on top of what runs, so that one bad resource does not hold back the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from google.protobuf import struct_pb2
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from .. import _native
from .channel import Target
from .identity import Backoff, describe
from .names import BUNDLE_SECRET, RECONNECT_CAP_S, USER_AGENT, NodeMetadata
from .translate import missing, trust_domain_of
from .translate_base import Refused
from .xds_pb2 import DiscoveryRequest, DiscoveryResponse, Node
from .xds_state import CLUSTER, CONFIG_TYPES, LISTENER, SECRET, SHORT, XdsState, bundle_of

if TYPE_CHECKING:
    import ssl

    from .apply import Applier

log = logging.getLogger("meshproxy")

METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
# How long a set naming resources that have not come may wait for them before it is NACKed.
_INCOMPLETE_S = 5.0
# Responses arriving within this of one another are decided together.
_BATCH_S = 0.02
# Put in the queue of responses: decide on what waits, with no new response.
_POKE = DiscoveryResponse()


class AdsClient:
    def __init__(self, target: Target, node_id: str, metadata: NodeMetadata, tls: Callable[[], ssl.SSLContext],
                 applier: Applier, renew_soon: Callable[[], None] = lambda: None) -> None:
        """``renew_soon`` asks for a new certificate now: the resources name another trust
        domain than the certificate's (a changed Mesh), or the control plane refused it."""
        self.target = target
        self.node = Node(id=node_id, cluster=metadata.service, user_agent_name=USER_AGENT,
                                  user_agent_version=_native.__version__)
        struct = struct_pb2.Struct()
        struct.update(metadata.as_struct())
        self.node.metadata.CopyFrom(struct)
        self.tls = tls
        self.applier = applier
        self.state = XdsState()
        self.renew_soon = renew_soon
        self._responses: asyncio.Queue[DiscoveryResponse | None] | None = None
        self._incomplete_since: float | None = None

    async def run(self) -> None:
        """Keeps a stream open until cancelled, reconnecting after a back-off."""
        backoff = Backoff(cap=RECONNECT_CAP_S)
        reported = False  # this outage has been logged as one
        while True:
            answered = False
            try:
                answered = await self._stream(backoff)
                error = "the control plane ended the stream"
            except (OSError, TimeoutError, GRPCError, StreamTerminatedError) as failure:
                error = describe(failure)
                if isinstance(failure, GRPCError) and failure.status in (Status.PERMISSION_DENIED,
                                                                         Status.UNAUTHENTICATED):
                    self.renew_soon()  # a certificate of an earlier trust domain, say
            delay = backoff.next()
            if answered or not reported:
                log.warning("control plane at %s unreachable (%s); serving the last good config, retrying in %.1fs",
                            self.target, error, delay)
                reported = True
            else:
                log.info("control plane at %s still unreachable (%s); retrying in %.1fs", self.target, error, delay)
            await asyncio.sleep(delay)

    async def _stream(self, backoff: Backoff) -> bool:
        """One stream, until it ends; True if the control plane answered on it."""
        self.state.new_stream()
        self._incomplete_since = None
        channel = Channel(self.target.host, self.target.port, ssl=self.tls())
        answered = False
        try:
            async with channel.request(METHOD, Cardinality.STREAM_STREAM, DiscoveryRequest,
                                       DiscoveryResponse) as stream:
                await stream.send_request()
                first = True
                for type_url in (CLUSTER, LISTENER, *self.state.subscriptions_due()):
                    await stream.send_message(self.state.request(type_url, node=self.node if first else None))
                    first = False
                responses: asyncio.Queue[DiscoveryResponse | None] = asyncio.Queue()
                self._responses = responses
                reader = asyncio.create_task(_read(stream, responses))
                try:
                    while True:
                        batch = await self._next_batch(responses)
                        if batch is None:
                            await reader  # raises what ended the stream, if anything did
                            return answered
                        if batch and not answered:
                            answered = True
                            backoff.reset()
                            log.info("connected to the control plane at %s", self.target)
                        for request in await self._decide(batch):
                            await stream.send_message(request)
                finally:
                    self._responses = None
                    reader.cancel()
        finally:
            channel.close()

    async def _next_batch(self, responses: asyncio.Queue[DiscoveryResponse | None]
                          ) -> list[DiscoveryResponse] | None:
        """The responses that came together; [] when an incomplete set's wait ran out; None
        when the stream ended."""
        timeout = None
        if self._incomplete_since is not None:
            timeout = max(0.0, self._incomplete_since + _INCOMPLETE_S - time.monotonic())
        try:
            first = await asyncio.wait_for(responses.get(), timeout)
        except TimeoutError:
            return []
        if first is None:
            return None
        if first is _POKE:
            return []
        batch = [first]
        while True:
            try:
                following = await asyncio.wait_for(responses.get(), _BATCH_S)
            except TimeoutError:
                return batch
            if following is None:
                responses.put_nowait(None)  # seen on the next call
                return batch
            if following is not _POKE:
                batch.append(following)

    async def _decide(self, batch: list[DiscoveryResponse]) -> list[DiscoveryRequest]:
        """Takes a batch in; returns the requests to send (ACKs, NACKs, subscriptions)."""
        state = self.state
        requests = []
        for response in batch:
            try:
                state.receive(response)
            except KeyError:
                log.warning("xDS: ignoring a response of type %s", response.type_url)
            except Refused as refusal:
                type_url = response.type_url
                state.reject(type_url)
                requests.append(state.request(type_url, error=str(refusal)))
                log.error("xDS %s %s NACKed: %s", SHORT[type_url], response.version_info, refusal)
        pending = [t for t in state.pending() if t in CONFIG_TYPES]
        if pending:
            gaps = missing(state.view())
            trust_domain = trust_domain_of(state.view())
            if not gaps and trust_domain not in (None, self.applier.local.trust_domain):
                # The mesh moved to another trust domain: the config can run once the
                # certificate is of it (the control plane renews into the current one).
                gaps = [f"certificate of trust domain {trust_domain}"]
                if self._incomplete_since is None:
                    log.info("xDS: the mesh's trust domain is now %s; renewing the certificate", trust_domain)
                    self.renew_soon()
            if not gaps:
                self._incomplete_since = None
                requests += await self._apply(pending)
            elif self._incomplete_since is None:
                self._incomplete_since = time.monotonic()
            elif time.monotonic() >= self._incomplete_since + _INCOMPLETE_S:
                self._incomplete_since = None
                message = f"incomplete: no {', '.join(gaps)} after {_INCOMPLETE_S:g}s"
                requests += self._nack(pending, message)
        if SECRET in state.pending():
            requests += await self._apply_secrets()
        # New names to follow (a new cluster's endpoints, say), for types not awaiting a decision.
        requests += [state.request(type_url) for type_url in state.subscriptions_due()]
        return requests

    def poke(self) -> None:
        """Decides on what waits (a set held back for a new certificate) without waiting for
        the next response; call on the loop."""
        if self._responses is not None:
            self._responses.put_nowait(_POKE)

    async def _apply(self, pending: list[str]) -> list[DiscoveryRequest]:
        try:
            version = await asyncio.to_thread(self.applier.apply, self.state.view(pending))
        except Refused as refusal:
            if len(pending) == 1:
                return self._nack(pending, str(refusal))
            return await self._apply_one_by_one(pending)
        return self._ack(pending, version)

    async def _apply_one_by_one(self, pending: list[str]) -> list[DiscoveryRequest]:
        """The pending types added one at a time, in ORDER, on top of what runs: each set that
        is complete is applied, and a type whose addition is refused is NACKed and left out. A
        type waiting for a later one (clusters for their endpoints) goes along with it."""
        requests = []
        included: list[str] = []
        for type_url in pending:
            trial = [*included, type_url]
            view = self.state.view(trial)
            if missing(view):
                included = trial
                continue
            try:
                version = await asyncio.to_thread(self.applier.apply, view)
            except Refused as refusal:
                requests += self._nack([type_url], str(refusal))
                continue
            requests += self._ack(trial, version)
            included = []
        if included:
            gaps = missing(self.state.view(included))
            requests += self._nack(included, f"needs {', '.join(gaps)}, which did not apply")
        return requests

    async def _apply_secrets(self) -> list[DiscoveryRequest]:
        secret = self.state.secrets().get(BUNDLE_SECRET)
        try:
            changed = secret is not None and await asyncio.to_thread(self.applier.apply_bundle, bundle_of(secret))
        except Refused as refusal:
            return self._nack([SECRET], str(refusal))
        if changed:
            log.info("xDS SDS %s applied: new CA bundle for new handshakes", self.state.types[SECRET].candidate_version)
        self.state.accept(SECRET)
        return [self.state.request(SECRET)]

    def _ack(self, types: list[str], version: int | None) -> list[DiscoveryRequest]:
        shown = ", ".join(f"{SHORT[t]} {self.state.types[t].candidate_version}" for t in types)
        for type_url in types:
            self.state.accept(type_url)
        if version is None:
            log.debug("xDS %s: no change to the running config", shown)
        else:
            log.info("xDS %s applied: config version %d", shown, version)
        return [self.state.request(type_url) for type_url in types]

    def _nack(self, types: list[str], message: str) -> list[DiscoveryRequest]:
        shown = ", ".join(f"{SHORT[t]} {self.state.types[t].candidate_version}" for t in types)
        log.error("xDS %s NACKed, keeping the running config: %s", shown, message)
        for type_url in types:
            self.state.reject(type_url)
        return [self.state.request(type_url, error=message) for type_url in types]


async def _read(stream: object, responses: asyncio.Queue[DiscoveryResponse | None]) -> None:
    """Queues every response of ``stream``, then None when it ends (also when it fails)."""
    try:
        while (response := await stream.recv_message()) is not None:  # type: ignore[attr-defined]
            responses.put_nowait(response)
    finally:
        responses.put_nowait(None)
