"""``meshctl serve``: the store, the CA, the registry, the ADS and Mesh gRPC services on one TLS
port (``--grpc``), and the HTTP API (``--api``), until SIGTERM or SIGINT.

The gRPC port asks clients for a certificate but does not require one: a sidecar renewing its
certificate or streaming ADS shows the one this CA issued it; a sidecar joining (and an Envoy)
has none yet and shows its join token instead. grpcio's server can only require a client
certificate or never ask for one, so the port is served by grpclib over Python's ``ssl``
(``CERT_OPTIONAL``): the same HTTP/2 gRPC, spoken to grpcio, grpclib and Envoy clients alike.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any

from grpclib.config import Configuration
from grpclib.server import Server
from meshproxy.addresses import AddressError, parse_listen_address
from prometheus_client import generate_latest

from .api import ApiServer
from .ca import CaError, CertificateAuthority
from .identity import Authenticator
from .mesh_service import MeshService
from .registry import Registry, ServiceKey
from .store.sqlite import SqliteStore
from .telemetry import Telemetry
from .xds.server import AdsServer, run_renewals
from .xds.snapshot import Snapshots

log = logging.getLogger("meshcontrol")

DEFAULT_LEASE_S = 10.0


def serve(args: Any) -> int:
    """Runs until SIGTERM/SIGINT; returns the exit status (1 with a message on a bad flag)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(_serve(args))
    except (CaError, ValueError, OSError) as error:
        log.error("%s", error)
        return 1


def _tune_tls_transport() -> None:
    """Two defaults of asyncio's TLS transport (Python 3.11+) that do not suit thousands of
    long-lived streams. (Set on the module: this process is the control plane and nothing else.)

    - A 256 KiB read buffer per connection, zeroed and so resident: 256 KiB per connected
      sidecar. xDS messages are small and a TLS record is at most 16 KiB: 16 KiB reads.
    - Closing waits up to 30 s for the peer's close_notify before the connection counts as
      lost. When keepalive gives up on a lost host, its stream must end then, not 30 s later."""
    from asyncio import constants, sslproto

    sslproto.SSLProtocol.max_size = 16 * 1024
    constants.SSL_SHUTDOWN_TIMEOUT = 1.0


async def _serve(args: Any) -> int:
    lease_s = _seconds(getattr(args, "lease", None), DEFAULT_LEASE_S, "--lease")
    debounce_s = _seconds(getattr(args, "debounce", None), 0.1, "--debounce", zero_ok=True)
    trust_domain = getattr(args, "trust_domain", None) or "mesh.local"
    try:
        grpc_ip, grpc_port = parse_listen_address(args.grpc)
    except AddressError as error:
        raise ValueError(f"--grpc: {error}") from None
    # cli.py reads --api-token-file into args.api_token; read it here for other callers.
    api_token = getattr(args, "api_token", None) or _read_token(getattr(args, "api_token_file", None))

    _tune_tls_transport()
    store = SqliteStore(args.data)
    try:
        ca = CertificateAuthority.open(store, trust_domain, _path(getattr(args, "ca_cert", None)),
                                       _path(getattr(args, "ca_key", None)))
        plane = ControlPlane(store, ca, trust_domain, lease_s, debounce_s)
        await plane.start(str(grpc_ip), grpc_port, list(getattr(args, "grpc_name", None) or ()))
        api = ApiServer(args.api, store, plane.view, api_token)
        api.start()
        log.info("api listening on %s (meshctl --server)", api.url)
        log.info("ready: CA %s, trust domain %s, lease %gs", ca.pin(), plane.snapshots.world.trust_domain, lease_s)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping")
        api.stop()
        await plane.stop()
    finally:
        store.close()
    return 0


