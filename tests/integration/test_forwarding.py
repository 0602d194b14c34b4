"""What a forwarding proxy does to requests on their way (RFC 9110 §7.6), seen by the upstream."""

from __future__ import annotations

import json
import subprocess
from typing import Any, Callable

import httpx
import pytest
from conftest import Upstream, one_route_config
from meshproxy import Proxy


def echo_proxy(upstream: Upstream, protocol: str = "http1") -> Proxy:
    return Proxy(one_route_config({"name": "app", "protocol": protocol, "endpoints": [{"address": upstream.address}]}))


def test_forwarded_for_is_appended_and_request_id_generated_or_kept(upstreams: Callable[[str], Upstream]) -> None:
    with echo_proxy(upstreams("v1")) as proxy, httpx.Client(base_url=f"http://{proxy.address('outbound')}") as client:
        fresh = client.get("/").json()["headers"]
        kept = client.get("/", headers={"x-request-id": "abc-123", "x-forwarded-for": "10.0.0.9"}).json()["headers"]
    assert fresh["x-forwarded-for"] == "127.0.0.1"
    assert len(fresh["x-request-id"]) == 36 and fresh["x-request-id"].count("-") == 4
    assert kept["x-request-id"] == "abc-123"
    assert kept["x-forwarded-for"] == "10.0.0.9, 127.0.0.1"


def test_hop_by_hop_headers_stay_on_their_hop(upstreams: Callable[[str], Upstream]) -> None:
    with echo_proxy(upstreams("v1")) as proxy:
        result = subprocess.run(
            ["curl", "-sS", "-H", "Connection: keep-alive, x-private", "-H", "x-private: 1", "-H", "Keep-Alive: timeout=5",
             "-H", "Proxy-Authorization: Basic eDp5", "-H", "x-end-to-end: 1", f"http://{proxy.address('outbound')}/"],
            capture_output=True, text=True, check=True,
        )
    headers = json.loads(result.stdout)["headers"]
    assert "x-private" not in headers and "keep-alive" not in headers and "proxy-authorization" not in headers
    assert headers["x-end-to-end"] == "1"


def test_absolute_form_requests_from_http_proxy_clients_route_by_their_authority(upstreams: Callable[[str], Upstream]) -> None:
    routes = [{"match": {"host": "orders"}, "cluster": "orders"}, {"cluster": "other"}]
    config = {
        "listeners": [{"name": "outbound", "address": "127.0.0.1:0", "routes": routes}],
        "clusters": [{"name": "orders", "endpoints": [{"address": upstreams("v1").address}]},
                     {"name": "other", "endpoints": [{"address": upstreams("v2").address}]}],
    }
    with Proxy(config) as proxy:
        # As an app with HTTP_PROXY=http://<sidecar> sends it: `GET http://orders/list HTTP/1.1`.
        with httpx.Client(proxy=f"http://{proxy.address('outbound')}") as client:
            answer = client.get("http://orders/list?page=2").json()
    assert (answer["upstream"], answer["path"], answer["query"]) == ("v1", "/list", "page=2")
    assert answer["headers"]["host"] == "orders"


def test_expect_100_continue_uploads_complete(upstreams: Callable[[str], Upstream], tmp_path: Any) -> None:
    payload = tmp_path / "body.bin"
    payload.write_bytes(b"e" * 2_000_000)
    with echo_proxy(upstreams("v1")) as proxy:
        result = subprocess.run(
            ["curl", "-sS", "-v", "-H", "Expect: 100-continue", "--data-binary", f"@{payload}",
             f"http://{proxy.address('outbound')}/upload"],
            capture_output=True, text=True, check=True,
        )
    assert "HTTP/1.1 100 Continue" in result.stderr
    assert json.loads(result.stdout)["received"] == 2_000_000


def test_http2_upstream_gets_the_client_authority_not_the_endpoint_address(upstreams: Callable[[str], Upstream]) -> None:
    with echo_proxy(upstreams("v1"), protocol="http2") as proxy:
        answer = httpx.get(f"http://{proxy.address('outbound')}/", headers={"host": "orders.internal"}).json()
    assert answer["http_version"] == "2"
    assert answer["headers"]["host"] == "orders.internal"


def test_responses_carry_a_canonical_reason_phrase(upstreams: Callable[[str], Upstream]) -> None:
    with echo_proxy(upstreams("v1")) as proxy:
        result = subprocess.run(["curl", "-sS", "-i", f"http://{proxy.address('outbound')}/status/404"],
                                capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[0].strip() == "HTTP/1.1 404 Not Found"


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "h2c"])
def test_an_upstream_connection_is_reused_however_each_response_body_ends(
    upstreams: Callable[[str], Upstream], http2: bool
) -> None:
    # One worker, one pool: sequential requests need one upstream HTTP/1.1 connection, back in the
    # pool as each response body ends: at a known length, at its last chunk, or with no body.
    cluster = {"name": "app", "endpoints": [{"address": upstreams("v1").address}]}
    with Proxy(one_route_config(cluster), workers=1) as proxy, httpx.Client(
        base_url=f"http://{proxy.address('outbound')}", http1=not http2, http2=http2, timeout=10
    ) as client:
        ports = [client.get("/anything").json()["client_port"]]
        endings = [("GET", "/bytes/200000"), ("GET", "/chunked/200000"), ("HEAD", "/anything"), ("GET", "/status/204")]
        for method, path in endings:
            response = client.request(method, path)
            assert response.status_code in (200, 204), (method, path)
            assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
            ports.append(client.get("/anything").json()["client_port"])
        chunked = client.get("/chunked/200000")
    assert len(chunked.content) == 200000 and "content-length" not in chunked.headers
    assert len(set(ports)) == 1, ports
