"""Fixtures shared by every test: real upstream servers and real proxies on loopback, on
ephemeral ports, with readiness polled (never slept for)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
# Re-exported: tests import these from conftest.
from upstreams import Upstream, accepts_connections, start_upstream, upstream_pool, wait_until  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def upstreams() -> Iterator[Callable[[str], Upstream]]:
    """Starts named upstreams on demand, once per session each."""
    yield from upstream_pool()


def closed_port_address() -> str:
    """An address nothing listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return "127.0.0.1:%d" % sock.getsockname()[1]


@dataclass
class ProxyProcess:
    """``meshproxy run`` as an operator runs it, with the addresses it logged."""

    process: subprocess.Popen[str]
    listeners: dict[str, str]
    admin: str | None
    log_lines: list[str]

    def address(self, name: str) -> str:
        return self.listeners[name]

    def __post_init__(self) -> None:
        # Keep reading the log so the proxy never blocks on a full pipe.
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log_lines.append(line)

    def stop(self, sig: int | None = None) -> int:
        import signal

        if self.process.poll() is None:
            self.process.send_signal(sig or signal.SIGTERM)
        try:
            code = self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._reader.join(timeout=5)
        if self.process.stderr is not None:
            self.process.stderr.close()
        return code


_LISTENER_LINE = re.compile(r"listener (\S+) on (\S+) ")
_ADMIN_LINE = re.compile(r"admin on http://(\S+)/")


def run_meshproxy(config: dict[str, Any] | Path, tmp_path: Path, *extra: str) -> ProxyProcess:
    """Starts ``meshproxy run`` and waits for its 'ready' log line."""
    if isinstance(config, dict):
        path = tmp_path / "meshproxy.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
    else:
        path = config
    process = subprocess.Popen(
        [sys.executable, "-m", "meshproxy", "run", "--config", str(path), *extra],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    lines: list[str] = []
    listeners: dict[str, str] = {}
    admin = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            raise RuntimeError("meshproxy run exited before it was ready:\n" + "".join(lines))
        lines.append(line)
        if m := _LISTENER_LINE.search(line):
            listeners[m.group(1)] = m.group(2)
        if m := _ADMIN_LINE.search(line):
            admin = m.group(1)
        if "ready:" in line:
            return ProxyProcess(process, listeners, admin, lines)
    process.kill()
    raise TimeoutError("meshproxy run did not log 'ready' in 30s:\n" + "".join(lines))


@pytest.fixture
def meshproxy_run(tmp_path: Path) -> Iterator[Callable[..., ProxyProcess]]:
    running: list[ProxyProcess] = []

    def start(config: dict[str, Any] | Path, *extra: str) -> ProxyProcess:
        proxy = run_meshproxy(config, tmp_path, *extra)
        running.append(proxy)
        return proxy

    yield start
    for proxy in running:
        proxy.stop()


def one_route_config(*clusters: dict[str, Any], routes: list[dict[str, Any]] | None = None,
                     protocol: str = "auto", **top: Any) -> dict[str, Any]:
    """A config with one listener on an ephemeral port; by default every request goes to the
    first cluster."""
    return {
        **top,
        "listeners": [{
            "name": "outbound",
            "address": "127.0.0.1:0",
            "protocol": protocol,
            "routes": routes if routes is not None else [{"cluster": clusters[0]["name"]}],
        }],
        "clusters": list(clusters),
    }


def served_by(address: str, path: str = "/anything") -> str:
    """Which upstream answered a request sent through the proxy listener at ``address``."""
    import httpx

    with httpx.Client(timeout=10) as client:
        response = client.get(f"http://{address}{path}")
    assert response.status_code == 200, response.text
    upstream: str = body_json(response)["upstream"]
    return upstream


@contextlib.contextmanager
def occupied_address() -> Iterator[str]:
    """An ``IP:PORT`` some other socket is listening on, for as long as the block runs."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield "127.0.0.1:%d" % taken.getsockname()[1]


def body_json(response: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(response.content if hasattr(response, "content") else response)
    return document


def metric_value(admin: str, sample: str) -> float:
    """The value of the unlabelled sample ``sample`` in one scrape of the admin API's /metrics."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://{admin}/metrics", timeout=10).text
    values = [s.value for family in text_string_to_metric_families(text) for s in family.samples if s.name == sample]
    assert len(values) == 1, f"{len(values)} samples named {sample}"
    return values[0]


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


os.environ.setdefault("NO_PROXY", "*")
