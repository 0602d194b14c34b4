"""Draining ``meshproxy run``: on SIGTERM (or SIGINT) inbound listeners stop accepting and their
requests finish while outbound listeners keep serving, then the process exits 0 within the drain
timeout; ``POST /drain`` starts the same drain without stopping. Real upstreams (``/delay/MS``
holds a request at the app), real clients, over loopback."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import ProxyProcess, Upstream, accepts_connections, served_by, wait_until

ProxyRunner = Callable[..., ProxyProcess]
Upstreams = Callable[[str], Upstream]
IN_FLIGHT = 4


@pytest.fixture
def admin_client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def sidecar(app: Upstream, peer: Upstream) -> dict[str, Any]:
    """An inbound listener in front of the local app, an outbound one to the mesh."""
    return {
        "admin": {"address": "127.0.0.1:0"},
        "listeners": [
            {"name": "inbound", "address": "127.0.0.1:0", "direction": "inbound", "routes": [{"cluster": "app"}]},
            {"name": "outbound", "address": "127.0.0.1:0", "routes": [{"cluster": "peer"}]},
        ],
        "clusters": [
            {"name": "app", "endpoints": [{"address": app.address}]},
            {"name": "peer", "endpoints": [{"address": peer.address}]},
        ],
    }


class SlowRequests:
    """Requests to ``/delay/MS`` through the inbound listener, each on its own connection."""

    def __init__(self, address: str, count: int, delay_ms: int) -> None:
        self.outcomes: list[httpx.Response | httpx.HTTPError] = []
        self._threads = [threading.Thread(target=self._send, args=(f"http://{address}/delay/{delay_ms}",))
                         for _ in range(count)]
        for thread in self._threads:
            thread.start()

    def _send(self, url: str) -> None:
        try:
            with httpx.Client(timeout=60) as client:
                self.outcomes.append(client.get(url))
        except httpx.HTTPError as error:
            self.outcomes.append(error)

    def join(self) -> list[httpx.Response | httpx.HTTPError]:
        for thread in self._threads:
            thread.join(timeout=60)
        return self.outcomes


def in_flight_at_app(admin_client: httpx.Client, proxy: ProxyProcess) -> int:
    count: int = admin_client.get(f"http://{proxy.admin}/clusters").json()["app"]["endpoints"][0]["in_flight"]
    return count


def ready_status(admin_client: httpx.Client, proxy: ProxyProcess) -> int:
    return admin_client.get(f"http://{proxy.admin}/ready").status_code


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_drains_inbound_while_outbound_serves_then_exits_0(
    meshproxy_run: ProxyRunner, upstreams: Upstreams, admin_client: httpx.Client, sig: signal.Signals
) -> None:
    proxy = meshproxy_run(sidecar(upstreams("v1"), upstreams("v2")))
    inbound, outbound = proxy.address("inbound"), proxy.address("outbound")
    slow = SlowRequests(inbound, IN_FLIGHT, delay_ms=3000)
    wait_until(lambda: in_flight_at_app(admin_client, proxy) == IN_FLIGHT, timeout=10,
               what="the inbound requests to reach the app")

    proxy.process.send_signal(sig)
    # The admin API answers through the drain; /ready turns 503 once inbound sockets are closed.
    wait_until(lambda: ready_status(admin_client, proxy) == 503, timeout=10, what="/ready to answer 503")

    assert not accepts_connections(inbound), "a new inbound connection is refused during the drain"
    assert served_by(outbound) == "v2", "the app can still call out during the drain"
    assert slow.outcomes == [], "the outbound request was served while inbound requests were in flight"

    assert proxy.stop() == 0
    outcomes = slow.join()
    assert [(o.status_code, o.json()["upstream"]) for o in outcomes if isinstance(o, httpx.Response)] == [
        (200, "v1")] * IN_FLIGHT
    assert f"meshproxy: {sig.name} received: draining for up to 10s\n" in proxy.log_lines
    assert proxy.log_lines[-1] == "meshproxy: stopped\n"
    assert not accepts_connections(outbound)


def test_requests_longer_than_the_drain_timeout_are_cut_and_the_process_exits_0(
    meshproxy_run: ProxyRunner, upstreams: Upstreams, admin_client: httpx.Client
) -> None:
    proxy = meshproxy_run(sidecar(upstreams("v1"), upstreams("v2")), "--drain-timeout", "0.5")
    slow = SlowRequests(proxy.address("inbound"), 1, delay_ms=60_000)
    wait_until(lambda: in_flight_at_app(admin_client, proxy) == 1, timeout=10, what="the request to reach the app")

    assert proxy.stop(signal.SIGTERM) == 0
    [outcome] = slow.join()
    assert isinstance(outcome, httpx.HTTPError), outcome
    assert proxy.log_lines[-1] == "meshproxy: stopped\n"


def test_post_drain_closes_inbound_turns_ready_503_and_keeps_outbound_and_reloads_working(
    tmp_path: Path, meshproxy_run: ProxyRunner, upstreams: Upstreams, admin_client: httpx.Client
) -> None:
    v1, v2 = upstreams("v1"), upstreams("v2")
    path = tmp_path / "sidecar.yaml"
    config = sidecar(v1, v2)
    path.write_text(yaml.safe_dump(config))
    proxy = meshproxy_run(path, "--no-watch")
    inbound, outbound = proxy.address("inbound"), proxy.address("outbound")
    assert served_by(inbound) == "v1"

    response = admin_client.post(f"http://{proxy.admin}/drain")
    assert (response.status_code, response.text) == (200, "draining\n")
    line = "meshproxy: draining (POST /drain): inbound listeners closed, outbound ones serving\n"
    wait_until(lambda: line in proxy.log_lines, timeout=10, what="the drain in the log")

    assert ready_status(admin_client, proxy) == 503
    assert admin_client.get(f"http://{proxy.admin}/live").status_code == 200
    assert not accepts_connections(inbound)
    assert served_by(outbound) == "v2"
    assert admin_client.post(f"http://{proxy.admin}/drain").status_code == 200  # idempotent
    wait = subprocess.run([sys.executable, "-m", "meshproxy", "wait-ready", "--admin", str(proxy.admin),
                           "--timeout", "0.2"], capture_output=True, text=True, timeout=30, check=False)
    assert (wait.returncode, wait.stderr) == (
        1, f"meshproxy wait-ready: {proxy.admin} not ready after 0.2s (last: 503 not ready: draining)\n")

    # A reload while draining changes what outbound does and leaves inbound closed.
    config["clusters"][1]["endpoints"] = [{"address": v1.address}]
    path.write_text(yaml.safe_dump(config))
    reload = admin_client.post(f"http://{proxy.admin}/reload")
    assert (reload.status_code, reload.json()) == (200, {"config_version": 2})
    assert served_by(outbound) == "v1"
    assert not accepts_connections(inbound)
    assert ready_status(admin_client, proxy) == 503

    assert proxy.stop(signal.SIGTERM) == 0
