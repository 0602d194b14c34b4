"""HTTP/1.1 and HTTP/2 through the proxy with real clients: curl, httpx, the h2 package, h2load."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from pathlib import Path
from typing import Any, Callable

import h2.config
import h2.connection
import h2.events
import httpx
import pytest
from conftest import ProxyProcess, Upstream, one_route_config, rss_kib
from meshproxy import Proxy


def app_cluster(upstream: Upstream, protocol: str = "http1") -> dict[str, Any]:
    return {"name": "app", "protocol": protocol, "endpoints": [{"address": upstream.address}]}


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "20", *args], capture_output=True, text=True, check=False)


@pytest.mark.parametrize("listener", ["auto", "http1"])
def test_curl_http1_reaches_the_upstream(upstreams: Callable[[str], Upstream], listener: str) -> None:
    with Proxy(one_route_config(app_cluster(upstreams("v1")), protocol=listener)) as proxy:
        result = curl("-H", "Host: orders", f"http://{proxy.address('outbound')}/hello?x=1")
    answer = json.loads(result.stdout)
    assert (answer["upstream"], answer["path"], answer["query"], answer["http_version"]) == ("v1", "/hello", "x=1", "1.1")
    assert answer["headers"]["host"] == "orders"


@pytest.mark.parametrize("listener", ["auto", "http2"])
def test_curl_http2_prior_knowledge_reaches_the_upstream(upstreams: Callable[[str], Upstream], listener: str) -> None:
    with Proxy(one_route_config(app_cluster(upstreams("v1")), protocol=listener)) as proxy:
        result = curl("--http2-prior-knowledge", "-D", "-", f"http://{proxy.address('outbound')}/h2")
    assert result.stdout.startswith("HTTP/2 200"), result.stdout
    answer = json.loads(result.stdout.split("\n\n", 1)[1])
    assert (answer["upstream"], answer["path"]) == ("v1", "/h2")


def test_an_http1_only_listener_refuses_the_http2_preface(upstreams: Callable[[str], Upstream]) -> None:
    with Proxy(one_route_config(app_cluster(upstreams("v1")), protocol="http1")) as proxy:
        result = curl("--http2-prior-knowledge", f"http://{proxy.address('outbound')}/")
        assert result.returncode != 0
        assert curl(f"http://{proxy.address('outbound')}/").returncode == 0


def test_httpx_http2_with_many_requests_on_one_connection(upstreams: Callable[[str], Upstream]) -> None:
    with Proxy(one_route_config(app_cluster(upstreams("v1")))) as proxy:
        with httpx.Client(http1=False, http2=True, base_url=f"http://{proxy.address('outbound')}") as client:
            responses = [client.get(f"/n/{i}") for i in range(50)]
        assert {r.http_version for r in responses} == {"HTTP/2"}
        assert [r.json()["path"] for r in responses] == [f"/n/{i}" for i in range(50)]
        assert proxy.stats()["listeners"]["outbound"]["connections_total"] == 1


def test_h2_package_100_concurrent_streams_on_one_connection(upstreams: Callable[[str], Upstream]) -> None:
    with Proxy(one_route_config(app_cluster(upstreams("v1")))) as proxy:
        host, port = proxy.address("outbound").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=20) as sock:
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
            conn.initiate_connection()
            streams = {}
            for i in range(100):
                stream_id = conn.get_next_available_stream_id()
                streams[stream_id] = f"/delay/200?stream={i}"
                conn.send_headers(stream_id, [(":method", "GET"), (":scheme", "http"), (":authority", "orders"),
                                              (":path", streams[stream_id])], end_stream=True)
            sock.sendall(conn.data_to_send())
            statuses: dict[int, str] = {}
            bodies: dict[int, bytes] = {stream_id: b"" for stream_id in streams}
            ended: set[int] = set()
            while len(ended) < len(streams):
                data = sock.recv(65536)
                assert data, "the proxy closed the connection"
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        statuses[event.stream_id] = dict(event.headers)[":status"]
                    elif isinstance(event, h2.events.DataReceived):
                        bodies[event.stream_id] += event.data
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        ended.add(event.stream_id)
                    elif isinstance(event, h2.events.StreamReset):
                        pytest.fail(f"stream {event.stream_id} was reset: {event.error_code!r}")
                sock.sendall(conn.data_to_send())
    assert set(statuses.values()) == {"200"}
    for stream_id, path in streams.items():
        answer = json.loads(bodies[stream_id])
        assert answer["path"] + "?" + answer["query"] == path


@pytest.mark.parametrize("client_args", [["--h1"], []], ids=["http1", "h2c"])
def test_1000_concurrent_requests_are_all_answered(upstreams: Callable[[str], Upstream], client_args: list[str]) -> None:
    with Proxy(one_route_config(app_cluster(upstreams("v1"), protocol="http2"))) as proxy:
        # 1,000 clients at once, each with one request that takes the upstream 300 ms.
        result = subprocess.run(
            ["h2load", *client_args, "-n", "1000", "-c", "1000", "-m", "1", "-T", "30", "-N", "30",
             f"http://{proxy.address('outbound')}/delay/300"],
            capture_output=True, text=True, check=False, timeout=120,
        )
        stats = proxy.stats()
    summary = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", result.stdout)
    assert summary, result.stdout + result.stderr
    total, _, done, succeeded, failed, errored = map(int, summary.groups())
    assert (total, done, succeeded, failed, errored) == (1000, 1000, 1000, 0, 0), result.stdout
    assert "status codes: 1000 2xx" in result.stdout
    assert stats["clusters"]["app"]["responses"]["2xx"] == 1000


def test_http2_upstream_cluster_serves_http1_and_http2_clients(upstreams: Callable[[str], Upstream]) -> None:
    with Proxy(one_route_config(app_cluster(upstreams("v1"), protocol="http2"))) as proxy:
        base = f"http://{proxy.address('outbound')}"
        with httpx.Client(base_url=base) as h1, httpx.Client(http1=False, http2=True, base_url=base) as h2c:
            answers = [h1.get("/a", headers={"host": "orders"}).json(), h2c.get("/b").json()]
    assert [a["http_version"] for a in answers] == ["2", "2"]
    assert [a["path"] for a in answers] == ["/a", "/b"]


def test_a_200_mb_body_streams_through_with_bounded_memory(
    upstreams: Callable[[str], Upstream], meshproxy_run: Callable[..., ProxyProcess], tmp_path: Path
) -> None:
    proxy = meshproxy_run(one_route_config(app_cluster(upstreams("big"))))
    size = 200 * 1024 * 1024
    result = curl("-o", "/dev/null", "-w", "%{http_code} %{size_download}", f"http://{proxy.address('outbound')}/bytes/{size}")
    assert result.stdout == f"200 {size}", result.stderr
    # Peak resident memory of the whole sidecar process, Python included.
    assert rss_kib(proxy.process.pid, "VmHWM") < 100 * 1024


def test_a_large_upload_streams_to_the_upstream(upstreams: Callable[[str], Upstream], tmp_path: Path) -> None:
    payload = tmp_path / "upload.bin"
    payload.write_bytes(b"u" * (32 * 1024 * 1024))
    with Proxy(one_route_config(app_cluster(upstreams("v1")))) as proxy:
        for args in (["--http1.1"], ["--http2-prior-knowledge"]):
            result = curl(*args, "--data-binary", f"@{payload}", f"http://{proxy.address('outbound')}/upload")
            assert json.loads(result.stdout)["received"] == 32 * 1024 * 1024, args
