"""The admin HTTP server: loopback-only by default, served from one background thread pool so
it never touches the engine's threads.

    GET /ready   200 once every listener is bound (503 while stopping)
    GET /live    200 while the process runs
    GET /config  the running config, as the engine document (JSON)
    GET /stats   the engine's counters (JSON)
    GET /metrics the same counters in the Prometheus text format (prometheus_client, imported on
                 the first scrape)
"""

from __future__ import annotations

import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .proxy import Proxy


class AdminServer:
    def __init__(self, address: str, proxy: Proxy) -> None:
        host, port = _host_and_port(address)
        handler = type("BoundAdminHandler", (_AdminHandler,), {"proxy": proxy})
        server_class = _IPv6Server if ":" in host else ThreadingHTTPServer
        try:
            self._server = server_class((host, port), handler)
        except OSError as error:
            # Say what failed to bind where, in the words the engine uses for a listener: the
            # bare "[Errno 98] Address already in use" names neither the admin server nor its port.
            reason = f"{error.strerror} (os error {error.errno})" if error.strerror else str(error)
            raise OSError(f"admin cannot bind {address}: {reason}") from error
        self._thread = threading.Thread(target=self._server.serve_forever, name="meshproxy-admin", daemon=True)

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        host = str(host)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        # shutdown() waits for serve_forever to return: it would wait forever on a server
        # that was bound but never started (a reload refused after binding a new address).
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


def _host_and_port(address: str) -> tuple[str, int]:
    """``127.0.0.1:15000`` or ``[::1]:15000``, as the config validated it: the admin server is
    built from a validated config only, so it splits the address without the config's parser
    (which lives beside the schema and pydantic, kept out of a running sidecar)."""
    host, _, port = address.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


class _IPv6Server(ThreadingHTTPServer):
    import socket

    address_family = socket.AF_INET6


class _AdminHandler(BaseHTTPRequestHandler):
    proxy: Proxy
    server_version = "meshproxy-admin"

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's naming)
        route = self.path.split("?", 1)[0]
        if route == "/ready":
            ready = self.proxy.running
            self._send(HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE, "ready\n" if ready else "not ready\n")
        elif route == "/live":
            self._send(HTTPStatus.OK, "live\n")
        elif route == "/config":
            self._send_json(json.loads(self.proxy.document.engine_json))
        elif route == "/stats":
            self._send_json(self.proxy.stats() if self.proxy.running else {})
        elif route == "/metrics":
            self._send_metrics()
        else:
            self._send(HTTPStatus.NOT_FOUND, "unknown admin path; try /ready, /live, /config, /stats, /metrics\n")

    def _send_metrics(self) -> None:
        try:
            exposition = self.proxy.metrics()
        except RuntimeError:
            # Stopped between the check and the read: nothing to scrape.
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, "not running\n")
            return
        from .metrics import CONTENT_TYPE  # loaded by the call above

        self._send_bytes(HTTPStatus.OK, exposition, CONTENT_TYPE)

    def _send_json(self, document: Any) -> None:
        self._send(HTTPStatus.OK, json.dumps(document, indent=2) + "\n", "application/json")

    def _send(self, status: HTTPStatus, body: str, content_type: str = "text/plain; charset=utf-8") -> None:
        self._send_bytes(status, body.encode(), content_type)

    def _send_bytes(self, status: HTTPStatus, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        # Admin requests are polled by probes; logging each would drown the proxy's own lines.
        pass
