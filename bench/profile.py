#!/usr/bin/env python3
"""User-space instructions per request of meshproxy under callgrind: the plain HTTP/1.1 hop, the
h2c -> HTTP/1.1 hop (scenario 2), the h2c -> h2c hop (scenario 3), the mesh hop (sidecar A ->
mTLS, HTTP/2 -> sidecar B), each sidecar counted on its own, and the HTTP/1.1 hop with a retry
policy, outlier detection and circuit breakers on (what they cost).

    .venv/bin/python bench/profile.py                      # all five, 20,000 requests each
    .venv/bin/python bench/profile.py mesh -n 10000 --keep # the mesh hop; keep the dumps

Builds nothing: it runs the meshproxy of the current virtualenv (`make build` first, a release
build, which is what is worth profiling). Instruction counts, unlike wall-clock time, repeat
within a fraction of a percent on a busy machine, so one run is enough to compare two builds.

Each sidecar runs `meshproxy run --workers 1` under `valgrind --tool=callgrind
--instr-atstart=no`: start-up, certificate loading and the warm-up (which opens the pooled
connections) are not counted. Instrumentation is switched on for exactly the measured h2load
run, then dumped; the figure is the dump's total (all threads, Python included: it does nothing
per request) divided by the requests h2load completed. Dumps and configs go to a temp dir, which
is removed unless --keep (then `callgrind_annotate DIR/<side>.cg*` shows where they went).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sidebyside.cores import LOAD_CORE
from sidebyside.lifecycle import stop_process
from sidebyside.mesh import CA_TTL, CERTIFICATE_TTL, IDENTITIES, TRUST_DOMAIN, spiffe_id
from sidebyside.ports import free_ports, wait_listening
from sidebyside.proxies import meshproxy_run
from sidebyside.servers import Server
from sidebyside.templates import render

from meshproxy.ca import CertificateAuthority

# The loads: HTTP/1.1 keep-alive, 64 connections, as scenarios 1 and 6 of bench/run.py; h2c
# with prior knowledge, 16 connections of 32 streams, as scenarios 2 and 3.
H1_LOAD = ["h2load", "--h1", "-c64", "-t1"]
H2C_LOAD = ["h2load", "-c16", "-m32", "-t1"]
WARMUP_REQUESTS = 2000
# Under callgrind a sidecar runs many times slower, its drain and exit too.
SIDECAR_STOP_TIMEOUT = 60.0
_TOTALS = re.compile(r"^\s*([\d,]+)\s.*PROGRAM TOTALS", re.MULTILINE)
_DONE = re.compile(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded")


@dataclass
class Sidecar:
    """One `meshproxy run` under callgrind; `name` marks its dump files and finds its pid."""

    name: str
    config: Path
    process: subprocess.Popen[bytes]
    dumps: Path

    def valgrind_pid(self) -> int:
        # `valgrind` is a wrapper script; the instrumented process is its valgrind.bin child.
        found = subprocess.run(
            ["pgrep", "-f", f"valgrind.bin --tool=callgrind --callgrind-out-file={self.dumps}"],
            capture_output=True,
            text=True,
            check=False,
        )
        pids = found.stdout.split()
        if not pids:
            raise RuntimeError(f"{self.name}: no valgrind.bin process")
        return int(pids[0])

    def alive(self) -> bool:
        return self.process.poll() is None

    def instructions(self) -> int:
        total = 0
        for dump in sorted(self.dumps.parent.glob(self.dumps.name + "*")):
            text = subprocess.run(
                ["callgrind_annotate", str(dump)], capture_output=True, text=True, check=False
            ).stdout
            match = _TOTALS.search(text)
            if match:
                total += int(match.group(1).replace(",", ""))
        return total


def start_sidecar(name: str, config: Path, workdir: Path) -> Sidecar:
    dumps = workdir / f"{name}.cg"
    meshproxy = Path(sys.executable).parent / "meshproxy"
    argv = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={dumps}",
        "--instr-atstart=no",
        "--dump-instr=no",
        *meshproxy_run(meshproxy, config),
    ]
    log = (workdir / f"{name}.log").open("wb")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return Sidecar(name, config, process, dumps)


def h2load(load: list[str], url: str, requests: int) -> int:
    """Runs the load; returns the requests that succeeded, raising if any failed."""
    out = subprocess.run(
        [*load, "-n", str(requests), url], capture_output=True, text=True, check=False
    ).stdout
    match = _DONE.search(out)
    if not match or int(match.group(2)) != requests:
        raise RuntimeError(f"h2load {url}: not every request succeeded:\n{out}")
    return int(match.group(2))


def measure(
    sidecars: list[Sidecar], load: list[str], url: str, requests: int
) -> dict[str, float]:
    """Warms up, counts `requests` through `url`, returns instructions per request per sidecar."""
    h2load(load, url, WARMUP_REQUESTS)
    pids = [sidecar.valgrind_pid() for sidecar in sidecars]
    for pid in pids:
        subprocess.run(["callgrind_control", "-i", "on", str(pid)], capture_output=True, check=True)
    done = h2load(load, url, requests)
    for pid in pids:
        subprocess.run(["callgrind_control", "-i", "off", str(pid)], capture_output=True, check=True)
    for pid in pids:
        subprocess.run(["callgrind_control", "-d", str(pid)], capture_output=True, check=True)
    return {sidecar.name: sidecar.instructions() / done for sidecar in sidecars}


def upstream(workdir: Path) -> tuple[Server, dict[str, object]]:
    h1, h2c = free_ports(2)
    # busy_poll off, the sidecars' default, as in the side-by-side scenarios that are profiled.
    values: dict[str, object] = {
        "workdir": workdir,
        "upstream_h1": h1,
        "upstream_h2c": h2c,
        "busy_poll": "0",
    }
    conf = render("upstream-nginx.conf", values, workdir)
    server = Server("nginx", ["nginx", "-c", str(conf), "-p", str(workdir)], LOAD_CORE, workdir / "nginx.log")
    server.start([h1])
    return server, values


def single(
    name: str, listener: str, load: list[str], template: str = "meshproxy.yaml"
) -> Callable[[Path, dict[str, object], int], dict[str, float]]:
    """One meshproxy with the side-by-side config (or `template`); `load` goes to its `listener`."""

    def profile(workdir: Path, values: dict[str, object], requests: int) -> dict[str, float]:
        listeners = ("listen_h1_h1", "listen_h2c_h1", "listen_h2c_h2c", "listen_tcp")
        ports = dict(zip(listeners, free_ports(len(listeners)), strict=True))
        config = render(template, {**values, **ports}, workdir)
        sidecar = start_sidecar(name, config, workdir)
        try:
            wait_listening(ports[listener], sidecar.alive, timeout=120)
            return measure([sidecar], load, f"http://127.0.0.1:{ports[listener]}/", requests)
        finally:
            stop_process(sidecar.process, SIDECAR_STOP_TIMEOUT, group=True)

    return profile


def mesh(workdir: Path, values: dict[str, object], requests: int) -> dict[str, float]:
    certs = workdir / "certs"
    ca = CertificateAuthority.create(TRUST_DOMAIN, CA_TTL)
    for identity in IDENTITIES:
        ca.issue(spiffe_id(identity), CERTIFICATE_TTL).save(certs / identity)
    a_port, b_port = free_ports(2)
    common = {
        **values,
        "trust_domain": TRUST_DOMAIN,
        "certs": certs,
        "b_identity": spiffe_id("b"),
        "b_port": b_port,
    }
    b = start_sidecar("B", render("mesh-meshproxy-b.yaml", {**common, "listen": b_port}, workdir), workdir)
    a = start_sidecar("A", render("mesh-meshproxy-a.yaml", {**common, "listen": a_port}, workdir), workdir)
    try:
        wait_listening(b_port, b.alive, timeout=120)
        wait_listening(a_port, a.alive, timeout=120)
        return measure([a, b], H1_LOAD, f"http://127.0.0.1:{a_port}/", requests)
    finally:
        stop_process(a.process, SIDECAR_STOP_TIMEOUT, group=True)
        stop_process(b.process, SIDECAR_STOP_TIMEOUT, group=True)


SCENARIOS = {
    "hop": single("hop", "listen_h1_h1", H1_LOAD),
    "h2c": single("h2c", "listen_h2c_h1", H2C_LOAD),
    "h2c2": single("h2c2", "listen_h2c_h2c", H2C_LOAD),
    "mesh": mesh,
    # The hop with a retry policy and budget, outlier detection and circuit breakers on.
    "resilient": single("resilient", "listen_h1_h1", H1_LOAD, "meshproxy-resilient.yaml"),
}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "scenarios", nargs="*", metavar="|".join(SCENARIOS), help="what to profile (all)"
    )
    parser.add_argument("-n", "--requests", type=int, default=20000, help="measured requests (20000)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir with the dumps")
    args = parser.parse_args()
    scenarios = args.scenarios or list(SCENARIOS)
    if unknown := set(scenarios) - set(SCENARIOS):
        parser.error(f"unknown scenario {', '.join(sorted(unknown))}: one of {', '.join(SCENARIOS)}")
    for tool in ("valgrind", "callgrind_control", "callgrind_annotate", "h2load", "nginx"):
        if shutil.which(tool) is None:
            print(f"{tool} is missing (apt-get install valgrind nghttp2-client nginx)", file=sys.stderr)
            return 1
    workdir = Path(tempfile.mkdtemp(prefix="meshproxy-profile-"))
    nginx, values = upstream(workdir)
    try:
        for scenario in scenarios:
            started = time.monotonic()
            figures = SCENARIOS[scenario](workdir, values, args.requests)
            parts = ", ".join(f"{name} {per:,.0f}" for name, per in figures.items())
            pair = f"; pair {sum(figures.values()):,.0f}" if len(figures) > 1 else ""
            print(f"{scenario}: instructions/request: {parts}{pair}  ({time.monotonic() - started:.0f} s)")
    finally:
        nginx.stop()
        if args.keep:
            print(f"dumps and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
