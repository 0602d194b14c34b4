"""Peers of the CONNECT tests: ``openssl s_server -www`` on loopback with a certificate made for
it, and curl told ``HTTPS_PROXY``, as a client of a forward proxy is."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

from processes import free_address
from upstreams import accepts_connections, wait_until


@contextlib.contextmanager
def openssl_server(folder: Path, ipv6: bool = False) -> Iterator[str]:
    """``openssl s_server -www`` on a free loopback port (``127.0.0.1``, or ``[::1]``); yields its
    address."""
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost", "-days", "1"],
                   check=True, capture_output=True, timeout=30)
    address = free_address() if not ipv6 else free_ipv6_address()
    server = subprocess.Popen(["openssl", "s_server", "-accept", address, "-www", "-cert", str(cert), "-key", str(key)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: accepts_connections(address), what="openssl s_server")
        yield address
    finally:
        server.kill()
        server.wait(10)


def free_ipv6_address() -> str:
    with socket.socket(socket.AF_INET6) as sock:
        sock.bind(("::1", 0))
        return "[::1]:%d" % sock.getsockname()[1]


def https_proxy_curl(proxy_address: str, url: str) -> subprocess.CompletedProcess[str]:
    """``curl -k URL`` with ``HTTPS_PROXY`` set to the proxy: a CONNECT, then TLS through it."""
    env = {**os.environ, "HTTPS_PROXY": f"http://{proxy_address}", "NO_PROXY": ""}
    return subprocess.run(["curl", "-sS", "-k", "--max-time", "20", url], capture_output=True, text=True,
                          env=env, check=False)
