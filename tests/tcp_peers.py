"""Peers of the opaque TCP tests: Debian's ``redis-server`` on an ephemeral port, and two small
servers for what redis does not show: one that answers only once its client has half-closed
(reads to EOF, then writes), and one that speaks first (an SMTP-like banner), as MySQL and SMTP
servers do."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import subprocess
import threading
from collections.abc import Iterator

from processes import free_address
from upstreams import accepts_connections, wait_until

BANNER = b"220 fake-smtp ready\r\n"


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """``redis-server`` on a free loopback port, without persistence; yields its address."""
    address = free_address()
    port = address.rsplit(":", 1)[1]
    process = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no",
         "--protected-mode", "no", "--logfile", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: accepts_connections(address), what="redis-server to accept connections")
        yield address
    finally:
        process.terminate()
        process.wait(timeout=10)


class _AnswerAfterEof(socketserver.BaseRequestHandler):
    """Reads until its client half-closes, then answers with what it read, reversed, and closes."""

    def handle(self) -> None:
        received = b""
        while chunk := self.request.recv(65536):
            received += chunk
        self.request.sendall(b"after your FIN: " + received[::-1])


class _Banner(socketserver.BaseRequestHandler):
    """Speaks first, then echoes one line back."""

    def handle(self) -> None:
        self.request.sendall(BANNER)
        self.request.settimeout(10)
        with contextlib.suppress(OSError):
            if line := self.request.recv(1024):
                self.request.sendall(b"250 " + line)


class _Echo(socketserver.BaseRequestHandler):
    """Echoes whatever comes, until the client closes."""

    def handle(self) -> None:
        while chunk := self.request.recv(65536):
            self.request.sendall(chunk)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@contextlib.contextmanager
def _serving(handler: type[socketserver.BaseRequestHandler]) -> Iterator[str]:
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield "127.0.0.1:%d" % server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def answer_after_eof_server() -> contextlib.AbstractContextManager[str]:
    return _serving(_AnswerAfterEof)


def banner_server() -> contextlib.AbstractContextManager[str]:
    return _serving(_Banner)


def echo_server() -> contextlib.AbstractContextManager[str]:
    return _serving(_Echo)


def connect(address: str, timeout: float = 10) -> socket.socket:
    host, port = address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=timeout)


def read_to_end(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def ping(address: str) -> bool:
    """Whether redis answers PING on a new connection to ``address`` (False: closed at once)."""
    with connect(address) as sock:
        try:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            answer = b""
            while len(answer) < 7 and (chunk := sock.recv(7 - len(answer))):
                answer += chunk
            return answer == b"+PONG\r\n"
        except ConnectionResetError:  # closed with our bytes unread: a reset rather than a FIN
            return False


def outbound_address(following: int = 1) -> str:
    """A free loopback ``IP:PORT`` whose ``following`` ports are free too: a sidecar's outbound
    address, its TCP services' listeners on the ports after it (their ``port_offset``)."""
    for _ in range(100):
        with contextlib.ExitStack() as held:
            first = held.enter_context(socket.socket())
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            try:
                for offset in range(1, following + 1):
                    held.enter_context(socket.socket()).bind(("127.0.0.1", port + offset))
            except OSError:
                continue
            return f"127.0.0.1:{port}"
    raise RuntimeError(f"no {following + 1} consecutive free ports on loopback")
