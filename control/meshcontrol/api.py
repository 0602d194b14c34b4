"""The HTTP API ``meshctl`` talks to: JSON over HTTP/1.1 on its own thread (stdlib
``ThreadingHTTPServer``), in front of the store (resources, revisions, tokens) and a
:class:`LiveView` of what only the running control plane knows (connected sidecars, metrics).

    POST   /v1/apply?file=mesh.yaml        body: the YAML file; 400 with every message, nothing stored
    GET    /v1/resources?kind=&namespace=
    DELETE /v1/resources/KIND/NAMESPACE/NAME   409 while a Service is still named by others
    GET    /v1/instances   /v1/status (JSON lists)   /v1/history
    POST   /v1/rollback    {"revision": N}  (default: the revision before the current one)
    POST   /v1/tokens      {"service", "namespace", "ttl"}  -> {"token", "id", "expires"}
    GET    /v1/tokens      DELETE /v1/tokens/ID  (revoke)
    GET    /v1/bundle  (CA bundle PEM)   /metrics   /ready   /v1/prometheus-sd (http_sd_configs)

Loopback only by default. Bound to any other address it needs an API token, and then (as
whenever a token is given) every request must carry ``Authorization: Bearer TOKEN``.
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
import threading
import time
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from meshproxy.addresses import AddressError, parse_listen_address
from meshproxy.config.duration import parse_duration

from . import sidecar_views, tokens
from .resources import (
    KINDS,
    ConfigError,
    hashing_dependents,
    in_use_message,
    key_of,
    label,
    load_documents,
    referrers,
)
from .store.base import Store

log = logging.getLogger(__name__)

MAX_BODY = 16 << 20
DEFAULT_TOKEN_TTL_S = 24 * 3600


class LiveView(Protocol):
    """What the running control plane knows beyond the store (implemented by ``serve.py``)."""

    def instances(self) -> list[dict[str, Any]]:
        """Registered instances: {node_id, service, namespace, version, address, admin, kind,
        connected}, plus anything else worth showing."""

    def status(self) -> list[dict[str, Any]]:
        """One row per sidecar: {node_id, service, namespace, version, address,
        kind: "meshproxy" | "envoy", connected: bool, types: {TYPE: {sent, acked, nack}}}, TYPE
        one of listeners, routes, clusters, endpoints, secrets; sent and acked are the
        version_info strings last sent and ACKed (None before any), nack the message of the
        last NACK of that type (None if none)."""

    def metrics(self) -> bytes:
        """The control plane's metrics in the Prometheus text format."""

    def ready(self) -> bool: ...

    def http_sd(self) -> list[dict[str, Any]]:
        """Prometheus http_sd_configs targets: [{"targets": ["IP:PORT"], "labels": {...}}]."""

    def ca_pin(self) -> str:
        """``sha256:<hex>`` of the CA's public key, as join tokens carry it."""

    def trust_domain(self) -> str: ...

    def bundle_pem(self) -> str:
        """The CA certificates sidecars trust, PEM."""


