"""The names both ends of the mesh's xDS agree on: the node a sidecar registers as, and the
names of the listeners, route configurations, clusters and secrets the control plane sends.
Every name is valid as a sidecar config name (letters, digits, '_', '.', '-'), so a resource
keeps its name from the control plane to the sidecar's stats.
"""

from __future__ import annotations

from typing import NamedTuple

# Node.user_agent_name of a meshproxy sidecar; Envoy sends "envoy".
USER_AGENT = "meshproxy"

# Listeners, each with the route configuration of the same name (RDS).
INBOUND = "inbound"
OUTBOUND = "outbound"
# The listener `meshproxy capture` redirects the app's connections to, when the sidecar runs
# with --capture: it routes by each connection's original destination (no RDS of its own: each
# filter chain carries the routes of one called service).
CAPTURE = "outbound_capture"
# The cluster a captured call to a destination outside the mesh goes to: where it was going
# (Envoy's ORIGINAL_DST cluster, Istio's PassthroughCluster).
PASSTHROUGH = "passthrough"
# The same for a captured connection that is not HTTP: its bytes, where they were going (the
# sidecar's passthrough clusters differ by protocol: one sends requests, this one bytes).
PASSTHROUGH_TCP = "passthrough_tcp"
# The cluster of the local app, behind the inbound listener.
APP_CLUSTER = "inbound_app"
# SDS secrets, as Istio names them: the workload's certificate and the CA bundle.
CERTIFICATE_SECRET = "default"
BUNDLE_SECRET = "ROOTCA"
# Cluster.metadata.filter_metadata key under which the control plane says what Envoy's own
# fields cannot (the load-balancing policy p2c_ewma, which Envoy does not have); Envoy ignores it.
METADATA_KEY = "meshproxy"
# The longest a sidecar waits between two attempts to reach the control plane (its back-off's
# cap). A restarted control plane keeps the instances it restored at least twice this long, so
# a sidecar still backing off is not dropped from its peers' endpoints before it reconnects.
RECONNECT_CAP_S = 5.0


class NodeMetadata(NamedTuple):
    """What a sidecar registers with, as the Node's metadata (a Struct of strings)."""

    service: str
    namespace: str
    version: str
    inbound: str
    """``IP:PORT`` peers reach this instance on: the inbound listener's bound address."""
    admin: str = ""
    """``IP:PORT`` of the sidecar's admin API (for Prometheus service discovery); may be empty."""
    outbound: str = "127.0.0.1:15001"
    """``IP:PORT`` of the listener the app sends its calls to."""
    app: str = "127.0.0.1:8080"
    """``IP:PORT`` of the app, behind the inbound listener. Its port is the app port: where a
    captured client connects (this instance's IP, that port), which the callers' capture
    listeners route by."""
    capture: str = ""
    """``IP:PORT`` of the outbound capture listener (``--capture``), or several separated by
    commas (an IPv4 and an IPv6 one: IPv6 connections are redirected to ``[::1]``); empty: not
    captured. See :func:`capture_addresses`."""

    def as_struct(self) -> dict[str, str]:
        return dict(self._asdict())

    @classmethod
    def from_struct(cls, fields: dict[str, object]) -> NodeMetadata:
        """Raises ValueError naming the first field missing or not a string."""
        values = {}
        for name in cls._fields:
            value = fields.get(name, cls._field_defaults.get(name))
            if not isinstance(value, str) or (name not in cls._field_defaults and not value):
                raise ValueError(f"node metadata: '{name}' must be a non-empty string")
            values[name] = value
        return cls(**values)


def capture_addresses(capture: str) -> list[str]:
    """The capture listener's addresses in ``NodeMetadata.capture``, first the main one."""
    return [address for address in capture.split(",") if address]


def app_port(app: str) -> int:
    """The app port of ``app`` (``IP:PORT``); 0 when it has none."""
    port = app.rpartition(":")[2]
    return int(port) if port.isdigit() and 0 < int(port) < 65536 else 0


def node_id(service: str, namespace: str, inbound: str) -> str:
    """A sidecar's node id: the same for a restart on the same address, so a restarted
    instance replaces its earlier registration instead of standing beside it."""
    return f"sidecar~{inbound}~{service}.{namespace}"


def service_cluster(service: str, namespace: str) -> str:
    """The cluster of every instance of a service, all versions."""
    return f"outbound_{service}.{namespace}"


def version_cluster(service: str, namespace: str, version: str) -> str:
    """The cluster of the instances of one version of a service."""
    return f"outbound_{service}.{namespace}_{version}"


def spiffe_id(trust_domain: str, namespace: str, service: str) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service}"
