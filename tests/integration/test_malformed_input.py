"""Malformed and hostile input, crafted with raw sockets and the `h2` package.

Every case checks two things: the attacker gets the RFC's answer (HTTP/1.1: RFC 9112 and
RFC 9110; HTTP/2: RFC 9113), and the attack stays contained: a connection opened before it
and a fresh one are still served by the upstream afterwards.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h11
import httpx
import pytest
from conftest import Upstream, one_route_config
from h2.errors import ErrorCodes
from meshproxy import Proxy

# Bounds every read: no case waits for it unless the proxy fails to answer or to close.
READ_TIMEOUT = 5.0
MAX_HEADER_BYTES = 8192
LIMITS = {"max_header_bytes": MAX_HEADER_BYTES}


# --- HTTP/1.1 over a raw socket ------------------------------------------------------------


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class RawReply:
    data: bytes
    # The proxy closed the connection (FIN or RST) before the read timed out.
    closed: bool

    def responses(self) -> list[HttpResponse]:
        """The HTTP/1.1 responses in the bytes received, in order."""
        parsed = []
        rest = self.data
        while rest:
            head, separator, rest = rest.partition(b"\r\n\r\n")
            if not separator:
                raise AssertionError(f"incomplete response head: {head!r}")
            status_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            assert "transfer-encoding" not in headers, "this parser reads Content-Length bodies only"
            length = int(headers.get("content-length", "0"))
            parsed.append(HttpResponse(int(status_line.split(" ")[1]), headers, rest[:length]))
            rest = rest[length:]
        return parsed

    def only_response(self) -> HttpResponse:
        responses = self.responses()
        assert len(responses) == 1, f"expected one response, got {len(responses)}: {self.data!r}"
        return responses[0]


def split_address(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


def raw_exchange(address: str, payload: bytes) -> RawReply:
    """Sends ``payload`` on a new connection and reads until the proxy closes it (or the read
    times out, which a test treats as 'not closed')."""
    received = bytearray()
    deadline = time.monotonic() + READ_TIMEOUT
    with socket.create_connection(split_address(address), timeout=READ_TIMEOUT) as sock:
        try:
            sock.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the proxy refused before reading it all; its answer may still be there
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                return RawReply(bytes(received), closed=True)
            if not chunk:
                return RawReply(bytes(received), closed=True)
            received += chunk
    return RawReply(bytes(received), closed=False)


def request_bytes(*lines: bytes, body: bytes = b"") -> bytes:
    return b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body


def assert_from_proxy(response: HttpResponse) -> None:
    """The answer came from the proxy, not from an upstream."""
    assert "x-upstream" not in response.headers, f"the upstream answered: {response}"


# --- HTTP/2 over a raw socket --------------------------------------------------------------


@dataclass
class StreamOutcome:
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    ended: bool = False
    reset: ErrorCodes | None = None


class H2Client:
    """An HTTP/2 (prior knowledge) client on a raw socket that sends whatever it is told,
    including what RFC 9113 forbids."""

    CONFIG = h2.config.H2Configuration(
        client_side=True,
        header_encoding="utf-8",
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=False,
    )

    def __init__(self, address: str) -> None:
        self.sock = socket.create_connection(split_address(address), timeout=READ_TIMEOUT)
        self.conn = h2.connection.H2Connection(config=self.CONFIG)
        self.conn.initiate_connection()
        self.streams: dict[int, StreamOutcome] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = False
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def send_headers(self, headers: list[tuple[str, str]], end_stream: bool = True) -> int:
        stream_id: int = self.conn.get_next_available_stream_id()
        self.streams[stream_id] = StreamOutcome()
        self.conn.send_headers(stream_id, headers, end_stream=end_stream)
        self.flush()
        return stream_id

    def request(self, path: str) -> StreamOutcome:
        return self.outcome(self.send_headers(request_headers(path)))

    def outcome(self, stream_id: int) -> StreamOutcome:
        """Reads until the stream ends, is reset, or the connection goes away."""
        stream = self.streams[stream_id]
        self.read_until(lambda: stream.ended or stream.reset is not None)
        return stream

    def read_until(self, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + READ_TIMEOUT
        while not done() and not self.closed and self.goaway is None:
            if time.monotonic() > deadline:
                raise AssertionError("the proxy neither answered nor closed the connection")
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                self.closed = True
                return
            self.receive(data)

    def receive(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            stream = self.streams.get(getattr(event, "stream_id", 0) or 0)
            if isinstance(event, h2.events.ResponseReceived) and stream is not None:
                stream.headers = {str(name): str(value) for name, value in event.headers}
                stream.status = int(stream.headers[":status"])
            elif isinstance(event, h2.events.DataReceived) and stream is not None:
                stream.body += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded) and stream is not None:
                stream.ended = True
            elif isinstance(event, h2.events.StreamReset) and stream is not None:
                stream.reset = ErrorCodes(event.error_code)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.goaway = event
        try:
            self.flush()  # SETTINGS and PING acknowledgements, window updates
        except OSError:
            pass  # the proxy has closed; what it sent before closing is still to be read

    def close(self) -> None:
        self.sock.close()


def request_headers(path: str, authority: str = "app.test") -> list[tuple[str, str]]:
    return [(":method", "GET"), (":scheme", "http"), (":authority", authority), (":path", path)]


@contextmanager
def h2_client(address: str) -> Iterator[H2Client]:
    client = H2Client(address)
    try:
        yield client
    finally:
        client.close()


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


# --- an upstream that records what reaches it ----------------------------------------------


@dataclass
class RecordedRequest:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes = b""
    complete: bool = False


class RecordingUpstream:
    """A small HTTP/1.1 upstream (h11) that records every request it parses, so a test can
    prove what did, and did not, reach the upstream. Answers each with JSON naming the path."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self.requests: list[RecordedRequest] = []
        self._stopped = threading.Event()
        self._threads = [threading.Thread(target=self._accept_loop)]
        self._threads[0].start()

    def targets(self) -> list[str]:
        return [request.target for request in self.requests]

    def stop(self) -> None:
        self._stopped.set()
        self._threads[0].join(timeout=READ_TIMEOUT)  # accepts no more: the list is final
        for thread in self._threads[1:]:
            thread.join(timeout=READ_TIMEOUT)
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._serve, args=(sock,))
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(0.1)
        with sock:
            try:
                self._serve_requests(sock)
            except (OSError, h11.ProtocolError):
                pass  # the proxy hung up, or sent what h11 refuses: the connection ends here

    def _serve_requests(self, sock: socket.socket) -> None:
        connection = h11.Connection(h11.SERVER)
        request: RecordedRequest | None = None
        while not self._stopped.is_set():
            event = connection.next_event()
            if event is h11.NEED_DATA:
                try:
                    connection.receive_data(sock.recv(65536))
                except TimeoutError:
                    continue
            elif isinstance(event, h11.Request):
                headers = {name.decode(): value.decode() for name, value in event.headers}
                request = RecordedRequest(event.method.decode(), event.target.decode(), headers)
                self.requests.append(request)
            elif isinstance(event, h11.Data) and request is not None:
                request.body += event.data
            elif isinstance(event, h11.EndOfMessage) and request is not None:
                request.complete = True
                body = json.dumps({"path": request.target}).encode()
                head = h11.Response(status_code=200, headers=[("content-length", str(len(body))), ("x-upstream", "recorder")])
                sock.sendall(connection.send(head) + connection.send(h11.Data(data=body)) + connection.send(h11.EndOfMessage()))
                if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                    return
                connection.start_next_cycle()
            else:  # ConnectionClosed, or a request the recorder cannot answer
                return


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