class ApiError(Exception):
    def __init__(self, status: HTTPStatus, message: str, issues: list[str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.issues = status, message, issues


class ApiServer:
    """Binds at construction (so a taken port or a missing token fails there), serves once
    :meth:`start` is called, until :meth:`stop`."""

    def __init__(self, address: str, store: Store, view: LiveView, api_token: str | None = None) -> None:
        try:
            ip, port = parse_listen_address(address)
        except AddressError as error:
            raise ValueError(f"--api: {error}") from None
        if not ip.is_loopback and not api_token:
            raise ValueError(
                f"--api {address} is not a loopback address: the HTTP API there needs a bearer token "
                "(--api-token-file FILE), or bind it to 127.0.0.1"
            )
        self.store, self.view, self.api_token = store, view, api_token or None
        # One change at a time: a file is checked against the set it is then applied to.
        self.changes = threading.Lock()
        self._http = _Server((str(ip), port), _Handler, family_v6=ip.version == 6)
        self._http.api = self
        host, bound_port = self._http.socket.getsockname()[:2]
        self.address = f"[{host}]:{bound_port}" if ip.version == 6 else f"{host}:{bound_port}"
        self.url = f"http://{self.address}"
        self._thread: threading.Thread | None = None

    def start(self) -> ApiServer:
        self._thread = threading.Thread(target=self._http.serve_forever, name="meshctl-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._http.shutdown()
            self._thread.join()
            self._thread = None
        self._http.server_close()

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # === The endpoints: each returns (status, body) or raises ApiError ===

    def apply(self, body: bytes, source: str) -> dict[str, Any]:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"{source}: not UTF-8 text") from None
        with self.changes:
            current = {key_of(r): r for r in self.store.resources()}
            try:
                documents = load_documents(text, source, list(current.values()))
            except ConfigError as error:
                issues = [str(i) for i in error.issues]
                raise ApiError(HTTPStatus.BAD_REQUEST, "\n".join(issues), issues) from None
            results = [{"resource": label(key_of(d)), "result": _result(current.get(key_of(d)), d)} for d in documents]
            changed = [r["resource"] for r in results if r["result"] != "unchanged"]
            revision = self.store.apply(documents, f"apply {source}: {', '.join(changed) or 'no change'}")
        return {"revision": revision, "results": results}

    def resources(self, query: dict[str, str]) -> dict[str, Any]:
        kind, namespace = query.get("kind"), query.get("namespace")
        if kind and kind not in KINDS:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
        found = [
            r for r in self.store.resources()
            if (not kind or r["kind"] == kind) and (not namespace or r.get("namespace") == namespace)
        ]
        return {"revision": self.store.revision(), "resources": found}

    def delete(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        if kind not in KINDS:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
        key = (kind, namespace, name)
        with self.changes:
            current = self.store.resources()
            if key not in {key_of(r) for r in current}:
                raise ApiError(HTTPStatus.NOT_FOUND, f"{label(key)} does not exist")
            names = referrers(key, current) + hashing_dependents(key, current)
            if names:
                raise ApiError(HTTPStatus.CONFLICT, in_use_message(key, names))
            return {"revision": self.store.delete(key, f"delete {label(key)}")}

    def history(self) -> dict[str, Any]:
        revisions = [r._asdict() for r in self.store.history()]
        return {"revision": self.store.revision(), "history": revisions}

    def rollback(self, request: dict[str, Any]) -> dict[str, Any]:
        with self.changes:
            current = self.store.revision()
            target = request.get("revision")
            if target is None:
                if current == 0:
                    raise ApiError(HTTPStatus.CONFLICT, "nothing to roll back: nothing was applied yet")
                target = current - 1
            if not isinstance(target, int) or isinstance(target, bool):
                raise ApiError(HTTPStatus.BAD_REQUEST, f"revision must be a whole number, got {target!r}")
            if not 0 <= target <= current:
                raise ApiError(HTTPStatus.NOT_FOUND, f"no revision {target!r}; revisions go from 0 to {current}")
            revision = self.store.rollback(target)
        return {"revision": revision, "to": target, "changed": revision != current}

    def create_token(self, request: dict[str, Any]) -> dict[str, Any]:
        service, namespace = request.get("service"), request.get("namespace", "default")
        if not isinstance(service, str) or not isinstance(namespace, str):
            raise ApiError(HTTPStatus.BAD_REQUEST, "a token needs a service and a namespace (strings)")
        try:
            ttl_s = round(parse_duration(request.get("ttl", DEFAULT_TOKEN_TTL_S)).total_seconds())
        except ValueError as error:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"ttl: {error}") from None
        try:
            token = tokens.issue(self.store, self.view.ca_pin(), service, namespace, ttl_s)
        except ValueError as error:
            raise ApiError(HTTPStatus.BAD_REQUEST, str(error)) from None
        return {"token": token.encode(), "id": token.id, "expires": token.expires}

    def list_tokens(self) -> dict[str, Any]:
        now = time.time()
        return {"tokens": [{**r._asdict(), "expired": now >= r.expires} for r in self.store.tokens()]}

    def revoke_token(self, token_id: str) -> dict[str, Any]:
        try:
            self.store.revoke_token(token_id)
        except KeyError:
            raise ApiError(HTTPStatus.NOT_FOUND, f"no join token {token_id!r}") from None
        return {"revoked": token_id}


def _result(before: dict[str, Any] | None, after: dict[str, Any]) -> str:
    return "created" if before is None else "unchanged" if before == after else "changed"


# === HTTP plumbing ===


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    api: ApiServer

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], family_v6: bool) -> None:
        if family_v6:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "meshctl-api"

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("%s %s", self.address_string(), format % args)

    def _dispatch(self, method: str) -> None:
        api = self.server.api
        url = urllib.parse.urlsplit(self.path)
        parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/")]
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        try:
            if api.api_token is not None and not self._authorized(api.api_token):
                # Answered without reading the body: the connection closes after the answer.
                self.close_connection = True
                raise ApiError(HTTPStatus.UNAUTHORIZED, "missing or wrong API token (Authorization: Bearer TOKEN)")
            body = self._body()
            status, payload = self._route(api, method, parts, query, body)
        except ApiError as error:
            error_body: dict[str, Any] = {"error": error.message}
            if error.issues is not None:
                error_body["issues"] = error.issues
            status, payload = error.status, error_body
        except Exception:
            log.exception("API %s %s failed", method, self.path)
            status, payload = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error; see the control plane's log"}
        self._send(status, payload)

    def _route(
        self, api: ApiServer, method: str, parts: list[str], query: dict[str, str], body: bytes
    ) -> tuple[HTTPStatus, Any]:
        ok = HTTPStatus.OK
        match method, parts:
            case "POST", ["v1", "apply"]:
                source = query.get("file") or self.headers.get("X-Meshctl-File") or "<request>"
                return ok, api.apply(body, source)
            case "GET", ["v1", "resources"]:
                return ok, api.resources(query)
            case "DELETE", ["v1", "resources", kind, namespace, name]:
                return ok, api.delete(kind, namespace, name)
            # Live data comes as bare lists; what the store answers carries its revision.
            case "GET", ["v1", "instances"]:
                return ok, api.view.instances()
            case "GET", ["v1", "status"]:
                return ok, api.view.status()
            case "GET", ["v1", "endpoints"]:
                return ok, sidecar_views.endpoints(api.view.instances(), query.get("service") or None,
                                                   query.get("namespace") or "default")
            case "GET", ["v1", "history"]:
                return ok, api.history()
            case "POST", ["v1", "rollback"]:
                return ok, api.rollback(_json(body))
            case "POST", ["v1", "tokens"]:
                return ok, api.create_token(_json(body))
            case "GET", ["v1", "tokens"]:
                return ok, api.list_tokens()
            case "DELETE", ["v1", "tokens", token_id]:
                return ok, api.revoke_token(token_id)
            case "GET", ["v1", "bundle"]:
                return ok, _Text(api.view.bundle_pem().encode(), "application/x-pem-file")
            case "GET", ["v1", "prometheus-sd"]:
                return ok, api.view.http_sd()
            case "GET", ["metrics"]:
                return ok, _Text(api.view.metrics(), "text/plain; version=0.0.4; charset=utf-8")
            case "GET", ["ready"]:
                ready = api.view.ready()
                return (ok if ready else HTTPStatus.SERVICE_UNAVAILABLE), _Text(b"ready\n" if ready else b"not ready\n")
        raise ApiError(HTTPStatus.NOT_FOUND, f"no such endpoint: {method} {urllib.parse.urlsplit(self.path).path}")

    def _authorized(self, api_token: str) -> bool:
        given = self.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), api_token.encode())

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            # Refused without reading it: the connection is closed after the answer.
            self.close_connection = True
            raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request body over {MAX_BODY >> 20} MiB")
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: HTTPStatus, payload: Any) -> None:
        if isinstance(payload, _Text):
            data, content_type = payload.data, payload.content_type
        else:
            data, content_type = (json.dumps(payload, indent=1) + "\n").encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        if status == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", 'Bearer realm="meshctl"')
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


class _Text:
    def __init__(self, data: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.data, self.content_type = data, content_type


def _json(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except ValueError as error:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"the request body is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise ApiError(HTTPStatus.BAD_REQUEST, "the request body must be a JSON object")
    return value
