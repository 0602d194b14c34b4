"""HTTP/2 upstreams close connections after so many requests (nginx: `keepalive_requests`, 1,000
by default) with a graceful GOAWAY. The streams it leaves out, and the requests still queued for
that connection, never reached the application: they go again on a new connection, and no
client sees an error."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import accepts_connections, one_route_config, wait_until
from meshproxy import Proxy

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir};
    keepalive_requests {requests_per_connection};
    server {{
        listen 127.0.0.1:{port} http2;
        location / {{ return 200 "ok"; }}
    }}
}}
"""


@pytest.fixture
def closing_h2c_upstream(tmp_path: Path) -> Iterator[str]:
    """nginx speaking h2c, closing each connection after its default 1,000 requests."""
    if not Path(NGINX).exists():
        pytest.fail("nginx is missing: `make system-deps` installs it")
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=tmp_path, port=port, requests_per_connection=1000))
    process = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(tmp_path)])
    address = f"127.0.0.1:{port}"
    try:
        wait_until(lambda: accepts_connections(address), what=f"nginx on {address}")
        yield address
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_requests_refused_by_a_closing_http2_upstream_go_again_unseen(closing_h2c_upstream: str) -> None:
    config = one_route_config({"name": "app", "protocol": "http2", "endpoints": [{"address": closing_h2c_upstream}]})
    with Proxy(config, workers=1) as proxy:
        result = subprocess.run(
            ["h2load", "-c4", "-m100", "-n40000", f"http://{proxy.address('outbound')}/"],
            capture_output=True, text=True, timeout=120, check=True,
        )
        cluster = proxy.stats()["clusters"]["app"]
    assert "40000 succeeded, 0 failed" in result.stdout, result.stdout
    # Dozens of connections were closed under 400 streams in flight: refusals did happen.
    assert cluster["upstream_failures_total"] > 0
    assert cluster["responses"]["2xx"] == 40000
