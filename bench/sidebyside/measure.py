"""One measured load run against a target: the load tool's figures, plus the CPU the proxy (or
both sidecars of a mesh pair) and the upstream spent on it and the proxy's memory while it ran."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from .cores import LOAD_CORE, PROXY_CORE, busy_pct, core_times
from .figures import RunFigures
from .load import Load, run_load
from .proc import PeakRss, cpu_seconds, cpu_times
from .servers import Server
from .targets import Route, Target

MIB = 1024 * 1024


class RunFailed(Exception):
    """The load saw errors (non-2xx, broken connections) or the proxy died: the run does not
    count, and the target is reported as failing the scenario."""


def warm_up(target: Target, route: Route, load: Load, seconds: int, workdir: Path) -> None:
    """Same load shape, unmeasured: connections, pools and caches are warm when it counts."""
    result = run_load(load, target.ports[route], seconds, LOAD_CORE, workdir)
    if result.errors:
        raise RunFailed(f"during warm-up: {result.errors}; the load tool printed:\n{result.output}")


def measure(
    target: Target, upstream: Server, route: Route, load: Load, seconds: int, workdir: Path
) -> RunFigures:
    # The proxy, or both sidecars of a mesh pair: their CPU and memory are summed.
    proxies = [server.pid for server in target.servers]
    if not target.running():
        raise RunFailed(f"the proxy is not running; {target.log_tails()}")
    sampler = PeakRss(*proxies) if proxies else contextlib.nullcontext()
    proxy_cpu_before = cpu_times(*proxies) if proxies else None
    upstream_cpu_before = cpu_seconds(upstream.pid)
    cores_before = core_times()
    started = time.monotonic()
    with sampler:
        result = run_load(load, target.ports[route], seconds, LOAD_CORE, workdir)
    wall = time.monotonic() - started
    cores = busy_pct(cores_before, core_times())
    upstream_cpu = cpu_seconds(upstream.pid) - upstream_cpu_before
    proxy_cpu = cpu_times(*proxies).since(proxy_cpu_before) if proxy_cpu_before is not None else None
    if result.errors:
        logs = f"\n{target.log_tails()}" if proxies else ""
        raise RunFailed(f"{result.errors}; the load tool printed:\n{result.output}{logs}")
    if not target.running():
        raise RunFailed(f"the proxy exited during the run; {target.log_tails()}")

    per_request = 1e6 / result.requests
    proxy_busy = None if proxy_cpu is None else round(100 * proxy_cpu.total / wall, 1)
    peak = sampler.peak if isinstance(sampler, PeakRss) else None
    end = sampler.last if isinstance(sampler, PeakRss) else None
    return RunFigures(
        requests=result.requests,
        seconds=round(result.seconds, 3),
        rps=round(result.rps, 1),
        p50_us=result.p50_us,
        p99_us=result.p99_us,
        upstream_cpu_us_per_req=round(upstream_cpu * per_request, 2),
        proxy_cpu_us_per_req=None if proxy_cpu is None else round(proxy_cpu.total * per_request, 2),
        proxy_kernel_us_per_req=None if proxy_cpu is None else round(proxy_cpu.system * per_request, 2),
        proxy_core_busy_pct=proxy_busy,
        # What else ran on the proxy's core: the idle proxies, and anything outside the benchmark.
        proxy_core_others_pct=round(max(0.0, cores[PROXY_CORE] - (proxy_busy or 0.0)), 1),
        load_core_busy_pct=cores[LOAD_CORE],
        rss_mib=None if peak is None else round(peak / MIB, 1),
        rss_end_mib=None if end is None else round(end / MIB, 1),
    )