# --- 1. HTTP/1.1 messages the parser must refuse -------------------------------------------

HOST = b"Host: app.test"

MALFORMED_HTTP1 = {
    "garbage request line": b"\x01\x02 this is not http\r\n\r\n",
    "space inside the target": request_bytes(b"GET /a b HTTP/1.1", HOST),
    "space in a header name": request_bytes(b"GET / HTTP/1.1", HOST, b"Bad Header: x"),
    "header line without colon": request_bytes(b"GET / HTTP/1.1", HOST, b"NoColonHere"),
    "obs-fold continuation line": request_bytes(b"GET / HTTP/1.1", HOST, b"X-Folded: a", b"  b"),
    "NUL in a header value": request_bytes(b"GET / HTTP/1.1", HOST, b"X-Value: a\x00b"),
    "bare CR in a header value": request_bytes(b"GET / HTTP/1.1", HOST, b"X-Value: a\rb"),
    "invalid method token": request_bytes(b"G(T / HTTP/1.1", HOST),
}


@pytest.mark.parametrize("payload", MALFORMED_HTTP1.values(), ids=MALFORMED_HTTP1.keys())
def test_malformed_http1_request_gets_400_and_close(proxy: Proxy, payload: bytes) -> None:
    # RFC 9112 §2.2, §3, §5: invalid syntax and obs-fold in a request are answered with 400.
    address = proxy.address("outbound")
    with still_served(address):
        reply = raw_exchange(address, payload)
        response = reply.only_response()
        assert response.status == 400
        assert_from_proxy(response)
        assert reply.closed
    assert proxy.stats()["clusters"]["app"]["upstream_requests_total"] == 3, "only the bystander's requests reach the upstream"


