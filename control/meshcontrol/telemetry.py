"""The control plane's own metrics (``/metrics`` of the HTTP API), on a registry of its own so
tests and embedders can run several control planes in one process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Push latency is change → ACK: the debounce window (~100 ms) plus the client's apply time.
_LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.clients = Gauge("meshcontrol_xds_clients", "ADS streams connected now, by client kind", ["kind"],
                             registry=r)
        self.pushes = Counter("meshcontrol_xds_pushes", "xDS responses sent, by resource type", ["type"], registry=r)
        self.push_latency = Histogram("meshcontrol_xds_push_latency_seconds",
                                      "From a change in the store or registry to the client's ACK of it",
                                      buckets=_LATENCY_BUCKETS, registry=r)
        self.acks = Counter("meshcontrol_xds_acks", "xDS ACKs received, by resource type", ["type"], registry=r)
        self.nacks = Counter("meshcontrol_xds_nacks", "xDS NACKs received, by resource type", ["type"], registry=r)
        self.certificates = Counter("meshcontrol_certificates_issued",
                                    "Certificates issued: 'csr' (Certify) or 'minted' (an Envoy's SDS secret)",
                                    ["how"], registry=r)
        self.store_latency = Histogram("meshcontrol_store_latency_seconds", "Store operations of the push path",
                                       ["operation"], registry=r)
        self.instances = Gauge("meshcontrol_instances", "Registered instances (connected or within their lease)",
                               registry=r)
