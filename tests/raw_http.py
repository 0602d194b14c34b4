"""Clients on raw sockets that send whatever they are told, including what the RFCs forbid:
HTTP/1.1 as bytes, and HTTP/2 through the `h2` package with its own checks turned off."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
from h2.errors import ErrorCodes

# Bounds every read: no case waits for it unless the proxy fails to answer or to close.
READ_TIMEOUT = 5.0


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


# --- HTTP/2 over a raw socket --------------------------------------------------------------


@dataclass
class StreamOutcome:
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    trailers: dict[str, str] = field(default_factory=dict)
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
            elif isinstance(event, h2.events.TrailersReceived) and stream is not None:
                stream.trailers = {str(name): str(value) for name, value in event.headers}
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