INVALID_HOST = {
    "HTTP/1.1 without Host": request_bytes(b"GET /no-host HTTP/1.1"),
    "absolute-form without Host": request_bytes(b"GET http://app.test/no-host HTTP/1.1"),
    "two Host lines": request_bytes(b"GET /two-hosts HTTP/1.1", HOST, b"Host: other.test"),
    "Host with a space": request_bytes(b"GET /bad-host HTTP/1.1", b"Host: app test"),
    "Host with a path": request_bytes(b"GET /bad-host HTTP/1.1", b"Host: app.test/x"),
}


@pytest.mark.parametrize("payload", INVALID_HOST.values(), ids=INVALID_HOST.keys())
def test_missing_duplicate_or_invalid_host_gets_400_from_the_proxy(recorded_proxy: Proxy, recorder: RecordingUpstream,
                                                                   payload: bytes) -> None:
    # RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request lacking Host, and to any
    # request with more than one Host or an invalid one; forwarding it would let the proxy
    # route on one host while the upstream reads another.
    address = recorded_proxy.address("outbound")
    with still_served(address):
        reply = raw_exchange(address, payload)
        response = reply.only_response()
        assert response.status == 400
        assert response.headers["x-meshproxy-error"] == "bad_request"
        assert reply.closed
    assert recorder.targets() == ["/before", "/after", "/fresh"]


def test_empty_host_is_valid_when_the_target_has_no_authority(recorded_proxy: Proxy, recorder: RecordingUpstream) -> None:
    # RFC 9112 §3.2: an empty Host says the target URI has no authority; it is not an error.
    reply = raw_exchange(recorded_proxy.address("outbound"), request_bytes(b"GET /empty-host HTTP/1.1", b"Host:", b"Connection: close"))
    assert reply.only_response().status == 200
    assert recorder.targets() == ["/empty-host"]


# --- 2. request smuggling -----------------------------------------------------------------

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n"
# CL.TE: Content-Length covers the smuggled request; chunked framing ends before it.
CL_TE_BODY = b"0\r\n\r\n" + SMUGGLED
# TE.CL: chunked framing carries the smuggled request as data; Content-Length ends before it.
TE_CL_BODY = b"%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n"


