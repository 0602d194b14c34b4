"""Fixtures for the apply-path benchmarks: the mesh-sized config (tests/large_config.py) as a
dict and as a YAML file, and real upstreams (tests/upstream.py) for the apply-under-load check.
Run with `make microbench`; `make test` does not collect this directory."""

from __future__ import annotations

import http.client
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

TESTS = Path(__file__).resolve().parents[2] / "tests"
sys.path.insert(0, str(TESTS))

from large_config import large_config  # noqa: E402


@dataclass
class Upstream:
    name: str
    address: str
    process: subprocess.Popen[bytes]


def _answers(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        connection = http.client.HTTPConnection(host, int(port), timeout=1)
        connection.request("GET", "/ready")
        ok = connection.getresponse().status == 200
        connection.close()
        return ok
    except OSError:
        return False


def _start_upstream(name: str) -> Upstream:
    """tests/upstream.py (hypercorn) on a socket bound here and handed over by fd."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    address = "127.0.0.1:%d" % sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, str(TESTS / "upstream.py"), "--name", name, "--fd", str(sock.fileno())],
        pass_fds=[sock.fileno()],
    )
    sock.close()
    deadline = time.monotonic() + 15
    while not _answers(address):
        if time.monotonic() > deadline:
            process.kill()
            raise TimeoutError(f"upstream {name} did not answer on {address}")
        time.sleep(0.02)
    return Upstream(name, address, process)


@pytest.fixture(scope="session")
def upstreams() -> Iterator[Callable[[str], Upstream]]:
    started: dict[str, Upstream] = {}

    def get(name: str) -> Upstream:
        if name not in started:
            started[name] = _start_upstream(name)
        return started[name]

    yield get
    for upstream in started.values():
        upstream.process.terminate()
        upstream.process.wait(timeout=10)


@pytest.fixture(scope="session")
def big_config() -> Callable[[str], dict[str, Any]]:
    """The mesh-sized config whose live cluster is the given upstream address."""
    return lambda live: large_config([live])


@pytest.fixture(scope="session")
def big_config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "mesh.yaml"
    path.write_text(yaml.safe_dump(large_config(["127.0.0.1:1"]), sort_keys=False))
    return path
