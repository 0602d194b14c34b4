"""Fixtures shared by every test: real upstream servers and real proxies on loopback, on
ephemeral ports, with readiness polled (never slept for)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from processes import bound_addresses, follow_stderr, free_address, stop_followed
# Re-exported: tests import these from conftest.
from upstreams import Upstream, accepts_connections, start_upstream, upstream_pool, wait_until  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def upstreams() -> Iterator[Callable[[str], Upstream]]:
    """Starts named upstreams on demand, once per session each."""
    yield from upstream_pool()


# A config `validate` refuses: its route (line 5) names a cluster that is not defined.
BAD_ROUTE = """\
listeners:
  - name: outbound
    address: 127.0.0.1:0
    routes:
      - cluster: nope
clusters:
  - name: app
    endpoints:
      - address: 127.0.0.1:8080
"""


def closed_port_address() -> str:
    """An address nothing listens on (bound then released)."""
    return free_address()


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
        self._reader = follow_stderr(self.process, self.log_lines)

    def stop(self, sig: int | None = None) -> int:
        return stop_followed(self.process, self._reader, sig or signal.SIGTERM)


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
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            raise RuntimeError("meshproxy run exited before it was ready:\n" + "".join(lines))
        lines.append(line)
        if "ready:" in line:
            return ProxyProcess(process, *bound_addresses(lines), lines)
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


def access_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON access log's complete lines so far (a line being written is left out)."""
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


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
