"""What each client gets: its resources of each type, cut from one :class:`World` (the store's
resources, read once per revision) and the registry.

Memory is kept per service, not per client: the resources every client of a service (or every
client) gets alike — route configurations, peer clusters, endpoints, the CA bundle — are built
once and shared; a client keeps only a digest of what it was sent. Only what names a client's
own addresses (its two listeners and its app cluster) and an Envoy client's own certificate are
built for it, when a push needs them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import any_pb2
from meshproxy.mesh import names
from meshproxy.mesh.names import NodeMetadata, capture_addresses

from ..registry import Registry, ServiceKey
from . import build, tcp
from .build import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET
from .route_filters import needed

DEFAULT_MTLS = "strict"
DEFAULT_CERT_LIFETIME_S = 24 * 3600


@dataclass(frozen=True, slots=True)
class Entry:
    """One built resource, ready to send."""

    name: str
    resource: any_pb2.Any
    digest: int


def entry(name: str, message: Any) -> Entry:
    resource = build.packed(message)
    return Entry(name, resource, hash(resource.value))


def digest(entries: Iterable[Entry]) -> int:
    """What a client was sent of one type, in one number: equal when nothing changed."""
    return hash(tuple((e.name, e.digest) for e in entries))


@dataclass(slots=True)
class Client:
    """What a client's resources depend on besides the world: who and where it is."""

    meta: NodeMetadata
    envoy_secret: Entry | None = None
    """An Envoy client's own certificate and key ("default"), which the control plane makes."""

    @property
    def key(self) -> ServiceKey:
        return self.meta.service, self.meta.namespace


class World:
    """The store's resources, read once per revision, with what is built from them shared by
    every client (cached on first use, dropped with the world)."""

    def __init__(self, resources: Iterable[Mapping[str, Any]], default_trust_domain: str) -> None:
        mesh: Mapping[str, Any] = {}
        self.services: dict[ServiceKey, Mapping[str, Any]] = {}
        self.routes: dict[ServiceKey, Mapping[str, Any]] = {}
        self.policies: dict[ServiceKey, Mapping[str, Any]] = {}
        self.traffic_policies: dict[ServiceKey, Mapping[str, Any]] = {}
        for resource in resources:
            kind, namespace = resource.get("kind"), resource.get("namespace", "default")
            if kind == "Service":
                self.services[(resource["name"], namespace)] = resource
            elif kind == "Route":
                self.routes[(resource["service"], namespace)] = resource
            elif kind == "AccessPolicy":
                self.policies[(resource["service"], namespace)] = resource
            elif kind == "TrafficPolicy":
                self.traffic_policies[(resource["service"], namespace)] = resource
            elif kind == "Mesh":
                mesh = resource
        self.trust_domain: str = mesh.get("trust_domain") or default_trust_domain
        self.mtls: str = mesh.get("mtls") or DEFAULT_MTLS
        self.cert_lifetime_s: int = int(mesh.get("cert_lifetime_s") or DEFAULT_CERT_LIFETIME_S)
        self._called: dict[ServiceKey, tuple[ServiceKey, ...]] = {}
        self._shared: dict[tuple[str, ...], Entry] = {}
        self._clusters: dict[ServiceKey, tuple[Entry, ...]] = {}

    def called(self, key: ServiceKey) -> tuple[ServiceKey, ...]:
        """The (service, namespace) pairs a service calls: its ``calls``, or, without them (or
        without a Service document), every Service of its namespace."""
        found = self._called.get(key)
        if found is None:
            service = self.services.get(key)
            calls = service.get("calls") if service is not None else None
            if calls is None:
                found = tuple(sorted(k for k in self.services if k[1] == key[1]))
            else:
                found = tuple(dict.fromkeys(_split_ref(ref, key[1]) for ref in calls))
            self._called[key] = found
        return found

    def called_http(self, key: ServiceKey) -> tuple[ServiceKey, ...]:
        """The services ``key`` calls by HTTP requests (routes); the rest are ``tcp`` ones."""
        return tuple(called for called in self.called(key) if self.protocol(called) != "tcp")

    def tcp_services(self) -> dict[ServiceKey, Mapping[str, Any]]:
        """The mesh's ``tcp`` services: each has a port of its own (``tcp.addresses``)."""
        return {key: service for key, service in self.services.items() if service.get("protocol") == "tcp"}

    def protocol(self, key: ServiceKey) -> str:
        service = self.services.get(key)
        return str(service.get("protocol", "http1")) if service is not None else "http1"

    def shared(self, key: tuple[str, ...], make: Callable[[], Entry]) -> Entry:
        found = self._shared.get(key)
        if found is None:
            found = self._shared[key] = make()
        return found

    def route_filters(self, key: ServiceKey) -> set[str]:
        """The HTTP filters the rules of the services ``key`` calls need (``fault``, ``rate_limit``)."""
        return needed(rule for called in self.called(key) for rule in (self.routes.get(called) or {}).get("rules", ()))

    def peer_clusters(self, key: ServiceKey) -> tuple[Entry, ...]:
        """The clusters of one called service: all versions, then one per version its Route
        names; each as its TrafficPolicy says."""
        found = self._clusters.get(key)
        if found is None:
            service, namespace = key
            route = self.routes.get(key)
            cluster_names = [names.service_cluster(service, namespace)]
            cluster_names += [names.version_cluster(service, namespace, v)
                              for v in (build.route_versions(route) if route is not None else ())]
            tcp = self.protocol(key) == "tcp"
            found = self._clusters[key] = tuple(
                entry(n, build.peer_cluster(n, service, namespace, self.trust_domain, self.traffic_policies.get(key),
                                             build.route_retry_budget(route), tcp=tcp))
                for n in cluster_names)
        return found


