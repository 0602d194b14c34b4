"""``meshproxy wait-ready``: returns 0 once a real sidecar's admin API says it is ready (and not
before: its listeners accept by then), 1 with a message naming what it last saw on timeout.
(Against a draining sidecar: test_drain.py.)"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml
from conftest import Upstream, accepts_connections, closed_port_address, one_route_config, served_by

Upstreams = Callable[[str], Upstream]


def wait_ready(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "meshproxy", "wait-ready", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_wait_ready_started_with_the_sidecar_returns_0_once_its_listeners_accept(
    tmp_path: Path, upstreams: Upstreams
) -> None:
    admin, listener = closed_port_address(), closed_port_address()
    config = one_route_config({"name": "app", "endpoints": [{"address": upstreams("v1").address}]},
                              admin={"address": admin})
    config["listeners"][0]["address"] = listener
    path = tmp_path / "sidecar.yaml"
    path.write_text(yaml.safe_dump(config))

    # Started first: the admin port is closed until the sidecar has bound everything.
    waiting = wait_ready("--admin", admin, "--timeout", "60")
    sidecar = subprocess.Popen([sys.executable, "-m", "meshproxy", "run", "--config", str(path)],
                               stderr=subprocess.DEVNULL)
    try:
        stdout, stderr = waiting.communicate(timeout=90)
        assert (waiting.returncode, stdout, stderr) == (0, "", "")
        assert accepts_connections(listener)
        assert served_by(listener) == "v1"
    finally:
        sidecar.send_signal(signal.SIGTERM)
        assert sidecar.wait(timeout=30) == 0


def test_wait_ready_times_out_with_1_saying_what_it_last_saw() -> None:
    admin = closed_port_address()
    waiting = wait_ready("--admin", admin, "--timeout", "0.3")
    stdout, stderr = waiting.communicate(timeout=30)
    assert (waiting.returncode, stdout) == (1, "")
    assert stderr == f"meshproxy wait-ready: {admin} not ready after 0.3s (last: connection refused)\n"


def test_wait_ready_refuses_an_address_without_a_port() -> None:
    waiting = wait_ready("--admin", "localhost")
    _, stderr = waiting.communicate(timeout=30)
    assert waiting.returncode == 2
    assert "--admin: expected HOST:PORT, e.g. 127.0.0.1:15000, got 'localhost'" in stderr
