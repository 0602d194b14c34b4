"""The five scenarios: which route each loads, with what load shape, and which figures it shows."""

from __future__ import annotations

from dataclasses import dataclass

from .load import Load
from .targets import Route

_THROUGHPUT = (
    "rps",
    "proxy_cpu_us_per_req",
    "proxy_core_busy_pct",
    "proxy_core_others_pct",
    "load_core_busy_pct",
    "p50_us",
    "p99_us",
    "rss_mib",
    "upstream_cpu_us_per_req",
)
_CHARTED = ("rps", "proxy_cpu_us_per_req", "p99_us", "rss_mib")


@dataclass(frozen=True)
class Scenario:
    """`repeated` runs are preceded by a warm-up and repeated `--repeats` times (medians
    reported); a `fresh_start` scenario restarts every proxy first and records its idle RSS.
    `figures` are shown in the table, `charted` (the telling few) in the chart."""

    key: str
    title: str
    route: Route
    load: Load
    figures: tuple[str, ...]
    charted: tuple[str, ...]
    repeated: bool = True
    fresh_start: bool = False


SCENARIOS = (
    Scenario(
        key="http1",
        title="1. HTTP/1.1 -> HTTP/1.1, 64 keep-alive connections",
        route=Route.H1_H1,
        load=Load(h2c=False, connections=64),
        figures=_THROUGHPUT,
        charted=_CHARTED,
    ),
    Scenario(
        key="h2c_to_http1",
        title="2. h2c (16 connections x 32 streams) -> HTTP/1.1 upstream",
        route=Route.H2C_H1,
        load=Load(h2c=True, connections=16, streams=32),
        figures=_THROUGHPUT,
        charted=_CHARTED,
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
        figures=(
            "added_p50_us",
            "added_p99_us",
            "p50_us",
            "p99_us",
            "proxy_cpu_us_per_req",
            "rps",
            "upstream_cpu_us_per_req",
        ),
        charted=("added_p50_us", "added_p99_us", "proxy_cpu_us_per_req"),
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
    ),
)
