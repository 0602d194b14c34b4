"""Driving load with wrk (HTTP/1.1) or h2load (h2c), pinned to the load core, and reading
requests, throughput, latency percentiles and errors from what they print."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

_TIME_UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}
# A unary gRPC call as h2load sends it: a POST to a method's path, gRPC's headers, and one
# length-prefixed message (flag 0: not compressed) of 16 bytes.
GRPC_PATH = "/bench.Echo/Unary"
GRPC_MESSAGE = b"\x00" + (16).to_bytes(4, "big") + b"meshproxy bench!"


@dataclass(frozen=True)
class Load:
    """A load shape: HTTP/1.1 with wrk over `connections` keep-alive connections, or h2c with
    h2load over `connections` connections carrying `streams` concurrent streams each."""

    h2c: bool
    connections: int
    streams: int = 1
    # Unary gRPC calls (h2c only) instead of GETs of /.
    grpc: bool = False

    def describe(self) -> str:
        if self.grpc:
            return f"h2load -c{self.connections} -m{self.streams} (h2c), unary gRPC calls"
        if self.h2c:
            return f"h2load -c{self.connections} -m{self.streams} (h2c)"
        return f"wrk -c{self.connections} (HTTP/1.1 keep-alive)"


@dataclass(frozen=True)
class LoadResult:
    """`errors` is None when every request got a 2xx and no connection broke; `output` is what
    the tool printed, kept for the record."""

    requests: int
    seconds: float
    p50_us: float
    p99_us: float
    errors: str | None
    output: str

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def run_load(load: Load, port: int, seconds: int, core: int, workdir: Path) -> LoadResult:
    url = f"http://127.0.0.1:{port}/"
    pin = ["taskset", "-c", str(core)]
    if load.h2c:
        log = workdir / "h2load-requests.tsv"
        argv = pin + [
            "h2load",
            "-t1",
            f"-c{load.connections}",
            f"-m{load.streams}",
            f"-D{seconds}",
            f"--log-file={log}",
        ]
        if load.grpc:
            message = workdir / "grpc-message.bin"
            message.write_bytes(GRPC_MESSAGE)
            argv += ["-d", str(message), "-H", "content-type: application/grpc", "-H", "te: trailers"]
            url = f"http://127.0.0.1:{port}{GRPC_PATH}"
        argv.append(url)
    else:
        # --timeout well above any latency seen here, so a slow proxy is measured, not failed.
        argv = pin + [
            "wrk",
            "-t1",
            f"-c{load.connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "--latency",
            url,
        ]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=seconds + 120)
    if done.returncode != 0:
        command = " ".join(argv[3:])
        raise RuntimeError(f"`{command}` exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return _parse_h2load(done.stdout, log) if load.h2c else _parse_wrk(done.stdout)


def _parse_wrk(output: str) -> LoadResult:
    summary = re.search(r"(\d+) requests in ([\d.]+)(\w+)", output)
    if summary is None:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    percentiles = {
        int(match[1]): round(float(match[2]) * _TIME_UNITS_US[match[3]], 1)
        for match in re.finditer(r"^\s+(\d+)%\s+([\d.]+)(\w+)$", output, re.MULTILINE)
    }
    if not 0 < percentiles.get(50, 0) <= percentiles.get(99, 0):
        raise RuntimeError(f"wrk printed no usable latency distribution:\n{output}")
    problems = []
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        problems.append(f"{non_2xx[1]} non-2xx/3xx responses")
    sockets = re.search(r"Socket errors: (.*)", output)
    if sockets:
        problems.append(f"socket errors: {sockets[1]}")
    requests = int(summary[1])
    if requests == 0:
        problems.append("no request completed")
    return LoadResult(
        requests=requests,
        seconds=float(summary[2]) * _TIME_UNITS_US[summary[3]] / 1e6,
        p50_us=percentiles[50],
        p99_us=percentiles[99],
        errors="; ".join(problems) or None,
        output=output,
    )


def _parse_h2load(output: str, log: Path) -> LoadResult:
    finished = re.search(r"finished in ([\d.]+)(\w+),", output)
    counts = re.search(
        r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        output,
    )
    statuses = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output)
    if finished is None or counts is None or statuses is None:
        raise RuntimeError(f"unexpected h2load output:\n{output}")
    problems = []
    if "Application protocol: h2c" not in output:
        problems.append("h2c was not negotiated")
    done, succeeded, failed, errored, timed_out = (int(n) for n in counts.groups())
    if failed or errored or timed_out:
        problems.append(f"{failed} failed, {errored} errored, {timed_out} timed out")
    if int(statuses[3]) or int(statuses[4]):
        problems.append(f"{statuses[3]} 4xx and {statuses[4]} 5xx responses")
    if done == 0:
        problems.append("no request completed")
    # Per-request rows: start (µs since epoch), status, µs until the end of the response.
    latencies = sorted(
        int(columns[2])
        for columns in (line.split("\t") for line in log.read_text().splitlines())
        if columns[1].startswith("2")
    )
    log.unlink()
    return LoadResult(
        requests=succeeded,
        seconds=float(finished[1]) * _TIME_UNITS_US[finished[2]] / 1e6,
        p50_us=_percentile(latencies, 50),
        p99_us=_percentile(latencies, 99),
        errors="; ".join(problems) or None,
        output=output,
    )


def _percentile(sorted_values: list[int], percent: float) -> float:
    """Nearest-rank percentile."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * percent // 100))
    return float(sorted_values[int(rank) - 1])
