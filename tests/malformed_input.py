"""What the malformed-input tests (tests/integration/test_malformed_*.py) share.

Every case checks two things: the attacker gets the RFC's answer (HTTP/1.1: RFC 9112 and
RFC 9110; HTTP/2: RFC 9113), and the attack stays contained: a connection opened before it
and a fresh one are still served by the upstream afterwards (`still_served`). The fixtures
start the proxy in this process, in front of a real upstream or of one that records what
reaches it; a test module imports the fixtures it uses, and those they depend on.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
from conftest import Upstream, one_route_config
from meshproxy import Proxy
from raw_http import READ_TIMEOUT, HttpResponse, h2_client, split_address
from recording_upstream import RecordingUpstream

MAX_HEADER_BYTES = 8192
LIMITS = {"max_header_bytes": MAX_HEADER_BYTES}
HOST = b"Host: app.test"


def assert_from_proxy(response: HttpResponse) -> None:
    """The answer came from the proxy, not from an upstream."""
    assert "x-upstream" not in response.headers, f"the upstream answered: {response}"


# --- containment: the proxy keeps serving everyone else ------------------------------------


def assert_served_by_upstream(status: int, body: bytes, path: str) -> None:
    assert status == 200, body
    assert json.loads(body)["path"] == path


def assert_fresh_connection_served(address: str, http2: bool) -> None:
    with httpx.Client(http1=not http2, http2=http2, timeout=READ_TIMEOUT) as client:
        response = client.get(f"http://{address}/fresh")
    assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
    assert_served_by_upstream(response.status_code, response.content, "/fresh")


@contextmanager
def still_served(address: str, http2: bool = False) -> Iterator[None]:
    """Proves the attack inside the block is contained: a keep-alive connection opened and
    used before it is still served after it, and so is a fresh connection."""
    if http2:
        with h2_client(address) as kept:
            before = kept.request("/before")
            assert_served_by_upstream(before.status or 0, before.body, "/before")
            yield
            after = kept.request("/after")
            assert_served_by_upstream(after.status or 0, after.body, "/after")
    else:
        kept_http1 = http.client.HTTPConnection(*split_address(address), timeout=READ_TIMEOUT)
        try:
            http1_request(kept_http1, "/before")
            yield
            http1_request(kept_http1, "/after")
        finally:
            kept_http1.close()
    assert_fresh_connection_served(address, http2)


def http1_request(connection: http.client.HTTPConnection, path: str) -> None:
    connection.request("GET", path, headers={"Host": "app.test"})
    response = connection.getresponse()
    assert_served_by_upstream(response.status, response.read(), path)


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def upstream(upstreams: Callable[[str], Upstream]) -> Upstream:
    return upstreams("v1")


def start_proxy(upstream_address: str, protocol: str = "auto") -> Proxy:
    cluster = {"name": "app", "endpoints": [{"address": upstream_address}]}
    return Proxy(one_route_config(cluster, protocol=protocol, limits=LIMITS))


@pytest.fixture
def proxy(upstream: Upstream) -> Iterator[Proxy]:
    """An `auto` listener (HTTP/1.1, and HTTP/2 with prior knowledge)."""
    with start_proxy(upstream.address) as running:
        yield running


@pytest.fixture
def h2_proxy(upstream: Upstream) -> Iterator[Proxy]:
    """An `http2` listener: prior-knowledge HTTP/2 only."""
    with start_proxy(upstream.address, protocol="http2") as running:
        yield running


@pytest.fixture(params=["auto", "http2"])
def any_h2_proxy(request: pytest.FixtureRequest, upstream: Upstream) -> Iterator[Proxy]:
    """Each listener protocol that serves HTTP/2."""
    with start_proxy(upstream.address, protocol=request.param) as running:
        yield running


@pytest.fixture
def recorder() -> Iterator[RecordingUpstream]:
    recording = RecordingUpstream()
    yield recording
    recording.stop()


@pytest.fixture
def recorded_proxy(recorder: RecordingUpstream) -> Iterator[Proxy]:
    """A proxy in front of the recording upstream."""
    with start_proxy(recorder.address) as running:
        yield running
