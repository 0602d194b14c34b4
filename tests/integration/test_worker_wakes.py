"""A worker handling requests one at a time does not wake itself: no write to its runtime's
eventfd per request (tokio's wake of an I/O driver that is the running thread already).

Counted with strace on a real `meshproxy run`: a syscall count, not a timing."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from conftest import ProxyProcess, Upstream, one_route_config

REQUESTS = 200
# mio's eventfd waker adds one to the counter: an 8-byte write of the integer 1.
EVENTFD_WAKE = re.compile(r'write\(\d+, "\\1\\0\\0\\0\\0\\0\\0\\0", 8\)')


def traced_calls(pid: int, out: Path, during: Callable[[], None]) -> str:
    """The `write` and `sendto` calls every thread of `pid` makes while `during` runs."""
    with subprocess.Popen(
        ["strace", "-f", "-e", "trace=write,sendto", "-e", "signal=none", "-o", str(out), "-p", str(pid)],
        stderr=subprocess.PIPE,
        text=True,
    ) as tracer:
        assert tracer.stderr is not None
        # "Process N attached with M threads": every thread is traced from here on.
        first = tracer.stderr.readline()
        if "attached" not in first:
            tracer.kill()
            pytest.skip(f"strace cannot attach here: {first.strip()}")
        try:
            during()
        finally:
            tracer.send_signal(signal.SIGINT)
            tracer.communicate(timeout=10)
    return out.read_text()


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_sequential_requests_do_not_wake_the_worker_through_its_eventfd(
    upstreams: Callable[[str], Upstream], meshproxy_run: Callable[..., ProxyProcess], tmp_path: Path
) -> None:
    upstream = upstreams("v1")
    proxy = meshproxy_run(one_route_config({"name": "app", "endpoints": [{"address": upstream.address}]}, workers=1))
    url = f"http://{proxy.address('outbound')}/"
    with httpx.Client(timeout=10) as client:
        assert client.get(url).status_code == 200  # the upstream connection is pooled now

        def send() -> None:
            for _ in range(REQUESTS):
                assert client.get(url).status_code == 200

        calls = traced_calls(proxy.process.pid, tmp_path / "calls.strace", send)
    # The worker was traced: it sent each request upstream and each response back.
    assert calls.count("sendto(") >= 2 * REQUESTS
    wakes = len(EVENTFD_WAKE.findall(calls))
    # Each request sets its route timeout, and the connection then hyper's header-read timeout;
    # before a wake was kept planned within a second, the first of those woke the driver every
    # time (measured: 200 eventfd writes for 200 requests; now 0-2).
    assert wakes < REQUESTS // 10, f"{wakes} eventfd writes for {REQUESTS} requests"
