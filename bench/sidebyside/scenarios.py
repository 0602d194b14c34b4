"""The scenarios: which route each loads, with what load shape, and which figures it shows.
1-5b load one proxy at a time; 6-8 (`mesh`) a pair of sidecars on either side of a mutual-TLS
hop (mesh.py)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .figures import Goal
from .handshakes import Handshakes
from .load import Load
from .targets import Route

_THROUGHPUT = (
    "rps",
    "proxy_cpu_us_per_req",
    "proxy_kernel_us_per_req",
    "proxy_core_busy_pct",
    "proxy_core_others_pct",
    "load_core_busy_pct",
    "p50_us",
    "p99_us",
    "rss_mib",
    "upstream_cpu_us_per_req",
)
_CHARTED = ("rps", "proxy_cpu_us_per_req", "p99_us", "rss_mib")
_SEQUENTIAL = (
    "added_p50_us",
    "added_p99_us",
    "p50_us",
    "p99_us",
    "proxy_cpu_us_per_req",
    "rps",
    "upstream_cpu_us_per_req",
)
_SEQUENTIAL_CHARTED = ("added_p50_us", "added_p99_us", "proxy_cpu_us_per_req")
_MESH_HOP = "client -> sidecar A -> mTLS HTTP/2 -> sidecar B -> HTTP/1.1 upstream"


class Stage(Enum):
    """Which line-up a scenario runs against; each stage's proxies run only while it does."""

    SINGLE = "single"  # PROXIES, each with its defaults
    BUSY_POLLING = "busy_polling"  # BUSY_POLLING_PROXIES
    MESH = "mesh"  # the sidecar pairs of mesh.py
    MESH_BUSY_POLLING = "mesh_busy_polling"  # the same, meshproxy's with busy_poll


@dataclass(frozen=True)
class Scenario:
    """`repeated` runs are preceded by a warm-up and repeated `--repeats` times (medians
    reported); a `fresh_start` scenario restarts every proxy first and records its idle RSS.
    `figures` are shown in the table, `charted` (the telling few) in the chart. `stage` is the
    line-up it runs against (`--only mesh` selects every MESH and MESH_BUSY_POLLING one).
    `goals` are the ratios asked of meshproxy, checked in the report."""

    key: str
    title: str
    route: Route
    load: Load | Handshakes
    figures: tuple[str, ...]
    charted: tuple[str, ...]
    repeated: bool = True
    fresh_start: bool = False
    stage: Stage = Stage.SINGLE
    goals: tuple[Goal, ...] = ()


