"""Real upstream servers for tests and benchmarks: tests/upstream.py (hypercorn, HTTP/1.1 and
h2c) on a socket bound here and handed over by fd, with readiness polled (never slept for)."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from processes import stop_process

UPSTREAM = Path(__file__).resolve().parent / "upstream.py"


def wait_until(condition: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def accepts_connections(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Upstream:
    name: str
    address: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        stop_process(self.process, 5)


def start_upstream(name: str, host: str = "127.0.0.1", port: int = 0) -> Upstream:
    """A hypercorn upstream (HTTP/1.1 and h2c) on a socket bound here and handed over by fd;
    on ``host`` (any address of 127.0.0.0/8 is loopback, and ``::1``) and ``port`` (0: an
    ephemeral one). Its address is ``HOST:PORT``, ``[HOST]:PORT`` for IPv6."""
    (upstream,) = start_upstreams_together([name], host, port)
    return upstream


def start_upstreams_together(names: list[str], host: str = "127.0.0.1", port: int = 0) -> list[Upstream]:
    """Upstreams served by one process, each on its own socket: what makes one slower at a
    moment makes the others slower too, so their latencies are alike (what latency-aware
    balancing needs to show its weights). Stopping one stops them all."""
    ipv6 = ":" in host
    sockets = []
    for _ in names:
        sock = socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sockets.append(sock)
    addresses = [("[%s]:%d" if ipv6 else "%s:%d") % (host, sock.getsockname()[1]) for sock in sockets]
    argv = [sys.executable, str(UPSTREAM)]
    for name, sock in zip(names, sockets, strict=True):
        argv += ["--name", name, "--fd", str(sock.fileno())]
    process = subprocess.Popen(argv, pass_fds=[sock.fileno() for sock in sockets])
    for sock in sockets:
        sock.close()
    upstreams = [Upstream(name, address, process) for name, address in zip(names, addresses, strict=True)]
    # The sockets accept before hypercorn runs; an answered request is the real readiness.
    for upstream in upstreams:
        wait_until(lambda: _answers(upstream.address), what=f"upstream {upstream.name} on {upstream.address}")
    return upstreams


def _answers(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=1)
    try:
        connection.request("GET", "/ready")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        # Also when a slow start times the probe out: an unclosed socket fails the test run.
        connection.close()


def upstream_pool() -> Iterator[Callable[[str], Upstream]]:
    """Starts named upstreams on demand, once each; stops them when the generator ends (the
    body of a session fixture)."""
    started: dict[str, Upstream] = {}

    def get(name: str) -> Upstream:
        if name not in started:
            started[name] = start_upstream(name)
        return started[name]

    yield get
    for upstream in started.values():
        upstream.stop()
