"""Busy polling (`busy_poll`): a worker that woke for traffic keeps polling for the window, and
the time it spends doing so is counted; off by default, turned on and off by a reload."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import meshproxy
import pytest
from conftest import Upstream, one_route_config
from procfs import worker_threads
from prometheus_client.parser import text_string_to_metric_families

Upstreams = Callable[[str], Upstream]
REQUESTS = 20
# Spinning stops when another thread wants the core, so on a busy machine a window can end
# early; some of these will still be spun through.
MOST_REQUESTS = 2000


def config(upstream: Upstream, **top: Any) -> dict[str, Any]:
    return one_route_config({"name": "app", "endpoints": [{"address": upstream.address}]}, workers=1, **top)


def send_requests(proxy: meshproxy.Proxy, count: int = REQUESTS) -> None:
    """One request at a time, as a latency-bound client sends them."""
    with httpx.Client(timeout=10) as client:
        for _ in range(count):
            assert client.get(f"http://{proxy.address('outbound')}/").status_code == 200


def spin_seconds_after_traffic(proxy: meshproxy.Proxy) -> float:
    """The spin time counted once requests, one at a time, have made the worker spin: more
    than nothing, within MOST_REQUESTS."""
    for _ in range(MOST_REQUESTS // REQUESTS):
        send_requests(proxy)
        spun: float = busy_poll(proxy)["spin_seconds_total"]
        if spun > 0:
            return spun
    raise AssertionError(f"no spin counted after {MOST_REQUESTS} requests")


def first_worker_thread() -> int:
    """The thread id of worker 0, once it has named itself (it does so as it starts)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if workers := worker_threads("self"):
            return workers[0]
        time.sleep(0.01)
    raise AssertionError("no thread named meshproxy-worker-0 in this process")


@contextmanager
def worker_beside_a_busy_thread() -> Iterator[None]:
    """Pins this process's first worker to one core with a process that computes without ever
    yielding it (as an app under load would), and the calling thread to another core."""
    client_cores = os.sched_getaffinity(0)
    cores = sorted(client_cores)
    if len(cores) < 2:
        pytest.skip("needs two cores: one shared by the worker and the busy thread, one for the client")
    shared, own = cores[-1], cores[0]
    worker = first_worker_thread()
    busy = subprocess.Popen(["taskset", "-c", str(shared), sys.executable, "-c", "while True: pass"])
    try:
        os.sched_setaffinity(worker, {shared})
        os.sched_setaffinity(0, {own})
        yield
    finally:
        busy.kill()
        busy.wait()
        os.sched_setaffinity(0, client_cores)


def busy_poll(proxy: meshproxy.Proxy) -> dict[str, Any]:
    stats: dict[str, Any] = proxy.stats()["busy_poll"]
    return stats


def test_off_by_default_a_worker_never_spins(upstreams: Upstreams) -> None:
    with meshproxy.Proxy(config(upstreams("v1"))) as proxy:
        send_requests(proxy)
        assert busy_poll(proxy) == {"window_us": 0, "spin_seconds_total": 0.0}


def test_a_worker_woken_by_traffic_spins_for_the_window_and_counts_it(upstreams: Upstreams) -> None:
    with meshproxy.Proxy(config(upstreams("v1"), busy_poll="2ms")) as proxy:
        assert busy_poll(proxy)["window_us"] == 2000
        spun = spin_seconds_after_traffic(proxy)
        scraped = {
            sample.name: sample.value
            for family in text_string_to_metric_families(proxy.metrics().decode())
            for sample in family.samples
        }
        assert scraped["meshproxy_busy_poll_spin_seconds_total"] >= spun


def test_a_worker_whose_core_another_thread_holds_does_not_spin(upstreams: Upstreams) -> None:
    """Beside a thread that does not yield, a spinning worker would wait out that thread's time
    slice for every event; it stops at its first turn kept off the core, and stays off."""
    with meshproxy.Proxy(config(upstreams("v1"), busy_poll="2ms")) as proxy:
        with worker_beside_a_busy_thread():
            before = busy_poll(proxy)["spin_seconds_total"]
            started = time.monotonic()
            send_requests(proxy, 200)
            took = time.monotonic() - started
            during = busy_poll(proxy)["spin_seconds_total"] - before
        # Spinning on, the worker would count most of the time the requests took (measured
        # with the back-off disabled: 0.65 s of 0.90 s); backing off, only the turns before the
        # busy thread next takes the core (measured: 1.2-2.0 ms of 0.2-0.3 s).
        assert during < 0.1 * took, f"spun {during:.4f} s of the {took:.3f} s the requests took"
        spin_seconds_after_traffic(proxy)


def test_a_reload_turns_busy_polling_on_and_off(upstreams: Upstreams) -> None:
    upstream = upstreams("v1")
    with meshproxy.Proxy(config(upstream)) as proxy:
        send_requests(proxy)
        assert busy_poll(proxy)["spin_seconds_total"] == 0.0

        proxy.reload(config(upstream, busy_poll="500us"))
        assert busy_poll(proxy)["window_us"] == 500
        spin_seconds_after_traffic(proxy)

        proxy.reload(config(upstream))
        assert busy_poll(proxy)["window_us"] == 0
        # A spin already under way when the reload landed ends within its window; after that,
        # requests leave the count where it is.
        send_requests(proxy)
        settled = busy_poll(proxy)["spin_seconds_total"]
        send_requests(proxy)
        assert busy_poll(proxy)["spin_seconds_total"] == settled


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("20ms", "busy_poll: 20000us is too long; at most 10000us (10ms), or 0 to sleep at once"),
        ("fast", "busy_poll: 'fast' is not a valid duration; expected a number with a unit us, ms or s"),
    ],
)
def test_a_bad_window_is_refused_with_what_would_be_valid(upstreams: Upstreams, value: str, message: str) -> None:
    with pytest.raises(meshproxy.ConfigError) as refused:
        meshproxy.Proxy(config(upstreams("v1"), busy_poll=value))
    assert message in str(refused.value)
