"""The admin HTTP server: loopback-only by default, served from one background thread pool so
it never touches the engine's threads.

    GET  /ready     200 once every listener is bound; 503 while draining or stopping
    GET  /live      200 while the process runs
    GET  /config    the running config, as the engine document (JSON)
    GET  /stats     the engine's counters (JSON)
    GET  /metrics   the same counters in the Prometheus text format (prometheus_client, imported
                    on the first scrape)
    GET  /clusters  each cluster's endpoints: weight, health, in flight, latency, pool (JSON)
    GET  /routes    each listener's routes in order: name, match, cluster, split, redirect or direct_response (JSON)
    POST /drain     inbound listeners stop accepting; open requests finish; /ready turns 503
    POST /reload    reads the config again and swaps it in: 200 with the version, or 422 with
                    what is wrong (as ``meshproxy validate`` says it); 409 when it cannot reload

Any other path is 404 naming the endpoints; another method on a known path is 405.
"""

from __future__ import annotations

import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .proxy import Proxy

log = logging.getLogger("meshproxy")

# Path → (method, handler): the 404 answer lists them from here.
_ENDPOINTS = {
    "/ready": ("GET", "_ready"),
    "/live": ("GET", "_live"),
    "/config": ("GET", "_config"),
    "/stats": ("GET", "_stats"),
    "/metrics": ("GET", "_metrics"),
    "/clusters": ("GET", "_clusters"),
    "/routes": ("GET", "_routes"),
    "/drain": ("POST", "_drain"),
    "/reload": ("POST", "_reload"),
}
# POST bodies mean nothing here; one larger than this is refused rather than read.
_MAX_BODY = 65536


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
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch("PATCH")

    def _dispatch(self, method: str) -> None:
        if not self._read_body():
            return
        endpoint = _ENDPOINTS.get(self.path.split("?", 1)[0])
        if endpoint is None:
            listing = ", ".join(f"{allowed} {path}" for path, (allowed, _) in _ENDPOINTS.items())
            self._send(HTTPStatus.NOT_FOUND, f"unknown admin path; try {listing}\n")
            return
        allowed, handler = endpoint
        if method != allowed:
            self._send(HTTPStatus.METHOD_NOT_ALLOWED, f"{self.path} takes {allowed}\n", allow=allowed)
            return
        getattr(self, handler)()

    def _read_body(self) -> bool:
        """Reads and drops the request body: left unread, it would make closing the connection
        reset it, and the client could lose the answer."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= _MAX_BODY:
            self._send(HTTPStatus.BAD_REQUEST, f"expected a Content-Length of at most {_MAX_BODY}\n")
            return False
        self.rfile.read(length)
        return True

    # --- GET -------------------------------------------------------------------------------

    def _ready(self) -> None:
        unready = self.proxy.unready
        if unready is None:
            self._send(HTTPStatus.OK, "ready\n")
        else:
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, f"not ready: {unready}\n")

    def _live(self) -> None:
        self._send(HTTPStatus.OK, "live\n")

    def _config(self) -> None:
        self._send_json(json.loads(self.proxy.document.engine_json))

    def _stats(self) -> None:
        self._send_json(self._while_running(self.proxy.stats))

    def _metrics(self) -> None:
        try:
            exposition = self.proxy.metrics()
        except RuntimeError:
            # Stopped between the check and the read: nothing to scrape.
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, "not running\n")
            return
        from .metrics import CONTENT_TYPE  # loaded by the call above

        self._send_bytes(HTTPStatus.OK, exposition, CONTENT_TYPE)

    def _clusters(self) -> None:
        self._send_json(self._while_running(self.proxy.clusters))

    def _routes(self) -> None:
        self._send_json(self.proxy.routes())

    def _while_running(self, read: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """What ``read()`` gives, or an empty document once the proxy has stopped."""
        try:
            return read()
        except RuntimeError:
            return {}

    # --- POST ------------------------------------------------------------------------------

    def _drain(self) -> None:
        try:
            if not self.proxy.draining:
                log.info("draining (POST /drain): inbound listeners closed, outbound ones serving")
            self.proxy.drain()
        except RuntimeError as error:
            self._send(HTTPStatus.CONFLICT, f"{error}\n")
            return
        self._send(HTTPStatus.OK, "draining\n")

    def _reload(self) -> None:
        from .reloads import Refused, reload_and_log

        try:
            version = reload_and_log(self.proxy, "POST /reload")
        except Refused as refusal:
            status = HTTPStatus.CONFLICT if refusal.conflict else HTTPStatus.UNPROCESSABLE_ENTITY
            self._send(status, refusal.message + "\n")
            return
        self._send_json({"config_version": version})

    # --- answers ---------------------------------------------------------------------------

    def _send_json(self, document: Any) -> None:
        self._send(HTTPStatus.OK, json.dumps(document, indent=2) + "\n", "application/json")

    def _send(self, status: HTTPStatus, body: str, content_type: str = "text/plain; charset=utf-8",
              allow: str | None = None) -> None:
        self._send_bytes(status, body.encode(), content_type, allow)

    def _send_bytes(self, status: HTTPStatus, data: bytes, content_type: str, allow: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        if allow is not None:
            self.send_header("Allow", allow)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        # Admin requests are polled by probes; logging each would drown the proxy's own lines.
        pass
