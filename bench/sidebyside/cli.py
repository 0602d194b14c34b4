"""Command line: set the machine up for fair runs, run every scenario, report."""

from __future__ import annotations

import argparse
import os
import resource
import signal
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from .anchors import Anchors, machine_facts
from .chart import draw_chart
from .cores import LOAD_CORE, PROXY_CORE, busy_now
from .lineup import Lineup
from .mesh import MeshLineup
from .results import write_results
from .proxies import BUSY_POLL_WINDOW, BUSY_POLLING_PROXIES, PROXIES
from .scenarios import SCENARIOS, Stage
from .suite import Settings, run_suite
from .table import SUBJECT, render_report
from .targets import Target

RESULTS = Path(__file__).resolve().parent.parent / "results"
# `--only mesh`: every mesh scenario.
MESH = "mesh"
MESH_STAGES = (Stage.MESH, Stage.MESH_BUSY_POLLING)
# Above this, something else is running and the figures are worth less.
BUSY_WARNING_PCT = 10.0


def main(argv: list[str] | None = None) -> int:
    options = _parse(argv)
    settings = Settings(options.duration, options.warmup, options.repeats)
    if options.quick:
        settings = Settings(seconds=1, warmup_seconds=1, repeats=1)
    scenarios = tuple(
        s
        for s in SCENARIOS
        if not options.only or s.key in options.only or (s.stage in MESH_STAGES and MESH in options.only)
    )

    if not {PROXY_CORE, LOAD_CORE} <= os.sched_getaffinity(0):
        print(f"needs cores {PROXY_CORE} and {LOAD_CORE}", file=sys.stderr)
        return 2
    # This runner only waits and samples /proc; it stays off the proxies' core.
    os.sched_setaffinity(0, {LOAD_CORE})
    # 1,000 client connections plus as many upstream ones, inherited by every server started.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # SIGTERM unwinds like Ctrl-C does, so every server started is stopped on the way out.
    signal.signal(signal.SIGTERM, _exit_on_signal)

    anchors = Anchors.locate()
    machine, versions = machine_facts(), anchors.versions()
    started = datetime.now(UTC)
    print(
        f"meshproxy side-by-side, {started:%Y-%m-%d %H:%M} UTC; {machine['cpu_model']}, "
        f"{machine['nproc']} cores",
        flush=True,
    )
    busy = busy_now()
    machine["busy_before_start"] = ", ".join(f"cpu{core} {pct:.0f}%" for core, pct in busy.items())
    if max(busy.values()) > BUSY_WARNING_PCT:
        print(
            f"warning: the cores are already busy ({machine['busy_before_start']}); "
            "figures will be noisy",
            file=sys.stderr,
            flush=True,
        )

    # Configs, logs and h2load's per-request log (tens of MB a run) go to memory where there is
    # a tmpfs, so writing them costs the load core as little as possible.
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="meshproxy-bench-", dir=shm) as temp:
        workdir = Path(temp)
        results = []
        # One stage at a time, so that only its proxies sit on the proxy core.
        for stage in Stage:
            staged = tuple(s for s in scenarios if s.stage is stage)
            if staged:
                with _line_up(stage, anchors, workdir) as line_up:
                    _report_broken(line_up.targets)
                    results += run_suite(line_up, staged, settings, workdir, _say)

    print("\n" + render_report(results, machine, versions, settings))
    # Only a whole run stands for the build: `--only` and `--quick` runs keep their own files.
    whole = not (options.only or options.quick)
    record = write_results(results, machine, versions, settings, started, options.results, latest=whole)
    chart = draw_chart(
        results,
        f"meshproxy side-by-side, {started:%Y-%m-%d %H:%M} UTC — {machine['cpu_model']}, "
        f"one worker per proxy",
        record.with_suffix(".png"),
    )
    if whole:
        (options.results / "latest.png").write_bytes(chart.read_bytes())
    print(f"\nwrote {record}, {chart}" + (" (and latest.json, latest.png)" if whole else ""))
    failed = [r.scenario.key for r in results if r.outcomes[SUBJECT].status == "error"]
    if failed:
        print(f"{SUBJECT} failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="meshproxy against Envoy, HAProxy, nginx and a direct connection, "
        "one worker each, on this machine; and a pair of meshproxy sidecars against a pair of "
        "Envoys across a mutual-TLS hop.",
    )
    parser.add_argument(
        "--duration",
        type=int,
        default=int(os.environ.get("BENCH_DURATION", "5")),
        metavar="S",
        help="seconds per measured run (default: $BENCH_DURATION, else 5)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        metavar="S",
        help="seconds of unmeasured load before each run (default: 1)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        metavar="N",
        help="measured runs per target and scenario; medians reported (default: 3)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 1 s runs, 1 s warm-up, no repeats"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="SCENARIO",
        choices=[s.key for s in SCENARIOS] + [MESH],
        help=f"run only these scenarios: {', '.join(s.key for s in SCENARIOS)}; "
        f"`{MESH}` for all the mesh ones",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        metavar="DIR",
        help="where the JSON and PNG go (default: bench/results)",
    )
    options = parser.parse_args(argv)
    if options.duration < 1 or options.warmup < 1 or options.repeats < 1:
        parser.error("--duration, --warmup and --repeats are whole numbers of at least 1")
    return options


def _line_up(stage: Stage, anchors: Anchors, workdir: Path) -> Lineup | MeshLineup:
    if stage is Stage.MESH:
        return MeshLineup(anchors, workdir)
    if stage is Stage.MESH_BUSY_POLLING:
        return MeshLineup(anchors, workdir, busy_poll=BUSY_POLL_WINDOW)
    if stage is Stage.BUSY_POLLING:
        return Lineup(anchors, workdir, BUSY_POLLING_PROXIES, exclusive=True)
    return Lineup(anchors, workdir, PROXIES)


def _report_broken(targets: list[Target]) -> None:
    said = set()
    for target in targets:
        # A mesh sidecar that fails to start breaks both targets it serves: say so once.
        if target.broken and (target.name, target.broken) not in said:
            said.add((target.name, target.broken))
            print(f"{target.name} failed to start or to forward:\n{target.broken}", flush=True)


def _say(line: str) -> None:
    print(line, flush=True)


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)
