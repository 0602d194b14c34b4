"""Free loopback ports, and waiting until something listens on one."""

from __future__ import annotations

import socket
from collections.abc import Callable

from .lifecycle import wait_ready


def free_ports(count: int) -> list[int]:
    """`count` distinct ports the kernel reports free right now. All sockets stay open until
    every port is picked, so the kernel cannot hand out the same one twice."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_listening(port: int, alive: Callable[[], bool], timeout: float = 30.0) -> None:
    """Returns once a TCP connection to the port succeeds. Raises if `alive()` turns false (the
    server died) or the timeout passes."""

    def connects() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True

    if wait_ready(connects, alive, timeout):
        return
    if not alive():
        raise RuntimeError(f"exited before listening on port {port}")
    raise RuntimeError(f"nothing listens on port {port} after {timeout:.0f}s")