@pytest.mark.parametrize("te_first", [False, True], ids=["CL-before-TE", "TE-before-CL"])
@pytest.mark.parametrize(("body", "content_length", "upstream_body"), [
    (CL_TE_BODY, len(CL_TE_BODY), b""),
    (TE_CL_BODY, len(b"%x\r\n" % len(SMUGGLED)), SMUGGLED),
], ids=["CL.TE", "TE.CL"])
def test_content_length_with_chunked_is_framed_by_chunked_then_closed_so_nothing_is_smuggled(
        recorded_proxy: Proxy, recorder: RecordingUpstream, te_first: bool, body: bytes, content_length: int,
        upstream_body: bytes) -> None:
    # RFC 9112 §6.3: Transfer-Encoding overrides Content-Length; a server MAY reject the
    # request or process it by the chunked framing alone, and MUST close the connection after
    # responding. hyper does the latter, and drops Content-Length before the proxy sees it.
    framing = [b"Content-Length: %d" % content_length, b"Transfer-Encoding: chunked"]
    if te_first:
        framing.reverse()
    payload = request_bytes(b"POST /cl-te HTTP/1.1", HOST, *framing, body=body)
    address = recorded_proxy.address("outbound")
    with still_served(address):
        reply = raw_exchange(address, payload)
        assert reply.only_response().status == 200, "bytes after the chunked body must not be read as a request"
        assert reply.closed
    assert recorder.targets() == ["/before", "/cl-te", "/after", "/fresh"]
    forwarded = recorder.requests[1]
    assert "content-length" not in forwarded.headers
    assert forwarded.body == upstream_body


AMBIGUOUS_LENGTH = {
    "two different Content-Length lines": [b"Content-Length: 5", b"Content-Length: 6"],
    "Content-Length list of different values": [b"Content-Length: 5, 6"],
    "Content-Length with a plus sign": [b"Content-Length: +5"],
    "non-numeric Content-Length": [b"Content-Length: five"],
    # RFC 9112 §6.3: chunked not final means the length cannot be known: 400 and close.
    "Transfer-Encoding gzip only": [b"Transfer-Encoding: gzip"],
    "Transfer-Encoding chunked then gzip": [b"Transfer-Encoding: chunked, gzip"],
}


@pytest.mark.parametrize("framing", AMBIGUOUS_LENGTH.values(), ids=AMBIGUOUS_LENGTH.keys())
def test_ambiguous_message_length_gets_400_and_close(recorded_proxy: Proxy, recorder: RecordingUpstream,
                                                     framing: list[bytes]) -> None:
    # RFC 9112 §6.3 and RFC 9110 §8.6: an invalid Content-Length, or a Transfer-Encoding whose
    # final coding is not chunked, makes the framing unrecoverable: 400, then close.
    address = recorded_proxy.address("outbound")
    with still_served(address):
        reply = raw_exchange(address, request_bytes(b"POST /ambiguous HTTP/1.1", HOST, *framing, body=b"hello!" + SMUGGLED))
        response = reply.only_response()
        assert response.status == 400
        assert_from_proxy(response)
        assert reply.closed
    assert recorder.targets() == ["/before", "/after", "/fresh"]


def test_transfer_encoding_in_http10_gets_400_and_close(recorded_proxy: Proxy, recorder: RecordingUpstream) -> None:
    # RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
    address = recorded_proxy.address("outbound")
    with still_served(address):
        reply = raw_exchange(address, request_bytes(b"POST /te10 HTTP/1.0", HOST, b"Transfer-Encoding: chunked",
                                                    body=b"0\r\n\r\n" + SMUGGLED))
        assert reply.only_response().status == 400
        assert reply.closed
    assert recorder.targets() == ["/before", "/after", "/fresh"]


def test_doubled_chunked_coding_is_decoded_once_and_reframed_for_the_upstream(recorded_proxy: Proxy,
                                                                              recorder: RecordingUpstream) -> None:
    # RFC 9112 §6.1 forbids a sender to chunk twice; hyper reads `chunked, chunked` as one
    # chunked coding. The proxy then frames the body itself, so the upstream never sees the
    # client's Transfer-Encoding and cannot frame it differently.
    payload = request_bytes(b"POST /double-chunked HTTP/1.1", HOST, b"Transfer-Encoding: chunked, chunked", b"Connection: close",
                            body=b"5\r\nhello\r\n0\r\n\r\n")
    reply = raw_exchange(recorded_proxy.address("outbound"), payload)
    assert reply.only_response().status == 200
    assert recorder.targets() == ["/double-chunked"]
    assert recorder.requests[0].headers.get("transfer-encoding", "chunked") == "chunked"
    assert recorder.requests[0].body == b"hello"


