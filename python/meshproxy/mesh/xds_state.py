"""What an ADS stream has delivered, per resource type: the resources the sidecar runs
(accepted, with their version), what arrived since and awaits a decision (the candidate), and
the requests that ACK, NACK or change a subscription (state of the world, as Envoy speaks it).

    response ──receive()──▶ candidate ──view()──▶ translate + apply ──▶ accept() / reject()
                                                                    └──▶ request(type): ACK or NACK

Listeners and clusters are subscribed to with a wildcard, and each response carries all of them;
route configurations, endpoints and secrets are subscribed to by the names the listeners and
clusters reference, and a response updates the ones it carries. No I/O here: the stream is
``ads.py``'s.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import any_pb2

from .translate import Resources, references
from .translate_base import Refused
from .xds_messages import unpack
from .xds_pb2 import (
    Cluster,
    ClusterLoadAssignment,
    DiscoveryRequest,
    DiscoveryResponse,
    Listener,
    Node,
    Resource,
    RouteConfiguration,
    Secret,
    Status,
)

_PREFIX = "type.googleapis.com/"
LISTENER = _PREFIX + "envoy.config.listener.v3.Listener"
ROUTE = _PREFIX + "envoy.config.route.v3.RouteConfiguration"
CLUSTER = _PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = _PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"
# The order Envoy applies a push in: clusters before the routes that name them, and endpoints
# before the clusters using them are needed.
ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)
CONFIG_TYPES = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
SHORT = {LISTENER: "LDS", ROUTE: "RDS", CLUSTER: "CDS", ENDPOINT: "EDS", SECRET: "SDS"}
_WILDCARD = (LISTENER, CLUSTER)
_MESSAGES: dict[str, type[Any]] = {LISTENER: Listener, ROUTE: RouteConfiguration, CLUSTER: Cluster,
                                   ENDPOINT: ClusterLoadAssignment, SECRET: Secret}


class TypeState:
    def __init__(self) -> None:
        self.accepted: dict[str, Any] = {}
        self.version = ""
        """The version of ``accepted`` (what an ACK or NACK reports)."""
        self.nonce = ""
        """Of the last response on this stream (empty before the first)."""
        self.candidate: dict[str, Any] | None = None
        self.candidate_version = ""
        self.sent_names: tuple[str, ...] | None = None
        """The names the last request on this stream subscribed to; None before one was sent."""


class XdsState:
    def __init__(self) -> None:
        self.types = {type_url: TypeState() for type_url in ORDER}

    def new_stream(self) -> None:
        """A new stream: nothing sent or answered on it yet; what was accepted stays, and is
        what a reconnect resumes from."""
        for state in self.types.values():
            state.nonce, state.candidate, state.candidate_version, state.sent_names = "", None, "", None

    # --- responses -----------------------------------------------------------------------

    def receive(self, response: DiscoveryResponse) -> str:
        """Takes a response's resources as the type's candidate; returns the type. Raises
        Refused (after recording the nonce, so the NACK can name it) when a resource does not
        decode."""
        type_url: str = response.type_url
        state = self.types.get(type_url)
        if state is None:
            raise KeyError(type_url)
        state.nonce = response.nonce
        decoded = {}
        for resource in response.resources:
            message = _decode(resource, type_url)
            decoded[_name(message, type_url)] = message
        if type_url in _WILDCARD:
            candidate = decoded
        else:
            # A response carries the resources it updates; the others stay as they were.
            candidate = {**(state.candidate if state.candidate is not None else state.accepted), **decoded}
        state.candidate, state.candidate_version = candidate, response.version_info
        return type_url

    def pending(self) -> list[str]:
        """Types with a candidate awaiting a decision, in ORDER."""
        return [type_url for type_url in ORDER if self.types[type_url].candidate is not None]

    def view(self, types: tuple[str, ...] | list[str] | None = None) -> Resources:
        """The resources as they would be with the candidates of ``types`` (default: every
        pending type) accepted."""
        chosen = set(self.pending() if types is None else types)

        def of(type_url: str) -> dict[str, Any]:
            state = self.types[type_url]
            return state.candidate if type_url in chosen and state.candidate is not None else state.accepted

        return Resources(listeners=of(LISTENER), routes=of(ROUTE), clusters=of(CLUSTER), endpoints=of(ENDPOINT))

    def secrets(self) -> dict[str, Any]:
        state = self.types[SECRET]
        return state.candidate if state.candidate is not None else state.accepted

    def accept(self, type_url: str) -> None:
        state = self.types[type_url]
        if state.candidate is not None:
            state.accepted, state.version = state.candidate, state.candidate_version
        state.candidate = None

    def reject(self, type_url: str) -> None:
        self.types[type_url].candidate = None

    # --- requests ------------------------------------------------------------------------

    def wanted(self, type_url: str) -> tuple[str, ...]:
        """The names to subscribe to (empty: all, for listeners and clusters)."""
        if type_url in _WILDCARD:
            return ()
        wanted = references(self.view())
        names = {ROUTE: wanted.routes, ENDPOINT: wanted.endpoints, SECRET: wanted.secrets}[type_url]
        return tuple(sorted(names))

    def subscriptions_due(self) -> list[str]:
        """Types whose wanted names differ from the ones last sent: a request for each changes
        the subscription. A type awaiting a decision gets one too (its request carries no nonce,
        so it reads as a subscription change, not as an ACK or NACK of what waits): a new
        cluster's endpoints must be asked for before the set that brought the cluster can apply.
        A subscription is never narrowed to nothing: an empty list would read as "all" to a
        server (the legacy wildcard), and resources no longer named are ignored anyway."""
        due = []
        for type_url in ORDER:
            state = self.types[type_url]
            if type_url in _WILDCARD:
                continue
            names = self.wanted(type_url)
            if not names or names == state.sent_names:
                continue
            # One that waits asks only for what it lacks; its ACK carries the names anyway.
            if state.candidate is None or not set(names) <= set(state.candidate):
                due.append(type_url)
        return due

    def request(self, type_url: str, *, node: Node | None = None,
                error: str | None = None) -> DiscoveryRequest:
        """The next request of ``type_url``: an ACK of the last response (its nonce, the
        accepted version), a NACK when ``error`` is given, or a first request."""
        state = self.types[type_url]
        # Never narrowed to nothing (see subscriptions_due).
        names = self.wanted(type_url) or state.sent_names or ()
        state.sent_names = names
        # A subscription change while a response awaits its decision names no nonce (see
        # subscriptions_due); the ACK or NACK names it once the decision is made.
        deciding = state.candidate is not None and error is None and node is None
        request = DiscoveryRequest(version_info=state.version, type_url=type_url, resource_names=list(names),
                                   response_nonce="" if deciding else state.nonce)
        if node is not None:
            request.node.CopyFrom(node)
        if error is not None:
            request.error_detail.CopyFrom(Status(code=3, message=error))  # INVALID_ARGUMENT
        return request


def _decode(resource: any_pb2.Any, type_url: str) -> Any:
    wrapper = unpack(resource, Resource)
    if wrapper is not None:
        resource = wrapper.resource
    message = unpack(resource, _MESSAGES[type_url])
    if message is None:
        raise Refused(f"a {SHORT[type_url]} response holds a {resource.type_url.rpartition('/')[2] or 'resource'} "
                      f"that is not a {type_url.rpartition('/')[2]}")
    return message


def _name(message: Any, type_url: str) -> str:
    return str(message.cluster_name if type_url == ENDPOINT else message.name)


def bundle_of(secret: Any) -> bytes:
    """The CA bundle PEM of a validation-context secret (ROOTCA). Raises Refused."""
    if not secret.HasField("validation_context"):
        raise Refused(f"secret '{secret.name}': expected a validation_context (the CA bundle)")
    source = secret.validation_context.trusted_ca
    kind = source.WhichOneof("specifier")
    if kind == "inline_bytes":
        return bytes(source.inline_bytes)
    if kind == "inline_string":
        return str(source.inline_string).encode()
    raise Refused(f"secret '{secret.name}': trusted_ca must be inline (inline_bytes or inline_string), not {kind}")