class ControlPlane:
    """Everything but the HTTP API, on the running event loop (tests embed it as it is)."""

    def __init__(self, store: SqliteStore, ca: CertificateAuthority, trust_domain: str, lease_s: float,
                 debounce_s: float) -> None:
        self.store = store
        self.ca = ca
        self.telemetry = Telemetry()
        self.registry = Registry(store, lease_s, self._endpoints_changed)
        self.snapshots = Snapshots(self.registry, ca.bundle_pem(), trust_domain)
        self.authenticator = Authenticator(ca, store, lambda: self.snapshots.world.trust_domain)
        self.ads = AdsServer(store, self.registry, self.snapshots, ca, self.authenticator, self.telemetry, debounce_s)
        self.mesh = MeshService(ca, self.authenticator, self.registry, self.ads, lambda: self.snapshots.world,
                                self.telemetry)
        self.view = LiveView(self, asyncio.get_running_loop())
        self.address = ""
        self._server: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def _endpoints_changed(self, services: set[ServiceKey]) -> None:
        self.ads.endpoints_changed(services)

    async def start(self, host: str, port: int, names: list[str] | None = None) -> None:
        """Serves gRPC on ``host:port`` with a certificate for ``host`` and ``names``."""
        self.ads.start(self.store.resources())
        self.registry.restore()
        self.store.on_change(self.ads.store_changed)
        # A lost host's stream must end well within a lease: ping every lease/4, give up after
        # another lease/4 without an answer (the lease then runs from there).
        keepalive = max(1.0, self.registry.lease_s / 4)
        config = Configuration(_keepalive_time=keepalive, _keepalive_timeout=keepalive,
                               _keepalive_permit_without_calls=True, _http2_max_pings_without_data=0,
                               _http2_min_sent_ping_interval_without_data=keepalive)
        self._server = Server([self.ads, self.mesh], config=config)
        names = [host, *(names or ())]
        if host in ("0.0.0.0", "::"):
            # Bound to every address: sidecars elsewhere reach it by this host's name.
            names += [socket.gethostname(), socket.getfqdn()]
        await self._server.start(host, port, ssl=self._tls(names))
        # grpclib does not say which port it bound (port 0 asks for any): its asyncio server does.
        listening = self._server._server  # noqa: SLF001
        bound = listening.sockets[0].getsockname()[1] if isinstance(listening, asyncio.Server) else port
        self.address = f"[{host}]:{bound}" if ":" in host else f"{host}:{bound}"
        log.info("grpc listening on %s (xDS + CA, TLS)", self.address)
        self._tasks = [asyncio.create_task(self.registry.run()), asyncio.create_task(self.ads.run()),
                       asyncio.create_task(run_renewals(self.ads))]

    def _tls(self, hosts: list[str]) -> ssl.SSLContext:
        cert_pem, key_pem = self.ca.server_certificate(hosts)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # load_cert_chain reads files only: the key lives in a private temporary folder for the call.
        with tempfile.TemporaryDirectory(prefix="meshctl-") as folder:
            cert_file, key_file = Path(folder) / "cert.pem", Path(folder) / "key.pem"
            cert_file.write_bytes(cert_pem)
            key_file.touch(mode=0o600)
            key_file.write_bytes(key_pem)
            context.load_cert_chain(cert_file, key_file)
        context.load_verify_locations(cadata=self.ca.bundle_pem())
        context.verify_mode = ssl.CERT_OPTIONAL
        context.set_alpn_protocols(["h2"])
        return context

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class LiveView:
    """What the HTTP API (another thread) asks the running control plane: read on the event
    loop, so it never sees the registry or a stream half-changed."""

    def __init__(self, plane: ControlPlane, loop: asyncio.AbstractEventLoop) -> None:
        self.plane = plane
        self.loop = loop
        self.started = time.time()

    def _on_loop(self, fn: Any) -> Any:
        async def call() -> Any:
            return fn()
        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout=10)

    def instances(self) -> list[dict[str, Any]]:
        return list(self._on_loop(self._instances))

    def _instances(self) -> list[dict[str, Any]]:
        kinds = {ads.node_id: ads.kind for ads in self.plane.ads.streams}
        return [{"node_id": i.node_id, "service": i.service, "namespace": i.namespace, "version": i.version,
                 "address": i.address, "admin": i.admin, "kind": kinds.get(i.node_id, ""), "connected": i.connected,
                 "since": i.since,
                 "lease_left_s": None if i.connected else round(max(0.0, i.expires - time.monotonic()), 1)}
                for i in self.plane.registry.all()]

    def status(self) -> list[dict[str, Any]]:
        return list(self._on_loop(self._status))

    def _status(self) -> list[dict[str, Any]]:
        rows = self.plane.ads.status()
        seen = {row["node_id"] for row in rows}
        for instance in self.plane.registry.all():
            if instance.node_id not in seen:  # within its lease, its sidecar not connected
                rows.append({"node_id": instance.node_id, "kind": "", "service": instance.service,
                             "namespace": instance.namespace, "version": instance.version,
                             "address": instance.address, "admin": instance.admin, "connected": False,
                             "types": {}})
        return sorted(rows, key=lambda r: (r["namespace"], r["service"], r["version"], r["address"]))

    def metrics(self) -> bytes:
        return generate_latest(self.plane.telemetry.registry)

    def ready(self) -> bool:
        return self.plane.address != ""

    def http_sd(self) -> list[dict[str, Any]]:
        return [{"targets": [i["admin"]],
                 "labels": {"service": i["service"], "namespace": i["namespace"], "version": i["version"],
                            "node_id": i["node_id"]}}
                for i in self.instances() if i["admin"]]

    def ca_pin(self) -> str:
        return self.plane.ca.pin()

    def trust_domain(self) -> str:
        return self.plane.snapshots.world.trust_domain

    def bundle_pem(self) -> str:
        return self.plane.ca.bundle_pem()


def _seconds(value: Any, default: float, flag: str, *, zero_ok: bool = False) -> float:
    """A flag's duration: seconds as a number, or a duration string (``10s``, ``250ms``)."""
    if value is None:
        return default
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif hasattr(value, "total_seconds"):
        seconds = float(value.total_seconds())
    else:
        from meshproxy.config.duration import parse_duration

        try:
            seconds = parse_duration(str(value)).total_seconds()
        except ValueError as error:
            raise ValueError(f"{flag}: {error}") from None
    if seconds < 0 or (seconds == 0 and not zero_ok):
        raise ValueError(f"{flag} must be positive, got {value}")
    return seconds


def _path(value: Any) -> Path | None:
    return Path(value) if value else None


def _read_token(path: Any) -> str | None:
    if not path:
        return None
    try:
        token = Path(path).read_text().strip()
    except OSError as error:
        raise ValueError(f"--api-token-file {path}: cannot read: {error.strerror}") from None
    if not token:
        raise ValueError(f"--api-token-file {path}: the file is empty")
    return token