@pytest.mark.parametrize("chunk_size_line", [b"zz", b"-5", b"1ffffffffffffffffff"], ids=["not hex", "negative", "overflow"])
def test_bad_chunk_size_line_gets_400_from_the_proxy_and_close(recorded_proxy: Proxy, recorder: RecordingUpstream,
                                                                 chunk_size_line: bytes) -> None:
    # RFC 9112 §7.1: the body cannot be framed. The request head has already been streamed to
    # the upstream, which is not to blame: the proxy answers 400, not 502.
    address = recorded_proxy.address("outbound")
    with still_served(address):
        payload = request_bytes(b"POST /bad-chunk HTTP/1.1", HOST, b"Transfer-Encoding: chunked",
                                body=chunk_size_line + b"\r\nhello\r\n0\r\n\r\n" + SMUGGLED)
        reply = raw_exchange(address, payload)
        response = reply.only_response()
        assert response.status == 400
        assert response.headers["x-meshproxy-error"] == "bad_request"
        assert reply.closed
    assert "/smuggled" not in recorder.targets()
    assert not any(request.complete for request in recorder.requests if request.target == "/bad-chunk")
    assert recorded_proxy.stats()["clusters"]["app"]["upstream_failures_total"] == 0


# --- 3. oversized header blocks ------------------------------------------------------------


def test_http1_header_block_over_the_limit_gets_431_and_close(proxy: Proxy) -> None:
    # RFC 6585 §5: 431 Request Header Fields Too Large.
    address = proxy.address("outbound")
    with still_served(address):
        reply = raw_exchange(address, request_bytes(b"GET /big HTTP/1.1", HOST, b"X-Big: " + b"a" * (MAX_HEADER_BYTES + 1000)))
        response = reply.only_response()
        assert response.status == 431
        assert_from_proxy(response)
        assert reply.closed


