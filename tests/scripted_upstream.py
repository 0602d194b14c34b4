"""An HTTP/1.1 upstream that answers from a script (a status, and a delay, per request in turn),
records what reaches it, and can hold requests until released: the failures and the slowness
the retry and circuit breaker tests need, counted where they happen."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# How long a held request waits for its release at most: a test that fails never hangs.
HOLD_LIMIT = 15.0


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    body: bytes


# A status in a script that means: close the connection without answering.
HANG_UP = 0


class ScriptedUpstream:
    """Answers the nth request with ``script[n]`` (a status, or a (status, delay in seconds)
    pair; ``HANG_UP`` closes the connection instead), then with ``then``. With ``hold``, every
    request waits for ``release()``."""

    def __init__(self, script: list[int | tuple[int, float]] | None = None, then: int = 200,
                 hold: bool = False) -> None:
        self.script = list(script or [])
        self.then = then
        self.received: list[Received] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()
        self._released = threading.Event()
        if not hold:
            self._released.set()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.address = "127.0.0.1:%d" % self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.start()

    def release(self) -> None:
        self._released.set()

    def stop(self) -> None:
        """Stops listening: connections to it are refused from now on."""
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=HOLD_LIMIT)

    def count(self) -> int:
        with self._lock:
            return len(self.received)

    def _answer(self, method: str, path: str, body: bytes) -> tuple[int, float]:
        with self._lock:
            self.received.append(Received(method, path, body))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            step = self.script.pop(0) if self.script else self.then
        return step if isinstance(step, tuple) else (step, 0.0)

    def _done(self) -> None:
        with self._lock:
            self.in_flight -= 1


def _handler(upstream: ScriptedUpstream) -> Any:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            status, delay = upstream._answer(self.command, self.path, body)
            try:
                upstream._released.wait(HOLD_LIMIT)
                if delay:
                    threading.Event().wait(delay)
                if status == HANG_UP:
                    self.close_connection = True
                    return
                answer = b"status %d\n" % status
                self.send_response(status)
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            finally:
                upstream._done()

        do_GET = do_POST = do_PUT = _serve

    return Handler