SCENARIOS = (
    Scenario(
        key="http1",
        title="1. HTTP/1.1 -> HTTP/1.1, 64 keep-alive connections",
        route=Route.H1_H1,
        load=Load(h2c=False, connections=64),
        figures=_THROUGHPUT,
        charted=_CHARTED,
        goals=(Goal("proxy_cpu_us_per_req", "haproxy", 0.8), Goal("proxy_cpu_us_per_req", "envoy", 0.35)),
    ),
    Scenario(
        key="h2c_to_http1",
        title="2. h2c (16 connections x 32 streams) -> HTTP/1.1 upstream",
        route=Route.H2C_H1,
        load=Load(h2c=True, connections=16, streams=32),
        figures=_THROUGHPUT,
        charted=_CHARTED,
        goals=(Goal("proxy_cpu_us_per_req", "haproxy", 0.8), Goal("proxy_cpu_us_per_req", "envoy", 0.25)),
    ),
    Scenario(
        key="h2c_to_h2c",
        title="3. h2c (16 connections x 32 streams) -> h2c upstream",
        route=Route.H2C_H2C,
        load=Load(h2c=True, connections=16, streams=32),
        figures=_THROUGHPUT,
        charted=_CHARTED,
    ),
    Scenario(
        key="sequential",
        title="4. One request at a time (HTTP/1.1, 1 connection): latency added over direct",
        route=Route.H1_H1,
        load=Load(h2c=False, connections=1),
        figures=_SEQUENTIAL,
        charted=_SEQUENTIAL_CHARTED,
        goals=(Goal("added_p50_us", "envoy", 0.3), Goal("added_p50_us", "haproxy", 1.0)),
    ),
    Scenario(
        key="sequential_busy_poll",
        title="4b. One request at a time, busy polling on: meshproxy busy_poll 300us, HAProxy "
        "busy-polling (Envoy has no such setting)",
        route=Route.H1_H1,
        load=Load(h2c=False, connections=1),
        figures=_SEQUENTIAL,
        charted=_SEQUENTIAL_CHARTED,
        stage=Stage.BUSY_POLLING,
        goals=(Goal("added_p50_us", "envoy", 0.3), Goal("added_p50_us", "haproxy", 1.0)),
    ),
    Scenario(
        key="grpc",
        title="3b. Unary gRPC calls, h2c (16 connections x 32 streams) -> h2c upstream answering "
        "grpc-status in trailers",
        route=Route.H2C_H2C,
        load=Load(h2c=True, connections=16, streams=32, grpc=True),
        figures=_THROUGHPUT,
        charted=_CHARTED,
    ),
    Scenario(
        key="memory",
        title="5. Memory: RSS idle after start-up, and with 1,000 keep-alive connections under load",
        route=Route.H1_H1,
        load=Load(h2c=False, connections=1000),
        figures=("rss_idle_mib", "rss_mib", "rps", "proxy_cpu_us_per_req", "p99_us"),
        charted=("rss_idle_mib", "rss_mib"),
        repeated=False,
        fresh_start=True,
        goals=(Goal("rss_idle_mib", "envoy", 0.5), Goal("rss_mib", "envoy", 0.5)),
    ),
    Scenario(
        key="tcp",
        title="5b. Opaque TCP, 64 connections: wrk's HTTP/1.1 bytes through a TCP proxy (meshproxy "
        "protocol: tcp, Envoy tcp_proxy, HAProxy mode tcp) to the HTTP/1.1 upstream",
        route=Route.TCP,
        load=Load(h2c=False, connections=64),
        figures=_THROUGHPUT,
        charted=_CHARTED,
    ),
    Scenario(
        key="mesh_hop",
        title=f"6. Mesh hop, 64 keep-alive connections: {_MESH_HOP} (proxy = both sidecars)",
        route=Route.H1_H1,
        load=Load(h2c=False, connections=64),
        figures=_THROUGHPUT,
        charted=_CHARTED,
        stage=Stage.MESH,
        goals=(Goal("proxy_cpu_us_per_req", "envoy", 0.33),),
    ),
    Scenario(
        key="mesh_sequential",
        title="7. Mesh hop, one request at a time: latency both sidecars add over direct",
        route=Route.H1_H1,
        load=Load(h2c=False, connections=1),
        figures=_SEQUENTIAL,
        charted=_SEQUENTIAL_CHARTED,
        stage=Stage.MESH,
        goals=(Goal("added_p50_us", "envoy", 0.25),),
    ),
    Scenario(
        key="mesh_sequential_busy_poll",
        title="7b. Mesh hop, one request at a time, meshproxy's sidecars with busy_poll 300us (Envoy "
        "has no such setting): latency both sidecars add over direct",
        route=Route.H1_H1,
        load=Load(h2c=False, connections=1),
        figures=_SEQUENTIAL,
        charted=_SEQUENTIAL_CHARTED,
        stage=Stage.MESH_BUSY_POLLING,
        goals=(Goal("added_p50_us", "envoy", 0.25),),
    ),
    Scenario(
        key="mesh_handshakes",
        title="8. mTLS handshakes on sidecar B's inbound listener (strict), full handshakes",
        route=Route.MTLS,
        load=Handshakes(),
        figures=(
            "handshakes_per_core_s",
            "proxy_cpu_us_per_handshake",
            "handshakes_per_s",
            "proxy_core_busy_pct",
            "proxy_core_others_pct",
            "load_core_busy_pct",
        ),
        charted=("handshakes_per_core_s", "proxy_cpu_us_per_handshake"),
        stage=Stage.MESH,
        goals=(Goal("handshakes_per_core_s", "envoy", 1.0),),
    ),
)
