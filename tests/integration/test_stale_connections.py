"""An upstream may close an idle keep-alive connection just as the proxy sends the next request
on it. The request is then lost with no response begun; one that may be sent twice (no body, an
idempotent method) goes again on a new connection, anything else fails with 502."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from conftest import one_route_config
from raw_upstream import RawUpstream
from meshproxy import Proxy

RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"


class DroppingUpstream(RawUpstream):
    """Answers the first request of every connection, then closes the connection on reading
    the second: what an upstream closing an idle connection looks like when the request and
    the close cross on the wire."""

    def __init__(self) -> None:
        self.dropped = 0
        super().__init__()

    @property
    def connections(self) -> int:
        return self.accepted

    def serve(self, conn: socket.socket) -> None:
        with conn:
            served = 0
            pending = b""
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                pending += data
                while b"\r\n\r\n" in pending:
                    head, _, pending = pending.partition(b"\r\n\r\n")
                    length = _content_length(head)
                    while len(pending) < length:
                        more = conn.recv(65536)
                        if not more:
                            return
                        pending += more
                    pending = pending[length:]
                    if served == 1:
                        self.dropped += 1
                        return
                    conn.sendall(RESPONSE)
                    served += 1



def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


@pytest.fixture
def dropping_upstream() -> Iterator[DroppingUpstream]:
    upstream = DroppingUpstream()
    yield upstream
    upstream.close()


def _proxy(upstream: DroppingUpstream) -> Proxy:
    return Proxy(one_route_config({"name": "app", "endpoints": [{"address": upstream.address}]}), workers=1)


def test_a_get_lost_on_a_closing_idle_connection_goes_again_on_a_new_one(dropping_upstream: DroppingUpstream) -> None:
    with _proxy(dropping_upstream) as proxy, httpx.Client(base_url=f"http://{proxy.address('outbound')}") as client:
        statuses = []
        for _ in range(3):
            statuses.append(client.get("/orders").status_code)
            # Long enough for the connection to count as possibly stale.
            time.sleep(0.1)
        upstream_failures = proxy.stats()["clusters"]["app"]["upstream_failures_total"]
    assert statuses == [200, 200, 200]
    assert dropping_upstream.dropped == 2
    assert dropping_upstream.connections == 3
    assert upstream_failures == 0


def test_a_post_with_a_body_lost_the_same_way_is_not_sent_twice(dropping_upstream: DroppingUpstream) -> None:
    with _proxy(dropping_upstream) as proxy, httpx.Client(base_url=f"http://{proxy.address('outbound')}") as client:
        first = client.post("/orders", content=b"one")
        time.sleep(0.1)
        second = client.post("/orders", content=b"two")
    assert first.status_code == 200
    assert second.status_code == 502
    assert second.headers["x-meshproxy-error"] == "upstream_failure"
    assert dropping_upstream.dropped == 1
    assert dropping_upstream.connections == 1