def test_http1_header_block_under_the_limit_is_forwarded(proxy: Proxy) -> None:
    reply = raw_exchange(proxy.address("outbound"),
                         request_bytes(b"GET /big HTTP/1.1", HOST, b"Connection: close", b"X-Big: " + b"a" * (MAX_HEADER_BYTES // 2)))
    response = reply.only_response()
    assert_served_by_upstream(response.status, response.body, "/big")


def test_http2_header_list_over_the_limit_gets_431_on_that_stream_only(any_h2_proxy: Proxy) -> None:
    # RFC 9113 §10.5.1: a server MAY answer a field block larger than it is willing to handle
    # with 431; h2 decodes it (keeping HPACK state in step) and the connection goes on.
    address = any_h2_proxy.address("outbound")
    with still_served(address, http2=True), h2_client(address) as client:
        big = client.outcome(client.send_headers(request_headers("/big") + [("x-big", "a" * (MAX_HEADER_BYTES + 1000))]))
        assert big.status == 431
        after = client.request("/same-connection")
        assert_served_by_upstream(after.status or 0, after.body, "/same-connection")


def test_http2_header_block_far_over_the_limit_gets_goaway_compression_error(any_h2_proxy: Proxy) -> None:
    # Spread over CONTINUATION frames, a block this big is not buffered to be decoded: h2
    # closes the connection with COMPRESSION_ERROR (RFC 9113 §4.3: HPACK state is lost).
    address = any_h2_proxy.address("outbound")
    huge = [(f"x-big-{i}", "a" * 1000) for i in range(70)]
    with still_served(address, http2=True), h2_client(address) as client:
        stream = client.outcome(client.send_headers(request_headers("/huge") + huge))
        assert stream.status is None
        assert client.goaway is not None
        assert client.goaway.error_code == ErrorCodes.COMPRESSION_ERROR


# --- 4. malformed HTTP/2 requests ----------------------------------------------------------

GOOD = request_headers("/malformed")

# RFC 9113 §8.1.1: a malformed request is a stream error of type PROTOCOL_ERROR.
MALFORMED_H2_STREAM = {
    "missing :method": [h for h in GOOD if h[0] != ":method"],
    "missing :path": [h for h in GOOD if h[0] != ":path"],
    "missing :scheme": [h for h in GOOD if h[0] != ":scheme"],
    "pseudo-header after a regular header": [GOOD[0], ("x-regular", "1"), *GOOD[1:]],
    "connection-specific header": [*GOOD, ("connection", "keep-alive")],
    "transfer-encoding header": [*GOOD, ("transfer-encoding", "chunked")],
    "te other than trailers": [*GOOD, ("te", "gzip")],
    "empty :path": [*GOOD[:3], (":path", "")],
    "duplicated :path": [*GOOD, (":path", "/other")],
}


@pytest.mark.parametrize("headers", MALFORMED_H2_STREAM.values(), ids=MALFORMED_H2_STREAM.keys())
def test_malformed_http2_request_gets_rst_stream_protocol_error(any_h2_proxy: Proxy, headers: list[tuple[str, str]]) -> None:
    address = any_h2_proxy.address("outbound")
    with still_served(address, http2=True), h2_client(address) as client:
        stream = client.outcome(client.send_headers(headers))
        assert stream.reset == ErrorCodes.PROTOCOL_ERROR
        assert stream.status is None
        after = client.request("/same-connection")
        assert_served_by_upstream(after.status or 0, after.body, "/same-connection")
    served = any_h2_proxy.stats()["listeners"]["outbound"]["requests_total"]
    assert served == 4, "only the well-formed requests (/before, /same-connection, /after, /fresh) are served"


# h2 finds these while decoding the HPACK block and escalates them to a connection error,
# which RFC 9113 §5.4 allows for any stream error.
MALFORMED_H2_CONNECTION = {
    "unknown pseudo-header": [*GOOD, (":foo", "bar")],
    "uppercase header name": [*GOOD, ("X-Upper", "1")],
}


@pytest.mark.parametrize("headers", MALFORMED_H2_CONNECTION.values(), ids=MALFORMED_H2_CONNECTION.keys())
def test_malformed_http2_header_block_gets_goaway_protocol_error(any_h2_proxy: Proxy, headers: list[tuple[str, str]]) -> None:
    address = any_h2_proxy.address("outbound")
    with still_served(address, http2=True), h2_client(address) as client:
        stream = client.outcome(client.send_headers(headers))
        assert stream.status is None
        assert client.goaway is not None
        assert client.goaway.error_code == ErrorCodes.PROTOCOL_ERROR
        assert client.goaway.last_stream_id == 0, "the malformed stream was not processed"


def test_http2_request_with_two_host_headers_gets_400_on_that_stream(any_h2_proxy: Proxy) -> None:
    address = any_h2_proxy.address("outbound")
    with still_served(address, http2=True), h2_client(address) as client:
        stream = client.outcome(client.send_headers([*GOOD, ("host", "app.test"), ("host", "other.test")]))
        assert stream.status == 400
        assert stream.headers["x-meshproxy-error"] == "bad_request"
        after = client.request("/same-connection")
        assert_served_by_upstream(after.status or 0, after.body, "/same-connection")


def test_http2_body_shorter_than_content_length_gets_rst_stream_protocol_error(any_h2_proxy: Proxy) -> None:
    # RFC 9113 §8.1.1: content-length that does not match the DATA frames is malformed.
    address = any_h2_proxy.address("outbound")
    with still_served(address, http2=True), h2_client(address) as client:
        stream_id = client.send_headers([(":method", "POST"), *GOOD[1:], ("content-length", "10")], end_stream=False)
        client.conn.send_data(stream_id, b"abc", end_stream=True)
        client.flush()
        stream = client.outcome(stream_id)
        assert stream.reset == ErrorCodes.PROTOCOL_ERROR
        after = client.request("/same-connection")
        assert_served_by_upstream(after.status or 0, after.body, "/same-connection")


# --- 5. HTTP/2 rapid reset (CVE-2023-44487) ------------------------------------------------

RAPID_RESET_STREAMS = 2000


def test_http2_rapid_reset_gets_goaway_enhance_your_calm_and_spares_other_connections(any_h2_proxy: Proxy) -> None:
    address = any_h2_proxy.address("outbound")
    with h2_client(address) as bystander, h2_client(address) as attacker:
        # A request in flight on another connection for the whole attack.
        in_flight = bystander.send_headers(request_headers("/delay/300"))
        upstream_requests_before = any_h2_proxy.stats()["clusters"]["app"]["upstream_requests_total"]

        sent = 0
        try:
            while sent < RAPID_RESET_STREAMS:
                stream_id = attacker.conn.get_next_available_stream_id()
                attacker.conn.send_headers(stream_id, request_headers("/reset"), end_stream=True)
                attacker.conn.reset_stream(stream_id, ErrorCodes.CANCEL)
                sent += 1
                if sent % 50 == 0:
                    attacker.flush()
            attacker.flush()
        except OSError:
            pass  # the proxy closed the connection mid-attack
        attacker.read_until(lambda: False)

        assert attacker.goaway is not None, f"no GOAWAY after {sent} reset streams"
        assert attacker.goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        assert attacker.goaway.additional_data == b"too_many_resets"
        assert attacker.goaway.last_stream_id is not None
        streams_accepted = (attacker.goaway.last_stream_id + 1) // 2
        assert streams_accepted <= 100, f"the proxy took {streams_accepted} streams before going away"
        forwarded = any_h2_proxy.stats()["clusters"]["app"]["upstream_requests_total"] - upstream_requests_before
        assert forwarded <= streams_accepted

        answered = bystander.outcome(in_flight)
        assert_served_by_upstream(answered.status or 0, answered.body, "/delay/300")
        after = bystander.request("/after")
        assert_served_by_upstream(after.status or 0, after.body, "/after")
    assert_fresh_connection_served(address, http2=True)


# --- 6. broken connection prefaces ---------------------------------------------------------

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
BROKEN_PREFACES = {
    "HTTP/1.1 request": request_bytes(b"GET / HTTP/1.1", HOST),
    "preface with wrong magic": b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
    "binary garbage": bytes(range(256)),
}


@pytest.mark.parametrize("payload", BROKEN_PREFACES.values(), ids=BROKEN_PREFACES.keys())
def test_broken_preface_on_http2_listener_closes_the_connection(h2_proxy: Proxy, payload: bytes) -> None:
    # RFC 9113 §3.4: an invalid preface is a connection error; the GOAWAY MAY be omitted
    # since the peer is not speaking HTTP/2. The proxy sends at most its SETTINGS frame.
    address = h2_proxy.address("outbound")
    with still_served(address, http2=True):
        reply = raw_exchange(address, payload)
        assert reply.closed
        assert b"HTTP/1.1" not in reply.data
    assert h2_proxy.stats()["listeners"]["outbound"]["requests_total"] == 3, "only the bystander's requests are served"


@pytest.mark.parametrize("payload", [b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", bytes(range(256))], ids=["wrong magic", "binary garbage"])
def test_broken_preface_on_auto_listener_gets_http1_400_and_close(proxy: Proxy, payload: bytes) -> None:
    # Not the HTTP/2 preface, so the auto listener reads HTTP/1.1, which it is not either.
    address = proxy.address("outbound")
    with still_served(address), still_served(address, http2=True):
        reply = raw_exchange(address, payload)
        response = reply.only_response()
        assert response.status == 400
        assert_from_proxy(response)
        assert reply.closed


def test_oversized_frame_after_a_valid_preface_gets_goaway_frame_size_error(any_h2_proxy: Proxy) -> None:
    # RFC 9113 §4.2: a frame longer than SETTINGS_MAX_FRAME_SIZE is a FRAME_SIZE_ERROR.
    address = any_h2_proxy.address("outbound")
    with still_served(address, http2=True), h2_client(address) as client:
        client.sock.sendall(b"\xff" * 9)  # a frame header announcing 16 MiB - 1 of payload
        client.read_until(lambda: False)
        assert client.goaway is not None
        assert client.goaway.error_code == ErrorCodes.FRAME_SIZE_ERROR
