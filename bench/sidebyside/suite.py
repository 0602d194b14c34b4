"""Every scenario against every target: warm up, measure, repeat, take medians.

Within a scenario the targets take turns run by run (meshproxy, envoy, ..., direct, then again),
so a slow spell of this shared machine falls on all of them rather than on one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .figures import HandshakeFigures, Outcome, RunFigures
from .handshakes import Handshakes, measure_handshakes, warm_up_handshakes
from .measure import MIB, RunFailed, measure, warm_up
from .proc import rss_bytes
from .scenarios import Scenario
from .targets import Target
from .upstream import Upstream


@dataclass(frozen=True)
class Settings:
    seconds: int
    warmup_seconds: int
    repeats: int


@dataclass
class ScenarioResult:
    scenario: Scenario
    outcomes: dict[str, Outcome]


class Stage(Protocol):
    """What the scenarios run against: the single proxies (lineup.py) or the mesh pairs
    (mesh.py), with their upstream."""

    @property
    def upstream(self) -> Upstream: ...

    def targets_for(self, scenario: Scenario) -> list[Target]: ...

    def focus(self, measured: Target) -> None: ...

    def restart_proxies(self) -> None: ...


def run_suite(
    stage: Stage,
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
            stage.restart_proxies()
            for target in stage.targets_for(scenario):
                if target.servers and target.broken is None:
                    pids = (server.pid for server in target.servers)
                    idle_rss[target.name] = round(rss_bytes(*pids) / MIB, 1)
        targets = stage.targets_for(scenario)
        outcomes = {target.name: _starting_outcome(target, scenario) for target in targets}
        repeats = settings.repeats if scenario.repeated else 1
        for repeat in range(1, repeats + 1):
            for target in targets:
                outcome = outcomes[target.name]
                if outcome.status != "ok":
                    continue
                stage.focus(target)
                try:
                    run = _one_run(stage, target, scenario, settings, workdir)
                except (RunFailed, RuntimeError) as error:
                    outcome.status, outcome.reason = "error", str(error)
                    say(f"  {target.name:<10} run {repeat}/{repeats}: ERROR {error}")
                    continue
                outcome.runs.append(run)
                say(f"  {target.name:<10} run {repeat}/{repeats}: {run.progress()}")
        for name, outcome in outcomes.items():
            if outcome.status == "ok":
                outcome.summarise()
                if name in idle_rss:
                    outcome.figures["rss_idle_mib"] = idle_rss[name]
        _add_latency_over_direct(outcomes)
        results.append(ScenarioResult(scenario, outcomes))
    return results


def _one_run(
    stage: Stage, target: Target, scenario: Scenario, settings: Settings, workdir: Path
) -> RunFigures | HandshakeFigures:
    """A warm-up with the same load (for repeated scenarios), then the measured run."""
    if isinstance(scenario.load, Handshakes):
        if scenario.repeated:
            warm_up_handshakes(target, settings.warmup_seconds)
        return measure_handshakes(target, settings.seconds)
    if scenario.repeated:
        warm_up(target, scenario.route, scenario.load, settings.warmup_seconds, workdir)
    upstream = stage.upstream.server
    return measure(target, upstream, scenario.route, scenario.load, settings.seconds, workdir)


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
