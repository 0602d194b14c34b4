"""Every scenario against every target: warm up, measure, repeat, take medians.

Within a scenario the targets take turns run by run (meshproxy, envoy, ..., direct, then again),
so a slow spell of this shared machine falls on all of them rather than on one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .figures import Outcome, RunFigures
from .lineup import Lineup
from .measure import MIB, RunFailed, measure, warm_up
from .proc import rss_bytes
from .scenarios import Scenario
from .targets import Target


@dataclass(frozen=True)
class Settings:
    seconds: int
    warmup_seconds: int
    repeats: int


@dataclass
class ScenarioResult:
    scenario: Scenario
    outcomes: dict[str, Outcome]


def run_suite(
    lineup: Lineup,
    scenarios: tuple[Scenario, ...],
    settings: Settings,
    workdir: Path,
    say: Callable[[str], None],
) -> list[ScenarioResult]:
    results = []
    for scenario in scenarios:
        say(f"\n== {scenario.title}: {scenario.load.describe()}")
        idle_rss: dict[str, float] = {}
        if scenario.fresh_start:
            lineup.restart_proxies()
            for target in lineup.targets:
                if target.server is not None and target.broken is None:
                    idle_rss[target.name] = round(rss_bytes(target.server.pid) / MIB, 1)
        outcomes = {target.name: _starting_outcome(target, scenario) for target in lineup.targets}
        repeats = settings.repeats if scenario.repeated else 1
        for repeat in range(1, repeats + 1):
            for target in lineup.targets:
                outcome = outcomes[target.name]
                if outcome.status != "ok":
                    continue
                try:
                    if scenario.repeated:
                        warm_up(
                            target, scenario.route, scenario.load, settings.warmup_seconds, workdir
                        )
                    run = measure(
                        target,
                        lineup.upstream,
                        scenario.route,
                        scenario.load,
                        settings.seconds,
                        workdir,
                    )
                except (RunFailed, RuntimeError) as error:
                    outcome.status, outcome.reason = "error", str(error)
                    say(f"  {target.name:<10} run {repeat}/{repeats}: ERROR {error}")
                    continue
                outcome.runs.append(run)
                say(f"  {target.name:<10} run {repeat}/{repeats}: {_progress(run)}")
        for name, outcome in outcomes.items():
            if outcome.status == "ok":
                outcome.summarise()
                if name in idle_rss:
                    outcome.figures["rss_idle_mib"] = idle_rss[name]
        _add_latency_over_direct(outcomes)
        results.append(ScenarioResult(scenario, outcomes))
    return results


def _starting_outcome(target: Target, scenario: Scenario) -> Outcome:
    if scenario.route in target.unsupported:
        return Outcome("n/a", target.unsupported[scenario.route])
    if target.broken is not None:
        return Outcome("error", f"failed to start or to forward: {target.broken}")
    return Outcome("ok")


def _add_latency_over_direct(outcomes: dict[str, Outcome]) -> None:
    """Added latency = the proxy's percentile minus the direct run's same percentile."""
    direct = outcomes.get("direct")
    if direct is None or direct.status != "ok":
        return
    for name, outcome in outcomes.items():
        if outcome.status != "ok" or name == "direct":
            continue
        for percentile in ("p50_us", "p99_us"):
            proxied, base = outcome.figures[percentile], direct.figures[percentile]
            if proxied is not None and base is not None:
                outcome.figures[f"added_{percentile}"] = round(proxied - base, 1)


def _progress(run: RunFigures) -> str:
    parts = [f"{run.rps:,.0f} req/s", f"p50 {run.p50_us:,.0f} µs", f"p99 {run.p99_us:,.0f} µs"]
    if run.proxy_cpu_us_per_req is not None:
        parts.append(f"proxy {run.proxy_cpu_us_per_req:.1f} µs/req")
        parts.append(f"core {run.proxy_core_busy_pct:.0f}% busy")
        parts.append(f"RSS {run.rss_mib:.1f} MiB")
    parts.append(f"upstream {run.upstream_cpu_us_per_req:.1f} µs/req")
    parts.append(f"others on proxy core {run.proxy_core_others_pct:.0f}%")
    parts.append(f"load core {run.load_core_busy_pct:.0f}% busy")
    return ", ".join(parts)
