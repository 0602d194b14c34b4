"""The handshake load: full mutual-TLS handshakes against a sidecar's inbound listener, one new
connection after another (handshake_client.py, pinned to the load core), and the CPU each cost
the sidecar."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .cores import LOAD_CORE, PROXY_CORE, busy_pct, core_times
from .figures import HandshakeFigures
from .measure import RunFailed
from .proc import cpu_seconds
from .targets import ClientCredentials, Route, Target

CLIENT = Path(__file__).with_name("handshake_client.py")


@dataclass(frozen=True)
class Handshakes:
    """A load shape: new mutual-TLS connections, one at a time, each handshaking in full and
    exchanging the HTTP/2 preface, then closing."""

    def describe(self) -> str:
        return "new mTLS connection per handshake, one at a time (handshake_client.py)"


@dataclass(frozen=True)
class HandshakeResult:
    handshakes: int
    seconds: float
    errors: str | None
    output: str


def warm_up_handshakes(target: Target, seconds: int) -> None:
    result = run_handshakes(target, seconds)
    if result.errors:
        raise RunFailed(f"during warm-up: {result.errors}; the client printed:\n{result.output}")


def measure_handshakes(target: Target, seconds: int) -> HandshakeFigures:
    if not target.running():
        raise RunFailed(f"a sidecar is not running; {target.log_tails()}")
    pids = [server.pid for server in target.servers]
    cpu_before = cpu_seconds(*pids)
    cores_before = core_times()
    started = time.monotonic()
    result = run_handshakes(target, seconds)
    wall = time.monotonic() - started
    cores = busy_pct(cores_before, core_times())
    cpu = cpu_seconds(*pids) - cpu_before
    if result.errors:
        raise RunFailed(
            f"{result.errors}; the client printed:\n{result.output}\n{target.log_tails()}"
        )
    if not target.running():
        raise RunFailed(f"a sidecar exited during the run; {target.log_tails()}")
    per_handshake_us = 1e6 * cpu / result.handshakes
    busy = round(100 * cpu / wall, 1)
    return HandshakeFigures(
        handshakes=result.handshakes,
        seconds=result.seconds,
        handshakes_per_s=round(result.handshakes / result.seconds, 1),
        proxy_cpu_us_per_handshake=round(per_handshake_us, 1),
        # What one core would complete at this cost per handshake.
        handshakes_per_core_s=round(1e6 / per_handshake_us, 1) if per_handshake_us else 0.0,
        proxy_core_busy_pct=busy,
        proxy_core_others_pct=round(max(0.0, cores[PROXY_CORE] - busy), 1),
        load_core_busy_pct=cores[LOAD_CORE],
    )


def run_handshakes(target: Target, seconds: int) -> HandshakeResult:
    client: ClientCredentials | None = target.client
    assert client is not None, f"{target.name} has no client credentials for its mTLS port"
    argv = ["taskset", "-c", str(LOAD_CORE), sys.executable, str(CLIENT)]
    argv += ["--port", str(target.ports[Route.MTLS]), "--seconds", str(seconds)]
    argv += ["--cert", str(client.cert), "--key", str(client.key), "--ca", str(client.ca)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"{CLIENT.name} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"unexpected {CLIENT.name} output:\n{done.stdout}") from None
    problems = []
    if report["failures"]:
        problems.append(
            f"{report['failures']} failed connections, the first: {report['first_failure']}"
        )
    if report["handshakes"] == 0:
        problems.append("no handshake completed")
    return HandshakeResult(
        handshakes=report["handshakes"],
        seconds=report["seconds"],
        errors="; ".join(problems) or None,
        output=done.stdout,
    )
