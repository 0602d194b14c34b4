"""An HTTP/1.1 upstream whose response breaks the framing rules a proxy must keep: a
`Transfer-Encoding` with a coding other than `chunked` (`gzip, chunked`). hyper decodes the
chunks only; forwarded as plain chunks, the response would silently lose its gzip coding, which
RFC 9112 §6.1 forbids. The proxy refuses it as Envoy does (an upstream protocol error, 502),
closes that upstream connection instead of reusing it, and serves every other request."""

from __future__ import annotations

import gzip
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
from conftest import one_route_config
from meshproxy import Proxy
from raw_upstream import RawUpstream

PLAIN = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"


def _coded(codings: bytes) -> bytes:
    body = gzip.compress(b"compressed, then chunked")
    return (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: " + codings + b"\r\n\r\n"
            + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")


class CodingUpstream(RawUpstream):
    """Answers `/coded` with `transfer-encoding: <codings>` and anything else plainly, on
    keep-alive connections; records the paths each connection served and whether the proxy
    closed it."""

    def __init__(self, codings: bytes) -> None:
        self.codings = codings
        self.served: list[list[str]] = []
        self.closed: list[threading.Event] = []
        self._lock = threading.Lock()
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        with self._lock:
            index = len(self.served)
            self.served.append([])
            self.closed.append(threading.Event())
        with conn:
            pending = b""
            while True:
                while b"\r\n\r\n" not in pending:
                    data = conn.recv(65536)
                    if not data:
                        self.closed[index].set()
                        return
                    pending += data
                head, _, pending = pending.partition(b"\r\n\r\n")
                path = head.split(b" ")[1].decode()
                self.served[index].append(path)
                conn.sendall(_coded(self.codings) if path.startswith("/coded") else PLAIN)


@pytest.fixture(params=[b"gzip, chunked", b"cow, chunked"], ids=["gzip", "unknown"])
def coding_upstream(request: pytest.FixtureRequest) -> Iterator[CodingUpstream]:
    upstream = CodingUpstream(request.param)
    yield upstream
    upstream.close()


def _proxy(upstream: CodingUpstream) -> Proxy:
    return Proxy(one_route_config({"name": "app", "endpoints": [{"address": upstream.address}]}), workers=1)


def _assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 502, response.text
    assert response.headers["x-meshproxy-error"] == "upstream_protocol_error"
    assert "transfer coding other than chunked" in response.text


@pytest.mark.parametrize("http2", [False, True], ids=["http1-client", "h2c-client"])
def test_an_upstream_response_with_another_coding_than_chunked_is_refused_and_its_connection_closed(
        coding_upstream: CodingUpstream, http2: bool) -> None:
    with _proxy(coding_upstream) as proxy, \
            httpx.Client(base_url=f"http://{proxy.address('outbound')}", http1=not http2, http2=http2,
                         timeout=10) as client:
        assert client.get("/before").status_code == 200
        refused = client.get("/coded")
        assert refused.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
        _assert_refused(refused)
        # Other requests on the same client connection and listener are served.
        after = client.get("/after")
        assert (after.status_code, after.text) == (200, "ok")
        stats = proxy.stats()
        # The connection that carried the refused response took no other request, and the
        # proxy closed it (while still running).
        [coded_on] = [i for i, paths in enumerate(coding_upstream.served) if "/coded" in paths]
        assert coding_upstream.closed[coded_on].wait(10)
    assert stats["errors"]["upstream_protocol_error"] == 1
    assert stats["clusters"]["app"]["upstream_failures_total"] == 1
    assert coding_upstream.served[coded_on][-1] == "/coded"
    assert any("/after" in paths for paths in coding_upstream.served)


def test_an_upgrade_the_upstream_refuses_with_another_coding_is_refused_too(coding_upstream: CodingUpstream) -> None:
    # An upstream that answers an Upgrade with a plain response (no 101) has it passed on as
    # any response: with its framing checked the same way.
    upgrade = {"connection": "upgrade", "upgrade": "websocket", "sec-websocket-version": "13",
               "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ=="}
    with _proxy(coding_upstream) as proxy, \
            httpx.Client(base_url=f"http://{proxy.address('outbound')}", timeout=10) as client:
        _assert_refused(client.get("/coded", headers=upgrade))
        assert client.get("/after").status_code == 200
        assert proxy.stats()["errors"]["upstream_protocol_error"] == 1