class Snapshots:
    """Each client's resources of a type, from the current world and the registry."""

    def __init__(self, registry: Registry, bundle_pem: str, default_trust_domain: str) -> None:
        self.registry = registry
        self.default_trust_domain = default_trust_domain
        self.world = World((), default_trust_domain)
        self._bundle = entry(names.BUNDLE_SECRET, build.bundle_secret(bundle_pem))
        # Endpoints by called service: dropped for the services whose instances changed.
        self._endpoints: dict[ServiceKey, dict[str, Entry]] = {}

    def reload(self, resources: Iterable[Mapping[str, Any]]) -> World:
        self.world = World(resources, self.default_trust_domain)
        self._endpoints.clear()  # a Route may have added or dropped a version cluster
        return self.world

    def endpoints_changed(self, services: Iterable[ServiceKey]) -> None:
        for key in services:
            self._endpoints.pop(key, None)

    def resources(self, client: Client, type_url: str) -> list[Entry]:
        """Everything of ``type_url`` the client may have (before its subscription filters it)."""
        world = self.world
        if type_url == LISTENER:
            traffic = world.traffic_policies.get(client.key) or {}
            if world.protocol(client.key) == "tcp":
                inbound = tcp.inbound_listener(client.meta.inbound, world.policies.get(client.key), world.mtls,
                                               world.trust_domain, traffic.get("rate_limit"))
            else:
                inbound = build.inbound_listener(client.meta.inbound, world.policies.get(client.key), world.mtls,
                                                 world.trust_domain, traffic.get("rate_limit"))
            listeners = [entry(names.INBOUND, inbound),
                         entry(names.OUTBOUND, build.outbound_listener(client.meta.outbound,
                                                                       world.route_filters(client.key)))]
            addresses = tcp.addresses(world.tcp_services(), client.meta.outbound)
            # A captured app reaches TCP services by their addresses too: a port that falls on the
            # capture listener's address is the capture listener's.
            listeners += [entry(tcp.listener_name(*called), tcp.outbound_listener(*called, addresses[called]))
                          for called in world.called(client.key)
                          if called in addresses and addresses[called] not in capture_addresses(client.meta.capture)]
            if client.meta.capture:
                listeners.append(self._capture_listener(client))
            return listeners
        if type_url == ROUTE:
            key = client.key
            return [world.shared((names.INBOUND,), lambda: entry(names.INBOUND, build.inbound_routes())),
                    world.shared((names.OUTBOUND, *key), lambda: entry(
                        names.OUTBOUND, build.outbound_routes(
                            world.called_http(key), world.routes, key[1],
                            [called for called in world.called_http(key) if world.protocol(called) == "grpc"])))]
        if type_url == CLUSTER:
            app = entry(names.APP_CLUSTER, build.app_cluster(client.meta.app, world.protocol(client.key)))
            clusters = [app, *(c for called in world.called(client.key) for c in world.peer_clusters(called))]
            if client.meta.capture:
                clusters.append(world.shared((names.PASSTHROUGH,), lambda: entry(names.PASSTHROUGH,
                                                                                  build.passthrough_cluster())))
                clusters.append(world.shared((names.PASSTHROUGH_TCP,), lambda: entry(names.PASSTHROUGH_TCP,
                                                                                      tcp.passthrough_cluster())))
            return clusters
        if type_url == ENDPOINT:
            return [e for called in world.called(client.key) for e in self._endpoints_of(called).values()]
        if type_url == SECRET:
            return [self._bundle] if client.envoy_secret is None else [client.envoy_secret, self._bundle]
        raise KeyError(type_url)

    def _capture_listener(self, client: Client) -> Entry:
        """The client's capture listener: where each called service's instances are reached
        (their IPs, their app ports, as the registry learnt them at registration)."""
        world = self.world
        def destinations(key: ServiceKey) -> list[str]:
            return [d for i in self.registry.of(*key) if (d := i.capture_destination) is not None]
        called = [(key, destinations(key)) for key in world.called_http(client.key)]
        listener = build.capture_listener(capture_addresses(client.meta.capture), called, world.routes, world.route_filters(client.key),
                                          [key for key, _ in called if world.protocol(key) == "grpc"])
        tcp.capture_tcp(listener, [(key, destinations(key)) for key in world.called(client.key)
                                   if world.protocol(key) == "tcp"])
        return entry(names.CAPTURE, listener)

    def changed_types(self, client: Client, services: set[ServiceKey]) -> tuple[str, ...]:
        """What an instance change of ``services`` changes for the client: the endpoints of the
        services it calls, and, when it is captured, the capture listener that lists their app
        addresses."""
        if not self.calls(client, services):
            return ()
        return (ENDPOINT, LISTENER) if client.meta.capture else (ENDPOINT,)

    def calls(self, client: Client, services: set[ServiceKey]) -> bool:
        """Whether the client has endpoints of any of ``services``."""
        return any(called in services for called in self.world.called(client.key))

    def _endpoints_of(self, key: ServiceKey) -> dict[str, Entry]:
        found = self._endpoints.get(key)
        if found is None:
            instances = self.registry.of(*key)
            found = {}
            for cluster in self.world.peer_clusters(key):
                # A version cluster's name ends in _<version>; the service cluster takes them all.
                version = cluster.name[len(names.service_cluster(*key)) + 1:]
                addresses = [i.address for i in instances if not version or i.version == version]
                found[cluster.name] = entry(cluster.name, build.load_assignment(cluster.name, addresses))
            self._endpoints[key] = found
        return found


def _split_ref(ref: str, namespace: str) -> ServiceKey:
    name, _, other = ref.partition(".")
    return name, other or namespace
