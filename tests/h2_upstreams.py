"""Raw h2c upstreams that answer gRPC calls in ways a real server would not be made to: a
message cut short (the connection then closed, or the stream left hanging), and calls held and
answered all at once. Each is a `RawUpstream`: its connections served on threads of their own."""

from __future__ import annotations

import socket
import struct

import h2.config
import h2.connection
import h2.events
from raw_upstream import RawUpstream

GRPC_HEAD = [(":status", "200"), ("content-type", "application/grpc")]


def server_connection(conn: socket.socket, max_streams: int | None = None) -> h2.connection.H2Connection:
    """The server's side of an h2c connection, its preface sent."""
    h2conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False))
    if max_streams is not None:
        h2conn.local_settings.max_concurrent_streams = max_streams
    h2conn.initiate_connection()
    conn.sendall(h2conn.data_to_send())
    return h2conn


class CutMessageUpstream(RawUpstream):
    """Answers every call with its headers and the first bytes (`cut`) of a message announced
    `announced` bytes long; then closes the connection (`hang_up`), or sends nothing more while
    the stream lives. Records the streams the proxy reset, by error code."""

    def __init__(self, announced: int, *, hang_up: bool) -> None:
        self.announced, self.hang_up = announced, hang_up
        self.resets: list[int] = []
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        h2conn = server_connection(conn)
        with conn:
            while data := conn.recv(65536):
                for event in h2conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        h2conn.send_headers(event.stream_id, GRPC_HEAD)
                        h2conn.send_data(event.stream_id, struct.pack(">BI", 0, self.announced) + b"cut")
                        if self.hang_up:
                            conn.sendall(h2conn.data_to_send())
                            return
                    elif isinstance(event, h2.events.StreamReset):
                        self.resets.append(event.error_code)
                conn.sendall(h2conn.data_to_send())


class BatchUpstream(RawUpstream):
    """Holds `batch` calls (or what came before a pause), then answers them all in one write,
    each as a gRPC server does: headers, one message in a DATA frame, trailers with grpc-status 0."""

    def __init__(self, batch: int) -> None:
        self.batch = batch
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        h2conn = server_connection(conn, max_streams=2 * self.batch)
        waiting: list[int] = []
        # Calls are answered together: once `batch` are held, or once none came for a while.
        conn.settimeout(0.3)
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    data = None
                if data == b"":
                    return
                for event in h2conn.receive_data(data) if data else []:
                    if isinstance(event, h2.events.StreamEnded):
                        waiting.append(event.stream_id)
                if len(waiting) >= self.batch or (data is None and waiting):
                    for stream_id in waiting:
                        h2conn.send_headers(stream_id, GRPC_HEAD)
                        h2conn.send_data(stream_id, struct.pack(">BI", 0, 5) + b"hello")
                        h2conn.send_headers(stream_id, [("grpc-status", "0")], end_stream=True)
                    waiting = []
                conn.sendall(h2conn.data_to_send())
