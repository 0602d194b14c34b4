"""An HTTP/1.1 upstream in the test's own process whose behaviour a test switches while it runs
(answer, answer 500, answer late, accept and never answer) and which counts what reaches it:
the proof that a proxy stopped, or resumed, sending requests to it. It can be stopped (its port
then refuses connections) and started again on the same port."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

Mode = Literal["ok", "error", "hang"]


class ControlledUpstream:
    def __init__(self, name: str, port: int = 0) -> None:
        self.name = name
        self.mode: Mode = "ok"
        # Added to every answer (seconds), for a slow endpoint.
        self.delay = 0.0
        # Requests by path, counted when they arrive (before the mode is applied).
        self.arrived: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = port
        self.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def requests(self, path: str = "/") -> int:
        """How many requests for ``path`` arrived so far."""
        with self._lock:
            return self.arrived[path]

    def start(self) -> None:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with upstream._lock:
                    upstream._connections.add(self.connection)

            def finish(self) -> None:
                with upstream._lock:
                    upstream._connections.discard(self.connection)
                super().finish()

            def do_GET(self) -> None:  # noqa: N802 (the http.server spelling)
                with upstream._lock:
                    upstream.arrived[self.path] += 1
                if upstream.mode == "hang":
                    # Holds the connection without an answer until the upstream stops.
                    upstream._released.wait(30)
                    self.close_connection = True
                    return
                if upstream.delay:
                    time.sleep(upstream.delay)
                status = 500 if upstream.mode == "error" else 200
                body = upstream.name.encode()
                self.send_response(status)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self._released.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """As a killed server: the listening socket and every open connection close, so new
        connections are refused and pooled ones break."""
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            for connection in self._connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed by its handler
        if self._thread is not None:
            self._thread.join(timeout=5)
